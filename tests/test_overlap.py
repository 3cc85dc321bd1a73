"""Annotation with its stages overlapped (``pipeline.overlap``): the same output as one stage after the other,
failures recorded per episode in either stage, a crash resumed, memory bounded, and no sleeping in the product:
the only model that waits is the test stand-in ``tests.fixtures.wait_reward.WaitReward``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from configs import ConfigError, load_config
from data.manifest import load_manifest
from data.source import open_dataset
from pipeline.annotate import annotate
from pipeline.annotate.output import fingerprint
from pipeline.annotate.overlap import SideProcess, SideProcessError, run_stages
from tests.fixtures.annotate import annotate_cfg, raw_samples
from tests.fixtures.datasets import make_synthetic_dataset
from tests.fixtures.wait_reward import WaitReward

REPO = Path(__file__).resolve().parents[1]
LENGTHS = [12, 9, 14, 8, 11, 10]
ARGS = ("shards.max_count=30", "window.horizon=4", "progress_bar=false")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("ds") / "ds", episodes=len(LENGTHS), length=LENGTHS,
                                  fps=10, image_size=(32, 32), cameras=("top", "wrist"), seed=4)


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory):
    """Episode 2's video is not a video (its own file, holding garbage); the others are whole."""
    root = make_synthetic_dataset(tmp_path_factory.mktemp("bad") / "ds", episodes=5, length=[8, 9, 10, 8, 9],
                                  fps=10, image_size=(32, 32), cameras=("top",), seed=5)
    ep_file = next((root / "meta" / "episodes").rglob("*.parquet"))
    eps = pq.read_table(ep_file).to_pandas()
    eps.loc[eps.episode_index == 2, "videos/observation.images.top/file_index"] = 8
    eps.to_parquet(ep_file, index=False)
    (root / "videos" / "observation.images.top" / "chunk-000" / "file-008.mp4").write_bytes(b"\0garbage" * 200)
    return root


def _run(root, out, *overrides, reward=None, wait=0.004):
    reward = WaitReward(wait, prefix_every=3) if reward is None else reward
    return annotate(annotate_cfg(root, out, *ARGS, *overrides), reward=reward), reward


def _output(out: Path) -> dict:
    """What must not depend on the scheduling: shard names and bytes, and the manifest's per-episode entries,
    shards, totals and failures (the manifest has no timing fields; its config differs in pipeline.*)."""
    m = load_manifest(out)
    return {"shard_bytes": {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))},
            **{k: m[k] for k in ("episodes", "shards", "totals", "failures", "stats")}}


def test_overlapped_output_is_the_serial_output(dataset, tmp_path):
    serial, _ = _run(dataset, tmp_path / "serial", "pipeline.overlap=false", "plots=false")
    assert serial.ok and serial.episodes_ok == list(range(len(LENGTHS)))
    reference = _output(tmp_path / "serial")
    assert len(reference["shard_bytes"]) == 2, "max_count=30 rolls over after episode 2"
    for prefetch in (1, 3):
        out = tmp_path / f"overlap{prefetch}"
        res, reward = _run(dataset, out, "pipeline.overlap=true", f"pipeline.prefetch={prefetch}", "plots=false")
        assert res.ok and res.episodes_ok == serial.episodes_ok and res.frames == sum(LENGTHS)
        assert _output(out) == reference
        assert reward.prefixes == sum(len(reward.prefix_ends(n)) for n in LENGTHS)
    # the plots, drawn in the plotting process when overlapped, are all there
    out = tmp_path / "plots"
    res, _ = _run(dataset, out, "plots=true")
    assert res.ok and _output(out) == reference
    for i in range(len(LENGTHS)):
        assert (out / "plots" / f"episode_{i:06d}.png").stat().st_size > 1000
    assert not list((out / "plots").glob(".*")), "no temporary plot file is left"
    # negative control: the comparison sees one changed byte
    changed = dict(reference["shard_bytes"])
    name = next(iter(changed))
    changed[name] = changed[name][:-1] + bytes([changed[name][-1] ^ 1])
    assert {**reference, "shard_bytes": changed} != reference


