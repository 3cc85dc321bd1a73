"""episode_quality against the static-video control: the success score minus the control's, and weights
shrunk toward uniform by the reliability the controls estimate (policies.weighting.advantage)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data.progress_table import ProgressTable
from policies.weighting import WeightingError, fit_weighting_stats, weigh
from policies.weighting.advantage import static_reliability

T = 12
# success scores of four episodes and their static controls' (mean of the last 3 prefixes of each)
REAL = np.array([-0.5, -1.0, -4.0, -6.0])
STATIC = np.array([-9.0, -6.0, -9.5, -7.0])


def _episodes(control: np.ndarray | None):
    rows, episodes = [], []
    for e in range(len(REAL)):
        p = np.linspace(0.0, 1.0, T)
        rows += [(e, t, p[t], p[min(t + 2, T - 1)] - p[t]) for t in range(T)]
        raw = REAL[e] + 4.0 * (p - 1.0)  # ends at REAL[e]: its last prefixes' mean is REAL[e] + small
        raw[-3:] = REAL[e]
        ep = {"episode_index": e, "length": T, "task": "push", "success_score": float(REAL[e]),
              "final_progress": 1.0, "raw_scores": raw.tolist()}
        if control is not None:
            ep["control_raw_scores"] = np.full(T, control[e]).tolist()
        episodes.append(ep)
    ep_, fr, lv, gn = map(np.asarray, zip(*rows, strict=True))
    return ProgressTable(episode=ep_, frame=fr, level=lv, gain=gn), episodes


# one z-score per episode: no time term, no floor, so z_e is the plain standardised score
PARAMS = {"time_weight": 0.0, "std_floor": 0.0, "scale": "episode"}


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def _weights(stats, beta: float = 0.25) -> np.ndarray:
    progress = torch.tensor([[0.0, 0.1]] * len(REAL))
    return weigh("episode_quality", progress, stats, episode=torch.arange(len(REAL)), frame=torch.zeros(4).long(),
                 beta=beta, **PARAMS).numpy()


def test_minus_static_compares_what_the_video_shows_beyond_its_static_control():
    table, episodes = _episodes(STATIC)
    real = fit_weighting_stats("episode_quality", table, episodes, **PARAMS)
    minus = fit_weighting_stats("episode_quality", table, episodes, success_from="minus_static", **PARAMS)
    np.testing.assert_allclose(real.quality[:4], _z(REAL), atol=1e-12)
    np.testing.assert_allclose(minus.quality[:4], _z(REAL - STATIC), atol=1e-12)
    # the control reorders the episodes: episode 1 is second on its own score (-1.0), third against its control
    # (5.0 above it, against 5.5 for episode 2)
    assert np.argsort(-real.quality[:4]).tolist() == [0, 1, 2, 3]
    assert np.argsort(-minus.quality[:4]).tolist() == [0, 2, 1, 3]


def test_shrink_by_the_static_reliability():
    table, episodes = _episodes(STATIC)
    r = 1.0 - STATIC.var() / REAL.var()
    assert static_reliability(REAL, STATIC) == pytest.approx(r) and 0 < r < 1
    st = fit_weighting_stats("episode_quality", table, episodes, shrink="static", **PARAMS)
    assert st.reliability == {"push": pytest.approx(r)}
    np.testing.assert_allclose(st.quality[:4], r * _z(REAL), atol=1e-12)
    np.testing.assert_allclose(_weights(st), np.exp(r * _z(REAL) / 0.25), rtol=1e-6)
    # negative control: controls that spread as much as the real scores leave nothing to rank by: uniform
    same = fit_weighting_stats("episode_quality", *_episodes(REAL[::-1].copy()), shrink="static", **PARAMS)
    assert same.reliability["push"] == 0.0
    np.testing.assert_array_equal(_weights(same), np.ones(4, np.float32))
    # and without shrinking the same data is far from uniform
    plain = fit_weighting_stats("episode_quality", *_episodes(REAL[::-1].copy()), **PARAMS)
    assert _weights(plain).max() / _weights(plain).min() > 100


def test_static_options_need_the_control_and_valid_values():
    table, episodes = _episodes(None)
    for params in ({"success_from": "minus_static"}, {"shrink": "static"}):
        with pytest.raises(WeightingError, match="control.static=true"):
            fit_weighting_stats("episode_quality", table, episodes, **params, **PARAMS)
    with pytest.raises(WeightingError, match="success_from='static'"):
        fit_weighting_stats("episode_quality", table, episodes, success_from="static", **PARAMS)
    # control: the defaults need no control (the reward check is skipped without one)
    assert fit_weighting_stats("episode_quality", table, episodes, **PARAMS).reliability == {}
    assert fit_weighting_stats("episode_quality", table, episodes, **PARAMS).above_static is None


def test_the_reward_check_keeps_the_rule_unless_most_real_videos_score_below_their_still_control():
    from policies.weighting.advantage import ABOVE_STATIC, above_static_share

    table, episodes = _episodes(STATIC)  # every real video above its control
    kept = fit_weighting_stats("episode_quality", table, episodes, shrink="above_static", **PARAMS)
    plain = fit_weighting_stats("episode_quality", table, episodes, shrink="none", **PARAMS)
    assert kept.above_static == {"push": 1.0} and kept.reliability == {"push": 1.0}
    np.testing.assert_array_equal(kept.quality[:4], plain.quality[:4])  # not firing changes nothing
    # three of four real videos below their static control: the check fires, the weights are uniform
    low = REAL + np.array([-1.0, 1.0, 1.0, 1.0])
    fired = fit_weighting_stats("episode_quality", *_episodes(low), shrink="above_static", **PARAMS)
    assert fired.above_static == {"push": 0.25} and fired.reliability == {"push": 0.0}
    np.testing.assert_array_equal(_weights(fired), np.ones(4, np.float32))
    assert _weights(fit_weighting_stats("episode_quality", *_episodes(low), shrink="none",
                                        **PARAMS)).max() > 10  # control: unchecked, far from uniform
    # the default checks (Decision 9, docs/experiments.md)
    assert fit_weighting_stats("episode_quality", *_episodes(low), **PARAMS).reliability == {"push": 0.0}
    # the threshold: exactly half above keeps the rule
    half = REAL + np.array([-1.0, -1.0, 1.0, 1.0])
    assert above_static_share(REAL, half) == ABOVE_STATIC
    assert fit_weighting_stats("episode_quality", *_episodes(half), shrink="above_static",
                               **PARAMS).reliability == {"push": 1.0}
    # without a static control the check is skipped (None), the rule kept, where shrink=static refuses
    none = fit_weighting_stats("episode_quality", *_episodes(None), shrink="above_static", **PARAMS)
    assert none.above_static is None and none.reliability == {}
    np.testing.assert_array_equal(none.quality[:4], plain.quality[:4])


def test_training_says_what_the_reward_check_found(tmp_path):
    from policies.training import build
    from tests.fixtures.bc import tiny_cfg
    from tests.fixtures.shards import NO_RAW_SCORES, write_tiny_shards

    shards = write_tiny_shards(tmp_path / "shards", episodes=4, length=16, obs_steps=2, horizon=8, images=False)
    module = build(tiny_cfg(shards, tmp_path / "a", "act", "episode_quality", "weighting.shrink=above_static",
                            *NO_RAW_SCORES, steps=1))[0]
    assert any("reward check (weighting.shrink=above_static) skipped" in n for n in module.weight_notes)
    manifest = shards / "manifest.json"  # the same shards with static controls far above every real video
    doc = json.loads(manifest.read_text())
    for e in doc["episodes"]:
        e["control_raw_scores"] = [float(e["success_score"]) + 5.0] * 3
    manifest.write_text(json.dumps(doc))
    module = build(tiny_cfg(shards, tmp_path / "b", "act", "episode_quality", "weighting.shrink=above_static",
                            *NO_RAW_SCORES, steps=1))[0]
    fired = [n for n in module.weight_notes if "only 0% of the episodes score above their static-video control" in n]
    assert len(fired) == 1 and "labels_only=true" in fired[0]  # and it says what to do instead
    control = build(tiny_cfg(shards, tmp_path / "c", "act", "episode_quality", *NO_RAW_SCORES,
                             "weighting.shrink=none", steps=1))[0]
    assert not any("reward check" in n for n in control.weight_notes)  # control: not asked, not said

    # where the check fires, training is plain BC's: the same seed gives the same trained weights (control: the
    # unchecked rule, on the same shards, trains otherwise)
    from policies.training import train

    def trained(tag, weighting, *extra):
        run = train(tiny_cfg(shards, tmp_path / tag, "act", weighting, *extra, steps=3, steps_per_epoch=3))
        return torch.load(run.checkpoint, weights_only=False)["state_dict"]

    plain = trained("plain", "none")
    gated = trained("gated", "episode_quality", *NO_RAW_SCORES)
    unchecked = trained("unchecked", "episode_quality", *NO_RAW_SCORES, "weighting.shrink=none")
    params = [k for k in plain if k.startswith("policy.") and plain[k].dtype.is_floating_point]
    assert all(torch.equal(plain[k], gated[k]) for k in params)
    assert not all(torch.equal(plain[k], unchecked[k]) for k in params)
