"""The simulated VLM reward errors (reward=vlm_errors): determinism, TOPReward's schedule, the oracle, the
profiles' calibration on synthetic episodes (with negative controls), configuration and provenance."""

from __future__ import annotations

import numpy as np
import pytest

from configs import ConfigError, load_config, reward_profile, reward_profiles
from pipeline.progress import success_score, voc
from pipeline.report.metrics import success_detection
from pipeline.rewards.registry import REWARDS, EpisodeInput, build_reward
from pipeline.rewards.schedule import group_ends, prefix_ends, sample_indices, select_groups
from pipeline.rewards.vlm_errors import VLMErrorSimulator

PROFILES = ("oracle", "qwen3vl_32b_like", "qwen3vl_8b_like", "weak")
T, FPS = 150, 80.0  # MetaWorld's episode: 150 steps at 80 fps
ENV = "observation.environment_state"


def model(profile: str, **options):
    return build_reward({"name": "vlm_errors", **load_config("annotate", ["reward=vlm_errors"]).reward,
                         "profile": profile, **options})


def episode(index: int, progress: np.ndarray, obj: np.ndarray | None = None, fps: float = FPS) -> EpisodeInput:
    cols = {"next.reward": progress.astype(np.float32)[:, None]}
    if obj is not None:
        env = np.zeros((len(progress), 39), np.float32)
        env[:, 4:7] = obj
        cols[ENV] = env
    return EpisodeInput(fps=fps, instruction="push the puck to the goal", num_frames=len(progress),
                        episode_index=index, columns=cols)


def synthetic_corpus(n: int = 60, seed: int = 0) -> list[tuple[EpisodeInput, int]]:
    """Episodes shaped like the MetaWorld push corpus: 60% successes (progress rises to 1 between steps 45 and
    100 and wavers there, the puck moves 0.15-0.3 m), failures that stall (nothing moves), push the puck away (it moves, progress
    stays low), push it to a wrong goal (progress ends 0.4-0.8) or act at random (hardly moves)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    out = []
    for i in range(n):
        kind = ["success"] * 6 + ["stall", "push_away", "wrong_goal", "random"]
        kind = kind[i % len(kind)]
        start, done = rng.integers(20, 45), rng.integers(45, 100)
        ramp = np.clip((t - start) / max(done - start, 1), 0, 1)
        direction = rng.normal(size=3) * [1, 1, 0]
        direction /= np.linalg.norm(direction)
        dist = rng.uniform(0.15, 0.3)
        if kind == "success":  # the dense reward wavers a little once the puck is in (as MetaWorld's does)
            progress = np.clip(0.01 + 0.99 * ramp**1.5 - np.abs(rng.normal(0, 0.03, T)) * (ramp == 1), 0, 1)
            moved = dist * ramp
        elif kind == "stall":
            progress, moved = np.full(T, 0.01), np.zeros(T)
        elif kind == "push_away":
            progress, moved = 0.01 + 0.07 * ramp, dist * ramp
        elif kind == "wrong_goal":
            progress, moved = 0.01 + rng.uniform(0.4, 0.8) * ramp, dist * ramp
        else:
            progress, moved = 0.01 + 0.03 * rng.random(T), rng.uniform(0, 0.01) * ramp
        obj = np.array([0.0, 0.6, 0.02]) + moved[:, None] * direction
        out.append((episode(i, progress, obj), int(kind == "success")))
    return out


def measure(m, corpus) -> dict:
    """The calibration figures (as experiments.calibration defines them) on in-memory episodes."""
    def order(x):
        return 0.0 if not np.isfinite(x) else x

    real, static, scores, labels, gaps = [], [], [], [], []
    for ep, label in corpus:
        a, b = m.score(ep), m.score_static(ep)
        static.append(order(voc(b.frame_progress())))
        scores.append(a.success_score)
        labels.append(label)
        if label:
            real.append(order(voc(a.frame_progress())))
            gaps.append(a.success_score - b.success_score)
    return {"real_voc": float(np.mean(real)), "static_voc": float(np.mean(static)), "static_gap": float(np.mean(gaps)),
            "auroc": success_detection(np.array(scores), np.array(labels))["auroc"]}


def ground_truth(m, corpus) -> dict:
    real, scores, labels = [], [], []
    for ep, label in corpus:
        gt = m.simulator.ground_truth(ep)
        scores.append(success_score(gt[m.score(ep).prefix_ends - 1]))
        labels.append(label)
        if label:
            real.append(voc(gt))
    return {"real_voc": float(np.mean(real)), "auroc": success_detection(np.array(scores), np.array(labels))["auroc"]}


def missed(profile: str, figures: dict, truth: dict) -> list[str]:
    """The targets of ``profile`` that ``figures`` miss (its YAML's pass intervals)."""
    out = []
    for metric, t in reward_profile(profile)["targets"].items():
        if t.get("value") is None:
            continue
        if t["value"] == "ground_truth":
            low, high = truth[metric] - t["tolerance"], truth[metric] + t["tolerance"]
        else:
            low, high = t["low"], t["high"]
        if not low <= figures[metric] <= high:
            out.append(f"{metric}={figures[metric]:.3f} not in [{low:.3f}, {high:.3f}]")
    return out


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
