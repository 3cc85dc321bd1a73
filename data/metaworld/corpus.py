"""python -m data.demo out=DIR task=push-v3 episodes=N ...: a mixed-quality MetaWorld corpus as a LeRobot v3 dataset.

MetaWorld's scripted expert drives every episode; the episode's *quality* (``expert``, ``noisy``, ``detour``,
``failure``) decides how its actions are spoiled (:mod:`data.metaworld.behaviours`).

Features follow lerobot's MetaWorld env (see :mod:`data.metaworld.sim`): ``observation.images.corner2``
(video), ``observation.state`` (hand xyz + gripper), ``action`` (4-d), ``next.reward`` (dense reward / 10, in
[0, 1]), ``next.success``, ``quality`` (per-frame index into :data:`~data.metaworld.behaviours.QUALITIES`) and
the task's instruction. Two options serve state-based policies: ``environment_state: true`` also stores
MetaWorld's full 39-d observation as ``observation.environment_state`` (what the scripted expert reads: hand,
gripper, object pose, goal), and ``camera: null`` stores no camera at all, so nothing is rendered and a corpus
is written in seconds. Per-episode labels (quality, failure or detour kind, detour segments, setup seed, success,
first success step, return) go to ``meta/demo.json`` (:mod:`data.quality_labels`, the one definition of that
file; read them with :func:`data.quality_labels.read_quality_labels`). They are for reporting: nothing
downstream may train on them.

Episode ``i`` uses the task setup of seed ``seed + i`` (the same setups lerobot's env draws for those seeds) and
a random stream of its own, so the same config gives the same corpus. Each episode is first simulated without
rendering (cheap); only accepted episodes are replayed with rendering (when a camera is stored) and stored.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from configs import ConfigError
from data.metaworld import sim as simlib
from data.metaworld.behaviours import (
    DETOUR_KINDS,
    FAILURE_KINDS,
    QUALITIES,
    Trajectory,
    episode_qualities,
    plan_episode,
)
from data.quality_labels import LABELS_FILE, has_quality_labels, read_quality_labels, write_quality_labels

os.environ.setdefault("SVT_LOG", "1")  # the AV1 encoder's per-episode banner: errors only

CONFIG_NAME = "corpus"
# config keys added after the first corpora were written, with the value that reproduces those corpora
LATER_KEYS = {"environment_state": False}
PARTIAL_MARK = "TOPBC_PARTIAL"  # marks the staging folder as this command's, so a re-run may delete it


def render_replay(sim: simlib.MetaWorldSim, setup_seed: int, trajectory: Trajectory) -> np.ndarray:
    """Replay a trajectory's actions and render the observation before each step (T×H×W×3 uint8)."""
    raw = sim.reset(setup_seed)
    frames = []
    for t, a in enumerate(trajectory.actions):
        if not np.allclose(raw, trajectory.raws[t], atol=1e-6):
            raise RuntimeError(f"replay of setup {setup_seed} diverged at step {t}: MetaWorld is not deterministic "
                               "here, so rendered frames would not match the stored states")
        frames.append(sim.render())
        raw = sim.step(a).raw
    return np.stack(frames)


