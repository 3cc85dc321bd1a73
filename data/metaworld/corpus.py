"""python -m data.demo out=DIR task=push-v3 episodes=N ...: a mixed-quality MetaWorld corpus as a LeRobot v3 dataset.

MetaWorld's scripted expert drives every episode; the episode's *quality* decides how its actions are spoiled:

- ``expert``: the expert as is;
- ``noisy``: Gaussian noise of std ``noisy.scale`` added to every action;
- ``detour``: one or more segments where the arm wanders towards a random point (``wander``), stands still
  (``stall``) or does the task towards a wrong goal (``wrong_goal``: the expert with a goal 15-25 cm off, so it
  carries or pushes the object the wrong way first), after which the expert resumes towards the true goal;
- ``failure``: an episode that never succeeds within ``episode_length`` steps: ``push_away`` (the expert aims at
  the goal mirrored through the object, pushing it away), ``wrong_goal`` (aims at a wrong goal),
  ``stall`` (starts like the expert, then stops for good) or ``random`` (smoothed random actions). A failure that
  succeeds by chance is drawn again (up to ``failure.max_attempts`` times).

Features follow lerobot's MetaWorld env (see :mod:`data.sim`): ``observation.images.corner2`` (video),
``observation.state`` (hand xyz + gripper), ``action`` (4-d), ``next.reward`` (dense reward / 10, in [0, 1]),
``next.success``, ``quality`` (per-frame index into :data:`QUALITIES`) and the task's instruction. Two options
serve state-based policies: ``environment_state: true`` also stores MetaWorld's full 39-d observation as
``observation.environment_state`` (what the scripted expert reads: hand, gripper, object pose, goal), and
``camera: null`` stores no camera at all, so nothing is rendered and a corpus is written in seconds. Per-episode
labels (quality, failure or detour kind, detour segments, setup seed, success, first success step, return) go to
``meta/demo.json``; read them with :func:`read_labels`. They are for reporting: nothing downstream may train on them.

Episode ``i`` uses the task setup of seed ``seed + i`` (the same setups lerobot's env draws for those seeds) and
a random stream of its own, so the same config gives the same corpus. Each episode is first simulated without
rendering (cheap); only accepted episodes are replayed with rendering (when a camera is stored) and stored.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from data.metaworld import sim as simlib

os.environ.setdefault("SVT_LOG", "1")  # the AV1 encoder's per-episode banner: errors only

CONFIG_NAME = "corpus"
LABELS_FILE = "meta/demo.json"
QUALITIES = ("expert", "noisy", "detour", "failure")
DETOUR_KINDS = ("wander", "stall", "wrong_goal")
FAILURE_KINDS = ("push_away", "wrong_goal", "stall", "random")
FORMAT_VERSION = 1
# config keys added after the first corpora were written, with the value that reproduces those corpora
LATER_KEYS = {"environment_state": False}


# --------------------------------------------------------------------------------------------------------------
# episode plans: which quality each episode gets


def episode_qualities(mix: dict[str, float], episodes: int, seed: int) -> list[str]:
    """One quality per episode: counts from the fractions (largest remainder), order shuffled by ``seed``."""
    unknown = sorted(set(mix) - set(QUALITIES))
    if unknown:
        raise ValueError(f"unknown quality {unknown} in mix; valid: {', '.join(QUALITIES)}")
    fractions = np.array([float(mix.get(q, 0.0)) for q in QUALITIES])
    if (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"mix={dict(mix)}: fractions must be >= 0 and not all 0")
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: need at least 1")
    exact = fractions / fractions.sum() * episodes
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: episodes - counts.sum()]:
        counts[i] += 1
    labels = [q for q, n in zip(QUALITIES, counts, strict=True) for _ in range(n)]
    rng = np.random.default_rng([seed, 7919])
    return [labels[i] for i in rng.permutation(episodes)]


# --------------------------------------------------------------------------------------------------------------
# behaviours: the expert, spoiled in one of the ways above. act(raw, t) -> action in [-1, 1]^4


def _towards(hand: np.ndarray, target: np.ndarray, gain: float = 10.0) -> np.ndarray:
    return np.clip(gain * (target - hand), -1.0, 1.0)


@dataclass
class Behaviour:
    """How one episode's actions are made from the expert's; ``info`` is stored in the labels."""

    expert: object
    rng: np.random.Generator
    quality: str
    kind: str | None = None
    noise: float = 0.0
    segments: list[tuple[int, int, str]] = field(default_factory=list)  # [start, end) steps and kind
    stop_at: int | None = None
    fake_goal: np.ndarray | None = None
    segment_goals: dict[int, np.ndarray] = field(default_factory=dict)  # wrong_goal detours: segment start -> goal
    _target: np.ndarray | None = None
    _last: np.ndarray | None = None
    _grip: float = -1.0  # the gripper command before a detour; held through it so nothing is grasped or dropped

    def expert_action(self, raw: np.ndarray, goal: np.ndarray | None = None) -> np.ndarray:
        import warnings

        obs = raw
        goal = self.fake_goal if goal is None else goal
        if goal is not None:
            obs = raw.copy()
            obs[-3:] = goal
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": the env clips, as intended
            return np.asarray(self.expert.get_action(obs), dtype=np.float64)

    def __call__(self, raw: np.ndarray, t: int) -> np.ndarray:
        hand = raw[:3]
        a = self.expert_action(raw)
        if self.quality == "noisy":
            a = a + self.rng.normal(0.0, self.noise, size=a.shape)
        elif self.quality == "detour":
            segment = next(((s, k) for s, e, k in self.segments if s <= t < e), None)
            if segment is None:
                self._grip = float(a[3])
            else:
                start, kind = segment
                if kind == "wrong_goal":  # the expert itself, gripper included, aiming at the wrong goal
                    return np.clip(self.expert_action(raw, self.segment_goals[start]), -1.0, 1.0).astype(np.float32)
                a[3] = self._grip
                if kind == "stall":
                    a[:3] = 0.0
                else:
                    if t == start or self._target is None:
                        self._target = hand + self.rng.uniform([-0.2, -0.2, 0.0], [0.2, 0.2, 0.15])
                    a[:3] = _towards(hand, self._target)
        elif self.quality == "failure":
            if self.kind == "stall" and t >= self.stop_at:
                a[:3] = 0.0
            elif self.kind == "random":
                step = self.rng.normal(0.0, 0.5, size=4)
                a = step if self._last is None else 0.8 * self._last + 0.2 * step * 3.0
                self._last = a
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def info(self) -> dict:
        out: dict = {"quality": self.quality, "kind": self.kind}
        if self.quality == "noisy":
            out["noise_scale"] = self.noise
        if self.segments:
            out["segments"] = [[int(s), int(e), k] for s, e, k in self.segments]
        if self.stop_at is not None:
            out["stop_at"] = int(self.stop_at)
        if self.fake_goal is not None:
            out["fake_goal"] = [round(float(v), 5) for v in self.fake_goal]
        if self.segment_goals:
            out["segment_goals"] = {str(k): [round(float(v), 5) for v in g] for k, g in self.segment_goals.items()}
        return out


def wrong_goal(raw0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A goal 15-25 cm from the setup's true goal (``raw0[-3:]``) in a random horizontal direction."""
    goal = raw0[-3:]
    angle = rng.uniform(0, 2 * np.pi)
    fake = goal.copy()
    fake[:2] = goal[:2] + rng.uniform(0.15, 0.25) * np.array([np.cos(angle), np.sin(angle)])
    return fake


