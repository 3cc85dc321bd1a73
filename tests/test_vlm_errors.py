"""The simulated VLM reward errors (reward=vlm_errors): determinism, TOPReward's schedule, the oracle, the
profiles' calibration on synthetic episodes (with negative controls), configuration and provenance."""

from __future__ import annotations

import numpy as np
import pytest

from configs import ConfigError, load_config, reward_profile, reward_profiles
from pipeline.progress import voc
from pipeline.rewards.registry import REWARDS, EpisodeInput, build_reward
from pipeline.rewards.schedule import group_ends, prefix_ends, sample_indices, select_groups
from pipeline.rewards.vlm_errors import VLMErrorSimulator
from tests.fixtures.vlm_errors import (
    FPS,
    PROFILES,
    T,
    episode,
    ground_truth,
    measure,
    missed,
    model,
    synthetic_corpus,
)


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus()


@pytest.fixture(scope="module")
def figures(corpus):
    return {p: measure(model(p), corpus) for p in PROFILES}


@pytest.fixture(scope="module")
def truth(corpus):
    return ground_truth(model("oracle"), corpus)


def test_profiles_and_registry():
    assert set(PROFILES) <= set(reward_profiles()) and "vlm_errors" in REWARDS


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_lands_on_its_targets(profile, figures, truth):
    assert missed(profile, figures[profile], truth) == [], figures[profile]


def test_negative_controls(figures, truth):
    # the oracle has no length bias: it fails the 8B-like static VOC; the 8B-like profile fails the oracle's
    assert any(m.startswith("static_voc") for m in missed("qwen3vl_8b_like", figures["oracle"], truth))
    assert any(m.startswith("static_voc") for m in missed("oracle", figures["qwen3vl_8b_like"], truth))
    assert missed("weak", figures["qwen3vl_32b_like"], truth)


def test_deterministic_per_seed_and_episode(corpus):
    m = model("qwen3vl_8b_like")
    ep = corpus[0][0]
    a, b = m.score(ep), model("qwen3vl_8b_like").score(ep)
    np.testing.assert_array_equal(a.raw, b.raw)
    np.testing.assert_array_equal(m.score_static(ep).raw, m.score_static(ep).raw)
    other = EpisodeInput(fps=ep.fps, instruction=ep.instruction, num_frames=ep.num_frames, episode_index=99,
                         columns=ep.columns)
    assert not np.allclose(m.score(other).raw, a.raw)
    assert not np.allclose(model("qwen3vl_8b_like", seed=1).score(ep).raw, a.raw)
    assert np.all(a.raw <= 0)  # log p(" True")


@pytest.mark.parametrize("duration,sample_fps,prefixes", [(20.0, 2.0, "all"), (12.5, 2.0, 5), (None, 10.0, "all")])
def test_schedule_is_topreward_s(duration, sample_fps, prefixes):
    params = {**reward_profile("qwen3vl_8b_like")["parameters"], "assumed_duration_s": duration}
    m = VLMErrorSimulator("custom", params, sample_fps=sample_fps, prefixes=prefixes)
    ep = episode(3, np.linspace(0, 1, T))
    native = FPS if duration is None else T / duration  # the episode's frames spread over the assumed duration
    sampled = sample_indices(T, native, sample_fps)
    ends = group_ends(len(sampled), 2)
    chosen = select_groups(len(ends), prefixes)
    scores = m.simulate(ep)
    np.testing.assert_array_equal(scores.prefix_ends, prefix_ends(sampled, ends[chosen]))
    np.testing.assert_array_equal(scores.extras["images"], ends[chosen])
    if duration == 20.0:  # a 20 s demonstration at 2 fps: 40 images in 20 prefixes, not 4 images in 2
        assert len(scores.raw) == 20 and scores.extras["images"][-1] == 40
    if prefixes != "all":  # a prefix scores the same whichever prefixes are chosen
        full = VLMErrorSimulator("custom", params, sample_fps=sample_fps).simulate(ep)
        np.testing.assert_allclose(scores.raw, full.raw[chosen])


def test_oracle_is_a_monotone_function_of_ground_truth(corpus):
    m = model("oracle")
    for ep, _ in corpus[:12]:
        s = m.score(ep)
        gt = s.extras["ground_truth_progress"]
        order = np.argsort(gt, kind="stable")
        assert np.all(np.diff(s.raw[order]) >= -1e-12)
        assert np.all(np.diff(s.raw)[np.diff(gt) > 0] > 0)
        assert np.ptp(m.score_static(ep).raw) == 0  # no ramp: a static video is flat


