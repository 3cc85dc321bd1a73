"""Rollouts in MetaWorld and their counting: one episode from a seeded setup, many from consecutive seeds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from data.metaworld import sim as simlib
from policies.evaluation.policies import RolloutPolicy
from policies.evaluation.stats import summarise


@dataclass
class RolloutResult:
    """One rollout's outcome (not a source-dataset episode: :class:`data.source.SourceEpisode`)."""

    seed: int
    success: bool
    first_success: int | None  # step index (0-based) of the first success
    length: int  # steps taken
    ret: float  # sum of per-step rewards in [0, 1]


# called once per step with the camera image the policy saw (rendered for the callback when the policy needs
# none), MetaWorld's observation the action was chosen from, the action taken, and what the step returned
StepCallback = Callable[[np.ndarray, np.ndarray, np.ndarray, simlib.Step], None]


def rollout(sim: simlib.MetaWorldSim, policy: RolloutPolicy, seed: int, max_steps: int,
            stop_on_success: bool = True, record: bool = False, on_step: StepCallback | None = None
            ) -> tuple[RolloutResult, list[np.ndarray]]:
    """One episode from the setup of ``seed``; also the rendered frames when ``record``; ``on_step`` sees
    every step as it happens (what :mod:`policies.evaluation.recording` writes)."""
    if not 1 <= max_steps <= sim.max_steps:
        raise ValueError(f"max_steps={max_steps}: MetaWorld episodes have 1..{sim.max_steps} steps")
    policy.reset()
    raw = sim.reset(seed)
    frames: list[np.ndarray] = []
    ret, first = 0.0, None
    steps = 0
    for t in range(max_steps):
        image = sim.render() if (policy.needs_images or record or on_step is not None) else None
        if record:
            frames.append(image)
        obs = sim.observation(raw, image if policy.needs_images else None,
                              environment_state=getattr(policy, "needs_environment_state", False))
        action = np.asarray(policy(raw, obs))
        if action.shape != (simlib.ACTION_DIM,) or not np.isfinite(action).all():
            raise ValueError(f"policy returned action {action!r} at step {t} of seed {seed}; "
                             f"expected {simlib.ACTION_DIM} finite values")
        step = sim.step(action)
        if on_step is not None:
            on_step(image, raw, action, step)
        raw, steps = step.raw, t + 1
        ret += step.reward
        if step.success and first is None:
            first = t
            if stop_on_success:
                break
    if record:
        frames.append(sim.render())
    return RolloutResult(int(seed), first is not None, first, steps, round(ret, 6)), frames


def evaluate_policy(sim: simlib.MetaWorldSim, policy: RolloutPolicy, episodes: int, seed: int, max_steps: int,
                    stop_on_success: bool = True, videos: int = 0, progress: bool = False,
                    on_step: StepCallback | None = None, on_episode: Callable[[RolloutResult], None] | None = None
                    ) -> tuple[dict, list[list[np.ndarray]]]:
    """Roll out ``episodes`` episodes from seeds ``seed, seed+1, ...``; the summary and the recorded videos.
    ``on_step`` sees every step (see :func:`rollout`), ``on_episode`` every episode's result as it ends."""
    from tqdm import tqdm

    if episodes < 1:
        raise ValueError(f"episodes={episodes}: need at least 1")
    results, clips = [], []
    bar = tqdm(range(episodes), desc=f"eval {sim.task}", unit="ep", disable=not progress)
    for i in bar:
        ep, frames = rollout(sim, policy, seed + i, max_steps, stop_on_success, record=i < videos, on_step=on_step)
        results.append(ep)
        if on_episode is not None:
            on_episode(ep)
        if frames:
            clips.append(frames)
        bar.set_postfix(success=f"{sum(e.success for e in results)}/{len(results)}")
    summary = summarise(results)
    summary["per_episode"] = [asdict(e) for e in results]
    return summary, clips
