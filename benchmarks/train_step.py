"""Training steps/s and peak memory of this project's trainer against lerobot's, same ACT, same data.

    python -m benchmarks.train_step --json

Builds a synthetic LeRobot v3 dataset (``tests.fixtures.datasets.make_synthetic_dataset``: one camera, state,
action) and annotates it with the ``column`` reward (``pipeline.annotate``, as ``benchmarks.loader``), then
trains the same small ACT (``ACT_SETTINGS``: resnet18 from scratch, ``pretrained_backbone_weights`` null, so
nothing is downloaded) on CPU with the same batch size, seed, data-loading workers and optimiser (lerobot's ACT
preset: AdamW, lr 1e-5, weight decay 1e-4, gradient clipping at 10), each as its own subprocess:

(a) ``train.py`` (this project's trainer) over the shards, ``weighting=none``;
(b) ``lerobot-train`` (``lerobot.scripts.lerobot_train:main``, lerobot's console script) over the source
    dataset (``LeRobotDataset``, PyAV video decoding, its ``EpisodeAwareSampler``).

Both are run unchanged; the child process only adds a clock: the end time and loss of every optimiser step (a
Lightning callback for (a); a wrapper around ``lerobot_train.update_policy`` for (b)), so both sides are timed
the same way, data loading included. steps/s = steps after ``--warmup`` / their seconds. Peak memory: the largest
resident set of the subprocess tree (``os.wait4``'s ``ru_maxrss``: the trainer or one of its loader workers) and
of the trainer process alone. Runs alternate (a, b, a, b, ...) so drift on a shared machine falls on both;
medians and the ratio (a)/(b) are reported, with the first steps' losses of each run.
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

# a small ACT, the same on both sides (lerobot ACTConfig fields); chunk 16 = the annotation's window.horizon
ACT_SETTINGS = {
    "chunk_size": 16, "n_action_steps": 16, "dim_model": 64, "n_heads": 4, "dim_feedforward": 256,
    "n_encoder_layers": 2, "n_decoder_layers": 1, "n_vae_encoder_layers": 2, "latent_dim": 32,
    "vision_backbone": "resnet18", "pretrained_backbone_weights": None,
}
REPO_ID = "local/synthetic"
FIRST_LOSSES = 5


def _value(v) -> str:
    return "null" if v is None else str(v)


def ours_argv(shards: Path, run: Path, args) -> list[str]:
    """``train.py``'s arguments."""
    return [f"data.shards={shards}", f"out={run}", "policy=act", "weighting=none", f"seed={args.seed}",
            f"data.batch_size={args.batch}", f"data.num_workers={args.workers}",
            f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
            f"trainer.max_steps={args.steps}", "trainer.progress_bar=false", "export=false",
            *(f"policy.{k}={_value(v)}" for k, v in ACT_SETTINGS.items())]


def lerobot_argv(src: Path, run: Path, args) -> list[str]:
    """``lerobot-train``'s arguments."""
    return [f"--dataset.repo_id={REPO_ID}", f"--dataset.root={src}", "--dataset.video_backend=pyav",
            "--policy.type=act", f"--policy.device={args.device}", "--policy.push_to_hub=false", "--wandb.enable=false",
            "--save_checkpoint=false", f"--batch_size={args.batch}", f"--steps={args.steps}",
            f"--num_workers={args.workers}", f"--seed={args.seed}", "--log_freq=1", f"--output_dir={run}",
            *(f"--policy.{k}={_value(v)}" for k, v in ACT_SETTINGS.items())]


# -- the child: one trainer, unchanged, with a clock on its optimiser steps

