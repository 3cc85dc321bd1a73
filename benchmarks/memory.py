"""Peak memory of one-pass TOPReward scoring vs the number of prefixes K, one fresh process per measurement.

    python -m benchmarks.memory --json

Builds the tests' tiny random Qwen3-VL (``tests/fixtures/tiny_vlm.py``, its default sizes, context raised to
32768 positions) and one clip of ``--frames`` frames at 2 fps, ``--size``² pixels (``moving_square_clip``),
so every K up to ``--frames`` / 2 has its own group end. For every K in ``--ks`` and every tail batch size in
``--batches`` (0: all K tails in one call), a fresh Python process loads the model, makes the clip, then
scores it once with ``prefixes=K``. What is measured is the peak resident set size (RSS) of that process
during the ``score`` call, minus its RSS just before: Linux's high-water mark ``VmHWM`` is reset by writing
``5`` to ``/proc/self/clear_refs`` right before the call and read from ``/proc/self/status`` after it
(tracemalloc would miss torch's allocations, which bypass Python's allocator). Memory freed earlier and kept
by the C allocator can be reused without raising the RSS, so the figures are a slight underestimate; the
fresh process, with no scoring before the measured call, keeps that small.

``--batches`` takes tail_batch_size values: 0 (all K tails in one call), a number, ``auto`` (chosen by the
scorer from its default budget, half the available RAM on CPU) or ``auto:GB`` (from ``memory_budget_gb=GB``).

Prints one JSON line: the layout (S shared tokens, Lt tail tokens), and for each (batch, K) the peak delta in
MB, the seconds of the call, the tail batch size used and the prediction of the scorer's memory model
(``pipeline.rewards.topreward.MemoryModel``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import print_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASK = "push the red block to the goal"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def batch_options(batch: str) -> dict:
    """``--batches`` value → scorer options: an integer (0: all tails in one call), ``auto`` (chosen from the
    default budget) or ``auto:GB`` (chosen from a ``memory_budget_gb`` of GB)."""
    if batch == "auto":
        return {"tail_batch_size": None}
    if batch.startswith("auto:"):
        return {"tail_batch_size": None, "memory_budget_gb": float(batch.removeprefix("auto:"))}
    return {"tail_batch_size": int(batch)}


def child(model_dir: str, frames: int, size: int, k: int, batch: str) -> dict:
    """One measurement (runs in its own process)."""
    import torch

    torch.set_num_threads(1)
    from pipeline.rewards.topreward import TOPRewardScorer
    from tests.fixtures.tiny_vlm import moving_square_clip

    scorer = TOPRewardScorer.from_pretrained(model_dir, sample_fps=2.0, resolution=size, prefixes=k,
                                             **batch_options(batch))
    clip = moving_square_clip(frames, size)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    res = scorer.score(clip, 2.0, TASK)
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    plan = scorer.last_plan
    return {"k": len(res.raw), "batch": batch, "tail_batch_size": plan.tail_batch_size,
            "budget_mb": None if plan.budget_bytes is None else round(plan.budget_bytes / 2**20),
            "peak_delta_mb": round((peak - before) / 1024, 1), "rss_before_mb": round(before / 1024, 1),
            "seconds": round(seconds, 3), "shared_tokens": plan.shared_tokens, "tail_tokens": plan.tail_tokens,
            "predicted_mb": round(plan.predicted_bytes / 2**20, 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=512, help="frames of the clip (2 fps: frames / 2 group ends)")
    ap.add_argument("--size", type=int, default=64, help="frame side in pixels")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 16, 64, 128, 256])
    ap.add_argument("--batches", nargs="+", default=["0", "16", "auto", "auto:0.15"],
                    help="tail_batch_size values: 0 (all tails in one call), N, auto (default budget), "
                         "auto:GB (memory_budget_gb=GB)")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    ap.add_argument("--child", nargs=5, metavar=("MODEL_DIR", "FRAMES", "SIZE", "K", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        d, f, s, k, b = args.child
        print(json.dumps(child(d, int(f), int(s), int(k), b)))
        return {}

    from tests.fixtures.tiny_vlm import build_tiny_qwen3vl, num_parameters

    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_qwen3vl(Path(tmp) / "vlm", seed=0, max_positions=32768)
        params = num_parameters(model_dir)
        for batch in args.batches:
            for k in args.ks:
                cmd = [sys.executable, "-m", "benchmarks.memory", "--child", str(model_dir), str(args.frames),
                       str(args.size), str(k), str(batch)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])
                if out.returncode:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    report = {"params": params, "frames": args.frames, "size": args.size, "threads": 1,
              "measure": "peak RSS delta (VmHWM reset via /proc/self/clear_refs), fresh process per row",
              "shared_tokens": rows[0]["shared_tokens"], "tail_tokens": rows[0]["tail_tokens"], "rows": rows}
    return print_report(report, args.json)


if __name__ == "__main__":
    main()
