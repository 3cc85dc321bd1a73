"""pipeline.annotate on small synthetic LeRobot datasets: values round-trip, RA-BC parquet, bad inputs, reruns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from configs import ConfigError
from data.manifest import QUANTILES, build_manifest, compute_stats, image_histogram, load_manifest
from data.schema import windows
from data.source import open_dataset
from pipeline.annotate import OutputError
from pipeline.progress import minmax
from tests.fixtures.annotate import (
    annotate_cfg,
    decoded_samples,
    raw_samples,
    run_annotate,
    shard_episode_counts,
)
from tests.fixtures.datasets import make_synthetic_dataset, synthetic_episode
from tests.fixtures.shards import write_tiny_shards

LENGTHS = [12, 9, 15]
CAMS = ("top", "wrist")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("ds") / "ds", episodes=3, length=LENGTHS, fps=10,
                                  image_size=(32, 32), cameras=CAMS, seed=3)


@pytest.fixture(scope="module")
def png_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("png") / "out"
    result = run_annotate(dataset, out, "image.format=png", "window.obs_steps=2", "window.horizon=4",
                          "shards.max_count=20")
    return out, result


def _source(dataset):
    src = open_dataset(dataset)
    eps = src.episodes()
    data = {}
    for ep in eps:
        cols = src.read_columns(ep, ["observation.state", "action", "next.reward"])
        cols |= {cam: src.decode_frames(ep, cam) for cam in src.video_keys}
        data[ep.index] = cols
    return src, eps, data


def test_png_shards_decode_to_source_values(dataset, png_run):
    out, result = png_run
    assert result.ok and result.episodes_ok == [0, 1, 2]
    src, eps, data = _source(dataset)
    samples = decoded_samples(out)
    assert len(samples) == sum(LENGTHS)
    H, S = 4, 2
    for ep in eps:
        d = data[ep.index]
        progress = minmax(d["next.reward"][:, 0])
        for t in range(ep.length):
            s = samples[f"{ep.index:06d}_{t:06d}"]
            w = windows(t, ep.length, S, H)
            for cam in src.video_keys:  # PNG is lossless: exactly the decoded video frames
                np.testing.assert_array_equal(s[cam], d[cam][w.obs])
            np.testing.assert_array_equal(s["observation.state"], d["observation.state"][w.obs])
            np.testing.assert_array_equal(s["action"], d["action"][w.action])
            np.testing.assert_array_equal(s["progress"], progress[w.progress].astype(np.float32))
            # padding at the episode ends: explicit, independent of windows()
            np.testing.assert_array_equal(s["action_is_pad"], np.arange(t, t + H) >= ep.length)
            np.testing.assert_array_equal(s["obs_is_pad"], np.arange(t - S + 1, t + 1) < 0)
            assert s["meta"] == {"episode_index": ep.index, "frame_index": t, "index": ep.from_index + t,
                                 "task": ep.task, "fps": 10.0, "episode_length": ep.length}
        last = samples[f"{ep.index:06d}_{ep.length - 1:06d}"]
        np.testing.assert_array_equal(last["action"], np.repeat(d["action"][-1:], H, axis=0))
        assert last["progress"][0] == last["progress"][-1] == pytest.approx(1.0)  # min-max: ends at max
        first = samples[f"{ep.index:06d}_{0:06d}"]
        np.testing.assert_array_equal(first["observation.images.top"][0], first["observation.images.top"][1])
    # negative control: the check bites on a neighbouring frame and on another episode's actions
    s = samples["000001_000003"]
    assert not np.array_equal(s["observation.images.top"], data[1]["observation.images.top"][[3, 4]])
    assert not np.array_equal(s["action"], data[0]["action"][3:7])


def test_source_frames_are_the_synthetic_frames(dataset):
    src, eps, data = _source(dataset)
    ref = synthetic_episode(2, LENGTHS[2], (32, 32), CAMS, seed=3)
    err = np.abs(data[2]["observation.images.top"].astype(int) - ref["observation.images.top"]).mean()
    other = np.abs(data[2]["observation.images.top"][1:].astype(int) - ref["observation.images.top"][:-1]).mean()
    assert err < 6 < other  # video codec tolerance vs a one-frame shift
    np.testing.assert_array_equal(data[2]["action"], ref["action"])


def test_manifest_matches_shards(dataset, png_run):
    out, _ = png_run
    m = load_manifest(out)
    counts = shard_episode_counts(out)
    assert len(counts) >= 2, "max_count=20 should roll over"
    for s in m["shards"]:
        assert s["count"] == sum(counts[s["name"]].values())
        assert sorted(s["episodes"]) == sorted(counts[s["name"]])
    # roll-over only at episode boundaries: each episode lives whole in one shard
    where = {}
    for name, c in counts.items():
        for ep, n in c.items():
            assert ep not in where, f"episode {ep} split across shards"
            where[ep] = name
            assert n == LENGTHS[ep]
    assert {e["episode_index"]: e["shard"] for e in m["episodes"]} == where
    assert m["totals"]["samples"] == sum(LENGTHS) and m["failures"] == []
    assert m["window"] == {"obs_steps": 2, "horizon": 4} and m["image"]["format"] == "png"
    # lerobot stats fields, values of the source
    src, eps, data = _source(dataset)
    act = np.concatenate([data[i]["action"] for i in range(3)])
    st = m["stats"]["action"]
    np.testing.assert_allclose(st["mean"], act.mean(0), rtol=1e-5)
    np.testing.assert_allclose(st["q99"], np.quantile(act, 0.99, axis=0), rtol=1e-5)
    assert st["count"] == [len(act)]
    img = np.concatenate([data[i]["observation.images.wrist"] for i in range(3)]) / 255.0
    np.testing.assert_allclose(np.asarray(m["stats"]["observation.images.wrist"]["mean"]).ravel(),
                               img.reshape(-1, 3).mean(0), rtol=1e-6)
    assert np.asarray(m["stats"]["observation.images.wrist"]["std"]).shape == (3, 1, 1)
    # per-episode summaries
    for e in m["episodes"]:
        r = data[e["episode_index"]]["next.reward"][:, 0]
        np.testing.assert_allclose(e["raw_scores"], r, rtol=1e-6)
        assert e["success_score"] == pytest.approx(float(np.mean(r[-3:].astype(np.float64))))
        # the column reward against its own column: 1 by construction (a disagreeing ground truth: below)
        assert -1 <= e["voc"] <= 1 and e["voc_ground_truth"] == pytest.approx(1.0)
    # plots: a PNG per episode and the overview page naming them
    page = (out / "plots" / "index.html").read_text()
    for i in range(3):
        assert (out / "plots" / f"episode_{i:06d}.png").stat().st_size > 1000
        assert f"episode_{i:06d}.png" in page



def test_image_stats_from_histograms_are_the_exact_stats():
    """The manifest's image stats come from summed per-episode histograms: they equal the stats of all pixels."""
    rng = np.random.default_rng(0)
    eps = [rng.integers(0, 256, (n, 5, 7, 3), dtype=np.uint8) for n in (3, 4)]
    st = compute_stats({}, {"cam": np.sum([image_histogram(e) for e in eps], axis=0)})["cam"]
    x = np.concatenate(eps).reshape(-1, 3) / 255.0
    for k, f in [("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std)]:
        np.testing.assert_allclose(np.asarray(st[k]).ravel(), f(x, axis=0), rtol=0, atol=1e-12)
    for k, q in QUANTILES.items():
        np.testing.assert_allclose(np.asarray(st[k]).ravel(), np.quantile(x, q, axis=0, method="inverted_cdf"))
    assert np.asarray(st["mean"]).shape == (3, 1, 1) and st["count"] == [len(x)]
    assert compute_stats({"action": []}, {"cam": np.zeros((3, 256))}) == {}  # no data, no stats


def test_fixture_and_annotate_manifests_come_from_one_builder(png_run, tmp_path):
    fixture = load_manifest(write_tiny_shards(tmp_path / "tiny", episodes=2, length=5))
    assert list(fixture) == [k for k in load_manifest(png_run[0]) if k != "config"]
    assert [s["name"] for s in fixture["shards"]] == ["shards/r000-000000.tar", "shards/r000-000001.tar"]
    assert fixture["totals"] == {"episodes_ok": 2, "episodes_failed": 0, "samples": 10, "world_size": 1}
    with pytest.raises(ValueError, match=r"source lacks \['fps'\]"):
        build_manifest(source={k: fixture["source"][k] for k in fixture["source"] if k != "fps"}, reward={},
                       obs_steps=1, horizon=1, image_format="png", image_quality=95, camera=None, cameras=[],
                       ground_truth=None, features={}, stats={}, records=[], failures=[])

def test_voc_ground_truth_is_the_spearman_of_progress_and_the_ground_truth(dataset, tmp_path):
    """Ground truth = the first action dimension (the next x position), reward = next.reward: they disagree where
    an episode stalls or regresses, and the manifest's value is scipy's Spearman of the shards' progress and it."""
    from scipy.stats import spearmanr

    out = tmp_path / "out"
    run_annotate(dataset, out, "dataset.ground_truth=action", "window.obs_steps=1", "window.horizon=4",
                 "plots=false")
    src, eps, data = _source(dataset)
    samples = decoded_samples(out)
    m = load_manifest(out)
    assert [e["episode_index"] for e in m["episodes"]] == [0, 1, 2]
    for e in m["episodes"]:
        i = e["episode_index"]
        progress = np.array([samples[f"{i:06d}_{t:06d}"]["progress"][0] for t in range(LENGTHS[i])])
        expected = spearmanr(progress, data[i]["action"][:, 0]).statistic
        assert e["voc_ground_truth"] == pytest.approx(expected, abs=1e-6)  # torchmetrics: float32
        # negative control: against the reward's own column it would be 1 by construction; here it is not
        assert spearmanr(progress, data[i]["next.reward"][:, 0]).statistic == pytest.approx(1.0)
        assert e["voc_ground_truth"] < 0.95


def test_jpeg_frames_within_tolerance(dataset, tmp_path):
    out = tmp_path / "out"
    run_annotate(dataset, out, "image.format=jpg", "image.quality=95", "window.obs_steps=1", "plots=false")
    src, eps, data = _source(dataset)
    samples = decoded_samples(out)
    for ep in eps:
        frames = data[ep.index]["observation.images.top"]
        got = np.stack([samples[f"{ep.index:06d}_{t:06d}"]["observation.images.top"][0] for t in range(ep.length)])
        err = np.abs(got.astype(int) - frames).mean()
        shifted = np.abs(got[1:].astype(int) - frames[:-1]).mean()
        assert err < 3.0 < shifted


def test_progress_parquet_gives_lerobot_rabc_weights(dataset, png_run):
    from lerobot.rewards.sarm.rabc import RABCWeights

    out, _ = png_run
    df = pd.read_parquet(out / "progress.parquet")
    assert list(df.columns) == ["index", "episode_index", "frame_index", "progress_sparse"]
    src, eps, data = _source(dataset)
    chunk = 5
    rabc = RABCWeights(out / "progress.parquet", chunk_size=chunk, device="cpu")
    # the rule (TOPREWARD.md, rabc) on the known progress curves, computed here independently
    deltas, index = [], []
    for ep in eps:
        p = minmax(data[ep.index]["next.reward"][:, 0]).astype(np.float32)
        for t in range(ep.length):
            deltas.append(float(p[min(t + chunk, ep.length - 1)]) - float(p[t]))
            index.append(ep.from_index + t)
    d = np.asarray(deltas)
    mu, sigma, eps_ = max(d.mean(), 0.0), max(d.std(), 1e-6), 1e-6
    soft = np.clip((d - (mu - 2 * sigma)) / (4 * sigma + eps_), 0, 1)
    expected = np.where(d > 0.01, 1.0, np.where(d >= 0, soft, 0.0))
    assert (expected == 0).any() and (expected == 1).any(), "the curve should exercise both branches"
    weights, _ = rabc.compute_batch_weights({"index": np.asarray(index)})
    expected_norm = expected * len(expected) / (expected.sum() + 1e-6)
    np.testing.assert_allclose(weights.numpy(), expected_norm, rtol=1e-4, atol=1e-5)
    # negative control: time-reversed progress gives different weights
    flipped = df.copy()
    flipped["progress_sparse"] = 1 - flipped["progress_sparse"]
    flipped.to_parquet(out.parent / "flipped.parquet")
    w2, _ = RABCWeights(out.parent / "flipped.parquet", chunk_size=chunk, device="cpu").compute_batch_weights(
        {"index": np.asarray(index)})
    assert not np.allclose(w2.numpy(), expected_norm, atol=1e-3)


def test_rerun_skips_done_refuses_other_config_and_overwrite_restarts(dataset, png_run, tmp_path):
    out = tmp_path / "out"
    first = run_annotate(dataset, out, "plots=false", "shards.max_count=20")
    before = raw_samples(out)
    again = run_annotate(dataset, out, "plots=false", "shards.max_count=20")
    assert again.skipped == 3 and again.model_seconds == 0.0 and first.ok and again.ok
    assert raw_samples(out) == before
    with pytest.raises(OutputError, match=r"window\.horizon: 16 -> 8.*overwrite=true"):
        run_annotate(dataset, out, "plots=false", "shards.max_count=20", "window.horizon=8")
    assert raw_samples(out) == before  # refused: nothing touched
    redo = run_annotate(dataset, out, "plots=false", "shards.max_count=20", "window.horizon=8", "overwrite=true")
    assert redo.skipped == 0 and load_manifest(out)["window"]["horizon"] == 8
    assert next(iter(decoded_samples(out).values()))["action"].shape[0] == 8
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        run_annotate(dataset, foreign, "plots=false")


def test_config_errors_name_the_choices(dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"'nope'.*next\.reward"):
        run_annotate(dataset, tmp_path / "a", "reward.column=nope")
    with pytest.raises(ValueError, match=r"'side'.*observation\.images\.top"):
        run_annotate(dataset, tmp_path / "b", "dataset.camera=side")
    from configs import load_config
    from pipeline.annotate import annotate

    with pytest.raises(ConfigError, match="dataset.root"):
        annotate(load_config("annotate", [f"out={tmp_path / 'c'}"]))
    with pytest.raises(ConfigError, match="window.horizon=0"):
        annotate(annotate_cfg(dataset, tmp_path / "d", "window.horizon=0"))
    with pytest.raises(ConfigError, match="devices=2.*python -m pipeline.annotate"):
        annotate(annotate_cfg(dataset, tmp_path / "e", "devices=2"))


# ---------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory):
    """7 episodes: 0 and 6 good, 1 missing video file, 2 unreadable video, 3 one frame, 4 NaN action,
    5 no task."""
    import pyarrow.parquet as pq

    root = make_synthetic_dataset(tmp_path_factory.mktemp("bad") / "ds", episodes=7, length=[8, 8, 8, 1, 8, 8, 8],
                                  fps=10, image_size=(32, 32), cameras=("top",), seed=1)
    ep_file = next((root / "meta" / "episodes").rglob("*.parquet"))
    eps = pq.read_table(ep_file).to_pandas()
    key = "videos/observation.images.top/file_index"
    eps.loc[eps.episode_index == 1, key] = 7
    eps.loc[eps.episode_index == 2, key] = 8
    eps["tasks"] = [list(t) if i != 5 else [] for i, t in zip(eps.episode_index, eps.tasks, strict=True)]
    eps.to_parquet(ep_file, index=False)
    bad = root / "videos" / "observation.images.top" / "chunk-000" / "file-008.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    data_file = next((root / "data").rglob("*.parquet"))
    data = pq.read_table(data_file).to_pandas()
    rows = data.index[data.episode_index == 4]
    data.at[rows[3], "action"] = np.array([np.nan, 0, 0, 0], dtype=np.float32)
    data.to_parquet(data_file, index=False)
    return root


def test_bad_inputs_fail_alone_and_good_episodes_are_kept(bad_dataset, tmp_path, capsys):
    from pipeline.annotate import main

    out = tmp_path / "out"
    rc = main([f"dataset.root={bad_dataset}", f"out={out}", "progress_bar=false", "plots=false"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "failed episodes: 1, 2, 3, 4, 5" in err
    m = load_manifest(out)
    reasons = {f["episode_index"]: f["reason"] for f in m["failures"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "file-007.mp4" in reasons[1] and "missing" in reasons[1]
    assert "cannot decode" in reasons[2] and "file-008.mp4" in reasons[2]
    assert "1 frame" in reasons[3]
    assert "action has NaN/inf at frames [3]" in reasons[4]
    assert "no task" in reasons[5] and "dataset.task_default" in reasons[5]
    keys = raw_samples(out)
    assert {k.split("_")[0] for k in keys} == {"000000", "000006"} and len(keys) == 16
    assert [e["episode_index"] for e in m["episodes"]] == [0, 6]
    pq_eps = set(pd.read_parquet(out / "progress.parquet").episode_index)
    assert pq_eps == {0, 6}
    # the hint followed: the same command again with a task default continues this run (not refused as a
    # different one), keeps episodes 0 and 6 as they are and rescues episode 5 only
    before = raw_samples(out)
    res = run_annotate(bad_dataset, out, "plots=false", "dataset.task_default=do the task")
    assert sorted(f["episode_index"] for f in res.failures) == [1, 2, 3, 4]
    after = raw_samples(out)
    assert {k: v for k, v in after.items() if not k.startswith("000005")} == before
    meta5 = decoded_samples(out)["000005_000000"]["meta"]
    assert meta5["task"] == "do the task"
    assert [e["episode_index"] for e in load_manifest(out)["episodes"]] == [0, 5, 6]
    # negative control: a key that does change the output is still refused
    with pytest.raises(OutputError, match=r"window\.horizon"):
        run_annotate(bad_dataset, out, "plots=false", "dataset.task_default=do the task", "window.horizon=8")


def test_summary_of_a_clean_run(dataset, tmp_path, capsys):
    from pipeline.annotate import main

    rc = main([f"dataset.root={dataset}", f"out={tmp_path / 'o'}", "progress_bar=false", "plots=false",
               "dataset.episodes=[1]"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "annotated 1 episodes (9 frames)" in text and "0 failed" in text
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["source"]["episodes"] == [1]


def test_a_model_error_fails_its_episode_only(dataset, tmp_path, monkeypatch):
    from pipeline.rewards.registry import ColumnReward

    original = ColumnReward._score

    def flaky(self, episode):
        if episode.num_frames == LENGTHS[1]:
            raise RuntimeError("out of memory")
        return original(self, episode)

    monkeypatch.setattr(ColumnReward, "_score", flaky)
    res = run_annotate(dataset, tmp_path / "o", "plots=false")
    assert res.failures == [{"episode_index": 1, "reason": "episode 1: scoring failed: RuntimeError: out of memory"}]
    assert res.episodes_ok == [0, 2] and {k[:6] for k in raw_samples(tmp_path / "o")} == {"000000", "000002"}
    # the fixed model then scores only what is missing
    monkeypatch.setattr(ColumnReward, "_score", original)
    again = run_annotate(dataset, tmp_path / "o", "plots=false")
    assert again.ok and again.skipped == 2 and again.episodes_ok == [1]  # this run's work
    m = load_manifest(tmp_path / "o")
    assert m["failures"] == [] and [e["episode_index"] for e in m["episodes"]] == [0, 1, 2]
    assert len(raw_samples(tmp_path / "o")) == sum(LENGTHS)


def test_cameras_stored_as_images_annotate_like_videos(tmp_path):
    """A dataset made with lerobot's ``use_videos=False`` (cameras as PNG images in the parquet files): the
    shards hold exactly the stored images, a camera can be named, and training finds the cameras as visual
    inputs in the manifest's features."""
    from lerobot.configs.types import FeatureType
    from lerobot.utils.feature_utils import dataset_to_policy_features

    from tests.fixtures.datasets import camera_key

    lengths, size = [6, 5], (16, 16)
    root = make_synthetic_dataset(tmp_path / "ds", episodes=2, length=lengths, fps=10, image_size=size,
                                  cameras=CAMS, seed=5, use_videos=False)
    out = tmp_path / "out"
    res = run_annotate(root, out, "image.format=png", "window.obs_steps=1", "window.horizon=2", "plots=false",
                       "dataset.camera=wrist")
    assert res.ok and res.episodes_ok == [0, 1]
    m = load_manifest(out)
    assert m["camera"] == camera_key("wrist") and m["cameras"] == [camera_key(c) for c in CAMS]
    samples = decoded_samples(out)
    for ep, n in enumerate(lengths):
        ref = synthetic_episode(ep, n, size, CAMS, seed=5)
        for cam in map(camera_key, CAMS):
            got = np.stack([samples[f"{ep:06d}_{t:06d}"][cam][0] for t in range(n)])
            np.testing.assert_array_equal(got, ref[cam])  # PNG in, PNG out: exact
            # negative control: a one-frame shift is seen
            assert not np.array_equal(got[1:], ref[cam][:-1])
    pf = dataset_to_policy_features({k: {**v, "shape": tuple(v["shape"])} for k, v in m["features"].items()})
    for cam in map(camera_key, CAMS):
        assert pf[cam].type is FeatureType.VISUAL and pf[cam].shape == (3, *size)
        assert np.asarray(m["stats"][cam]["mean"]).shape == (3, 1, 1)
    src = open_dataset(root)
    assert src.video_keys == [] and src.camera_keys == [camera_key(c) for c in CAMS]


def test_a_truncated_or_missing_shard_is_rewritten_by_the_same_command(dataset, tmp_path, capsys):
    """The reader's advice for a truncated shard ("re-run pipeline.annotate to rewrite it") holds: the same
    command verifies the shards against the journal's sha256 and writes a damaged one again, byte for byte."""
    import hashlib

    from data.manifest import shard_counts, shard_paths
    from data.shards import ShardError, tar_samples
    from pipeline.annotate import main

    out = tmp_path / "out"
    cmd = [f"dataset.root={dataset}", f"out={out}", "progress_bar=false", "plots=false", "shards.max_count=20",
           "image.format=png"]
    assert main(cmd) == 0
    m = load_manifest(out)
    originals = {s["name"]: (out / s["name"]).read_bytes() for s in m["shards"]}
    assert len(originals) >= 2
    for s in m["shards"]:  # the manifest records each shard's checksum
        assert s["sha256"] == hashlib.sha256(originals[s["name"]]).hexdigest()
    capsys.readouterr()
    # negative control: an intact output is left as it is
    assert main(cmd) == 0 and "repaired" not in capsys.readouterr().out
    first, second = sorted(originals)[:2]
    (out / first).write_bytes(originals[first][: len(originals[first]) // 2])
    with pytest.raises(ShardError, match="re-run pipeline.annotate to rewrite it"):
        list(tar_samples(shard_paths(out, m), counts=shard_counts(out, m)))
    (out / second).unlink()
    assert main(cmd) == 0
    text = capsys.readouterr().out
    assert f"repaired {first} (" in text and f"repaired {second} (missing)" in text
    assert "3 done earlier" not in text
    for name, data in originals.items():
        assert (out / name).read_bytes() == data, f"{name} differs from the original"
    assert load_manifest(out)["shards"] == m["shards"] and load_manifest(out)["episodes"] == m["episodes"]
    # a shard altered in place (same length) is caught by its checksum
    data = bytearray(originals[first])
    data[len(data) // 2] ^= 0xFF
    (out / first).write_bytes(bytes(data))
    assert main(cmd) == 0 and f"repaired {first} (" in capsys.readouterr().out
    assert (out / first).read_bytes() == originals[first]