def test_static_control_climbs_for_8b_like(corpus):
    s = model("qwen3vl_8b_like").score_static(corpus[0][0])
    assert voc(s.frame_progress()) > 0.9


def test_wrong_credit_reads_the_object_and_is_optional():
    m = model("qwen3vl_8b_like")
    progress = np.full(T, 0.05)
    still = m.score(episode(5, progress, np.zeros((T, 3))))
    moved = m.score(episode(5, progress, np.linspace(0, 0.2, T)[:, None] * [1, 0, 0]))
    absent = m.score(episode(5, progress))
    assert moved.raw[-1] > still.raw[-1] + 1.0
    np.testing.assert_allclose(absent.raw, still.raw)


def test_unknown_profile_names_the_valid_ones():
    with pytest.raises(ConfigError, match="qwen3vl_8b_like") as exc:
        model("qwen3vl_7b")
    assert "qwen3vl_7b" in str(exc.value) and "oracle" in str(exc.value)
    with pytest.raises(ValueError, match="nonsense"):
        VLMErrorSimulator("x", {**reward_profile("oracle")["parameters"], "nonsense": 1.0})


def test_composes_on_the_command_line_and_labels_itself_simulated():
    cfg = load_config("annotate", ["dataset.root=x", "out=y", "reward=vlm_errors", "reward.profile=weak"])
    assert cfg.reward.name == "vlm_errors" and cfg.reward.profile == "weak"
    m = build_reward(cfg.reward)
    prov = m.provenance
    assert prov["type"] == "vlm_errors" and prov["simulated"] is True and prov["profile"] == "weak"
    assert prov["parameters"] == {k: (None if v is None else float(v))
                                  for k, v in reward_profile("weak")["parameters"].items()}
    assert "not a VLM" in prov["model"]


def test_annotate_records_the_simulation(tmp_path):
    from data.manifest import load_manifest
    from tests.fixtures.annotate import run_annotate
    from tests.fixtures.datasets import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "ds", episodes=2, length=40, fps=10, image_size=(32, 32), seed=1)
    result = run_annotate(root, tmp_path / "out", "reward=vlm_errors", "reward.profile=qwen3vl_8b_like",
                          "reward.prefixes=4", "plots=false", "window.horizon=4")
    assert result.ok, result.failures
    manifest = load_manifest(tmp_path / "out")
    assert manifest["reward"]["simulated"] is True and manifest["reward"]["type"] == "vlm_errors"
    assert manifest["reward"]["profile"] == "qwen3vl_8b_like" and manifest["reward"]["prefixes"] == 4
    assert all(len(e["raw_scores"]) == 4 for e in manifest["episodes"])


def test_run_identity_follows_the_profile_file(tmp_path, monkeypatch):
    """Editing a profile's parameters makes a different run (a resume would otherwise keep stale scores);
    rewards that read no file keep their identity unchanged."""
    import configs
    from data.source import open_dataset
    from pipeline.annotate.output import fingerprint
    from tests.fixtures.datasets import make_synthetic_dataset

    src = open_dataset(make_synthetic_dataset(tmp_path / "ds", episodes=1, length=8), None)
    cfg = load_config("annotate", [f"dataset.root={src.root}", "reward=vlm_errors", f"out={tmp_path / 'o'}"])
    before = fingerprint(cfg, src, 1)
    assert before["reward_files"]["profile_parameters"] == reward_profile("qwen3vl_8b_like")["parameters"]
    assert fingerprint(cfg, src, 1)["fingerprint"] == before["fingerprint"]  # control: stable
    original = configs.reward_profile

    def edited(name, *a, **k):
        node = original(name, *a, **k)
        node["parameters"] = {**node["parameters"], "noise_std": node["parameters"]["noise_std"] + 0.1}
        return node

    monkeypatch.setattr(configs, "reward_profile", edited)
    assert fingerprint(cfg, src, 1)["fingerprint"] != before["fingerprint"]
    column = load_config("annotate", [f"dataset.root={src.root}", f"out={tmp_path / 'o'}"])
    assert "reward_files" not in fingerprint(column, src, 1)
