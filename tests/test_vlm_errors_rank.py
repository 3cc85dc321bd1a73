"""The second simulator of VLM reward errors (reward=vlm_errors reward.simulator=rank): its calibration to the
same published targets on synthetic episodes, with a negative control on every target it checks; determinism;
the oracle's ordering; the length ramp over images; the lure; bad parameters; configuration, provenance and the
run identity (the additive simulator's unchanged)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from configs import (
    PROFILE_DIR,
    SIMULATOR_PROFILE_DIRS,
    ConfigError,
    load_config,
    reward_profile,
    reward_profiles,
    simulator_profile,
)
from pipeline.progress import voc
from pipeline.rewards.registry import RewardError, VLMErrorsReward, build_reward, reward_files
from pipeline.rewards.vlm_errors import SimulationError
from pipeline.rewards.vlm_errors_rank import RankErrorSimulator
from tests.fixtures.vlm_errors import (
    PROFILES,
    T,
    episode,
    ground_truth,
    measure,
    missed,
    model,
    synthetic_corpus,
)

RANK = "rank"


def rank_model(profile: str, **parameters):
    """The rank simulator's profile ``profile``, with ``parameters`` changed (a deliberately mis-set profile)."""
    if not parameters:
        return model(profile, simulator=RANK)
    params = {**simulator_profile(profile, RANK)["parameters"], **parameters}
    return VLMErrorsReward(f"{profile}-misset", params, simulator=RANK)


def logit(raw: np.ndarray) -> np.ndarray:
    """The True/False logit back from a raw score log p(" True")."""
    return raw - np.log(-np.expm1(raw))


def metrics_missed(profile: str, figures: dict, truth: dict) -> set[str]:
    return {m.split("=")[0] for m in missed(profile, figures, truth)}


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus()


@pytest.fixture(scope="module")
def truth(corpus):
    return ground_truth(model("oracle"), corpus)


@pytest.fixture(scope="module")
def figures(corpus):
    return {p: measure(rank_model(p), corpus) for p in PROFILES}


def test_same_profiles_same_targets_own_parameters():
    assert reward_profiles(SIMULATOR_PROFILE_DIRS[RANK]) == reward_profiles(PROFILE_DIR)
    for p in PROFILES:
        rank, additive = simulator_profile(p, RANK), reward_profile(p)
        assert rank["targets"] == additive["targets"]  # one definition: the additive profile file's
        assert rank["parameters"] != additive["parameters"]
        assert "targets" not in reward_profile(p, SIMULATOR_PROFILE_DIRS[RANK])


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_lands_on_its_targets(profile, figures, truth):
    assert missed(profile, figures[profile], truth) == [], figures[profile]


def test_static_voc_negative_controls(figures, truth, corpus):
    # 8B-like: the static video climbs; 32B-like: flat (VOC 0). Each fails the other's static target
    assert figures["qwen3vl_8b_like"]["static_voc"] > 0.9 and abs(figures["qwen3vl_32b_like"]["static_voc"]) < 0.1
    assert "static_voc" in metrics_missed("qwen3vl_8b_like", figures["qwen3vl_32b_like"], truth)
    assert "static_voc" in metrics_missed("qwen3vl_32b_like", figures["qwen3vl_8b_like"], truth)
    assert "static_voc" in metrics_missed("oracle", figures["qwen3vl_8b_like"], truth)
    # the 8B-like profile without the ramp it claims fails its own static VOC
    no_ramp = measure(rank_model("qwen3vl_8b_like", ramp_slope=0.0, ramp_tail_slope=0.0), corpus)
    assert "static_voc" in metrics_missed("qwen3vl_8b_like", no_ramp, truth), no_ramp


def test_auroc_negative_controls(figures, truth, corpus):
    # no success separation (the verdict a coin toss, and all there is): fails 32B-like's AUROC
    coin = measure(rank_model("qwen3vl_32b_like", verdict_noise=0.5, verdict_weight=1.0), corpus)
    assert "auroc" in metrics_missed("qwen3vl_32b_like", coin, truth), coin
    # too much separation: the oracle's fails 8B-like's and weak's AUROC; 32B-like's fails weak's
    assert "auroc" in metrics_missed("qwen3vl_8b_like", figures["oracle"], truth)
    assert "auroc" in metrics_missed("weak", figures["oracle"], truth)
    assert "auroc" in metrics_missed("weak", figures["qwen3vl_32b_like"], truth)
    assert "auroc" in metrics_missed("oracle", figures["qwen3vl_8b_like"], truth)


