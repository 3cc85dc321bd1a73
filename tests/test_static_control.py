"""The static-video control (``control.static``, ``control.debias``, ``reward.control_column``), its report
section, and the instruction map (``instructions``), on the tiny offline Qwen3-VL and synthetic datasets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from configs import ConfigError
from data.manifest import PROGRESS_PARQUET, load_manifest
from data.source import open_dataset
from pipeline.annotate import OutputError
from pipeline.annotate.episode import EpisodeError, annotate_episode, make_plan
from pipeline.annotate.output import scores_path
from pipeline.progress import PrefixScores, minmax
from pipeline.report import write_report
from pipeline.rewards.registry import ColumnReward, EpisodeInput, RewardError, build_reward
from pipeline.rewards.topreward import TOPRewardScorer
from tests.fixtures.annotate import annotate_cfg, decoded_samples, make_dataset_with_columns, run_annotate
from tests.fixtures.datasets import TASKS, make_synthetic_dataset

CAM = "observation.images.top"
MAPPED = "push the red block all the way to the green goal"  # the instruction shown for TASKS[0]
TOL = 1e-4  # one pass vs one forward per prefix, float32 (as in test_topreward)


def frame_progress(out, episode_index: int, length: int) -> np.ndarray:
    samples = decoded_samples(out)
    return np.array([samples[f"{episode_index:06d}_{t:06d}"]["progress"][0] for t in range(length)])


# ------------------------------------------------------------------- topreward: control, instructions
@pytest.fixture(scope="module")
def vlm_run(tmp_path_factory, tiny_vlm_dir):
    root = tmp_path_factory.mktemp("static_vlm")
    ds = make_synthetic_dataset(root / "ds", episodes=2, length=[16, 11], fps=4, image_size=(32, 32),
                                cameras=("top",), seed=5)
    out = root / "out"
    result = run_annotate(ds, out, "reward=topreward", f"reward.model={tiny_vlm_dir}", "reward.sample_fps=4",
                          "window.horizon=3", "window.obs_steps=1", "plots=false", "control.static=true",
                          f'instructions={{"{TASKS[0]}": "{MAPPED}"}}')
    assert result.ok, result.failures
    scorer = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0)
    return ds, out, scorer


def test_control_equals_the_static_video_scored_on_its_own(vlm_run):
    ds, out, scorer = vlm_run
    m = load_manifest(out)
    assert m["control"] == {"static": True, "debias": False, "progress_from": "raw"}
    src = open_dataset(ds)
    for ep, e in zip(src.episodes(), m["episodes"], strict=True):
        frames = src.decode_frames(ep, CAM)
        held = np.repeat(frames[:1], len(frames), axis=0)  # built here, not through EpisodeInput.static
        ref = scorer.score(held, src.fps, e["instruction"], mode="naive")
        assert e["control_prefix_ends"] == e["prefix_ends"] == ref.prefix_ends.tolist()
        assert np.max(np.abs(np.asarray(e["control_raw_scores"]) - ref.raw)) <= TOL
        # negative control: the static video scores differently from the real one, or the check proves little
        assert np.max(np.abs(np.asarray(e["control_raw_scores"]) - np.asarray(e["raw_scores"]))) > 10 * TOL
        assert e["progress_from"] == "raw"
        # without debias the shards' progress is the raw scores' min-max, as without the control
        p = scorer.score(frames, src.fps, e["instruction"]).frame_progress()
        np.testing.assert_allclose(frame_progress(out, ep.index, ep.length), p, atol=1e-6)


def test_instruction_map_reaches_the_prompt(vlm_run):
    ds, out, scorer = vlm_run
    m = load_manifest(out)
    assert m["reward"]["instructions"] == m["config"]["instructions"] == {TASKS[0]: MAPPED}
    assert "instructions_unused" not in m["reward"]
    src = open_dataset(ds)
    for ep, e in zip(src.episodes(), m["episodes"], strict=True):
        assert e["task"] == ep.task
        frames = src.decode_frames(ep, CAM)
        if ep.task == TASKS[0]:
            assert e["instruction"] == MAPPED
            np.testing.assert_allclose(e["raw_scores"], scorer.score(frames, src.fps, MAPPED).raw, atol=1e-6)
            # negative control: the dataset's own task string would have scored differently
            assert not np.allclose(e["raw_scores"], scorer.score(frames, src.fps, ep.task).raw, atol=TOL)
        else:  # an unmapped task is shown as is
            assert e["instruction"] == ep.task
            np.testing.assert_allclose(e["raw_scores"], scorer.score(frames, src.fps, ep.task).raw, atol=1e-6)
    assert {s["meta"]["task"] for s in decoded_samples(out).values()} == set(TASKS)  # shards keep the task


def test_report_static_voc_against_scipy(vlm_run):
    _, out, _ = vlm_run
    m = load_manifest(out)
    r = write_report(out, labels="none")
    c = r["control"]
    stat, real = [], []
    for e, row in zip(m["episodes"], c["per_episode"], strict=True):
        s = spearmanr(e["control_raw_scores"], np.arange(len(e["control_raw_scores"]))).statistic
        g = spearmanr(e["raw_scores"], np.arange(len(e["raw_scores"]))).statistic
        # torchmetrics' Spearman carries a ~1e-6 epsilon
        assert row["static_voc"] == pytest.approx(s, abs=1e-5)
        assert row["real_voc"] == pytest.approx(g, abs=1e-5)
        steps = np.diff(e["control_raw_scores"])
        assert row["static_rising"] == pytest.approx(np.mean(steps > 0))
        assert row["gap_final"] == pytest.approx(e["raw_scores"][-1] - e["control_raw_scores"][-1])
        gaps = np.subtract(e["raw_scores"], e["control_raw_scores"])
        assert row["gap_mean"] == pytest.approx(np.mean(gaps))
        assert len(steps) >= 4, "too few prefixes for the Spearman comparison to mean much"
        stat.append(s)
        real.append(g)
    assert c["static_voc"]["mean"] == pytest.approx(np.mean(stat), abs=1e-5)
    assert c["static_voc"]["median"] == pytest.approx(np.median(stat), abs=1e-5)
    assert c["verdict_static_voc"] == pytest.approx(np.median(stat), abs=1e-5)
    saved = json.loads((out / "report" / "report.json").read_text())
    assert saved["control"]["verdict"] == c["verdict"] and "control_curves" in saved["plots"]
    assert (out / "report" / "control_curves.png").stat().st_size > 0
    assert "## Static-video control" in (out / "report" / "report.md").read_text()


def test_score_static_is_the_held_episode(vlm_run, tiny_vlm_dir):
    """TOPReward's control goes through the default RewardModel.score_static: the held first frame."""
    ds, _, scorer = vlm_run
    reward = build_reward({"name": "topreward", "model": str(tiny_vlm_dir), "sample_fps": 4.0}, device="cpu")
    src = open_dataset(ds)
    ep = src.episodes()[1]
    frames = src.decode_frames(ep, CAM)
    episode = EpisodeInput(fps=src.fps, instruction=ep.task, num_frames=ep.length, frames=frames)
    got = reward.score_static(episode)
    ref = scorer.score(np.repeat(frames[:1], len(frames), axis=0), src.fps, ep.task, mode="naive")
    assert np.max(np.abs(got.raw - ref.raw)) <= TOL