def test_failures_in_each_stage_are_recorded_and_the_others_written_in_order(bad_dataset, tmp_path,
                                                                              monkeypatch):
    """Episode 2 fails to decode (its video is garbage), 3 fails in the model, 4 fails to encode; 0 and 1
    are written, in order, the same with and without overlap."""
    import pipeline.annotate.episode as episode

    class Flaky(WaitReward):
        def _score(self, ep):
            if ep.episode_index == 3:
                raise RuntimeError("device lost")
            return super()._score(ep)

    original = episode._encode

    def encode(ep, **kwargs):
        if ep.index == 4:
            raise ValueError("cannot encode this one")
        return original(ep, **kwargs)

    monkeypatch.setattr(episode, "_encode", encode)
    outputs = {}
    for overlap in ("false", "true"):
        out = tmp_path / overlap
        res, _ = _run(bad_dataset, out, f"pipeline.overlap={overlap}", "plots=false",
                      reward=Flaky(0.002, prefix_every=3))
        reasons = {f["episode_index"]: f["reason"] for f in res.failures}
        assert sorted(reasons) == [2, 3, 4] and res.episodes_ok == [0, 1]
        assert "cannot decode" in reasons[2] and "file-008.mp4" in reasons[2]
        assert reasons[3] == "episode 3: scoring failed: RuntimeError: device lost"
        assert reasons[4] == "episode 4: encoding failed: ValueError: cannot encode this one"
        m = load_manifest(out)
        assert [e["episode_index"] for e in m["episodes"]] == [0, 1]
        assert [f["episode_index"] for f in m["failures"]] == [2, 3, 4]
        keys = list(raw_samples(out))
        assert keys == sorted(keys) and {k[:6] for k in keys} == {"000000", "000001"}
        outputs[overlap] = _output(out)
    assert outputs["true"] == outputs["false"]


def test_a_crash_mid_run_resumes_to_the_uninterrupted_output(dataset, tmp_path):
    """A run stopped by an error that is not an episode's own (as a kill would stop it), overlapped: the
    shards committed before stay, the episodes scored and not yet written keep their cached scores (the
    model is not run on them again), and the resumed output is the serial run's."""
    assert _run(dataset, tmp_path / "ref", "pipeline.overlap=false", "plots=false")[0].ok

    class Crashing(WaitReward):
        def _score(self, ep):
            if ep.episode_index == 4:
                raise KeyboardInterrupt  # not an episode's failure: it stops the run
            return super()._score(ep)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _run(dataset, out, "plots=false", reward=Crashing(0.002, prefix_every=3))
    assert not list((out / "shards").glob(".*.tmp")), "no half-written shard is left"
    assert not [t for t in threading.enumerate() if t.name.startswith("annotate-")], "no stage thread is left"
    scored = sorted(int(p.stem[1:]) for p in (out / "journal" / "scores").iterdir())
    assert scored == [0, 1, 2, 3]
    # 0-2 fill the first shard (35 samples >= 30), committed; 3 was in the open shard, dropped
    assert [e["episode_index"] for line in (out / "journal" / "rank000.jsonl").read_text().splitlines()
            for e in json.loads(line)["episodes"]] == [0, 1, 2]
    again, reward = _run(dataset, out, "plots=false")
    assert again.ok and again.skipped == 3 and again.episodes_ok == [3, 4, 5]
    # episode 3 comes from the score cache: only 4 and 5 reach the model
    assert reward.prefixes == sum(len(reward.prefix_ends(LENGTHS[i])) for i in (4, 5))
    assert _output(out) == _output(tmp_path / "ref")


def test_overlap_is_the_default_and_its_keys_change_no_fingerprint(dataset, tmp_path):
    """The command line (and so the SIGKILL/resume test in test_annotate_slow.py) runs overlapped; a run may
    be resumed with the other setting, and outputs made before the keys existed keep their fingerprint."""
    cfg = load_config("annotate")
    assert cfg.pipeline.overlap is True and cfg.pipeline.prefetch == 2
    src = open_dataset(dataset)
    base = annotate_cfg(dataset, tmp_path / "o")
    fp = fingerprint(base, src, 1)["fingerprint"]
    assert fingerprint(annotate_cfg(dataset, tmp_path / "o", "pipeline.overlap=false", "pipeline.prefetch=5"),
                       src, 1)["fingerprint"] == fp
    without = base.copy()
    from omegaconf import OmegaConf

    OmegaConf.set_struct(without, False)
    del without["pipeline"]
    assert fingerprint(without, src, 1)["fingerprint"] == fp
    assert fingerprint(annotate_cfg(dataset, tmp_path / "o", "window.horizon=3"), src, 1)["fingerprint"] != fp
    out = tmp_path / "resumed"
    first, _ = _run(dataset, out, "pipeline.overlap=false", "plots=false", "dataset.episodes=[0,1]")
    with pytest.raises(Exception, match="dataset.episodes"):  # negative control: a real change is refused
        _run(dataset, out, "pipeline.overlap=true", "plots=false")
    again, _ = _run(dataset, out, "pipeline.overlap=true", "plots=false", "dataset.episodes=[0,1]")
    assert first.ok and again.ok and again.skipped == 2