def test_real_voc_and_gap_negative_controls(figures, truth, corpus):
    # weak without its rank noise orders too well; weak's order fails the 32B- and 8B-like real VOC
    ordered = measure(rank_model("weak", rank_noise=0.0), corpus)
    assert "real_voc" in metrics_missed("weak", ordered, truth), ordered
    assert "real_voc" in metrics_missed("qwen3vl_32b_like", figures["weak"], truth)
    assert "real_voc" in metrics_missed("qwen3vl_8b_like", figures["weak"], truth)
    assert "real_voc" in metrics_missed("oracle", figures["qwen3vl_8b_like"], truth)
    # a 32B-like profile whose "done" is barely above "not started" fails the real-minus-static gap
    small = measure(rank_model("qwen3vl_32b_like", gap=1.0), corpus)
    assert "static_gap" in metrics_missed("qwen3vl_32b_like", small, truth), small


def test_deterministic_per_seed_and_episode(corpus):
    m = rank_model("qwen3vl_8b_like")
    ep = corpus[0][0]
    a = m.score(ep)
    np.testing.assert_array_equal(a.raw, rank_model("qwen3vl_8b_like").score(ep).raw)
    np.testing.assert_array_equal(m.score_static(ep).raw, m.score_static(ep).raw)
    other = episode(99, m.simulator.ground_truth(ep), ep.columns.get("observation.environment_state")[:, 4:7])
    assert not np.allclose(m.score(other).raw, a.raw)
    assert not np.allclose(model("qwen3vl_8b_like", simulator=RANK, seed=1).score(ep).raw, a.raw)
    assert not np.allclose(model("qwen3vl_8b_like").score(ep).raw, a.raw)  # not the additive simulator
    assert np.all(a.raw <= 0)  # log p(" True")


def test_a_prefix_scores_the_same_whichever_prefixes_are_chosen(corpus):
    ep = corpus[3][0]
    full = model("weak", simulator=RANK).score(ep)
    some = model("weak", simulator=RANK, prefixes=5).score(ep)
    chosen = np.searchsorted(full.prefix_ends, some.prefix_ends)
    np.testing.assert_array_equal(some.prefix_ends, full.prefix_ends[chosen])
    np.testing.assert_allclose(some.raw, full.raw[chosen])


def test_oracle_reproduces_the_true_progress_ordering(corpus):
    m = rank_model("oracle")
    for ep, _ in corpus[:12]:
        s = m.score(ep)
        gt = s.extras["ground_truth_progress"]
        np.testing.assert_array_equal(rankdata(s.raw), rankdata(gt))
        np.testing.assert_allclose(s.raw, model("oracle").score(ep).raw)  # the additive oracle's, too
        assert np.ptp(m.score_static(ep).raw) == 0
    # control: a profile with rank noise does not keep the order
    noisy = rank_model("oracle", rank_noise=2.0)
    assert any(not np.array_equal(rankdata(noisy.score(ep).raw), rankdata(m.score(ep).raw)) for ep, _ in corpus[:12])


def test_length_ramp_follows_the_image_count(corpus):
    ep = corpus[0][0]
    s = rank_model("qwen3vl_8b_like", rank_noise=0.0, verdict_weight=0.0).score_static(ep)  # the ramp alone
    images = s.extras["images"]
    z = logit(s.raw)
    per_doubling = np.diff(z) / np.diff(np.log2(images))
    early, late = per_doubling[images[1:] <= 8], per_doubling[images[1:] > 8]
    params = simulator_profile("qwen3vl_8b_like", RANK)["parameters"]
    np.testing.assert_allclose(early, params["ramp_slope"], atol=1e-6)
    np.testing.assert_allclose(late, params["ramp_tail_slope"], atol=1e-6)
    assert voc(s.frame_progress()) > 0.999  # frames before the first prefix end tie
    # the 32B-like profile has none: its static video is flat
    assert np.ptp(rank_model("qwen3vl_32b_like").score_static(ep).raw) == 0


def test_a_failure_is_lured_by_how_close_it_came():
    t = np.arange(T)
    came_close = np.interp(t, [0, 60, 100, T], [0.0, 0.9, 0.6, 0.6])  # up to 0.9, then back to 0.6
    never_higher = np.interp(t, [0, 100, T], [0.0, 0.6, 0.6])  # the same 0.6 at the end, never higher
    lured = rank_model("oracle", lure=0.8)
    assert logit(lured.score(episode(5, came_close)).raw)[-1] > logit(lured.score(episode(5, never_higher)).raw)[-1] + 0.5
    plain = rank_model("oracle")  # control: without the lure only the final progress counts
    assert plain.score(episode(5, came_close)).raw[-1] == pytest.approx(plain.score(episode(5, never_higher)).raw[-1])


