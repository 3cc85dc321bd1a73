"""episode_quality's time to the top on the task's raw scale (``time_scale=dataset``) against the episode's own
scale, where a curve that starts at its maximum "reaches the top" at frame 0 (policies.weighting.advantage)."""

from __future__ import annotations

import numpy as np
import pytest

from data.progress_table import ProgressTable
from policies.weighting import WeightingError, fit_weighting_stats

T = 21
LO, HI = -5.0, 0.0  # the task's raw range: episode 0 spans it


def _corpus():
    """Episode 0 climbs to the top at the end, episode 1 halfway, episode 2 (a failure the reward model scores
    falling) starts at its own maximum, far below the task's top."""
    t = np.arange(T)
    levels = [t / (T - 1), np.clip(t / 10, 0.0, 1.0), 1.0 - t / (T - 1)]
    raws = [LO + (HI - LO) * levels[0], LO + (HI - LO) * levels[1], -3.0 - 2.0 * t / (T - 1)]
    rows, episodes = [], []
    for e, (p, raw) in enumerate(zip(levels, raws, strict=True)):
        rows += [(e, f, p[f], p[min(f + 2, T - 1)] - p[f]) for f in range(T)]
        episodes.append({"episode_index": e, "length": T, "task": "push", "success_score": float(raw[-3:].mean()),
                         "final_progress": float(p[-1]), "raw_scores": raw.tolist()})
    ep, fr, lv, gn = map(np.asarray, zip(*rows, strict=True))
    return ProgressTable(episode=ep, frame=fr, level=lv, gain=gn), episodes


# z_e from the time term alone, unfloored: z_e = −z(T*_e / length_e)
PARAMS = {"success_weight": 0.0, "time_weight": 1.0, "std_floor": 0.0, "scale": "dataset"}


def _z(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean()) / x.std()


def test_time_to_the_top_on_the_dataset_scale_never_credits_a_falling_curve():
    table, episodes = _corpus()
    episode = fit_weighting_stats("episode_quality", table, episodes, time_scale="episode", **PARAMS)
    dataset = fit_weighting_stats("episode_quality", table, episodes, time_scale="dataset", **PARAMS)
    rise = fit_weighting_stats("episode_quality", table, episodes, time_scale="rise", **PARAMS)
    assert np.array_equal(fit_weighting_stats("episode_quality", table, episodes, **PARAMS).time_frame,
                          rise.time_frame)  # the rule's default: the episode's own scale, for a curve that rose
    assert not np.array_equal(rise.time_frame, episode.time_frame)  # control: the two differ on this corpus
    # first frames at 0.95: episode 0 at 19 (19/20 ≥ 0.95), episode 1 at 10; episode 2 at frame 0 on its own
    # scale, never on the task's (its raw maximum −3 is 0.4 of the range)
    np.testing.assert_allclose(episode.quality[:3], -_z([19 / T, 10 / T, 0 / T]), atol=1e-12)
    np.testing.assert_allclose(dataset.quality[:3], -_z([19 / T, 10 / T, T / T]), atol=1e-12)
    # negative control: on the episode's scale the falling failure ranks first, on the dataset scale last
    assert int(np.argmax(episode.quality[:3])) == 2
    assert int(np.argmin(dataset.quality[:3])) == 2
    # the top frame on the episode's own scale is the same either way
    np.testing.assert_array_equal(dataset.top_frame[:3], episode.top_frame[:3])
    np.testing.assert_array_equal(episode.top_frame[:3], [19, 10, 0])
    np.testing.assert_array_equal(episode.time_frame[:3], [19, 10, 0])
    np.testing.assert_array_equal(dataset.time_frame[:3], [19, 10, T])


def test_time_scale_is_checked():
    table, episodes = _corpus()
    with pytest.raises(WeightingError, match="time_scale='raw'"):
        fit_weighting_stats("episode_quality", table, episodes, **{**PARAMS, "time_scale": "raw"})
    # scale=episode has no common scale: time_scale=dataset then reads the episode's own, as time_scale=episode does
    own = fit_weighting_stats("episode_quality", table, episodes, **{**PARAMS, "scale": "episode",
                                                                     "time_scale": "dataset"})
    np.testing.assert_array_equal(own.time_frame[:3], [19, 10, 0])


def test_time_to_the_top_of_a_curve_that_rose_ignores_offsets_and_flat_curves():
    """``time_scale=rise``: the episode's own top, but only for a curve that rose (its raw rise at least half its
    task's median rise). A high-offset episode that climbs keeps its own time (unlike the dataset scale)."""
    table, episodes = _corpus()
    # episode 1 climbs only half a nat, near the task's top (an offset): on the task's raw scale it is at the top
    # from halfway up its own climb
    level = np.clip(np.arange(T) / 10, 0.0, 1.0)
    episodes[1] = episodes[1] | {"raw_scores": (-0.5 + 0.5 * level).tolist()}
    rise = fit_weighting_stats("episode_quality", table, episodes, time_scale="rise", **PARAMS)
    dataset = fit_weighting_stats("episode_quality", table, episodes, time_scale="dataset", **PARAMS)
    # rises: 5, 0.5, 0 (the falling curve's maximum is its first score); median 0.5: episodes 0 and 1 rose
    np.testing.assert_array_equal(rise.time_frame[:3], [19, 10, T])
    np.testing.assert_allclose(rise.quality[:3], -_z([19 / T, 10 / T, T / T]), atol=1e-12)
    # negative control: on the dataset scale the offset episode is "at the top" from an earlier frame
    assert dataset.time_frame[1] == 5  # -0.25 (0.95 of the task's range) reached at level 0.5
    assert int(np.argmin(rise.quality[:3])) == 2  # the falling failure last, as on the dataset scale