# ------------------------------------------------------------------- column: control_column, debias
@pytest.fixture(scope="module")
def column_dataset(tmp_path_factory):
    def columns(ep, arrays):
        n = len(arrays["next.reward"])
        rng = np.random.default_rng(ep)
        return {"static.ramp": np.linspace(0.0, 1.0, n),  # a control that climbs with elapsed time
                "static.flat": np.full(n, -3.0),  # a control that does not
                "static.noise": np.linspace(0.0, 0.5, n) + rng.normal(0, 0.2, n)}

    return make_dataset_with_columns(tmp_path_factory.mktemp("static_col") / "ds", columns, episodes=3,
                                     length=[14, 10, 12], seed=2)


def test_column_control_lands_in_the_manifest_and_debiases_progress(column_dataset, tmp_path):
    src = open_dataset(column_dataset)
    eps = src.episodes()
    cols = {ep.index: src.read_columns(ep, ["next.reward", "static.noise"]) for ep in eps}
    runs = {}
    for name, debias in [("raw", "false"), ("debiased", "true")]:
        out = tmp_path / name
        assert run_annotate(column_dataset, out, "window.horizon=4", "plots=false", "control.static=true",
                            f"control.debias={debias}", "reward.control_column=static.noise").ok
        runs[name] = out
    m = load_manifest(runs["debiased"])
    assert m["control"] == {"static": True, "debias": True, "progress_from": "raw-control"}
    assert m["reward"]["control_column"] == "static.noise"
    parquet = pd.read_parquet(runs["debiased"] / PROGRESS_PARQUET)
    for ep, e in zip(eps, m["episodes"], strict=True):
        raw, control = cols[ep.index]["next.reward"][:, 0], cols[ep.index]["static.noise"][:, 0]
        np.testing.assert_allclose(e["control_raw_scores"], control, rtol=1e-6)
        np.testing.assert_allclose(e["raw_scores"], raw, rtol=1e-6)
        assert e["progress_from"] == "raw-control"
        expected = minmax(raw.astype(np.float64) - control)  # by hand: one prefix per frame
        got = frame_progress(runs["debiased"], ep.index, ep.length)
        np.testing.assert_allclose(got, expected, atol=1e-6)
        in_parquet = parquet[parquet.episode_index == ep.index].progress_sparse
        np.testing.assert_allclose(in_parquet, expected, atol=1e-6)
        assert e["success_score"] == pytest.approx(np.mean(raw[-3:]))  # the real video's, not the difference
        # negative control: without debias the progress is the raw column's, which differs
        plain = frame_progress(runs["raw"], ep.index, ep.length)
        np.testing.assert_allclose(plain, minmax(raw.astype(np.float64)), atol=1e-6)
        assert np.max(np.abs(plain - expected)) > 0.05


