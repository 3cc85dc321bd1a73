"""The wheels the GPU check needs on a machine without a package index: download (here) and install (there).

    python -m benchmarks.gpu_wheels download [--out .gpu_wheels] [--budget-mib 64]   # a machine with PyPI
    python -m benchmarks.gpu_wheels install --wheels .gpu_wheels --target DIR       # the GPU machine

The GPU machine's ``python3`` is assumed to have torch 2.11, transformers, pytorch-lightning, torchmetrics, einops,
pandas and pyarrow (with their own dependencies) and nothing else of ours. ``download`` fetches, with
``pip download --no-deps``, the smallest set of Python 3.12 manylinux x86_64 wheels that lets each stage of
``benchmarks.gpu_check`` import — worked out by running every stage in an environment holding only those
packages — in groups, in the order of the stages that need them. A group is kept while the folder stays within
the budget (64 MiB by default: what travels with a working tree to the GPU machine); a group that does not
fit is left out whole and ``manifest.json`` says so, and the stages needing it print ``skipped``.

``install`` puts the wheels whose distributions the running Python lacks into ``--target`` with
``pip install --no-index --no-deps --find-links`` (or, without pip, by unpacking them), for ``PYTHONPATH``.
Packages already there are not shadowed. One import is given a stand-in instead of a wheel: ``cv2``.
``lerobot.policies`` imports its GR00T processor, which imports OpenCV at module level but calls it only for
GR00T checkpoints; ACT and Diffusion never do, and the OpenCV wheel (54 MiB) would not fit beside PyAV.

Stdlib only: this runs before anything is known to be installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

MIB = 2**20
DEFAULT_OUT = ".gpu_wheels"
DEFAULT_BUDGET_MIB = 64.0
MANIFEST = "manifest.json"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PYTHON_VERSION = "3.12"

# (group, stages that need it, pinned requirements): the versions the project's environment runs. A stage's
# imports need its group and every group before it that it names (benchmarks.gpu_check.STAGE_MODULES).
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # the Qwen3-VL processors need PIL and torchvision (transformers refuses to build them without)
    ("vision", "scoring, memory, annotate, train, eval", ("torchvision==0.26.0", "pillow==12.3.0")),
    # lerobot and what its dataset and policy modules import at load time; PyAV is required by
    # lerobot.datasets even for reading, so it is here however large
    ("lerobot", "annotate, train, eval", (
        "lerobot==0.6.1", "draccus==0.11.6", "mergedeep==1.3.4", "typing-inspect==0.9.0",
        "mypy-extensions==1.2.0", "datasets==4.8.5", "multiprocess==0.70.19", "dill==0.4.1", "xxhash==4.1.0",
        "requests==2.34.2", "urllib3==2.8.0", "gymnasium==1.4.0", "av==15.1.0", "omegaconf==2.4.0",
        "webdataset==1.0.2", "braceexpand==0.1.7",  # the shard writer writes through webdataset's TarWriter
        "termcolor==3.3.0",  # lerobot-train imports it (benchmarks.train_step's peer)
    )),
    ("diffusion", "train (Diffusion)", ("diffusers==0.39.0",)),
    # the simulator for lerobot-eval: MetaWorld's wheel alone is 35 MiB (meshes and textures), SciPy 34 MiB
    ("metaworld", "eval", (
        "metaworld==3.1.1", "mujoco==3.3.0", "scipy==1.18.1", "glfw==2.11.0", "pyopengl==3.1.10",
        "imageio==2.38.1", "termcolor==3.3.0",
    )),
)

# imports given a stand-in module rather than a wheel (see the module docstring)
STAND_INS = {
    "cv2": (
        '"""Stand-in for OpenCV, written by benchmarks.gpu_wheels install (this is not OpenCV).\n\n'
        "lerobot.policies imports its GR00T processor, which imports cv2 at module level and calls it only for\n"
        'GR00T checkpoints; ACT and Diffusion never do. Any use of it raises ImportError."""\n\n\n'
        "def __getattr__(name):\n"
        "    if name.startswith('__'):\n"
        "        raise AttributeError(name)\n"
        "    raise ImportError(f'cv2.{name}: OpenCV is not installed (a stand-in lets lerobot.policies import)')\n"
    ),
}


def wheel_name(path: Path) -> tuple[str, str]:
    """(distribution, version) from a wheel's file name."""
    parts = path.name.split("-")
    if len(parts) < 5 or not path.name.endswith(".whl"):
        raise ValueError(f"{path.name} is not a wheel file name")
    return parts[0], parts[1]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _mib(paths) -> float:
    return sum(p.stat().st_size for p in paths) / MIB


def pip_download(specs, dest: Path, python: str = sys.executable) -> None:
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
           "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none", "--quiet",
           "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *specs], check=True)


