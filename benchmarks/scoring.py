"""One-pass vs per-prefix TOPReward scoring, side by side in one process.

    python -m benchmarks.scoring --json

Builds a random-weight Qwen3-VL (≥ 20M parameters) offline, scores one episode of ``--frames`` sampled
frames at a fixed resolution in ``one_pass`` and ``naive`` modes, and prints one JSON line with the
parameter count, prefix count, tokens run through the language model in each mode, wall times, the
speedup (naive / one-pass) and the largest |Δ log p(" True")| between the modes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from pipeline.rewards.topreward import TOPRewardScorer
from tests.fixtures.tiny_vlm import build_tiny_qwen3vl, moving_square_clip, num_parameters

BENCH_MODEL = dict(hidden=512, layers=6, heads=8, kv_heads=4, intermediate=1536, vision_hidden=256,
                   vision_depth=4, patch_size=8, max_positions=32768)


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64, help="sampled frames (the clip is recorded at 2× that rate)")
    ap.add_argument("--resolution", type=int, default=96, help="frame side in pixels (fixed for the episode)")
    ap.add_argument("--repeats", type=int, default=3, help="one-pass repeats (the best is reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    native_fps, sample_fps = 4.0, 2.0
    frames = moving_square_clip(args.frames * 2, args.resolution)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_qwen3vl(tmp, seed=0, logit_scale=4.0, **BENCH_MODEL)
        params = num_parameters(model_dir)
        scorer = TOPRewardScorer.from_pretrained(model_dir, sample_fps=sample_fps, resolution=args.resolution)
        scorer.score(frames[:8], native_fps, "push the puck to the goal")  # warm-up
        task = "push the puck to the goal"
        one_s, one = timed(lambda: scorer.score(frames, native_fps, task, mode="one_pass"), args.repeats)
        naive_s, naive = timed(lambda: scorer.score(frames, native_fps, task, mode="naive"), 1)
    result = {
        "params": params,
        "frames": len(one.sampled_indices),
        "resolution": list(one.resolution),
        "prefixes": len(one.raw),
        "tokens_one_pass": one.tokens,
        "tokens_naive": naive.tokens,
        "one_pass_s": round(one_s, 4),
        "naive_s": round(naive_s, 4),
        "speedup": round(naive_s / one_s, 2),
        "max_abs_diff": float(np.abs(one.logp_true - naive.logp_true).max()),
        "max_abs_diff_false": float(np.abs(one.logp_false - naive.logp_false).max()),
        "logp_true_range": float(np.ptp(naive.logp_true)),
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>20}: {v}")
    return result


if __name__ == "__main__":
    main()
