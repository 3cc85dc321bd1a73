"""How each corpus episode is acted: MetaWorld's scripted expert, spoiled according to the episode's quality.

- ``expert``: the expert as is;
- ``noisy``: Gaussian noise of std ``noisy.scale`` added to every action;
- ``detour``: one or more segments where the arm wanders towards a random point (``wander``), stands still
  (``stall``) or does the task towards a wrong goal (``wrong_goal``: the expert with a goal 15-25 cm off, so it
  carries or pushes the object the wrong way first), after which the expert resumes towards the true goal;
- ``failure``: an episode that never succeeds within ``episode_length`` steps: ``push_away`` (the expert aims at
  the goal mirrored through the object, pushing it away), ``wrong_goal`` (aims at a wrong goal),
  ``stall`` (starts like the expert, then stops for good) or ``random`` (smoothed random actions). A failure that
  succeeds by chance is drawn again (up to ``failure.max_attempts`` times).

:func:`episode_qualities` plans which quality each episode gets; :func:`plan_episode` simulates one episode
(without rendering) until its label holds. Episode ``i`` draws from a random stream of its own, so the same
config gives the same episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig

from data.metaworld import sim as simlib

QUALITIES = ("expert", "noisy", "detour", "failure")
DETOUR_KINDS = ("wander", "stall", "wrong_goal")
FAILURE_KINDS = ("push_away", "wrong_goal", "stall", "random")


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
class Trajectory:
    """One simulated corpus episode (not yet rendered or stored)."""

    raws: np.ndarray  # (T+1, 39): observation before each step, and the last one after
    actions: np.ndarray  # (T, 4)
    rewards: np.ndarray  # (T,) in [0, 1]
    successes: np.ndarray  # (T,) bool

    @property
    def first_success(self) -> int | None:
        hits = np.flatnonzero(self.successes)
        return int(hits[0]) if hits.size else None


def simulate(sim: simlib.MetaWorldSim, setup_seed: int, act: Callable[[np.ndarray, int], np.ndarray],
             length: int) -> Trajectory:
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
    return Trajectory(np.asarray(raws), np.asarray(actions, dtype=np.float32),
                   np.asarray(rewards, dtype=np.float32), np.asarray(successes, dtype=bool))


def plan_episode(sim, expert, quality: str, index: int, cfg: DictConfig) -> tuple[Trajectory, Behaviour, int]:
    """Simulate episode ``index`` until its label holds (a failure must not succeed); returns the attempts used."""
    seed, length = int(cfg.seed), int(cfg.episode_length)
    setup_seed = seed + index
    attempts = int(cfg.failure.max_attempts) if quality == "failure" else 1
    for attempt in range(attempts):
        rng = np.random.default_rng([seed, index, attempt])
        raw0 = sim.reset(setup_seed)
        behaviour = make_behaviour(quality, raw0, expert, rng, cfg, length)
        trajectory = simulate(sim, setup_seed, behaviour, length)
        if quality != "failure" or trajectory.first_success is None:
            return trajectory, behaviour, attempt + 1
    raise RuntimeError(
        f"episode {index} (setup seed {setup_seed}, task {cfg.task}): no failure in {attempts} attempts "
        f"(kinds {list(cfg.failure.kinds)}); raise failure.max_attempts or use other failure.kinds"
    )
