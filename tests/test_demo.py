"""The MetaWorld demo corpus: seeded setups, lerobot's env conventions, labelled mixed-quality episodes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import ConfigError, load_config
from data.metaworld import behaviours
from data.metaworld import corpus as demo
from data.metaworld import sim as simlib
from data.quality_labels import LABELS_FILE, read_quality_labels

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def push():
    sim = simlib.MetaWorldSim("push-v3", image_size=(32, 32), shadows=False)
    yield sim, simlib.expert_policy("push-v3")
    sim.close()


def corpus_cfg(tmp_path, **over):
    base = {"out": str(tmp_path / "corpus"), "episodes": 2, "episode_length": 100, "image_size": "[32,32]"}
    base.update(over)
    return load_config("corpus", [f"{k}={v}" for k, v in base.items()])


# -- the simulator


def test_setups_vary_with_seed_and_repeat(push):
    sim, _ = push
    setups = []
    for seed in range(6):
        raw = sim.reset(seed)
        setups.append(np.concatenate([sim.setup(), raw[4:7]]))
    assert len({tuple(np.round(s, 6)) for s in setups}) == 6, "every seed gives a different object/goal setup"
    raw = sim.reset(3)
    np.testing.assert_array_equal(np.concatenate([sim.setup(), raw[4:7]]), setups[3])


def test_plain_mt1_reset_ignores_the_seed():
    """Negative control for the test above: MT1's own reset(seed=...) keeps the same setup."""
    import metaworld

    mt1 = metaworld.MT1("push-v3", seed=simlib.SETUP_SEED)
    env = mt1.train_classes["push-v3"]()
    env.set_task(mt1.train_tasks[0])
    objs = [env.reset(seed=s)[0][4:7].copy() for s in range(3)]
    env.close()
    assert all(np.array_equal(objs[0], o) for o in objs[1:])


def test_same_observations_as_lerobots_env():
    """Image, state and reward equal lerobot's MetaworldEnv (what lerobot-eval runs) for the same seed."""
    from lerobot.envs.metaworld import MetaworldEnv

    theirs = MetaworldEnv("push-v3", obs_type="pixels_agent_pos")
    ours = simlib.MetaWorldSim("push-v3", image_size=(480, 480), shadows=True)
    try:
        obs, _ = theirs.reset(seed=1001)
        raw = ours.reset(1001)
        np.testing.assert_array_equal(ours.render(), obs["pixels"])
        np.testing.assert_array_equal(ours.observation(raw)[simlib.STATE_KEY], obs["agent_pos"].astype(np.float32))
        action = np.array([0.3, -0.2, 0.1, 0.5], dtype=np.float32)
        obs, reward, *_ = theirs.step(action)
        step = ours.step(action)
        np.testing.assert_allclose(step.raw[:4], obs["agent_pos"])
        assert step.reward == pytest.approx(reward / 10)
        assert theirs.task_description == ours.instruction
    finally:
        theirs.close()
        ours.close()


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown MetaWorld task 'push-v9'.*Did you mean: push-v3.*reach-v3"):
        simlib.check_task("push-v9")
    assert simlib.check_task("metaworld-push-v3") == "push-v3"


def test_render_failure_says_what_to_install(push, monkeypatch):
    sim, _ = push

    def broken():
        raise AttributeError("'NoneType' object has no attribute 'eglGetCurrentContext'")

    monkeypatch.setattr(sim.env, "render", broken)
    with pytest.raises(simlib.RenderingUnavailable, match=r"MUJOCO_GL=egl.*apt-get install libegl1"):
        sim.render()


