"""Simulator evaluation: success counting with scripted policies, Wilson intervals, exported policies, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import policies.evaluation as ev
from configs import load_config
from data.metaworld import sim as simlib
from tests.fixtures.sim import tiny_act_export


@pytest.fixture(scope="module")
def push():
    sim = simlib.MetaWorldSim("push-v3", image_size=(32, 32), shadows=False)
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def act_export(tmp_path_factory):
    return tiny_act_export(tmp_path_factory.mktemp("export") / "act")


def test_wilson_interval_known_values():
    # reference values of the 95% Wilson score interval (z = 1.96)
    assert ev.wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-5)
    assert ev.wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-5)
    assert ev.wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-5)
    assert ev.wilson_interval(45, 50) == pytest.approx((0.786, 0.9565), abs=1e-3)
    with pytest.raises(ValueError, match="n=0"):
        ev.wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes=11 outside 0..10"):
        ev.wilson_interval(11, 10)


def test_summary_counts_successes():
    eps = [ev.RolloutResult(0, True, 40, 41, 20.0), ev.RolloutResult(1, False, None, 150, 3.0),
           ev.RolloutResult(2, True, 60, 61, 30.0), ev.RolloutResult(3, False, None, 150, 1.0)]
    s = ev.summarise(eps)
    assert (s["episodes"], s["successes"], s["success_rate"]) == (4, 2, 0.5)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(ev.wilson_interval(2, 4))
    assert s["mean_return"] == pytest.approx(13.5) and s["lengths"] == [41, 150, 61, 150]


def test_expert_succeeds_and_random_fails_through_the_same_counting(push):
    expert, _ = ev.evaluate_policy(push, ev.ExpertPolicy("push-v3"), episodes=8, seed=1000, max_steps=150)
    rand, _ = ev.evaluate_policy(push, ev.RandomPolicy(0), episodes=8, seed=1000, max_steps=150)
    assert expert["success_rate"] == 1.0 and expert["ci_low"] > 0.6
    assert rand["success_rate"] == 0.0 and rand["ci_high"] < 0.4
    assert all(e["first_success"] == e["length"] - 1 for e in expert["per_episode"])  # stops at success
    assert max(expert["lengths"]) < 150 and rand["lengths"] == [150] * 8
    assert expert["mean_return"] > 5 * rand["mean_return"]
    assert [e["seed"] for e in expert["per_episode"]] == list(range(1000, 1008))


def test_without_stopping_successes_are_the_same(push):
    stop, _ = ev.evaluate_policy(push, ev.ExpertPolicy("push-v3"), episodes=3, seed=5, max_steps=120)
    full, _ = ev.evaluate_policy(push, ev.ExpertPolicy("push-v3"), episodes=3, seed=5, max_steps=120,
                                 stop_on_success=False)
    assert full["lengths"] == [120] * 3
    assert [e["first_success"] for e in full["per_episode"]] == [e["first_success"] for e in stop["per_episode"]]


def test_a_policy_that_stops_short_fails(push):
    """Negative control: the expert cut off before it can finish is counted as a failure."""
    short, _ = ev.evaluate_policy(push, ev.ExpertPolicy("push-v3"), episodes=3, seed=1000, max_steps=20)
    assert short["successes"] == 0


def test_bad_actions_are_refused(push):
    class Broken:
        needs_images = False

        def reset(self):
            pass

        def __call__(self, raw, obs):
            return np.array([np.nan, 0, 0, 0], dtype=np.float32)

    with pytest.raises(ValueError, match="policy returned action .* at step 0 of seed 3"):
        ev.rollout(push, Broken(), seed=3, max_steps=10)
    with pytest.raises(ValueError, match="max_steps=501"):
        ev.rollout(push, ev.RandomPolicy(), seed=3, max_steps=501)


def test_exported_policy_runs_and_writes_eval_json(tmp_path, act_export):
    import av

    cfg = load_config("evaluate", [f"policy={act_export}", f"out={tmp_path / 'eval'}", "episodes=2", "max_steps=6",
                                   "videos=1"])
    report = ev.evaluate(cfg, progress=False)
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for key in ("success_rate", "ci_low", "ci_high", "episodes", "mean_return", "lengths"):
        assert key in saved
    assert saved["episodes"] == 2 and saved["image_size"] == [32, 32]  # taken from the export
    assert saved["lengths"] == [6, 6] and saved["success_rate"] == 0.0
    (video,) = saved["videos"]
    with av.open(str(tmp_path / "eval" / video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 7 and frames[0].shape == (32, 32, 3)


def test_exported_policy_follows_its_processors(push, act_export):
    """Two runs of the same export on the same setup give the same actions; they are finite and in range."""
    policy = ev.LeRobotPolicy(act_export, "Push the puck to a goal")
    actions = []
    for _ in range(2):
        policy.reset()
        raw = push.reset(7)
        actions.append(policy(raw, push.observation(raw, push.render())))
    np.testing.assert_allclose(actions[0], actions[1], atol=1e-6)
    assert actions[0].shape == (4,) and np.isfinite(actions[0]).all()


def test_export_with_features_the_env_lacks_is_refused(tmp_path, push):
    extra = tiny_act_export(tmp_path / "extra", extra_inputs={"observation.velocity": (7,)})
    policy = ev.LeRobotPolicy(extra, "x")
    with pytest.raises(ev.FeatureMismatch, match=r"expects observation features \['observation.velocity'\]"):
        policy.check_features(ev.provided_features(push))
    other_cam = tiny_act_export(tmp_path / "top", camera="top")
    with pytest.raises(ev.FeatureMismatch, match=r"\['observation.images.top'\].*observation.images.corner2"):
        ev.LeRobotPolicy(other_cam, "x").check_features(ev.provided_features(push))
    with pytest.raises(ev.FeatureMismatch, match=r"observation.images.corner2: policy \(3, 32, 32\), env \(3, 48, 48\)"):
        ev.LeRobotPolicy(tiny_act_export(tmp_path / "a"), "x").check_features(
            {simlib.STATE_KEY: (4,), simlib.image_key(): (3, 48, 48)})


def test_bad_evaluate_inputs(tmp_path, capsys):
    out = tmp_path / "eval"
    assert ev.main([f"policy={tmp_path / 'missing'}", f"out={out}", "episodes=1"]) == 2
    assert "is not an exported policy" in capsys.readouterr().err
    assert ev.main([f"out={out}", "episodes=1"]) == 2
    assert "policy= is required" in capsys.readouterr().err
    assert ev.main(["policy=expert", "env.task=push-v33", f"out={out}", "episodes=1"]) == 2
    assert "Did you mean: push-v3" in capsys.readouterr().err
    assert ev.main(["policy=expert", "video_format=avi", f"out={out}"]) == 2
    assert "choose mp4 or gif" in capsys.readouterr().err
    assert not (out / "eval.json").exists()


def test_cli_scripted_expert(tmp_path, capsys):
    out = tmp_path / "eval"
    assert ev.main(["policy=expert", f"out={out}", "episodes=3", "videos=1", "video_format=gif"]) == 0
    saved = json.loads((out / "eval.json").read_text())
    assert saved["success_rate"] == 1.0 and saved["videos"][0].endswith("_success.gif")
    assert (out / saved["videos"][0]).stat().st_size > 1000
    assert "success 3/3" in capsys.readouterr().out
