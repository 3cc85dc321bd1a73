"""State-only corpora and policies: observation.environment_state in the corpus, the shards and the evaluator."""

from __future__ import annotations

import numpy as np
import pytest

import policies.evaluation as ev
from configs import load_config
from data.metaworld import corpus as demo
from data.metaworld import sim as simlib
from data.quality_labels import read_quality_labels
from tests.fixtures.sim import tiny_act_export


def test_state_only_corpus_reloads_with_environment_state(tmp_path, monkeypatch):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    def no_rendering(self):
        raise AssertionError("a corpus without a camera must not render")

    monkeypatch.setattr(simlib.MetaWorldSim, "render", no_rendering)
    cfg = load_config("corpus", [f"out={tmp_path / 'corpus'}", "episodes=2", "episode_length=30", "camera=null",
                                 "environment_state=true", "mix.expert=1", "mix.noisy=0", "mix.detour=0",
                                 "mix.failure=1"])
    out = demo.generate(cfg, progress=False)
    labels = read_quality_labels(out)
    ds = LeRobotDataset("local/x", root=out, video_backend="pyav")
    assert simlib.ENV_STATE_KEY in ds.meta.features and not ds.meta.video_keys
    assert tuple(ds.meta.features[simlib.ENV_STATE_KEY]["shape"]) == (simlib.ENV_STATE_DIM,)
    env_state = np.asarray(ds.hf_dataset.with_format("numpy")[simlib.ENV_STATE_KEY])
    state = np.asarray(ds.hf_dataset.with_format("numpy")[simlib.STATE_KEY])
    assert env_state.shape == (60, 39)
    np.testing.assert_allclose(env_state[:, :4], state)  # observation.state is the first 4 dims
    # frame 0 is the first observation of episode 0's setup
    with simlib.MetaWorldSim("push-v3", shadows=False) as sim:
        raw0 = sim.reset(labels["episodes"][0]["setup_seed"])
    np.testing.assert_allclose(env_state[0], raw0, atol=1e-5)
    assert sorted(e["quality"] for e in labels["episodes"]) == ["expert", "failure"]


def test_default_corpus_config_is_unchanged():
    cfg = load_config("corpus", [])
    assert cfg.camera == "corner2" and cfg.environment_state is False
    # corpora written before environment_state existed still count as the same corpus
    old = {k: v for k, v in dict(cfg).items() if k != "environment_state"}
    assert demo.same_corpus(old, dict(cfg))
    assert not demo.same_corpus(old, {**dict(cfg), "environment_state": True})


def test_evaluator_gives_environment_state_to_a_state_only_export(tmp_path, monkeypatch):
    export = tiny_act_export(tmp_path / "act", camera=None, environment_state=True)
    seen = []
    real_call = ev.LeRobotPolicy.__call__

    def spy(self, raw, obs):
        seen.append(dict(obs))
        return real_call(self, raw, obs)

    def no_rendering(self):
        raise AssertionError("a policy without images must not make the evaluator render")

    monkeypatch.setattr(ev.LeRobotPolicy, "__call__", spy)
    monkeypatch.setattr(simlib.MetaWorldSim, "render", no_rendering)
    cfg = load_config("evaluate", [f"policy={export}", "episodes=2", "max_steps=5", "videos=0",
                                   f"out={tmp_path / 'eval'}"])
    report = ev.evaluate(cfg, progress=False)
    assert report["episodes"] == 2 and len(seen) == 10
    assert set(seen[0]) == {simlib.STATE_KEY, simlib.ENV_STATE_KEY}
    assert seen[0][simlib.ENV_STATE_KEY].shape == (39,)
    np.testing.assert_allclose(seen[0][simlib.ENV_STATE_KEY][:4], seen[0][simlib.STATE_KEY])


def test_policy_without_environment_state_does_not_get_it(tmp_path):
    policy = ev.LeRobotPolicy(tiny_act_export(tmp_path / "act"), "x")
    assert policy.needs_images and not policy.needs_environment_state
    with simlib.MetaWorldSim("push-v3", image_size=(32, 32), shadows=False) as sim:
        raw = sim.reset(3)
        assert simlib.ENV_STATE_KEY not in sim.observation(raw)
        with pytest.raises(ev.FeatureMismatch, match=r"\['observation.velocity'\]"):
            ev.LeRobotPolicy(tiny_act_export(tmp_path / "v", camera=None, environment_state=True,
                                             extra_inputs={"observation.velocity": (3,)}), "x"
                             ).check_features(ev.provided_features(sim))


def _unet_calls(monkeypatch) -> list:
    from tests.fixtures.sim import count_unet_calls

    return count_unet_calls(monkeypatch)


def test_the_diffusion_blocks_scheduler_runs_under_the_evaluator(tmp_path, monkeypatch):
    """The Diffusion block's scheduler (configs/experiment/rabc_train_diffusion.yaml), in an export rolled out by
    policies.evaluate: 10 DDIM steps per action chunk; lerobot's default DDPM (negative control) takes 100."""
    from omegaconf import OmegaConf

    from tests.fixtures.sim import tiny_diffusion_export

    policy = load_config("train", ["policy=diffusion", "experiment=rabc_train_diffusion"]).policy
    scheduler = {k: OmegaConf.select(policy, k) for k in ("noise_scheduler_type", "num_inference_steps")}
    assert scheduler == {"noise_scheduler_type": "DDIM", "num_inference_steps": 10}
    calls = _unet_calls(monkeypatch)
    per_chunk = {}
    for name, fields in (("block", scheduler), ("lerobot_default", {})):
        export = tiny_diffusion_export(tmp_path / name, **fields)
        cfg = load_config("evaluate", [f"policy={export}", "env.task=push-v3", "episodes=1", "max_steps=8",
                                       "videos=0", f"out={tmp_path / name / 'eval'}"])
        calls.clear()
        report = ev.evaluate(cfg, progress=False)
        assert report["episodes"] == 1 and report["per_episode"][0]["length"] == 8
        per_chunk[name] = len(calls) / 2  # 8 steps, 4 action steps per chunk: two chunks
    assert per_chunk == {"block": 10, "lerobot_default": 100}
