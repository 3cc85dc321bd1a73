"""data.sampling=resample: samples kept with probability w / max w, the kept ones weighing alike (the same objective
as the loss weights in expectation, every sample of a batch training)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from configs import ConfigError
from data.batches import ShardDataModule
from data.manifest import load_manifest
from data.progress_table import fit_progress_table
from policies.run_weights import sample_weights
from policies.training import build, keep_probabilities, train
from tests.fixtures.bc import tiny_cfg
from tests.fixtures.shards import NO_RAW_SCORES, write_tiny_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("resample_shards"), episodes=4, length=16, obs_steps=2,
                             horizon=8, images=False)


def _episode_counts(dm, n: int = 1600) -> Counter:
    it = dm.stream().samples()
    return Counter(int(next(it)["episode_index"]) for _ in range(n))


def test_keep_probabilities_by_hand():
    keep = keep_probabilities([0, 0, 1], [0, 1, 0], [2.0, 1.0, 0.0])
    assert keep == {(0, 0): 1.0, (0, 1): 0.5, (1, 0): 0.0}
    with pytest.raises(ConfigError, match="every sample weighs 0"):
        keep_probabilities([0], [0], [0.0])


def test_the_stream_keeps_samples_in_proportion_to_their_weight(shards, tmp_path):
    needs = build(tiny_cfg(shards, tmp_path / "r", "act", "none", steps=1))[0].adapter.needs()
    frames = range(16)
    keep = {**{(e, f): 1.0 for e in (0, 1) for f in frames}, **{(e, f): 0.25 for e in (2, 3) for f in frames}}
    counts = _episode_counts(_data(shards, needs, keep))
    heavy, light = counts[0] + counts[1], counts[2] + counts[3]
    assert 3.0 < heavy / light < 5.3  # 4 : 1 expected (1600 draws)
    counts = _episode_counts(_data(shards, needs, None))  # control: no resampling, the episodes read alike
    assert 0.75 < (counts[0] + counts[1]) / (counts[2] + counts[3]) < 1.33


KEPT = """
import sys
from data.batches import ShardDataModule
from policies.training import build
from tests.fixtures.bc import tiny_cfg
shards, run = sys.argv[1], sys.argv[2]
needs = build(tiny_cfg(shards, run, "act", "none", steps=1))[0].adapter.needs()
dm = ShardDataModule(shards, needs, batch_size=8, num_workers=0, shuffle_buffer=50, verify=False)
dm.keep = {(e, f): 0.5 for e in range(4) for f in range(16)}
it = dm.stream().samples()
print([(int(s["episode_index"]), int(s["frame_index"])) for s in (next(it) for _ in range(40))])
"""


def test_the_samples_a_seed_keeps_are_the_same_in_every_process(shards, tmp_path):
    """Resampling draws from a stream of (seed, epoch, reader) alone: two processes with different string hashes
    (PYTHONHASHSEED) keep the same samples. Control: a generator seeded with Python's hash of a tuple holding a
    string — how the stream was seeded before — draws differently in the same two processes."""
    import os
    import subprocess
    import sys

    def run(code: str, hashseed: int, *args: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": str(hashseed)}
        return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parents[1]).stdout.strip()

    kept = [run(KEPT, h, str(shards), str(tmp_path / f"r{h}")) for h in (1, 2)]
    assert kept[0] == kept[1] and kept[0].count("(") == 40  # forty samples, the same forty
    old = "import random; print(random.Random(hash((0, 0, 0, 'keep')) & 0xFFFFFFFF).random())"
    assert run(old, 1) != run(old, 2)  # control: the hash-seeded stream is another in each process


def _data(shards, needs, keep):
    dm = ShardDataModule(shards, needs, batch_size=8, num_workers=0, shuffle_buffer=50, verify=False)
    dm.keep = keep
    return dm


def test_resample_under_a_rule_keeps_its_weights_and_trains_the_kept_alike(shards, tmp_path):
    extra = NO_RAW_SCORES
    module, dm, _ = build(tiny_cfg(shards, tmp_path / "a", "act", "episode_quality", *extra, steps=1))  # the default
    manifest = load_manifest(shards)
    table = fit_progress_table(shards, module.adapter.needs().future_actions, manifest)
    _, w = sample_weights(module, table, manifest)
    assert len(set(np.round(w, 6))) > 1  # the rule weighs samples differently here (else the test is vacuous)
    expected = {(int(e), int(f)): x / w.max() for e, f, x in zip(table.episode, table.frame, w, strict=True)}
    assert dm.keep == pytest.approx(expected)
    assert module.resampled and any("sampling=resample" in n for n in module.weight_notes)
    weight = {(int(e), int(f)): x for e, f, x in zip(table.episode, table.frame, w, strict=True)}

    def mean_read(data) -> float:
        it = data.stream().samples()
        return float(np.mean([weight[int(s["episode_index"]), int(s["frame_index"])]
                              for s in (next(it) for _ in range(600))]))

    # the kept samples lean to the heavy ones: E[w | kept] = E[w²] / E[w] > E[w] (control: read uniformly)
    assert mean_read(dm) == pytest.approx(float((w ** 2).mean() / w.mean()), rel=0.1)
    assert train(tiny_cfg(shards, tmp_path / "t", "act", "episode_quality", *extra, "data.sampling=resample",
                          steps=2)).steps == 2  # a run that resamples trains end to end
    usual, dm_usual, _ = build(tiny_cfg(shards, tmp_path / "b", "act", "episode_quality", *extra,
                                        "data.sampling=weights", steps=1))
    assert dm_usual.keep is None and not usual.resampled  # control: loss weights, read uniformly
    assert mean_read(dm_usual) == pytest.approx(float(w.mean()), rel=0.1)
    assert (w ** 2).mean() / w.mean() > 1.2 * w.mean()  # the two expectations differ beyond the tolerance


def test_resample_under_plain_bc_leaves_out_the_bad_and_an_unknown_sampling_is_refused(shards, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("episode_index,success\n1,failure\n")
    _, dm, _ = build(tiny_cfg(shards, tmp_path / "a", "act", "none", f"labels={labels}", "data.sampling=resample",
                              "data.skip_left_out=false", "calibrate=false", steps=1))
    assert {p for (e, _), p in dm.keep.items() if e == 1} == {0.0}
    assert {p for (e, _), p in dm.keep.items() if e != 1} == {1.0}
    assert 1 not in _episode_counts(dm, 300)
    # plain BC without labels: every sample weighs 1, nothing to resample (the shards are not read beforehand)
    module, dm, _ = build(tiny_cfg(shards, tmp_path / "b", "act", "none", steps=1))
    assert dm.keep is None and not module.resampled
    with pytest.raises(ConfigError, match="data.sampling='often': choose one of weights, resample"):
        build(tiny_cfg(shards, tmp_path / "c", "act", "none", "data.sampling=often", steps=1))


def test_episode_weights_read_the_progress_windows_once_and_resample_nothing(shards, tmp_path, monkeypatch):
    import policies.training as training

    reads = []
    real = training.fit_progress_table
    monkeypatch.setattr(training, "fit_progress_table", lambda *a, **k: reads.append(1) or real(*a, **k))
    labels = tmp_path / "labels.csv"
    labels.write_text("episode_index,success\n1,failure\n")
    cfg = tiny_cfg(shards, tmp_path / "a", "act", "episode_quality", *NO_RAW_SCORES, f"labels={labels}",
                   "calibrate=false", "data.sampling=resample", steps=1)
    rule, training_w, module = training.episode_weights(cfg)
    assert len(reads) == 1 and not module.resampled  # the corpus page's weights: one read, no keep map
    assert training_w[1] == 0.0 and rule[1] > 0.0  # the labelled failure: weighed by the rule, left out in training
    reads.clear()
    _, dm, _ = training.build(cfg)  # control: a training run under the same config reads once and resamples
    assert len(reads) == 1 and dm.keep is not None
