"""MetaWorld speed and scripted-expert success, to size the demo corpus and the evaluation.

    python -m benchmarks.sim --json [--tasks push-v3 pick-place-v3] [--seeds 50] [--size 96]

Prints one JSON line per task: env steps/s without rendering (expert actions), steps/s rendering every step
with and without shadows at ``--size``², and the expert's success rate over ``--seeds`` setups (seeds from
1000, the evaluation range) within 150 and 500 steps, with 95% Wilson intervals and first-success steps.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from data.metaworld import sim as simlib
from policies.evaluation import ExpertPolicy, evaluate_policy


def steps_per_second(task: str, size: int, shadows: bool, render: bool, steps: int) -> float:
    with simlib.MetaWorldSim(task, image_size=(size, size), shadows=shadows) as sim:
        policy = ExpertPolicy(task)
        raw = sim.reset(0)
        if render:
            sim.render()  # the GL context is made on the first frame: keep it out of the timing
        t0 = time.perf_counter()
        for t in range(steps):
            if t % 150 == 0:
                raw = sim.reset(t)
            if render:
                sim.render()
            raw = sim.step(policy(raw, {})).raw
        return steps / (time.perf_counter() - t0)


def expert_success(task: str, seeds: int, max_steps: int) -> dict:
    with simlib.MetaWorldSim(task, image_size=(16, 16), shadows=False) as sim:
        summary, _ = evaluate_policy(sim, ExpertPolicy(task), seeds, seed=1000, max_steps=max_steps)
    firsts = [e["first_success"] for e in summary["per_episode"] if e["success"]]
    return {"success_rate": summary["success_rate"], "ci": [round(summary["ci_low"], 3), round(summary["ci_high"], 3)],
            "first_success_median": float(np.median(firsts)) if firsts else None,
            "first_success_max": max(firsts) if firsts else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["push-v3", "pick-place-v3", "reach-v3"])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--render-steps", type=int, default=150)
    parser.add_argument("--json", action="store_true", help="one JSON line per task (the default)")
    args = parser.parse_args()
    for task in args.tasks:
        row = {
            "task": task, "size": args.size,
            "steps_per_s_no_render": round(steps_per_second(task, args.size, False, False, 1500), 1),
            "steps_per_s_render_no_shadows": round(steps_per_second(task, args.size, False, True, args.render_steps), 1),
            "steps_per_s_render_shadows": round(steps_per_second(task, args.size, True, True, args.render_steps), 1),
            "expert_150": expert_success(task, args.seeds, 150),
            "expert_500": expert_success(task, args.seeds, 500),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
