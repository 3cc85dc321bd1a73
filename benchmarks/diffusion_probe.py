"""Where a state-only export falls short of the corpus's expert (docs/experiments.md, the Diffusion block).

    python -m benchmarks.diffusion_probe EXPORT CORPUS                  # open loop on the expert episodes
    python -m benchmarks.diffusion_probe EXPORT CORPUS --trace SEED [--noise-seed N]   # one rollout, and the expert
    python -m benchmarks.diffusion_probe EXPORT CORPUS --condition SEED   # the start state, the puck moved

Open loop (a Diffusion export): for frames t = 2, 8, … < 110 of the first six expert episodes, the chunk the
export executes from the recorded observations (its saved normalisation, lerobot's ``generate_actions``) against
the recorded actions starting at t + shift, for shifts −2 … 2: the smallest error at shift 0 says the training windows are aligned
with what the policy executes. ``--trace``: every tenth step of one rollout on setup SEED, the policy's action
beside the one MetaWorld's scripted expert would take in the same state. ``--condition``: the first action from the
start state of setup SEED with the puck moved along x (−8 … +8 cm), three noise draws each, beside the expert's:
whether the policy reads the puck, and which modes its sampling picks between.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from data.metaworld import sim as simlib
from data.quality_labels import read_quality_labels
from policies.evaluation.policies import LeRobotPolicy


def open_loop(export: Path, corpus: Path, episodes: int = 6) -> dict[int, float]:
    """Shift → mean |chunk − recorded actions from t + shift| over the probed frames (the chunk's own length)."""
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.processor import TransitionKey, create_transition
    from lerobot.processor.normalize_processor import NormalizerProcessorStep

    policy = LeRobotPolicy(export, "")
    normalise = next(s for s in policy.preprocessor.steps if isinstance(s, NormalizerProcessorStep))
    n_obs = int(policy.config.n_obs_steps)
    ds = LeRobotDataset("local/probe", root=corpus).hf_dataset.with_format("numpy")
    ep = np.asarray(ds["episode_index"])
    frames = {k: np.asarray(ds[k]) for k in policy.config.input_features}
    actions = np.asarray(ds["action"])
    experts = [e["episode_index"] for e in read_quality_labels(corpus)["episodes"] if e["quality"] == "expert"]
    errors: dict[int, list[float]] = {k: [] for k in range(-2, 3)}
    for e in experts[:episodes]:
        idx = np.where(ep == e)[0]
        for t in range(2, 110, 6):
            window = idx[t - n_obs + 1: t + 1]  # the observations t - n_obs + 1 .. t, as the policy's queue holds
            batch = {k: torch.from_numpy(v[window]).unsqueeze(0) for k, v in frames.items()}
            batch = normalise(create_transition(observation=batch))[TransitionKey.OBSERVATION]
            torch.manual_seed(0)
            with torch.no_grad():
                chunk = policy.postprocessor(policy.policy.diffusion.generate_actions(batch))[0].numpy()
            for k in errors:
                ref = actions[idx[t + k: t + k + len(chunk)]]
                errors[k].append(float(np.abs(chunk[:len(ref)] - ref).mean()))
    return {k: float(np.mean(v)) for k, v in errors.items()}


def trace(export: Path, task: str, seed: int, noise_seed: int = 0, every: int = 10,
          max_steps: int = 150) -> list[str]:
    policy = LeRobotPolicy(export, "")
    expert = simlib.expert_policy(task)
    lines = []
    import torch

    torch.manual_seed(noise_seed)  # the sampling noise
    with simlib.MetaWorldSim(task, shadows=False) as sim:
        raw = sim.reset(seed)
        policy.reset()
        for t in range(max_steps):
            a = policy(raw, sim.observation(raw, environment_state=policy.needs_environment_state))
            if t % every == 0:
                e = np.clip(expert.get_action(raw), -1, 1)
                lines.append(f"{t:3d} hand {np.round(raw[:3], 3)} puck {np.round(raw[4:7], 3)} "
                             f"policy {np.round(a, 2)} expert {np.round(e, 2)}")
            step = sim.step(a)
            raw = step.raw
            if step.success:
                lines.append(f"success at step {t}")
                break
    return lines


def condition(export: Path, task: str, seed: int, draws: int = 3) -> list[str]:
    import torch

    policy = LeRobotPolicy(export, "")
    expert = simlib.expert_policy(task)
    lines = []
    with simlib.MetaWorldSim(task, shadows=False) as sim:
        start = sim.reset(seed)
        for dx in (-0.08, -0.04, 0.0, 0.04, 0.08):
            raw = start.copy()
            raw[[4, 22]] += dx  # the puck's x, now and in the observation's previous frame
            obs = sim.observation(raw, environment_state=policy.needs_environment_state)
            acts = []
            for s in range(draws):
                policy.reset()
                torch.manual_seed(s)
                acts.append(np.round(np.asarray(policy(raw, obs), dtype=np.float64), 2).tolist())
            lines.append(f"puck x {raw[4]:+.3f}: expert {np.round(np.clip(expert.get_action(raw), -1, 1).astype(np.float64), 2).tolist()} "
                         f"policy {acts}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("export", type=Path)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--task", default="push-v3")
    ap.add_argument("--trace", type=int, metavar="SEED", help="trace one rollout on setup SEED instead")
    ap.add_argument("--condition", type=int, metavar="SEED", help="the start state of setup SEED, the puck moved")
    ap.add_argument("--noise-seed", type=int, default=0, help="with --trace: the torch seed of the sampling noise")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.condition is not None:
        print("\n".join(condition(args.export, args.task, args.condition)))
        return 0
    if args.trace is not None:
        print("\n".join(trace(args.export, args.task, args.trace, args.noise_seed)))
        return 0
    for k, err in open_loop(args.export, args.corpus).items():
        print(f"shift {k:+d}: mean |chunk - recorded actions from t{k:+d}| = {err:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