def demo_features(image_size: tuple[int, int], camera: str | None, environment_state: bool = False,
                  quality: bool = True) -> dict:
    """The corpus's lerobot features: the camera (none when ``camera`` is None), the states, action, reward,
    success and (unless ``quality`` is false, as in a recording of policy rollouts) the quality column."""
    h, w = image_size
    features = {}
    if camera is not None:
        features[simlib.image_key(camera)] = {"dtype": "video", "shape": (h, w, 3),
                                              "names": ["height", "width", "channels"]}
    features[simlib.STATE_KEY] = {"dtype": "float32", "shape": (simlib.STATE_DIM,),
                                  "names": ["hand_x", "hand_y", "hand_z", "gripper"]}
    if environment_state:
        features[simlib.ENV_STATE_KEY] = {"dtype": "float32", "shape": (simlib.ENV_STATE_DIM,), "names": None}
    features |= {
        "action": {"dtype": "float32", "shape": (simlib.ACTION_DIM,), "names": ["x", "y", "z", "gripper"]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.success": {"dtype": "bool", "shape": (1,), "names": None},
    }
    if quality:
        features["quality"] = {"dtype": "int64", "shape": (1,), "names": None}
    return features


def stored_camera(cfg: DictConfig) -> str | None:
    """The camera the corpus stores, or None (``camera: null``: state only, nothing rendered)."""
    camera = cfg.get("camera")
    return None if camera in (None, "", "none", "null") else str(camera)


def check_config(cfg: DictConfig) -> None:
    from configs.types import check_types

    check_types(cfg, "corpus")  # typed values, the one check every command shares
    simlib.check_task(cfg.task)
    n = int(cfg.episode_length)
    if not 1 <= n <= simlib.MAX_STEPS:
        raise ValueError(f"episode_length={n}: MetaWorld episodes have 1..{simlib.MAX_STEPS} steps")
    if int(cfg.episodes) < 1:
        raise ValueError(f"episodes={cfg.episodes}: need at least 1")
    if not isinstance(cfg.get("environment_state", False), bool):
        raise ValueError(f"environment_state={cfg.environment_state!r}: give true or false")
    if stored_camera(cfg) is None and not cfg.get("environment_state", False):
        print("warning: camera=null without environment_state=true stores only the 4-d observation.state; a "
              "policy trained on it cannot see the object or the goal", file=sys.stderr)
    if len(cfg.image_size) != 2:
        raise ValueError(f"image_size={list(cfg.image_size)}: give [height, width]")
    if int(cfg.fps) != simlib.FPS:
        print(f"warning: fps={cfg.fps} differs from MetaWorld's control rate ({simlib.FPS} Hz, what lerobot's "
              "env reports); timestamps will not match the simulator's time", file=sys.stderr)
    if float(cfg.noisy.scale) < 0:
        raise ValueError(f"noisy.scale={cfg.noisy.scale}: a standard deviation must be >= 0")
    for name, kinds, valid in (("detour.kinds", cfg.detour.kinds, DETOUR_KINDS),
                               ("failure.kinds", cfg.failure.kinds, FAILURE_KINDS)):
        bad = [k for k in kinds if k not in valid]
        if bad or not kinds:
            raise ValueError(f"{name}={list(kinds)}: choose from {', '.join(valid)}")
    for name in ("detour.start", "detour.length", "failure.stall_after"):
        v = OmegaConf.select(cfg, name)
        if len(v) != 2 or int(v[0]) > int(v[1]) or int(v[0]) < 0:
            raise ValueError(f"{name}={list(v)}: give [low, high] with 0 <= low <= high")
    episode_qualities(dict(cfg.mix), int(cfg.episodes), int(cfg.seed))


def generate(cfg: DictConfig, progress: bool = True) -> Path:
    """Write the corpus described by ``cfg`` to ``cfg.out``; returns that folder."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from tqdm import tqdm

    check_config(cfg)
    out = Path(cfg.out)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    ours = out.is_dir() and has_quality_labels(out)  # a corpus this command wrote (its labels document)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if ours and same_corpus(read_quality_labels(out).get("config", {}), resolved):
            print(f"{out} already holds this corpus; nothing to do")
            return out
        if not ours:
            raise ConfigError(f"out={out} exists and is not a corpus written by python -m data.demo (it has no "
                              f"{LABELS_FILE}); choose another out= (overwrite=true only replaces a corpus this "
                              "command wrote, and never this folder)")
        if not cfg.overwrite:
            raise ConfigError(f"out={out} holds another corpus; choose another out=, or pass overwrite=true to "
                              "replace it")
    # written in a staging folder of ours beside out and moved into place whole
    staging = out.with_name(f".{out.name}.partial")
    if staging.exists():
        if not (staging / PARTIAL_MARK).is_file():
            raise ConfigError(f"{staging} exists and was not made by python -m data.demo; move it away (the corpus "
                              "is written there first)")
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / PARTIAL_MARK).write_text("a corpus being written by python -m data.demo; deleted when it is done\n")
    tmp = staging / "dataset"

    task = simlib.check_task(cfg.task)
    image_size = (int(cfg.image_size[0]), int(cfg.image_size[1]))
    qualities = episode_qualities(dict(cfg.mix), int(cfg.episodes), int(cfg.seed))
    camera = stored_camera(cfg)
    env_state = bool(cfg.get("environment_state", False))
    sim = simlib.MetaWorldSim(task, image_size=image_size, camera=camera or simlib.CAMERA,
                              shadows=bool(cfg.shadows))
    expert = simlib.expert_policy(task)
    ds = LeRobotDataset.create(cfg.repo_id, fps=int(cfg.fps), features=demo_features(image_size, camera, env_state),
                               root=tmp, robot_type="sawyer", use_videos=camera is not None)
    key = simlib.image_key(camera) if camera is not None else None
    episodes = []
    t0 = time.perf_counter()
    bar = tqdm(qualities, desc=f"{task} corpus", unit="ep", disable=not progress)
    try:
        for index, quality in enumerate(bar):
            trajectory, behaviour, attempts = plan_episode(sim, expert, quality, index, cfg)
            frames = render_replay(sim, int(cfg.seed) + index, trajectory) if camera is not None else None
            q = np.array([QUALITIES.index(quality)], dtype=np.int64)
            for t in range(len(trajectory.actions)):
                frame = {
                    simlib.STATE_KEY: trajectory.raws[t, : simlib.STATE_DIM].astype(np.float32),
                    "action": trajectory.actions[t],
                    "next.reward": trajectory.rewards[t : t + 1],
                    "next.success": trajectory.successes[t : t + 1],
                    "quality": q,
                    "task": sim.instruction,
                }
                if frames is not None:
                    frame[key] = frames[t]
                if env_state:
                    frame[simlib.ENV_STATE_KEY] = trajectory.raws[t].astype(np.float32)
                ds.add_frame(frame)
            ds.save_episode(parallel_encoding=False)
            episodes.append({
                "episode_index": index, **behaviour.info(), "setup_seed": int(cfg.seed) + index,
                "attempts": attempts, "success": trajectory.first_success is not None,
                "first_success": trajectory.first_success,
                "return": round(float(trajectory.rewards.sum()), 5),
                "final_reward": round(float(trajectory.rewards[-1]), 5),
            })
            bar.set_postfix(quality=quality, success=trajectory.first_success is not None)
        ds.finalize()
        images = tmp / "images"  # lerobot's frame staging folder, empty once videos are encoded
        if images.is_dir() and not any(p.is_file() for p in images.rglob("*")):
            shutil.rmtree(images)
    finally:
        sim.close()
    write_quality_labels(tmp, task=task, instruction=sim.instruction, qualities=list(QUALITIES),
                         quality_column="quality", seconds=round(time.perf_counter() - t0, 2),
                         config=resolved, episodes=episodes)
    if out.exists():  # our own previous corpus (overwrite=true), or an empty folder
        shutil.rmtree(out)
    tmp.rename(out)
    shutil.rmtree(staging)
    return out


def same_corpus(old: dict, new: dict) -> bool:
    """Whether two corpus configs describe the same corpus (where it is written, and overwrite, aside)."""
    ignore = {"out", "overwrite"}
    old = {**LATER_KEYS, **old}  # corpora written before a key existed were written with its old behaviour
    new = {**LATER_KEYS, **new}
    return {k: v for k, v in old.items() if k not in ignore} == {k: v for k, v in new.items() if k not in ignore}


def summary(labels: dict) -> str:
    """Episodes, successes and mean return per quality of a corpus's labels document."""
    rows = [f"{labels['task']}: {len(labels['episodes'])} episodes ({labels['instruction']!r})"]
    for q in labels["qualities"]:
        eps = [e for e in labels["episodes"] if e["quality"] == q]
        if eps:
            ok = sum(e["success"] for e in eps)
            rows.append(f"  {q:8s} {len(eps):4d} episodes, {ok} succeed, mean return "
                        f"{np.mean([e['return'] for e in eps]):.1f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from configs.commands import run_command

    # ValueError: check_config's messages about a bad value; corpus writing is all or nothing (a staging folder)
    return run_command(_main, argv, errors=(ValueError,),
                       interrupted="interrupted; re-run the same command (the corpus is written whole, from the start)")


def _main(argv: list[str]) -> int:
    from configs import parse_cli, save_config

    cfg = parse_cli(CONFIG_NAME, argv)
    out = generate(cfg)
    save_config(cfg, out / "meta")
    print(summary(read_quality_labels(out)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