def make_behaviour(quality: str, raw0: np.ndarray, expert, rng: np.random.Generator, cfg: DictConfig,
                   length: int) -> Behaviour:
    """The behaviour of one episode, drawn from ``rng`` given the setup's first observation ``raw0``."""
    b = Behaviour(expert=expert, rng=rng, quality=quality)
    if quality == "noisy":
        b.noise = float(cfg.noisy.scale)
    elif quality == "detour":
        kinds = list(cfg.detour.kinds)
        lo, hi = (int(v) for v in cfg.detour.start)
        llo, lhi = (int(v) for v in cfg.detour.length)
        start = int(rng.integers(lo, hi + 1))
        for _ in range(int(cfg.detour.segments)):
            n = int(rng.integers(llo, lhi + 1))
            kind = kinds[int(rng.integers(len(kinds)))]
            b.segments.append((start, min(start + n, length), kind))
            if kind == "wrong_goal":
                b.segment_goals[start] = wrong_goal(raw0, rng)
            start = start + n + int(rng.integers(5, 15))
        b.kind = "+".join(k for _, _, k in b.segments)
    elif quality == "failure":
        kinds = list(cfg.failure.kinds)
        b.kind = kinds[int(rng.integers(len(kinds)))]
        obj, goal = raw0[4:7], raw0[-3:]
        if b.kind == "push_away":
            away = obj - goal
            away[2] = 0.0
            norm = np.linalg.norm(away)
            away = away / norm if norm > 1e-6 else np.array([1.0, 0.0, 0.0])
            b.fake_goal = goal.copy()
            b.fake_goal[:3] = obj + 0.25 * away
            b.fake_goal[2] = goal[2]
        elif b.kind == "wrong_goal":
            b.fake_goal = wrong_goal(raw0, rng)
        elif b.kind == "stall":
            lo, hi = (int(v) for v in cfg.failure.stall_after)
            b.stop_at = int(rng.integers(lo, hi + 1))
    return b