@pytest.mark.parametrize("name,value", [("lure", 1.5), ("gap", 0.0), ("gap", -2.0), ("warp_knots", 2.5),
                                        ("warp_concentration", 0.0), ("rank_noise", -1.0), ("verdict_noise", 0.7),
                                        ("verdict_weight", 1.2), ("ramp_knee_images", 0.5), ("gap_spread", -0.1),
                                        ("base", float("nan")), ("assumed_duration_s", 0.0)])
def test_bad_parameters_are_refused_naming_the_value(name, value):
    params = {**simulator_profile("qwen3vl_8b_like", RANK)["parameters"], name: value}
    with pytest.raises(SimulationError, match=f"^{name}={value}"):
        RankErrorSimulator("x", params)


def test_unknown_simulator_and_unknown_parameter():
    with pytest.raises(ConfigError, match="'bogus'.*additive, rank"):
        build_reward({**load_config("annotate", ["reward=vlm_errors", "reward.simulator=bogus"]).reward,
                      "name": "vlm_errors"})
    with pytest.raises(RewardError, match="'bogus'"):
        VLMErrorsReward("oracle", simulator_profile("oracle", RANK)["parameters"], simulator="bogus")
    with pytest.raises(SimulationError, match="credit"):  # an additive parameter is not a rank one
        RankErrorSimulator("x", {**simulator_profile("oracle", RANK)["parameters"], "credit": 0.5})


def test_composes_on_the_command_line_and_labels_itself_simulated():
    cfg = load_config("annotate", ["dataset.root=x", "out=y", "reward=vlm_errors", "reward.simulator=rank",
                                   "reward.profile=weak"])
    prov = build_reward(cfg.reward).provenance
    assert prov["type"] == "vlm_errors" and prov["simulated"] is True and prov["simulator"] == RANK
    assert prov["profile"] == "weak" and "not a VLM" in prov["model"]
    assert prov["parameters"] == {k: (None if v is None else float(v))
                                  for k, v in simulator_profile("weak", RANK)["parameters"].items()}
    default = build_reward(load_config("annotate", ["reward=vlm_errors"]).reward)
    assert load_config("annotate", ["reward=vlm_errors"]).reward.simulator == "additive"
    assert "simulator" not in default.provenance  # the additive simulator's provenance reads as before


def test_run_identity(tmp_path):
    """The default simulator leaves the identity as it was before the key existed; the rank one is another run
    whose identity holds its own parameters."""
    from omegaconf import open_dict

    from data.source import open_dataset
    from pipeline.annotate.output import fingerprint
    from tests.fixtures.datasets import make_synthetic_dataset

    src = open_dataset(make_synthetic_dataset(tmp_path / "ds", episodes=1, length=8), None)
    base = [f"dataset.root={src.root}", "reward=vlm_errors", f"out={tmp_path / 'o'}"]
    additive = load_config("annotate", base)
    before_key = load_config("annotate", base)
    with open_dict(before_key):
        del before_key.reward["simulator"]
    assert fingerprint(additive, src, 1)["fingerprint"] == fingerprint(before_key, src, 1)["fingerprint"]
    rank = load_config("annotate", [*base, "reward.simulator=rank"])
    assert fingerprint(rank, src, 1)["fingerprint"] != fingerprint(additive, src, 1)["fingerprint"]
    assert reward_files(rank.reward)["profile_parameters"] == simulator_profile("qwen3vl_8b_like", RANK)["parameters"]


def test_annotate_records_the_rank_simulation(tmp_path):
    from data.manifest import load_manifest
    from tests.fixtures.annotate import run_annotate
    from tests.fixtures.datasets import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "ds", episodes=2, length=40, fps=10, image_size=(32, 32), seed=1)
    result = run_annotate(root, tmp_path / "out", "reward=vlm_errors", "reward.simulator=rank",
                          "reward.profile=qwen3vl_8b_like", "reward.prefixes=4", "plots=false", "window.horizon=4")
    assert result.ok, result.failures
    manifest = load_manifest(tmp_path / "out")
    assert manifest["reward"]["simulated"] is True and manifest["reward"]["simulator"] == RANK
    assert all(len(e["raw_scores"]) == 4 for e in manifest["episodes"])