def download(out: Path, budget_mib: float = DEFAULT_BUDGET_MIB, groups=GROUPS, fetch=pip_download) -> dict:
    """Download the groups in order into ``out`` (emptied first), keeping each while the total fits
    ``budget_mib``; writes and returns ``out/manifest.json``."""
    out = Path(out)
    if out.exists():
        for old in out.glob("*.whl"):
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".staging"
    manifest = {"python": PYTHON_VERSION, "platforms": list(PLATFORMS), "budget_mib": budget_mib, "groups": {},
                "stand_ins": sorted(STAND_INS)}
    for name, stages, specs in groups:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        fetch(list(specs), staging)
        new = sorted(p for p in staging.glob("*.whl") if not (out / p.name).exists())
        total = _mib(out.glob("*.whl"))
        size = _mib(new)
        entry = {"stages": stages, "mib": round(size, 2), "wheels": [p.name for p in new]}
        if total + size <= budget_mib:
            for p in new:
                shutil.move(str(p), out / p.name)
            entry["included"] = True
        else:
            entry["included"] = False
            entry["reason"] = (f"{size:.1f} MiB would bring the folder to {total + size:.1f} MiB, over the "
                               f"{budget_mib:g} MiB budget: the stages needing it ({stages}) are skipped")
        manifest["groups"][name] = entry
    shutil.rmtree(staging, ignore_errors=True)
    manifest["total_mib"] = round(_mib(out.glob("*.whl")), 2)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(wheels: Path) -> dict:
    try:
        return json.loads((Path(wheels) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def left_out(wheels: Path) -> dict[str, str]:
    """Normalised distribution name → why ``download`` left it out of ``wheels`` (its group did not fit)."""
    specs = {name: s for name, _, s in GROUPS}
    out = {}
    for name, entry in read_manifest(wheels).get("groups", {}).items():
        if not entry.get("included", True):
            for spec in specs.get(name, ()):
                out[normalise(spec.split("==")[0])] = f"group {name!r} left out of the wheels: {entry.get('reason', '')}"
    return out


def installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _unpack(wheel: Path, target: Path) -> None:
    """Install a wheel without pip: unpack it and move its ``*.data/{purelib,platlib}`` into place."""
    with zipfile.ZipFile(wheel) as z:
        z.extractall(target)
    for data in target.glob("*.data"):
        for sub in ("purelib", "platlib"):
            for item in (data / sub).glob("*") if (data / sub).is_dir() else ():
                dest = target / item.name
                if dest.exists():
                    shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
                shutil.move(str(item), dest)
        shutil.rmtree(data)


def importable(module: str, target: Path, python: str = sys.executable) -> bool:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return subprocess.run([python, "-c", f"import {module}"], env=env, capture_output=True).returncode == 0


def install(wheels: Path, target: Path, python: str = sys.executable) -> dict:
    """Install into ``target`` the wheels of ``wheels`` whose distributions are not installed; add the stand-ins
    for imports still missing. Returns what was done (one JSON line's worth)."""
    wheels, target = Path(wheels), Path(target)
    files = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    target.mkdir(parents=True, exist_ok=True)
    report = {"wheels": str(wheels), "target": str(target)}
    if not files:
        report["note"] = (f"no wheels in {wheels}: nothing installed (prepare them with benchmarks/gpu_wheels.sh on "
                          "a machine with PyPI)")
    present = [f for f in files if installed(wheel_name(f)[0])]
    todo = [f for f in files if f not in present]
    method = None
    if todo:
        specs = ["{}=={}".format(*wheel_name(f)) for f in todo]
        pip = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links", str(wheels),
                              "--target", str(target), "--quiet", "--disable-pip-version-check", *specs],
                             capture_output=True, text=True)
        method = "pip"
        if pip.returncode != 0:
            method = "unpacked (pip: " + (pip.stderr.strip().splitlines() or ["unavailable"])[-1][:200] + ")"
            for f in todo:
                _unpack(f, target)
    stand_ins = []
    for module, source in STAND_INS.items():
        if not importable(module, target, python):
            (target / module).mkdir(exist_ok=True)
            (target / module / "__init__.py").write_text(source)
            stand_ins.append(module)
    report.update(installed=[f.name for f in todo], already_present=[wheel_name(f)[0] for f in present],
                  method=method, stand_ins=stand_ins,
                  groups_left_out=sorted(n for n, e in read_manifest(wheels).get("groups", {}).items()
                                         if not e.get("included", True)))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="pip download the wheels into a folder (a machine with PyPI)")
    d.add_argument("--out", default=DEFAULT_OUT)
    d.add_argument("--budget-mib", type=float, default=DEFAULT_BUDGET_MIB)
    i = sub.add_parser("install", help="install the missing ones into a target folder (no index)")
    i.add_argument("--wheels", default=DEFAULT_OUT)
    i.add_argument("--target", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "download":
        manifest = download(Path(args.out), args.budget_mib)
        for name, entry in manifest["groups"].items():
            state = "kept" if entry["included"] else "LEFT OUT — " + entry["reason"]
            print(f"{name:>10}: {entry['mib']:6.2f} MiB, {len(entry['wheels'])} wheels ({entry['stages']}): {state}")
        print(f"total: {manifest['total_mib']:.2f} MiB of {manifest['budget_mib']:g} MiB in {args.out}")
        return 0
    print(json.dumps({"stage": "install", **install(Path(args.wheels), Path(args.target))}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
