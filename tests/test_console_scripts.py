"""The console scripts (``[project.scripts]``: ``topbc-train`` ...) are the README's commands: each resolves to the
function its ``python -m`` form runs, and answers ``--help``; the installed metadata lists every one of them."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# the `python -m` (or script) form of each: the same function runs
MODULE_FORMS = {"topbc-annotate": "pipeline.annotate", "topbc-report": "pipeline.report", "topbc-train": "train",
                "topbc-export": "policies.export", "topbc-evaluate": "policies.evaluate",
                "topbc-review": "policies.review", "topbc-plan": "policies.plan", "topbc-corpus": "data.demo"}


def test_every_script_is_a_readme_command_and_installed():
    assert set(SCRIPTS) == set(MODULE_FORMS)
    installed = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("topbc-")}
    assert installed == SCRIPTS, "reinstall (scripts/bootstrap.sh) after changing [project.scripts]"
    for name, target in SCRIPTS.items():
        module, func = target.split(":")
        fn = getattr(importlib.import_module(module), func)
        form = importlib.import_module(MODULE_FORMS[name])
        main = getattr(form, "main", None) or importlib.import_module(MODULE_FORMS[name] + ".__main__").main
        assert fn is main, f"{name} runs {target}, not what python -m {MODULE_FORMS[name]} runs"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_script_answers_help(name):
    module, func = SCRIPTS[name].split(":")
    proc = subprocess.run([sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}(['--help']))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert len(proc.stdout) > 100 and "Traceback" not in proc.stderr
