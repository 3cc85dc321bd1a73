"""End-to-end annotation throughput: `column` (pipeline only) and TOPReward with a ≥ 20M-parameter random VLM.

    python -m benchmarks.annotate --json

Generates a synthetic LeRobot dataset (``--episodes`` × ``--length`` frames at ``--size``² pixels, one camera),
then runs ``pipeline.annotate`` in this process, once per reward, into fresh output folders, with the default
configuration (JPEG, window from configs/annotate.yaml, plots on). Reports frames/s over the whole
``annotate()`` call (dataset open, decode, scoring, encoding, shard writing, manifest, plots; module imports
are done before timing) and the share of that wall time spent outside the reward model's ``score`` call
(for `column` that call only wraps the column, so nearly all time is pipeline overhead).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks import dataset_arguments, preload_annotation, print_report, synthetic_dataset
from configs import load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_once(root: Path, out: Path, overrides: list[str]) -> dict:
    from pipeline.annotate import annotate

    cfg = load_config("annotate", [f"dataset.root={root}", f"out={out}", "progress_bar=false", *overrides])
    t0 = time.perf_counter()
    result = annotate(cfg)
    wall = time.perf_counter() - t0
    if not result.ok:
        raise RuntimeError(f"benchmark run failed: {result.failures}")
    return {
        "seconds": round(wall, 3),
        "frames": result.frames,
        "frames_per_s": round(result.frames / wall, 1),
        "model_seconds": round(result.model_seconds, 3),
        "outside_model_share": round(1 - result.model_seconds / wall, 3),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dataset_arguments(ap, episodes=20, length=100, size=96)
    ap.add_argument("--skip-topreward", action="store_true", help="only the column reward")
    ap.add_argument("--plots", choices=("true", "false"), default="true")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args(argv)

    import torch


    preload_annotation()  # one-time imports (a CLI run pays them once at start-up) stay out of the timed calls

    report = {"episodes": args.episodes, "length": args.length, "fps": args.fps,
              "image_size": [args.size, args.size], "plots": args.plots == "true",
              "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = synthetic_dataset(args, tmp / "ds", report)
        common = [f"plots={args.plots}"]
        report["column"] = run_once(root, tmp / "out_column", ["reward=column", "reward.column=next.reward",
                                                                *common])
        if not args.skip_topreward:
            from benchmarks.scoring import BENCH_MODEL
            from tests.fixtures.tiny_vlm import build_tiny_qwen3vl, num_parameters

            model_dir = build_tiny_qwen3vl(tmp / "vlm", seed=0, logit_scale=4.0, **BENCH_MODEL)
            tr = run_once(root, tmp / "out_topreward", ["reward=topreward", f"reward.model={model_dir}",
                                                         "reward.sample_fps=2", *common])
            tr["parameters"] = num_parameters(model_dir)
            report["topreward"] = tr
    return print_report(report, args.json)


if __name__ == "__main__":
    main()
