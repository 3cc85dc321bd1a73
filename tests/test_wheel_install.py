"""Installed as users install it: a wheel built from the repository (``pip wheel --no-deps .``) into a fresh
virtual environment (reusing the installed dependencies), then, from a folder outside the repository, every
console script's ``--help`` and a tiny corpus → annotate → train → evaluate through the console scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd[:3]} exited {proc.returncode}: {proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_repository(tmp_path):
    # built from a copy of the sources, so the build leaves nothing in the checkout
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "outputs", "build", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", ".ruff_cache"))
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
         str(src)], cwd=tmp_path)
    (wheel,) = wheels.glob("topbc-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    site = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # the dependencies as installed here (a path entry: their .pth files, the editable topbc's among them, stay off)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q",
         str(wheel)], cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(MUJOCO_GL="egl", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    work = tmp_path / "work"  # nothing of the repository here
    work.mkdir()
    where = run([str(venv / "bin" / "python"), "-c", "import configs, train; print(configs.__file__, train.__file__)"],
                cwd=work, env=env).stdout
    assert str(ROOT) not in where and str(site) in where  # the installed copy, not the checkout
    for name in SCRIPTS:
        out = run([str(venv / "bin" / name), "--help"], cwd=work, env=env).stdout
        assert len(out) > 100, name
    bin_ = venv / "bin"
    run([str(bin_ / "topbc-corpus"), "out=corpus", "episodes=4", "episode_length=40", "camera=null",
         "environment_state=true"], cwd=work, env=env)
    run([str(bin_ / "topbc-annotate"), "dataset.root=corpus", "out=ann", "reward=vlm_errors",
         "reward.profile=qwen3vl_8b_like", "window.horizon=8", "plots=false", "progress_bar=false"],
        cwd=work, env=env)
    run([str(bin_ / "topbc-train"), "data.shards=ann", "out=run", "policy=act", "debug=tiny_act",
         "weighting=episode_quality", "trainer.max_steps=2", "trainer.progress_bar=false"], cwd=work, env=env)
    run([str(bin_ / "topbc-evaluate"), "policy=run/export", "out=ev", "episodes=1", "max_steps=5", "videos=0"],
        cwd=work, env=env)
    assert (work / "ev" / "eval.json").is_file() and (work / "run" / "export" / "config.json").is_file()
