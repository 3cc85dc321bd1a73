"""benchmarks/gpu_check.sh in its CPU dry run (GPU_CHECK_DEVICE=cpu, tiny sizes): every stage prints one JSON
line with its figures or the reason it was skipped, and a stage that cannot run does not stop the next; plus the
wheel folder's budget and the install step (benchmarks/gpu_wheels.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks import gpu_wheels

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {
    "scoring": ("bfloat16", "float32", "bf16_vs_float32_max_abs_diff_true", "prefixes", "model"),
    "annotate": ("frames_per_s", "frames", "model_seconds"),
    "memory": ("runs", "shared_tokens", "prefixes"),
    "train": ("act", "diffusion", "precision"),
    "eval": ("lerobot_eval", "command", "train"),
}


def run_check(tmp_path: Path, stages: list[str], timeout: int = 600, **env: str) -> list[dict]:
    """gpu_check.sh's stdout, one parsed JSON object per line (every line must be one)."""
    full = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_DEVICE="cpu", GPU_CHECK_STAGES=",".join(stages),
                GPU_CHECK_WHEELS=str(tmp_path / "no_wheels"), GPU_CHECK_WORK=str(tmp_path / "work"),
                OMP_NUM_THREADS="1")
    full.update(env)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert lines[0]["stage"] == "install"
    return lines[1:]


def check_figures(line: dict) -> None:
    assert "failed" not in line and "skipped" not in line, line
    missing = [k for k in FIGURES[line["stage"]] if k not in line]
    assert not missing, (missing, line)
    assert line["seconds"] > 0


def test_dry_run_prints_each_figure(tmp_path):
    stages = ["scoring", "annotate", "memory", "train"]
    lines = run_check(tmp_path, stages)
    assert [line["stage"] for line in lines] == stages
    for line in lines:
        check_figures(line)
    scoring, annotate, memory, train = lines
    # the one-pass scorer equals one forward per prefix within 1e-4 in float32 (README); bf16 is reported as is
    assert scoring["float32"]["max_abs_diff_true"] <= 1e-4
    assert scoring["bfloat16"]["max_abs_diff_true"] >= 0 and scoring["prefixes"] >= 2
    assert annotate["frames"] == 2 * 16 and annotate["frames_per_s"] > 0
    assert [r["tail_batch_size"] for r in memory["runs"]] == ["auto", 0, 16]
    assert all(r["peak_bytes"] >= 0 and r["predicted_bytes"] > 0 for r in memory["runs"])
    for policy in ("act", "diffusion"):
        assert train[policy]["steps"] == 6 and train[policy]["steps_per_s"] > 0, train[policy]


def test_a_stage_that_cannot_run_does_not_stop_the_next(tmp_path):
    """Negative control: scoring's transformers import is made to fail (skipped, saying why), memory runs out of
    time (failed, with its log), and train still runs and prints its figures."""
    lines = run_check(tmp_path, ["scoring", "memory", "train"], GPU_CHECK_BLOCK="scoring:transformers",
                      GPU_CHECK_TIMEOUTS="memory:3")
    scoring, memory, train = lines
    assert scoring["stage"] == "scoring" and "transformers" in scoring["skipped"], scoring
    assert "bfloat16" not in scoring
    assert memory["stage"] == "memory" and "timed out" in memory["failed"] and Path(memory["log"]).exists()
    check_figures(train)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the behaviour without a GPU")
def test_without_a_gpu_every_cuda_stage_is_skipped(tmp_path):
    lines = run_check(tmp_path, ["scoring", "train"], GPU_CHECK_DEVICE="cuda")
    assert [line["stage"] for line in lines] == ["scoring", "train"]
    assert all("no CUDA device" in line["skipped"] for line in lines), lines


@pytest.mark.slow
def test_dry_run_eval_stage(tmp_path):
    """The lerobot-eval stage end to end (≈ 3 min on a CPU: 500 MetaWorld steps rendered at 480×480)."""
    (line,) = run_check(tmp_path, ["eval"], timeout=900, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    if "skipped" in line:
        pytest.skip(line["skipped"])
    check_figures(line)
    assert line["lerobot_eval"]["pc_success"] is not None and line["train"]["steps"] == 4


# ----------------------------------------------------------------------------------------------- the wheels
def fake_wheel(folder: Path, dist: str, version: str = "1.0", module: str | None = None) -> Path:
    """A minimal pure-Python wheel holding one module that sets VALUE = 42."""
    module = module or dist.replace("-", "_")
    path = folder / f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
    info = f"{dist.replace('-', '_')}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}/__init__.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def imports(target: Path, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(target))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_download_keeps_groups_within_the_budget(tmp_path):
    sizes = {"a": 3, "b": 2, "c": 4, "d": 1}  # MiB per wheel

    def fetch(specs, dest):
        for spec in specs:
            name = spec.split("==")[0]
            (dest / f"{name}-1.0-py3-none-any.whl").write_bytes(b"0" * int(sizes[name] * gpu_wheels.MIB))

    groups = (("first", "scoring", ("a==1.0",)), ("second", "train", ("b==1.0", "a==1.0")),
              ("big", "eval", ("c==1.0",)), ("last", "annotate", ("d==1.0",)))
    manifest = gpu_wheels.download(tmp_path / "w", budget_mib=6.5, groups=groups, fetch=fetch)
    kept = sorted(p.name.split("-")[0] for p in (tmp_path / "w").glob("*.whl"))
    assert kept == ["a", "b", "d"]  # the shared wheel counts once; the group over the budget is left out whole
    assert manifest["total_mib"] == 6.0 and manifest["groups"]["second"]["mib"] == 2.0
    assert not manifest["groups"]["big"]["included"] and "over the 6.5 MiB budget" in manifest["groups"]["big"]["reason"]
    assert json.loads((tmp_path / "w" / "manifest.json").read_text()) == manifest


def test_install_adds_only_what_is_missing(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(wheels, "topbc-fake-pkg")
    fake_wheel(wheels, "pytest", "0.0.1", module="pytest_shadow")  # installed already: must not be shadowed
    monkeypatch.setattr(gpu_wheels, "STAND_INS", {"topbc_no_such_module": gpu_wheels.STAND_INS["cv2"],
                                                  "json": "raise SystemExit('a module that imports is left alone')"})
    report = gpu_wheels.install(wheels, tmp_path / "site")
    assert report["installed"] == ["topbc_fake_pkg-1.0-py3-none-any.whl"] and report["already_present"] == ["pytest"]
    assert report["stand_ins"] == ["topbc_no_such_module"]
    assert imports(tmp_path / "site", "import topbc_fake_pkg; assert topbc_fake_pkg.VALUE == 42").returncode == 0
    assert not (tmp_path / "site" / "pytest_shadow").exists()
    stand_in = imports(tmp_path / "site", "import topbc_no_such_module as m; m.resize")
    assert stand_in.returncode != 0 and "ImportError" in stand_in.stderr and "not installed" in stand_in.stderr


def test_wheels_unpack_without_pip(tmp_path):
    wheel = fake_wheel(tmp_path, "topbc-fake-pkg")
    gpu_wheels._unpack(wheel, tmp_path / "site")
    assert imports(tmp_path / "site", "import topbc_fake_pkg; assert topbc_fake_pkg.VALUE == 42").returncode == 0