@pytest.mark.parametrize("override, says", [("pipeline.prefetch=0", "pipeline.prefetch=0 must be an integer >= 1"),
                                            ("pipeline.overlap=maybe", "pipeline.overlap")])
def test_pipeline_keys_are_checked(dataset, tmp_path, override, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        _run(dataset, tmp_path / "o", override)


# ------------------------------------------------------------------------------------------------ run_stages
def _settle(count, target, timeout=30.0):
    """Wait until ``count()`` reaches ``target``, then a little longer (it must not pass it)."""
    t0 = time.time()
    while count() < target:
        assert time.time() - t0 < timeout, f"stuck at {count()} of {target}"
        time.sleep(0.01)
    time.sleep(0.3)
    return count()


@pytest.mark.parametrize("prefetch", [1, 2])
def test_memory_is_bounded_by_prefetch(prefetch):
    """A blocked model: ``prefetch`` episodes are decoded beyond the one it holds, no more. A blocked writer:
    ``prefetch`` scored episodes wait for it beyond the one it holds and the one the model hands over, and
    decoding stays ``prefetch`` ahead: ``2 * prefetch + 2`` episodes in memory at most."""
    decoded, scored, finished = [], [], []
    model_free, writer_free = threading.Event(), threading.Event()

    def decode(i):
        decoded.append(i)
        return i

    def score(i, d):
        if i == 0:
            model_free.wait(30)
        scored.append(i)
        return d

    def finish(i, s, error):
        if i == 0:
            writer_free.wait(30)
        finished.append(i)

    done = threading.Event()
    runner = threading.Thread(target=lambda: (run_stages(range(20), decode=decode, score=score, finish=finish,
                                                         prefetch=prefetch), done.set()))
    runner.start()
    try:
        assert _settle(lambda: len(decoded), prefetch + 1) == prefetch + 1 and scored == []
        model_free.set()
        assert _settle(lambda: len(scored), prefetch + 2) == prefetch + 2 and finished == []
        assert len(decoded) == 2 * prefetch + 2
    finally:
        model_free.set()
        writer_free.set()
        runner.join(30)
    assert done.is_set() and finished == list(range(20))


def test_stage_errors_keep_the_serial_semantics():
    """An episode's own error reaches finish; any other is raised where the serial loop would raise it,
    after the earlier items are finished; no thread is left behind."""
    class Own(ValueError):
        pass

    def run(fail_at, where, overlap):
        done = []

        def decode(i):
            if where == "decode" and i == fail_at:
                raise RuntimeError(f"decode bug at {i}")
            if i == 1:
                raise Own("unreadable")
            return i

        def score(i, d):
            if where == "score" and i == fail_at:
                raise KeyboardInterrupt
            return d

        def finish(i, scored, error):
            if where == "finish" and i == fail_at:
                raise OSError("disk full")
            done.append((i, scored, None if error is None else str(error)))

        try:
            run_stages(range(8), decode=decode, score=score, finish=finish, prefetch=2, overlap=overlap,
                       expected=(Own,))
        except BaseException as exc:  # noqa: BLE001
            return done, type(exc).__name__
        return done, None

    for where, fail_at, raised in [("decode", 5, "RuntimeError"), ("score", 4, "KeyboardInterrupt"),
                                   ("finish", 3, "OSError"), (None, None, None)]:
        serial = run(fail_at, where, False)
        overlapped = run(fail_at, where, True)
        assert overlapped == serial, where
        assert serial[1] == raised
        assert serial[0][1] == (1, None, "unreadable")
        assert [d[0] for d in serial[0]] == list(range(8 if where is None else fail_at))
    assert not [t for t in threading.enumerate() if t.name.startswith("annotate-")]


# ------------------------------------------------------------------------------------------------ side process
def test_side_process_runs_calls_in_order_and_reports_failures(tmp_path):
    worker = SideProcess(max_pending=2)
    for i in range(5):
        worker.submit(Path.write_text, tmp_path / f"{i}.txt", str(i))
    worker.close()
    assert sorted(p.read_text() for p in tmp_path.glob("*.txt")) == [str(i) for i in range(5)]
    worker = SideProcess(max_pending=1)
    worker.submit(int, "nope")
    with pytest.raises(SideProcessError, match=r"(?s)failed:.*ValueError: invalid literal"):
        worker.submit(int, "1")  # waits for the failed call first
    worker.abort()
    assert worker.proc.poll() is not None
    worker = SideProcess(max_pending=2)
    worker.submit(sys.exit, 3)
    with pytest.raises(SideProcessError, match="(?s)failed.*SystemExit"):
        worker.close()


def test_side_process_needs_no_main_guard(tmp_path):
    """A script calling annotate at top level (no ``if __name__ == "__main__"``) still plots: the worker does
    not re-import the caller's script, as multiprocessing's spawn would."""
    script = tmp_path / "unguarded.py"
    script.write_text("from pathlib import Path\n"
                      "from pipeline.annotate.overlap import SideProcess\n"
                      "w = SideProcess()\n"
                      f"w.submit(Path.write_text, Path({str(tmp_path / 'done.txt')!r}), 'ok')\n"
                      "w.close()\nprint('finished')\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("finished") == 1 and (tmp_path / "done.txt").read_text() == "ok"


# ------------------------------------------------------------------------------------------------ no sleeping
# every time.sleep outside tests/ and benchmarks/, with why it is there
SLEEP_ALLOWED = {
    "scripts/review_screenshot.py": "waits for a headless browser to render the page it screenshots",
}


def test_nothing_in_the_product_sleeps_and_the_wait_model_is_not_a_product_option():
    from pipeline.rewards.registry import REWARDS, RewardError, build_reward

    found = set()
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel.split("/")[0] in ("tests", "benchmarks", ".venv") or "/." in f"/{rel}":
            continue
        if re.search(r"\bsleep\(", path.read_text(encoding="utf-8")):
            found.add(rel)
    assert found == set(SLEEP_ALLOWED), f"sleeping outside tests/benchmarks: {sorted(found - set(SLEEP_ALLOWED))}"
    assert "pipeline/annotate/overlap.py" not in found and "pipeline/rewards/registry.py" not in found
    # the stand-in lives in tests/fixtures and is handed to annotate() as an object, never built from a config
    assert WaitReward.name not in REWARDS
    with pytest.raises(RewardError, match="unknown reward 'wait'"):
        build_reward({"name": "wait"})
    product = [p for p in REPO.rglob("*.py") if p.relative_to(REPO).parts[0] in ("pipeline", "data", "configs")]
    assert not [p for p in product if "wait_reward" in p.read_text(encoding="utf-8")]


# ------------------------------------------------------------------------------------------------ Ctrl-C
@pytest.mark.slow
def test_a_real_ctrl_c_mid_run_exits_130_leaves_no_worker_and_resumes(tmp_path):
    """SIGINT to the command's process group, as a terminal's Ctrl-C sends it, while it annotates overlapped
    with plots (so the plotting process runs): exit 130 with the resume hint and no traceback, no process or
    temporary shard left, and the same command finishes the rest."""
    import os
    import signal

    from pipeline.annotate.run import RESUME_HINT

    root = make_synthetic_dataset(tmp_path / "ds", episodes=30, length=60, fps=10, image_size=(96, 96),
                                  cameras=("top",), seed=6)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.annotate", f"dataset.root={root}", f"out={out}", "progress_bar=false",
           "shards.max_count=150"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    t0 = time.time()
    while len(list((out / "plots").glob("episode_*.png"))) < 3:
        assert proc.poll() is None, f"finished before the interrupt: {proc.communicate()}"
        assert time.time() - t0 < 300, "no plot appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == RESUME_HINT
    assert "KeyboardInterrupt" not in err and "Traceback" not in err
    assert not list((out / "shards").glob(".*.tmp"))
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out) not in ps and "_serve(" not in ps, "a process of the run is left"
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "annotated" in again.stdout and "done earlier" in again.stdout
    assert len(load_manifest(out)["episodes"]) == 30