def test_missing_gl_library_says_what_to_install(tmp_path):
    """A process whose OpenGL library cannot be loaded (OSMesa, not installed) gets the install hint."""
    import ctypes.util

    if ctypes.util.find_library("OSMesa"):
        pytest.skip("libOSMesa is installed here, so this failure cannot be provoked")
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    env.update(MUJOCO_GL="osmesa", PYTHONPATH=str(REPO))
    out = tmp_path / "never"
    res = subprocess.run([sys.executable, "-m", "data.metaworld.corpus", f"out={out}", "episodes=1"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "MUJOCO_GL='osmesa'" in res.stderr and "apt-get install libegl1" in res.stderr
    assert "run with MUJOCO_GL=egl" in res.stderr
    assert not out.exists()


# -- episode plans (simulated without rendering)


def test_episode_qualities_follow_the_mix():
    q = behaviours.episode_qualities({"expert": 0.4, "noisy": 0.2, "detour": 0.2, "failure": 0.2}, 10, seed=0)
    assert sorted(q) == sorted(["expert"] * 4 + ["noisy"] * 2 + ["detour"] * 2 + ["failure"] * 2)
    mix = {"expert": 0.4, "noisy": 0.2, "detour": 0.2, "failure": 0.2}
    assert q == behaviours.episode_qualities(mix, 10, seed=0)
    assert q != behaviours.episode_qualities(mix, 10, seed=1)
    assert behaviours.episode_qualities({"expert": 1, "failure": 1}, 3, seed=0).count("expert") in (1, 2)
    with pytest.raises(ValueError, match="unknown quality.*'great'"):
        behaviours.episode_qualities({"great": 1.0}, 4, seed=0)
    with pytest.raises(ValueError, match="not all 0"):
        behaviours.episode_qualities({"expert": 0.0}, 4, seed=0)


@pytest.mark.parametrize("quality", behaviours.QUALITIES)
def test_labels_hold_for_each_quality(push, tmp_path, quality):
    sim, expert = push
    cfg = corpus_cfg(tmp_path, episode_length=150)
    for index in range(3):
        rollout, behaviour, _ = behaviours.plan_episode(sim, expert, quality, index, cfg)
        again, _, _ = behaviours.plan_episode(sim, expert, quality, index, cfg)
        np.testing.assert_array_equal(rollout.actions, again.actions)  # reproducible
        assert np.all(np.abs(rollout.actions) <= 1.0)
        assert np.all((rollout.rewards >= 0) & (rollout.rewards <= 1))
        expert_actions = np.stack([np.clip(behaviour.expert_action(r), -1, 1) for r in rollout.raws[:-1]])
        gap = np.abs(rollout.actions - expert_actions).max(axis=1)
        if quality == "expert":
            assert rollout.first_success is not None and gap.max() < 1e-6
        elif quality == "noisy":
            assert (gap > 1e-3).mean() > 0.5
        elif quality == "detour":
            (start, end, kind), = behaviour.segments
            inside = np.zeros(len(gap), bool)
            inside[start:end] = True
            assert gap[~inside].max() < 1e-6 and gap[inside].max() > 1e-3
            if kind == "stall":
                assert np.all(rollout.actions[start:end, :3] == 0)
        else:
            assert rollout.first_success is None and not rollout.successes.any()


@pytest.mark.parametrize("kind", behaviours.FAILURE_KINDS)
def test_every_failure_kind_never_succeeds(push, tmp_path, kind):
    sim, expert = push
    cfg = corpus_cfg(tmp_path, episode_length=150, **{"failure.kinds": f"[{kind}]"})
    for index in range(3):
        rollout, behaviour, attempts = behaviours.plan_episode(sim, expert, "failure", index, cfg)
        assert behaviour.kind == kind and not rollout.successes.any()
        assert rollout.rewards.max() < 0.95


# -- whole corpora


def _check_corpus(out: Path, cfg, qualities: list[str]):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    labels = read_quality_labels(out)
    assert sorted(e["quality"] for e in labels["episodes"]) == sorted(qualities)
    ds = LeRobotDataset("local/metaworld-demo", root=out)
    assert ds.meta.total_episodes == len(qualities) and ds.meta.total_frames == len(qualities) * cfg.episode_length
    assert ds.fps == simlib.FPS
    key = simlib.image_key()
    assert set(ds.meta.features) >= {key, "observation.state", "action", "next.reward", "next.success", "quality"}
    cols = ds.hf_dataset.with_format("numpy")
    episode = np.asarray(cols["episode_index"]).reshape(-1)
    success = np.asarray(cols["next.success"]).reshape(-1).astype(bool)
    reward = np.asarray(cols["next.reward"]).reshape(-1)
    q = np.asarray(cols["quality"]).reshape(-1)
    assert np.all((reward >= 0) & (reward <= 1))
    for label in labels["episodes"]:
        mine = episode == label["episode_index"]
        assert np.all(q[mine] == behaviours.QUALITIES.index(label["quality"]))
        assert success[mine].any() == label["success"]
        if label["quality"] == "failure":
            assert not label["success"] and label["kind"] in behaviours.FAILURE_KINDS
        if label["quality"] == "expert":
            assert label["success"] and success[mine].argmax() == label["first_success"]
    item = ds[0]
    assert item["task"] == "Push the puck to a goal"
    assert tuple(item[key].shape) == (3, 32, 32)
    # the stored video frame is the rendered setup of episode 0 (up to AV1 compression)
    with simlib.MetaWorldSim("push-v3", image_size=(32, 32), shadows=False) as sim:
        sim.reset(labels["episodes"][0]["setup_seed"])
        fresh = sim.render().astype(np.float32) / 255.0
    stored = item[key].numpy().transpose(1, 2, 0)
    assert np.abs(stored - fresh).mean() < 0.03


def test_corpus_of_an_expert_and_a_failure_reloads_with_its_labels(tmp_path):
    cfg = corpus_cfg(tmp_path, **{"mix.expert": 1, "mix.noisy": 0, "mix.detour": 0, "mix.failure": 1})
    out = demo.generate(cfg, progress=False)
    _check_corpus(out, cfg, ["expert", "failure"])
    assert not (out.parent / "corpus.partial").exists()
    # same config again: reused, untouched
    stamp = (out / LABELS_FILE).stat().st_mtime_ns
    assert demo.generate(cfg, progress=False) == out
    assert (out / LABELS_FILE).stat().st_mtime_ns == stamp


@pytest.mark.slow
@pytest.mark.parametrize("quality", behaviours.QUALITIES)
def test_two_episode_corpus_of_each_quality(tmp_path, quality):
    mix = {f"mix.{q}": (1 if q == quality else 0) for q in behaviours.QUALITIES}
    cfg = corpus_cfg(tmp_path, **mix)
    _check_corpus(demo.generate(cfg, progress=False), cfg, [quality, quality])


def test_bad_corpus_configs(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown MetaWorld task 'pusj-v3'.*push-v3"):
        demo.generate(corpus_cfg(tmp_path, task="pusj-v3"))
    with pytest.raises(ValueError, match="episode_length=501"):
        demo.generate(corpus_cfg(tmp_path, episode_length=501))
    with pytest.raises(ValueError, match=r"failure.kinds=\['explode'\]: choose from push_away"):
        demo.generate(corpus_cfg(tmp_path, **{"failure.kinds": "[explode]"}))
    with pytest.raises(ValueError, match=r"detour.start=\[30, 5\]"):
        demo.generate(corpus_cfg(tmp_path, **{"detour.start": "[30,5]"}))
    assert not (tmp_path / "corpus").exists()
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "something").write_text("x")
    with pytest.raises(ConfigError, match="not a corpus written by python -m data.demo"):
        demo.generate(corpus_cfg(tmp_path))
    assert demo.main([f"out={tmp_path / 'c2'}", "task=nope-v3"]) == 2
    assert "Valid tasks:" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="not a corpus"):
        read_quality_labels(tmp_path)


def test_wrong_goal_detour_aims_at_another_goal_then_resumes(push, tmp_path):
    """A 'wrong target first' detour: inside the segment the actions are the expert's towards a goal 15-25 cm
    off the true one; outside it they are the expert's towards the true goal."""
    sim, expert = push
    cfg = corpus_cfg(tmp_path, episode_length=150, **{"detour.kinds": "[wrong_goal]"})
    rollout, behaviour, _ = behaviours.plan_episode(sim, expert, "detour", 0, cfg)
    (start, end, kind), = behaviour.segments
    assert kind == "wrong_goal" and list(behaviour.segment_goals) == [start]
    goal, fake = rollout.raws[0][-3:], behaviour.segment_goals[start]
    assert 0.15 <= np.linalg.norm(fake[:2] - goal[:2]) <= 0.25 and fake[2] == goal[2]
    raws = rollout.raws[:-1]
    towards_fake = np.stack([np.clip(behaviour.expert_action(r, fake), -1, 1) for r in raws])
    towards_true = np.stack([np.clip(behaviour.expert_action(r), -1, 1) for r in raws])
    inside = np.zeros(len(raws), bool)
    inside[start:end] = True
    np.testing.assert_allclose(rollout.actions[inside], towards_fake[inside], atol=1e-6)
    np.testing.assert_allclose(rollout.actions[~inside], towards_true[~inside], atol=1e-6)
    assert np.abs(rollout.actions[inside] - towards_true[inside]).max() > 1e-2  # negative control
    assert behaviour.info()["segment_goals"] == {str(start): [round(float(v), 5) for v in fake]}
