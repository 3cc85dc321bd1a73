"""Real processes: SIGKILL mid-run then resume, and 2-process (gloo) annotation, against a 1-process run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.manifest import load_manifest
from data.shards import iter_shard, journal_path
from tests.fixtures.annotate import raw_samples, run_annotate, shard_episode_counts
from tests.fixtures.datasets import make_synthetic_dataset

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
EPISODES, LENGTH = 12, 20
ARGS = ["shards.max_count=30", "window.horizon=5", "window.obs_steps=2", "progress_bar=false"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("slow") / "ds", episodes=EPISODES, length=LENGTH,
                                  fps=10, image_size=(64, 64), cameras=("top", "wrist"), seed=7)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert run_annotate(dataset, out, *ARGS).ok
    return out


def _cmd(dataset, out, *extra):
    return [sys.executable, "-m", "pipeline.annotate", f"dataset.root={dataset}", f"out={out}", *ARGS, *extra]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def _check_visible_shards_complete(out: Path) -> None:
    for p in (out / "shards").glob("*.tar"):
        counts: dict[int, int] = {}
        for s in iter_shard(p):  # raises on a truncated tar
            ep = int(s["__key__"].split("_")[0])
            counts[ep] = counts.get(ep, 0) + 1
        assert counts and all(n == LENGTH for n in counts.values()), f"{p.name} holds a partial episode {counts}"


def _kill_when(out: Path, proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, f"finished before the kill point: {proc.communicate()}"
        assert time.time() - t0 < timeout, "kill point never reached"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _scored(out: Path) -> int:
    d = out / "journal" / "scores"
    return len(list(d.iterdir())) if d.exists() else 0


def _journaled(out: Path) -> int:
    p = journal_path(out, 0)
    return len(p.read_text().splitlines()) if p.exists() else 0


def test_sigkill_then_rerun_gives_the_uninterrupted_output(dataset, reference, tmp_path):
    out = tmp_path / "out"
    kill_points = [lambda: _scored(out) >= 3,  # inside the first shard
                   lambda: _journaled(out) >= 2 and _scored(out) >= 7]  # after a commit, mid-shard
    for ready in kill_points:
        proc = subprocess.Popen(_cmd(dataset, out), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        _kill_when(out, proc, ready)
        assert proc.returncode == -signal.SIGKILL
        assert not (out / "manifest.json").exists()
        _check_visible_shards_complete(out)
    done_before = {e["episode_index"] for line in journal_path(out, 0).read_text().splitlines() if line.strip()
                   for e in json.loads(line)["episodes"]}
    assert done_before, "the second kill should come after at least one committed shard"
    final = subprocess.run(_cmd(dataset, out), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert f"; {len(done_before)} done earlier)" in final.stdout  # journaled episodes are not redone
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(
        p.name for p in (reference / "shards").iterdir())
    assert raw_samples(out) == raw_samples(reference)
    for name in os.listdir(reference / "shards"):
        assert (out / "shards" / name).read_bytes() == (reference / "shards" / name).read_bytes()
    m, ref_m = load_manifest(out), load_manifest(reference)
    assert m["shards"] == ref_m["shards"] and m["episodes"] == ref_m["episodes"]
    # negative control: the comparison sees a missing episode
    partial = raw_samples(reference)
    partial.pop(next(iter(partial)))
    assert raw_samples(out) != partial


def test_two_processes_give_the_same_samples_as_one(dataset, reference, tmp_path):
    out = tmp_path / "out2"
    proc = subprocess.run(_cmd(dataset, out, "devices=2", "accelerator=cpu"), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = load_manifest(out)
    assert m["totals"]["world_size"] == 2 and m["totals"]["samples"] == EPISODES * LENGTH
    names = [s["name"] for s in m["shards"]]
    assert any(n.startswith("shards/r000-") for n in names) and any(n.startswith("shards/r001-") for n in names)
    counts = shard_episode_counts(out)
    rank1_eps = {ep for n, c in counts.items() if "/r001-" in n for ep in c}
    assert rank1_eps == set(range(1, EPISODES, 2))
    two, one = raw_samples(out), raw_samples(reference)
    assert two.keys() == one.keys() and two == one
    def no_shard(eps):
        return [{k: v for k, v in e.items() if k != "shard"} for e in eps]

    assert no_shard(m["episodes"]) == no_shard(load_manifest(reference)["episodes"])
    assert m["stats"] == load_manifest(reference)["stats"]