def _write_record(path: Path, times: list[float], losses: list[float], params: list[int],
                  error: str | None = None) -> None:
    import resource
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    path.write_text(json.dumps({
        "step_end_s": times, "loss": losses, "error": error, "params": params[0] if params else None,
        "versions": {k: installed(k) for k in ("torch", "lerobot", "pytorch-lightning", "accelerate")},
        "trainer_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))


def child(side: str, record: Path, argv: list[str]) -> int:
    t0 = time.perf_counter()
    times: list[float] = []
    losses: list[float] = []
    params: list[int] = []  # the policy's trainable parameters (the same model on both sides)
    error = None
    try:
        if side == "ours":
            import pytorch_lightning as pl

            import policies.training as training
            import train

            class StepClock(pl.Callback):
                def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                    times.append(time.perf_counter() - t0)
                    losses.append(float(pl_module.last_loss))
                    params[:] = params or [sum(p.numel() for p in pl_module.policy.parameters() if p.requires_grad)]

            base = training.instrumentation
            training.instrumentation = lambda cfg: [*base(cfg), StepClock()]
            rc = train.main(argv)
        else:
            from lerobot.scripts import lerobot_train

            update = lerobot_train.update_policy

            def timed(*a, **k):
                tracker, out = update(*a, **k)
                times.append(time.perf_counter() - t0)
                losses.append(float(tracker.loss.val))
                params[:] = params or [sum(p.numel() for p in a[1].parameters() if p.requires_grad)]
                return tracker, out

            lerobot_train.update_policy = timed
            sys.argv = ["lerobot-train", *argv]
            lerobot_train.main()
            rc = 0
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        error = f"{type(exc).__name__}: {exc}"
        rc = 1
    _write_record(record, times, losses, params, error)
    return int(rc or 0) if not error else 1


# -- the parent

def run_side(side: str, argv: list[str], work: Path, warmup: int, pythonpath: str | None = None) -> dict:
    record = work / f"record_{side}_{time.monotonic_ns()}.json"
    log = record.with_suffix(".log")
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--child", side, "--record", str(record), "--", *argv]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(root), pythonpath, env.get("PYTHONPATH")) if x)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=root, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    rec = json.loads(record.read_text()) if record.exists() else {"step_end_s": [], "loss": [], "error": None}
    times = rec["step_end_s"]
    out = {"side": side, "rc": p.returncode, "wall_s": round(wall, 1), "steps": len(times),
           "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
           "trainer_rss_mb": round(rec.get("trainer_maxrss_kb", 0) / 1024, 1)}
    if p.returncode or rec.get("error") or len(times) <= warmup:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        out["error"] = rec.get("error") or "no steps recorded"
        out["log_tail"] = tail
        return out
    out["steps_per_s"] = round((len(times) - warmup) / (times[-1] - times[warmup - 1]), 3)
    out["first_step_s"] = round(times[0], 1)  # start-up: imports, data, model, first batch and step
    out["first_losses"] = [round(x, 3) for x in rec["loss"][:FIRST_LOSSES]]
    out["params"] = rec.get("params")
    out["versions"] = rec.get("versions")
    return out


def build_data(work: Path, args) -> tuple[Path, Path]:
    from benchmarks.loader import build_data as build

    return build(work, args.episodes, args.length, args.image, 1, ACT_SETTINGS["chunk_size"])


def median(xs: list[float]) -> float | None:
    import statistics

    return round(statistics.median(xs), 3) if xs else None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--length", type=int, default=100, help="frames per episode")
    p.add_argument("--image", type=int, default=64, help="square image size of the synthetic camera")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="data-loading workers of each trainer")
    p.add_argument("--steps", type=int, default=60, help="optimiser steps per run")
    p.add_argument("--warmup", type=int, default=10, help="steps left out of steps/s")
    p.add_argument("--repeats", type=int, default=2, help="alternations (ours, lerobot)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both trainers run (float32)")
    p.add_argument("--lerobot-path", default=None,
                   help="folder(s) put on lerobot-train's PYTHONPATH, e.g. where lerobot[training]'s accelerate is "
                        "installed when the environment lacks it (pip install --target DIR 'accelerate>=1.14,<2')")
    p.add_argument("--work", type=Path, default=None, help="folder for the data and runs (default: a temp dir)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", choices=("ours", "lerobot"), help=argparse.SUPPRESS)
    p.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rest and args.rest[0] == "--":
        args.rest = args.rest[1:]
    if not args.child and not 1 <= args.warmup < args.steps:
        p.error(f"--warmup={args.warmup} must be >= 1 and below --steps={args.steps}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        return child(args.child, args.record, args.rest)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        src, shards = build_data(work, args)
        report = {"date": time.strftime("%Y-%m-%d"), "device": args.device, "episodes": args.episodes, "length": args.length,
                  "image": args.image, "batch": args.batch, "workers": args.workers, "steps": args.steps,
                  "warmup": args.warmup, "act": ACT_SETTINGS, "prepare_s": round(time.perf_counter() - t0, 1),
                  "runs": []}
        for r in range(args.repeats):
            report["runs"].append(run_side("ours", ours_argv(shards, work / f"ours_{r}", args), work, args.warmup))
            report["runs"].append(run_side("lerobot", lerobot_argv(src, work / f"lerobot_{r}", args), work,
                                           args.warmup, args.lerobot_path))
        for side in ("ours", "lerobot"):
            runs = [x for x in report["runs"] if x["side"] == side and "steps_per_s" in x]
            report[f"{side}_steps_per_s"] = median([x["steps_per_s"] for x in runs])
            report[f"{side}_peak_rss_mb"] = median([x["peak_rss_mb"] for x in runs])
            report[f"{side}_trainer_rss_mb"] = median([x["trainer_rss_mb"] for x in runs])
        if report["ours_steps_per_s"] and report["lerobot_steps_per_s"]:
            report["ratio"] = round(report["ours_steps_per_s"] / report["lerobot_steps_per_s"], 2)
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