# --------------------------------------------------------------------------------------------------------------
# simulation


@dataclass
class Rollout:
    raws: np.ndarray  # (T+1, 39): observation before each step, and the last one after
    actions: np.ndarray  # (T, 4)
    rewards: np.ndarray  # (T,) in [0, 1]
    successes: np.ndarray  # (T,) bool

    @property
    def first_success(self) -> int | None:
        hits = np.flatnonzero(self.successes)
        return int(hits[0]) if hits.size else None


def simulate(sim: simlib.MetaWorldSim, setup_seed: int, act: Callable[[np.ndarray, int], np.ndarray],
             length: int) -> Rollout:
    """Run ``length`` steps from the setup of ``setup_seed`` without rendering."""
    raw = sim.reset(setup_seed)
    raws, actions, rewards, successes = [raw], [], [], []
    for t in range(length):
        a = act(raw, t)
        step = sim.step(a)
        raw = step.raw
        raws.append(raw)
        actions.append(a)
        rewards.append(step.reward)
        successes.append(step.success)
    return Rollout(np.asarray(raws), np.asarray(actions, dtype=np.float32),
                   np.asarray(rewards, dtype=np.float32), np.asarray(successes, dtype=bool))


def render_replay(sim: simlib.MetaWorldSim, setup_seed: int, rollout: Rollout) -> np.ndarray:
    """Replay a rollout's actions and render the observation before each step (T×H×W×3 uint8)."""
    raw = sim.reset(setup_seed)
    frames = []
    for t, a in enumerate(rollout.actions):
        if not np.allclose(raw, rollout.raws[t], atol=1e-6):
            raise RuntimeError(f"replay of setup {setup_seed} diverged at step {t}: MetaWorld is not deterministic "
                               "here, so rendered frames would not match the stored states")
        frames.append(sim.render())
        raw = sim.step(a).raw
    return np.stack(frames)


