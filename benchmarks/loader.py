"""Training-sample loading from our shards vs from the source LeRobot dataset, and training steps/s.

    python -m benchmarks.loader --json

Builds a synthetic LeRobot v3 dataset (``data.synthetic``, AV1 video), annotates it with the ``column`` reward
(``pipeline.annotate``) and then reads the SAME training samples — observation at t, action chunk
a[t:t+H] with its padding mask, progress window — two ways, with the same batch size and 2 workers:

(a) ``data.batches.ShardDataModule`` over the shards (JPEG decoding in the workers), hashing every shard
    against the manifest's sha256 as it reads (its default), and once more without that check (its cost);
(b) ``lerobot.datasets.LeRobotDataset`` with ``delta_timestamps`` (video decoding per sample), shuffled.

It prints samples/s of each and their ratio (a)/(b); with ``--keep P`` also (a) under weighted resampling
(``data.sampling=resample``: each sample read is kept with probability P, the rest skipped before decoding),
alternated with the plain read, as kept samples/s — what reading ~1/P samples to keep one costs; then ACT and Diffusion training steps/s on CPU at small,
demo-like settings (the real training step: weights, preprocessor, per-sample loss, backward, clipping,
optimiser), with batches from the shard loader. One JSON line with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_data(work: Path, episodes: int, length: int, image: int, obs_steps: int, horizon: int) -> tuple[Path, Path]:
    from configs import load_config
    from pipeline.annotate import annotate
    from tests.fixtures.datasets import make_synthetic_dataset

    src = make_synthetic_dataset(work / "source", episodes=episodes, length=length, fps=10,
                                 image_size=(image, image), cameras=("top",), seed=0)
    cfg = load_config("annotate", [f"dataset.root={src}", f"out={work / 'shards'}", "progress_bar=false",
                                   "plots=false", f"window.obs_steps={obs_steps}", f"window.horizon={horizon}",
                                   "image.format=jpg"])
    result = annotate(cfg)
    if not result.ok:
        raise RuntimeError(f"annotation failed: {result.failures}")
    return src, work / "shards"


def rate(loader, batches: int, warmup: int = 2) -> tuple[float, float]:
    """(samples/s over ``batches`` batches after ``warmup``, seconds to the first batch)."""
    t0 = time.perf_counter()
    it = iter(loader)
    first = None
    n = 0
    for i in range(warmup + batches):
        try:
            b = next(it)
        except StopIteration:  # a small dataset: start another epoch (its start-up is part of the cost)
            it = iter(loader)
            b = next(it)
        if i == 0:
            first = time.perf_counter() - t0
        if i == warmup - 1:
            t1 = time.perf_counter()
        if i >= warmup:
            n += len(b["action"])
    return n / (time.perf_counter() - t1), first


def shard_rate(shards: Path, horizon: int, batch: int, workers: int, batches: int,
               verify: bool = True, keep: float | None = None) -> tuple[float, float]:
    """Samples/s of the shard loader; ``keep``: every sample kept with that probability (weighted resampling's
    keep map, ``policies.training.keep_probabilities``, with one weight for all)."""
    from data.batches import ShardDataModule, WindowNeeds
    from data.manifest import load_manifest

    needs = WindowNeeds(obs_steps=1, future_actions=horizon, features=("observation.images.top", "observation.state"))
    dm = ShardDataModule(shards, needs, batch_size=batch, num_workers=workers, shuffle_buffer=1000,
                         steps_per_epoch=batches + 2, verify=verify)
    if keep is not None:
        dm.keep = {(int(e["episode_index"]), f): keep for e in load_manifest(shards)["episodes"]
                   for f in range(int(e.get("count") or e["length"]))}
    return rate(dm.train_dataloader(), batches)


def lerobot_rate(src: Path, horizon: int, batch: int, workers: int, batches: int) -> tuple[float, float]:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    meta_fps = json.loads((src / "meta" / "info.json").read_text())["fps"]
    ds = LeRobotDataset("local/synthetic", root=src, video_backend="pyav",
                        delta_timestamps={"action": [k / meta_fps for k in range(horizon)]})
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0))
    return rate(loader, batches)


POLICY_SETTINGS = {
    # small, demo-like: 96×96 images (as an early probe of the project ran), resnet18 from scratch, chunk 16
    "act": ["policy.chunk_size=16", "policy.n_action_steps=16", "policy.dim_model=256", "policy.n_heads=8",
            "policy.dim_feedforward=1024", "policy.n_encoder_layers=2", "policy.n_decoder_layers=1",
            "policy.n_vae_encoder_layers=2"],
    "diffusion": ["policy.n_obs_steps=2", "policy.horizon=16", "policy.n_action_steps=8",
                  "policy.down_dims=[64,128,256]", "policy.diffusion_step_embed_dim=64"],
}


def train_rate(shards: Path, policy: str, batch: int, steps: int, run: Path) -> float:
    from configs import load_config
    from policies.training import build

    cfg = load_config("train", [f"data.shards={shards}", f"out={run}", f"policy={policy}", "weighting=rabc",
                                f"data.batch_size={batch}", "data.num_workers=2", "trainer.accelerator=cpu",
                                *POLICY_SETTINGS[policy]])
    module, dm, _ = build(cfg)
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    clip = module.grad_clip_norm()
    module.policy.train()
    dm.steps_per_epoch = steps + 2
    it = iter(dm.train_dataloader())

    def step(b):
        w = module.weights(b)
        loss = (w * module.per_sample_loss(b)).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        opt.step()

    for _ in range(2):
        step(next(it))
    batches = [next(it) for _ in range(steps)]  # loading excluded: steps/s of the training step itself
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    return steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--image", type=int, default=96, help="square image size of the synthetic camera")
    p.add_argument("--horizon", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=20, help="timed batches per loader")
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--work", type=Path, default=None, help="folder for the dataset and shards (default: a temp dir)")
    p.add_argument("--repeats", type=int, default=3, help="alternations of the shard loader with and without "
                   "the manifest hash check (medians reported)")
    p.add_argument("--keep", type=float, default=None, help="also read resampled, each sample kept with this "
                   "probability, alternated with the plain read (kept samples/s; medians reported)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        src, shards = build_data(work, args.episodes, args.length, args.image, 2, args.horizon)
        prep = time.perf_counter() - t0
        # with and without hashing each shard against the manifest, alternated (drift on a shared machine
        # falls on both): the check's cost, side by side
        verified, unverified = [], []
        for _ in range(args.repeats):
            verified.append(shard_rate(shards, args.horizon, args.batch, args.workers, args.batches))
            unverified.append(shard_rate(shards, args.horizon, args.batch, args.workers, args.batches,
                                         verify=False)[0])
        shard_sps, shard_first = float(np.median([v[0] for v in verified])), verified[0][1]
        unverified_sps = float(np.median(unverified))
        if args.keep is not None:
            plain, kept = [], []
            for _ in range(args.repeats):
                plain.append(shard_rate(shards, args.horizon, args.batch, args.workers, args.batches)[0])
                kept.append(shard_rate(shards, args.horizon, args.batch, args.workers, args.batches,
                                       keep=args.keep)[0])
            result_keep = {"keep": args.keep, "plain_samples_per_s_each": [round(v, 1) for v in plain],
                           "resampled_kept_samples_per_s_each": [round(v, 1) for v in kept],
                           "resampled_over_plain": round(float(np.median(kept) / np.median(plain)), 3)}
        lr_sps, lr_first = lerobot_rate(src, args.horizon, args.batch, args.workers, args.batches)
        result = {
            "samples": args.episodes * args.length, "image": args.image, "horizon": args.horizon,
            "batch": args.batch, "workers": args.workers, "timed_batches": args.batches,
            "shards_samples_per_s": round(shard_sps, 1), "lerobot_samples_per_s": round(lr_sps, 1),
            "ratio": round(shard_sps / lr_sps, 2),
            "shards_unverified_samples_per_s": round(unverified_sps, 1),
            "shards_samples_per_s_each": [round(v[0], 1) for v in verified],
            "shards_unverified_samples_per_s_each": [round(v, 1) for v in unverified],
            "verified_over_unverified": round(shard_sps / unverified_sps, 3),
            "shards_first_batch_s": round(shard_first, 2), "lerobot_first_batch_s": round(lr_first, 2),
            "prepare_s": round(prep, 1), "torch_threads": torch.get_num_threads(),
        }
        if args.keep is not None:
            result["resampling"] = result_keep
        if not args.skip_train:
            for policy in ("act", "diffusion"):
                result[f"{policy}_steps_per_s"] = round(
                    train_rate(shards, policy, args.batch, args.train_steps, work / f"run_{policy}"), 2)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:24s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
