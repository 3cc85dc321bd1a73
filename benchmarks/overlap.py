"""Annotation pipelining: wall time over the reward model's time, stages one after the other vs overlapped.

    python -m benchmarks.overlap --json

Generates a synthetic LeRobot v3 dataset (``--episodes`` × ``--length`` frames at ``--size``² pixels, one
camera), then annotates it in this process with :class:`tests.fixtures.wait_reward.WaitReward`, a reward model
that only waits a fixed time per prefix (a stand-in for an accelerator's latency: no CPU, no GIL), handed to
``annotate(cfg, reward=...)``. The default configuration otherwise (JPEG, window from configs/annotate.yaml,
plots on).

The wait is chosen from the pipeline's own cost: first the stages outside the model (decode, encode, shard
write, plot) are timed one after the other on ``--calibrate`` episodes, and the wait per prefix is set so that
the model's time per episode is ``--model-factor`` times that (default 3: a GPU VLM's time per episode is a
few times the decode and encode of its frames); ``--wait`` sets it instead. The report gives the model's time
over all of that work and over decode + encode alone. The stand-in's accelerator works through an episode's
prefixes back to back, so a late wake-up of the scoring thread delays the episode once
(``--sync-per-prefix``: once per prefix). Then the same annotation runs
serially (``pipeline.overlap=false``) and overlapped (``pipeline.overlap=true``) into fresh folders, side by
side, ``--repeats`` times in alternation (the median is reported; the machine's load moves single runs).
``wall_over_model`` is the ``annotate()`` wall time (dataset open, the loop, manifest, parquet, overview page;
module imports are done before timing) over the summed waits, the model's time on an ideal accelerator.
``model_s`` is the time measured inside the model's ``score``: above the waits when the scoring thread wakes
late (another thread holding the GIL, or no free core). The outputs are checked to be the same shards (sha256)
and manifest episodes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks import dataset_arguments, preload_annotation, print_report, synthetic_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def calibrate(root: Path, tmp: Path, n: int, prefix_every: int, overrides: list[str]) -> dict:
    """Seconds per episode of each stage outside the model, run one after the other on the first ``n`` episodes
    (the first episode is a warm-up and not counted)."""
    from configs import load_config
    from data.manifest import PLOTS_DIR
    from data.shards import ShardWriter
    from data.source import open_dataset
    from pipeline.annotate.episode import encode_episode, make_plan, plot_episode, read_episode, score_episode
    from pipeline.annotate.output import JOURNAL_DIR, SCORES_DIR
    from tests.fixtures.wait_reward import WaitReward

    out = tmp / "calibrate"
    (out / JOURNAL_DIR / SCORES_DIR).mkdir(parents=True)
    (out / PLOTS_DIR).mkdir()
    cfg = load_config("annotate", [f"dataset.root={root}", f"out={out}", *overrides])
    src = open_dataset(root)
    reward = WaitReward(0.0, prefix_every)
    plan = make_plan(cfg, src, reward)
    times = {"decode": 0.0, "encode": 0.0, "write": 0.0, "plot": 0.0}
    prefixes = 0
    episodes = src.episodes()[: n + 1]
    with ShardWriter(out, max_count=cfg.shards.max_count, max_bytes=cfg.shards.max_bytes) as writer:
        for i, ep in enumerate(episodes):
            t0 = time.perf_counter()
            decoded = read_episode(ep, cfg=cfg, src=src, plan=plan, reward=reward)
            t1 = time.perf_counter()
            scored = score_episode(decoded, src=src, plan=plan, reward=reward, out=out)
            t2 = time.perf_counter()
            samples, summary, gt = encode_episode(scored, cfg=cfg, src=src, plan=plan)
            t3 = time.perf_counter()
            writer.write_episode(samples, summary)
            t4 = time.perf_counter()
            if cfg.plots:
                plot_episode(out / PLOTS_DIR, summary, src.fps, gt, plan.ground_truth)
            t5 = time.perf_counter()
            if i == 0:
                continue
            prefixes += len(scored.scores.prefix_ends)
            for key, dt in zip(times, (t1 - t0, t3 - t2, t4 - t3, t5 - t4), strict=True):
                times[key] += dt
    per_episode = {k: v / len(episodes[1:]) for k, v in times.items()}
    return {"per_episode_s": {k: round(v, 4) for k, v in per_episode.items()},
            "pipeline_s_per_episode": round(sum(per_episode.values()), 4),
            "prefixes_per_episode": prefixes / len(episodes[1:])}


def run_once(root: Path, out: Path, wait: float, prefix_every: int, sync: bool, overrides: list[str]
             ) -> dict:
    from configs import load_config
    from data.manifest import load_manifest
    from pipeline.annotate import annotate
    from tests.fixtures.wait_reward import WaitReward

    reward = WaitReward(wait, prefix_every, sync_per_prefix=sync)
    cfg = load_config("annotate", [f"dataset.root={root}", f"out={out}", "progress_bar=false", *overrides])
    t0 = time.perf_counter()
    result = annotate(cfg, reward=reward)
    wall = time.perf_counter() - t0
    if not result.ok:
        raise RuntimeError(f"benchmark run failed: {result.failures}")
    m = load_manifest(out)
    waits = wait * reward.prefixes
    return {
        "wall_s": round(wall, 3),
        "waits_s": round(waits, 3),  # the model's time on an ideal accelerator
        "model_s": round(reward.model_seconds, 3),  # measured inside score(): the waits and their late wake-ups
        "wall_over_model": round(wall / waits, 3),
        "_output": ([(s["name"], s["sha256"]) for s in m["shards"]], m["episodes"]),
    }


def _median(runs: list[dict]) -> dict:
    """The run of median wall time (its own figures, so they add up), with every run's wall_over_model."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    mid = dict(ordered[(len(ordered) - 1) // 2])
    mid["runs_wall_over_model"] = [r["wall_over_model"] for r in runs]
    return mid


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dataset_arguments(ap, episodes=100, length=50, size=64)
    ap.add_argument("--prefix-every", type=int, default=5,
                    help="frames per prefix (5 at 10 fps: TOPReward's 2 fps sampling, one prefix per sample)")
    ap.add_argument("--calibrate", type=int, default=10, help="episodes timed to choose the wait")
    ap.add_argument("--model-factor", type=float, default=3.0,
                    help="model seconds per episode over the stages outside it (sets the wait)")
    ap.add_argument("--wait", type=float, default=None, help="seconds per prefix (instead of --model-factor)")
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each mode, alternating")
    ap.add_argument("--sync-per-prefix", action="store_true",
                    help="the model's thread waits for each prefix in turn (late wake-ups add up) instead of "
                         "the accelerator working through the prefixes back to back")
    ap.add_argument("--plots", choices=("true", "false"), default="true")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args(argv)

    import torch


    preload_annotation()  # one-time imports (a CLI run pays them once at start-up) stay out of the timed calls

    report = {"episodes": args.episodes, "length": args.length, "fps": args.fps,
              "image_size": [args.size, args.size], "plots": args.plots == "true", "prefetch": args.prefetch,
              "repeats": args.repeats, "sync_per_prefix": args.sync_per_prefix,
              "torch_threads": torch.get_num_threads(), "cpus": len(os.sched_getaffinity(0))}
    common = [f"plots={args.plots}", f"pipeline.prefetch={args.prefetch}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = synthetic_dataset(args, tmp / "ds", report)
        cal = calibrate(root, tmp, args.calibrate, args.prefix_every, common)
        report["calibration"] = cal
        if args.wait is None:
            wait = args.model_factor * cal["pipeline_s_per_episode"] / cal["prefixes_per_episode"]
            report["wait_rule"] = f"model_factor {args.model_factor} x pipeline_s_per_episode / prefixes_per_episode"
        else:
            wait = args.wait
            report["wait_rule"] = "--wait"
        report["wait_per_prefix_s"] = round(wait, 5)
        model = wait * cal["prefixes_per_episode"]
        report["model_s_per_episode"] = round(model, 4)
        report["model_over_pipeline"] = round(model / cal["pipeline_s_per_episode"], 2)
        decode_encode = cal["per_episode_s"]["decode"] + cal["per_episode_s"]["encode"]
        report["model_over_decode_encode"] = round(model / decode_encode, 2)
        runs = {"serial": [], "overlapped": []}
        for k in range(args.repeats):
            for mode in ("serial", "overlapped"):
                runs[mode].append(run_once(root, tmp / f"out_{mode}_{k}", wait, args.prefix_every,
                                           args.sync_per_prefix,
                                           [*common, f"pipeline.overlap={str(mode == 'overlapped').lower()}"]))
    outputs = [r.pop("_output") for mode in runs for r in runs[mode]]
    report["identical_output"] = all(o == outputs[0] for o in outputs)
    for mode in runs:
        report[mode] = _median(runs[mode])
    report["wall_over_model"] = report["overlapped"]["wall_over_model"]
    report["serial_wall_over_model"] = report["serial"]["wall_over_model"]
    report["speedup"] = round(report["serial"]["wall_s"] / report["overlapped"]["wall_s"], 3)
    return print_report(report, args.json)


if __name__ == "__main__":
    main()
