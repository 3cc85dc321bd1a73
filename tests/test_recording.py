"""Rollouts recorded as a LeRobot v3 dataset (``python -m policies.evaluate ... record=true``): read back with the
project's reader, every row checked against eval.json and against an independent re-run of the policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

import policies.evaluation as ev
from data.metaworld import sim as simlib
from data.source import open_dataset
from policies.evaluation.recording import (
    RECORDING_DIR,
    RECORDING_INFO,
    RolloutRecorder,
    default_name,
    recording_info,
)

SIZE = 32
INSTRUCTION = "Push the puck to a goal"
# seeds 1000..1002 at 60 steps: the expert fails, succeeds at step 45 (a 46-step episode), fails
EXPERT = {"episodes": 3, "max_steps": 60}
RANDOM = {"episodes": 2, "max_steps": 40, "record_name": "uniform-random"}


def record(out, policy: str, **over) -> dict:
    args = {"policy": policy, "out": str(out), "videos": 0, "env.image_size": f"[{SIZE},{SIZE}]", "record": "true",
            **over}
    assert ev.main([f"{k}={v}" for k, v in args.items()]) == 0
    return json.loads((out / "eval.json").read_text())


@pytest.fixture(scope="module")
def expert_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "expert"
    return out, record(out, "expert", **EXPERT)


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "random"
    return out, record(out, "random", **RANDOM)


def replay(policy, seeds: list[int], lengths: list[int]) -> list[dict[str, np.ndarray]]:
    """The policy re-run step by step on the same setups, outside the rollout code: per episode the states
    it saw, its actions, the rewards and the images rendered before each step."""
    episodes = []
    with simlib.MetaWorldSim("push-v3", image_size=(SIZE, SIZE), shadows=False) as sim:
        for seed, length in zip(seeds, lengths, strict=True):
            policy.reset()
            raw = sim.reset(seed)
            rows = {"state": [], "action": [], "reward": [], "image": []}
            for _ in range(length):
                rows["image"].append(sim.render())
                rows["state"].append(raw[:4].astype(np.float32))
                action = policy(raw, sim.observation(raw))
                step = sim.step(action)
                rows["action"].append(action)
                rows["reward"].append(step.reward)
                raw = step.raw
            episodes.append({k: np.stack(v) for k, v in rows.items()})
    return episodes


def read_back(root) -> tuple[object, list[dict[str, np.ndarray]]]:
    src = open_dataset(root)
    episodes = []
    for ep in src.episodes():
        cols = src.read_columns(ep, ["observation.state", "action", "next.reward", "next.success"])
        cols["frames"] = src.decode_frames(ep, src.camera())
        cols["length"], cols["task"] = ep.length, ep.task
        episodes.append(cols)
    return src, episodes


def check_against_eval_json(report: dict, src, episodes: list[dict]) -> None:
    assert src.total_episodes == report["episodes"] == len(episodes)
    assert src.fps == simlib.FPS
    assert set(src.features) >= {simlib.image_key(), simlib.STATE_KEY, "action", "next.reward", "next.success"}
    assert "quality" not in src.features and simlib.ENV_STATE_KEY not in src.features
    for ep, res in zip(episodes, report["per_episode"], strict=True):
        assert ep["length"] == res["length"]
        success = ep["next.success"][:, 0].astype(bool)
        assert success.any() == res["success"]
        if res["success"]:
            first = int(np.argmax(success))
            assert first == res["first_success"] and success[first:].all()
        assert ep["next.reward"].sum() == pytest.approx(res["ret"], abs=1e-3)
        assert ep["frames"].shape == (res["length"], SIZE, SIZE, 3) and ep["frames"].dtype == np.uint8
        assert ep["task"] == INSTRUCTION


def check_against_replay(episodes: list[dict], fresh: list[dict]) -> None:
    for ep, ref in zip(episodes, fresh, strict=True):
        np.testing.assert_allclose(ep["action"], ref["action"], atol=1e-6)
        np.testing.assert_allclose(ep["observation.state"], ref["state"], atol=1e-6)
        np.testing.assert_allclose(ep["next.reward"][:, 0], ref["reward"], atol=1e-6)
        # the video holds the image of each step, in order (up to AV1 compression)
        stored = ep["frames"].astype(np.float32) / 255
        rendered = ref["image"].astype(np.float32) / 255
        assert np.abs(stored - rendered).mean() < 0.03
        assert np.abs(stored - rendered[::-1]).mean() > np.abs(stored - rendered).mean()


def test_expert_recording_holds_what_eval_json_counts(expert_run):
    out, report = expert_run
    assert report["recording"] == RECORDING_DIR and report["record_name"] == "expert"
    assert [r["success"] for r in report["per_episode"]] == [False, True, False]  # a mixed recording
    assert report["lengths"] == [60, 46, 60]
    src, episodes = read_back(out / RECORDING_DIR)
    check_against_eval_json(report, src, episodes)
    fresh = replay(ev.ExpertPolicy("push-v3"), report["seeds"], report["lengths"])
    check_against_replay(episodes, fresh)
    info = recording_info(out / RECORDING_DIR)
    assert info["policy"] == "expert" and info["policy_path"] == "expert"  # the default name
    assert (info["task"], info["instruction"], info["source"]) == ("push-v3", INSTRUCTION, "simulator (MetaWorld)")
    assert (info["seeds"], info["max_steps"], info["stop_on_success"]) == ([1000, 1001, 1002], 60, True)
    assert not (out / RECORDING_DIR / ".partial").exists() and not (out / RECORDING_DIR / "images").exists()


def test_random_recording_and_an_explicit_name(random_run):
    out, report = random_run
    assert report["successes"] == 0 and report["lengths"] == [40, 40]
    src, episodes = read_back(out / RECORDING_DIR)
    check_against_eval_json(report, src, episodes)
    # negative control: no row of a recording whose episodes all failed says success
    assert not any(ep["next.success"].any() for ep in episodes)
    check_against_replay(episodes, replay(ev.RandomPolicy(report["seed"]), report["seeds"], report["lengths"]))
    info = recording_info(out / RECORDING_DIR)
    assert info["policy"] == report["record_name"] == "uniform-random" != default_name("random")
    assert info["policy_path"] == "random" and info["seeds"] == [1000, 1001]


def test_expert_and_random_recordings_differ(expert_run, random_run):
    """Negative control for the action check: the two policies' recorded actions are not alike."""
    _, expert = read_back(expert_run[0] / RECORDING_DIR)
    _, rand = read_back(random_run[0] / RECORDING_DIR)
    assert np.abs(expert[0]["action"][:40] - rand[0]["action"]).mean() > 0.2