def demo_features(image_size: tuple[int, int], camera: str | None, environment_state: bool = False) -> dict:
    """The corpus's lerobot features: the camera (none when ``camera`` is None), the states, action, reward."""
    h, w = image_size
    features = {}
    if camera is not None:
        features[simlib.image_key(camera)] = {"dtype": "video", "shape": (h, w, 3),
                                              "names": ["height", "width", "channels"]}
    features[simlib.STATE_KEY] = {"dtype": "float32", "shape": (simlib.STATE_DIM,),
                                  "names": ["hand_x", "hand_y", "hand_z", "gripper"]}
    if environment_state:
        features[simlib.ENV_STATE_KEY] = {"dtype": "float32", "shape": (simlib.ENV_STATE_DIM,), "names": None}
    return features | {
        "action": {"dtype": "float32", "shape": (simlib.ACTION_DIM,), "names": ["x", "y", "z", "gripper"]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.success": {"dtype": "bool", "shape": (1,), "names": None},
        "quality": {"dtype": "int64", "shape": (1,), "names": None},
    }


def stored_camera(cfg: DictConfig) -> str | None:
    """The camera the corpus stores, or None (``camera: null``: state only, nothing rendered)."""
    camera = cfg.get("camera")
    return None if camera in (None, "", "none", "null") else str(camera)


def check_config(cfg: DictConfig) -> None:
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


def plan_episode(sim, expert, quality: str, index: int, cfg: DictConfig) -> tuple[Rollout, Behaviour, int]:
    """Simulate episode ``index`` until its label holds (a failure must not succeed); returns the attempts used."""
    seed, length = int(cfg.seed), int(cfg.episode_length)
    setup_seed = seed + index
    attempts = int(cfg.failure.max_attempts) if quality == "failure" else 1
    for attempt in range(attempts):
        rng = np.random.default_rng([seed, index, attempt])
        raw0 = sim.reset(setup_seed)
        behaviour = make_behaviour(quality, raw0, expert, rng, cfg, length)
        rollout = simulate(sim, setup_seed, behaviour, length)
        if quality != "failure" or rollout.first_success is None:
            return rollout, behaviour, attempt + 1
    raise RuntimeError(
        f"episode {index} (setup seed {setup_seed}, task {cfg.task}): no failure in {attempts} attempts "
        f"(kinds {list(cfg.failure.kinds)}); raise failure.max_attempts or use other failure.kinds"
    )


def generate(cfg: DictConfig, progress: bool = True) -> Path:
    """Write the corpus described by ``cfg`` to ``cfg.out``; returns that folder."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from tqdm import tqdm

    check_config(cfg)
    out = Path(cfg.out)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if out.exists():
        labels = out / LABELS_FILE
        if labels.is_file() and _same_corpus(json.loads(labels.read_text()).get("config", {}), resolved):
            print(f"{out} already holds this corpus; nothing to do")
            return out
        if not cfg.overwrite:
            raise FileExistsError(f"{out} exists and is not this corpus; choose another out= or pass overwrite=true")
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)

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
            rollout, behaviour, attempts = plan_episode(sim, expert, quality, index, cfg)
            frames = render_replay(sim, int(cfg.seed) + index, rollout) if camera is not None else None
            q = np.array([QUALITIES.index(quality)], dtype=np.int64)
            for t in range(len(rollout.actions)):
                frame = {
                    simlib.STATE_KEY: rollout.raws[t, : simlib.STATE_DIM].astype(np.float32),
                    "action": rollout.actions[t],
                    "next.reward": rollout.rewards[t : t + 1],
                    "next.success": rollout.successes[t : t + 1],
                    "quality": q,
                    "task": sim.instruction,
                }
                if frames is not None:
                    frame[key] = frames[t]
                if env_state:
                    frame[simlib.ENV_STATE_KEY] = rollout.raws[t].astype(np.float32)
                ds.add_frame(frame)
            ds.save_episode(parallel_encoding=False)
            episodes.append({
                "episode_index": index, **behaviour.info(), "setup_seed": int(cfg.seed) + index,
                "attempts": attempts, "success": rollout.first_success is not None,
                "first_success": rollout.first_success, "return": round(float(rollout.rewards.sum()), 5),
                "final_reward": round(float(rollout.rewards[-1]), 5),
            })
            bar.set_postfix(quality=quality, success=rollout.first_success is not None)
        ds.finalize()
        images = tmp / "images"  # lerobot's frame staging folder, empty once videos are encoded
        if images.is_dir() and not any(p.is_file() for p in images.rglob("*")):
            shutil.rmtree(images)
    finally:
        sim.close()
    labels = {
        "format": FORMAT_VERSION, "task": task, "instruction": sim.instruction, "qualities": list(QUALITIES),
        "quality_column": "quality", "note": "labels are for reporting only; never train on them",
        "seconds": round(time.perf_counter() - t0, 2), "config": resolved, "episodes": episodes,
    }
    (tmp / LABELS_FILE).write_text(json.dumps(labels, indent=1))
    tmp.rename(out)
    return out


def _same_corpus(old: dict, new: dict) -> bool:
    ignore = {"out", "overwrite"}
    old = {**LATER_KEYS, **old}  # corpora written before a key existed were written with its old behaviour
    new = {**LATER_KEYS, **new}
    return {k: v for k, v in old.items() if k not in ignore} == {k: v for k, v in new.items() if k not in ignore}


def read_labels(root: str | Path) -> dict:
    """``meta/demo.json`` of a corpus: task, instruction, quality names and one label dict per episode."""
    path = Path(root) / LABELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: {root} is not a corpus written by python -m data.demo")
    return json.loads(path.read_text())


def summary(labels: dict) -> str:
    rows = [f"{labels['task']}: {len(labels['episodes'])} episodes ({labels['instruction']!r})"]
    for q in labels["qualities"]:
        eps = [e for e in labels["episodes"] if e["quality"] == q]
        if eps:
            ok = sum(e["success"] for e in eps)
            rows.append(f"  {q:8s} {len(eps):4d} episodes, {ok} succeed, mean return "
                        f"{np.mean([e['return'] for e in eps]):.1f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from configs import ConfigError, parse_cli, save_config

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        import datasets

        datasets.disable_progress_bars()  # one bar per episode is ours; lerobot's per-episode "Map" bars are noise
    except ImportError:
        pass
    try:
        cfg = parse_cli(CONFIG_NAME, argv)
        out = generate(cfg)
    except (ConfigError, ValueError, FileExistsError, simlib.RenderingUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_config(cfg, out / "meta")
    print(summary(read_labels(out)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