@pytest.mark.parametrize("column, elapsed", [("static.ramp", True), ("static.flat", False)])
def test_verdict_says_elapsed_time_only_for_a_climbing_control(column_dataset, tmp_path, column, elapsed):
    out = tmp_path / "out"
    assert run_annotate(column_dataset, out, "window.horizon=4", "plots=false", "control.static=true",
                        f"reward.control_column={column}").ok
    r = write_report(out, labels="none")
    assert ("mostly elapsed time" in r["control"]["verdict"]) is elapsed
    if elapsed:
        assert r["control"]["static_voc"]["median"] == pytest.approx(1.0)
        assert r["control"]["static_rising_mean"] == pytest.approx(1.0)
    else:
        assert r["control"]["verdict"].startswith("the static video does not climb")
        assert r["control"]["static_flat"] == 3 and r["control"]["static_rising_mean"] == 0.0


def test_no_control_leaves_the_report_unchanged(column_dataset, tmp_path):
    out = tmp_path / "out"
    assert run_annotate(column_dataset, out, "window.horizon=4", "plots=false").ok
    m = load_manifest(out)
    assert "control" not in m
    assert not any("control_raw_scores" in e or "instruction" in e for e in m["episodes"])
    r = write_report(out, labels="none")
    assert "control" not in r and "control_curves" not in r["plots"]
    assert "Static-video control" not in (out / "report" / "report.md").read_text()


def test_cached_scores_cover_the_control(column_dataset, tmp_path):
    out = tmp_path / "out"
    overrides = ("window.horizon=4", "plots=false", "control.static=true",
                 "reward.control_column=static.noise")
    assert run_annotate(column_dataset, out, *overrides).ok
    m = load_manifest(out)
    cfg = annotate_cfg(column_dataset, out, *overrides)
    src = open_dataset(column_dataset)
    ep = src.episodes()[0]

    class Unavailable(ColumnReward):
        """Scores nothing: an episode it annotates must come from the cache."""

        def _score(self, episode):
            raise RuntimeError("the model is not available")

    reward = Unavailable("next.reward", "static.noise")
    plan = make_plan(cfg, src, reward)
    cache = scores_path(out, ep.index)
    assert json.loads(cache.read_text())["control"]["raw"] == m["episodes"][0]["control_raw_scores"]
    _, summary, _ = annotate_episode(ep, cfg=cfg, src=src, plan=plan, reward=reward, out=out)
    assert summary["control_raw_scores"] == m["episodes"][0]["control_raw_scores"]
    # a cache without the control is not used by a run that needs it: the episode is scored again
    d = json.loads(cache.read_text())
    del d["control"]
    cache.write_text(json.dumps(d))
    with pytest.raises(EpisodeError, match="not available"):
        annotate_episode(ep, cfg=cfg, src=src, plan=plan, reward=reward, out=out)


def test_control_options_are_fingerprinted_and_checked(column_dataset, tmp_path):
    out = tmp_path / "out"
    assert run_annotate(column_dataset, out, "window.horizon=4", "plots=false", "control.static=true",
                        "reward.control_column=static.flat").ok
    with pytest.raises(OutputError, match="control.static"):
        run_annotate(column_dataset, out, "window.horizon=4", "plots=false")
    with pytest.raises(ConfigError, match="reward.control_column=static.flat is read only with control.static=true"):
        run_annotate(column_dataset, tmp_path / "no_static", "reward.control_column=static.flat")
    with pytest.raises(ConfigError, match="reward.control_column"):
        run_annotate(column_dataset, tmp_path / "a", "control.static=true")
    with pytest.raises(ConfigError, match="control.debias=true needs control.static=true"):
        run_annotate(column_dataset, tmp_path / "b", "control.debias=true")
    with pytest.raises(ConfigError, match="instructions=.*mapping"):
        run_annotate(column_dataset, tmp_path / "c", "instructions=terse")
    with pytest.raises(RewardError, match="reward.control_column"):
        ColumnReward("next.reward").score_static(EpisodeInput(fps=4.0, instruction=None, num_frames=2))


def test_debiased_progress_skips_prefixes_either_video_lacks():
    """GVL leaves unparsable prefixes NaN, in the real video or the control: debiased progress skips both."""
    e = {"episode_index": 0, "length": 8, "prefix_ends": [2, 4, 6, 8], "raw_scores": [0.0, np.nan, 2.0, 3.0],
         "control_raw_scores": [0.0, 1.0, np.nan, 1.0], "control_prefix_ends": [2, 4, 6, 8],
         "progress_from": "raw-control"}
    s = PrefixScores.from_manifest_episode(e)
    np.testing.assert_allclose(s.progress, [0.0, np.nan, np.nan, 1.0])
    np.testing.assert_allclose(s.frame_progress(), [0, 0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    assert s.success_score == pytest.approx(np.mean([0.0, 2.0, 3.0]))  # the real video's scores only
    plain = PrefixScores.from_manifest_episode({**e, "progress_from": "raw"})
    np.testing.assert_allclose(plain.progress, [0.0, np.nan, 2 / 3, 1.0])
    with pytest.raises(ValueError, match="control's prefix ends"):
        PrefixScores.from_manifest_episode({**e, "control_prefix_ends": [1, 4, 6, 8]})