def test_next_success_stays_true_from_the_first_success(tmp_path):
    """MetaWorld's success can drop again after it is reached; the recorded column does not."""
    with simlib.MetaWorldSim("push-v3", image_size=(SIZE, SIZE), shadows=False) as sim:
        raw = sim.reset(0)
        recorder = RolloutRecorder(tmp_path / "rec", sim, {"policy": "x"})
        for success in (False, True, False, True, False):
            step = simlib.Step(raw=raw, reward=0.5, success=success)
            recorder.step(sim.render(), raw, np.zeros(4, np.float32), step)
        recorder.end_episode()
        recorder.finish()
    _, (ep,) = read_back(tmp_path / "rec")
    assert ep["next.success"][:, 0].tolist() == [0, 1, 1, 1, 1]
    assert recording_info(tmp_path / "rec") == {"policy": "x", "episodes": 1}


def test_rerun_with_another_config_is_refused_and_keeps_everything(expert_run, tmp_path, capsys):
    out, report = expert_run
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert ev.main(["policy=expert", f"out={out}", "episodes=3", "max_steps=50", "videos=0",
                    f"env.image_size=[{SIZE},{SIZE}]", "record=true"]) == 2
    err = capsys.readouterr().err
    assert f"out={out} holds the output of a different run" in err  # the evaluation's folder, claimed first
    assert "max_steps: 60 -> 50" in err and "overwrite=true" in err and "choose another folder" in err
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # eval.json, config.yaml and the recording untouched
    # a folder named recording that is not ours is refused too, and left alone
    other = tmp_path / "other"
    (other / RECORDING_DIR).mkdir(parents=True)
    (other / RECORDING_DIR / "mine.txt").write_text("x")
    assert ev.main(["policy=random", f"out={other}", "episodes=1", "max_steps=5", "videos=0",
                    f"env.image_size=[{SIZE},{SIZE}]", "record=true"]) == 2
    assert "not written by a topbc command" in capsys.readouterr().err
    left = sorted(str(p.relative_to(other)) for p in other.rglob("*"))
    assert left == [RECORDING_DIR, f"{RECORDING_DIR}/mine.txt"]


def test_rerun_of_the_same_config_replaces_the_recording(tmp_path):
    out = tmp_path / "ev"
    args = {"episodes": 1, "max_steps": 8, "record_name": "r"}
    first = record(out, "random", **args)
    second = record(out, "random", **args)
    assert first["lengths"] == second["lengths"] == [8]
    src, (ep,) = read_back(out / RECORDING_DIR)
    assert src.total_episodes == 1 and ep["length"] == 8
    assert recording_info(out / RECORDING_DIR)["policy"] == "r"
    # overwrite=true replaces a recording of another configuration
    third = record(out, "random", **{**args, "max_steps": 5, "overwrite": "true"})
    src, (ep,) = read_back(out / RECORDING_DIR)
    assert third["lengths"] == [5] and ep["length"] == 5


def test_names_and_provenance_reading(tmp_path):
    assert default_name("expert") == "expert" and default_name("random") == "random"
    assert default_name("outputs/run7/export") == "run7" and default_name("exports/act_rabc/") == "act_rabc"
    assert recording_info(tmp_path) is None  # not a recording (a robot's own dataset, a corpus)
    (tmp_path / "meta").mkdir()
    (tmp_path / RECORDING_INFO).write_text("{not json")
    with pytest.raises(ValueError, match="topbc_recording.json is not valid JSON"):
        recording_info(tmp_path)


def test_record_name_must_be_a_name(tmp_path, capsys):
    assert ev.main(["policy=expert", f"out={tmp_path / 'e'}", "record=true", "record_name=[a,b]"]) == 2
    assert "record_name=['a', 'b'] must be a string or null" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_without_record_nothing_is_recorded(tmp_path):
    out = tmp_path / "plain"
    assert ev.main(["policy=random", f"out={out}", "episodes=1", "max_steps=5", "videos=0",
                    f"env.image_size=[{SIZE},{SIZE}]"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["recording"] is None and report["record_name"] is None
    assert not (out / RECORDING_DIR).exists()
