"""Seconds per training step and per action chunk of a state-only Diffusion U-Net on the CPU, by size.

    python -m benchmarks.diffusion_sizes [--down-dims 64,128,256 128,256,512 256,512,1024] [--batch 64]

lerobot's ``DiffusionPolicy`` with MetaWorld's state features (4-d ``observation.state``, the 39-d environment
state, 4-d actions), horizon 16, the Diffusion block's other settings (configs/experiment/rabc_train_diffusion.yaml:
its observation steps, scheduler and inference steps); one torch thread. A training step is lerobot's ``forward``,
``backward`` and an AdamW step on a random batch (the mean of 10 after 3 warm-ups; the trainer's data loading and
weighting come on top); a chunk is one ``conditional_sample`` (the mean of 5 after one warm-up).
"""

from __future__ import annotations

import argparse
import time


def measure(down_dims: tuple[int, ...], batch: int) -> dict:
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from omegaconf import OmegaConf

    from configs import load_config

    block = load_config("train", ["policy=diffusion", "experiment=rabc_train_diffusion"]).policy
    fields = {k: OmegaConf.select(block, k) for k in ("n_obs_steps", "horizon", "noise_scheduler_type",
                                                      "num_inference_steps", "diffusion_step_embed_dim")}
    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (4,)),
              "observation.environment_state": PolicyFeature(FeatureType.ENV, (39,))}
    cfg = DiffusionConfig(input_features=inputs, output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))},
                          device="cpu", down_dims=down_dims, pretrained_backbone_weights=None, use_group_norm=True,
                          **fields)
    policy = DiffusionPolicy(cfg)
    opt = torch.optim.AdamW(policy.parameters(), 1e-4)
    o, h = cfg.n_obs_steps, cfg.horizon
    b = {"observation.state": torch.randn(batch, o, 4), "observation.environment_state": torch.randn(batch, o, 39),
         "action": torch.randn(batch, h, 4), "action_is_pad": torch.zeros(batch, h, dtype=torch.bool)}

    def step():
        loss, _ = policy.forward(b)
        loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(10):
        step()
    train_s = (time.perf_counter() - t) / 10
    policy.eval()
    obs = {k: v[:1] for k, v in b.items() if k.startswith("observation")}
    with torch.no_grad():
        cond = policy.diffusion._prepare_global_conditioning(obs)
        policy.diffusion.conditional_sample(1, global_cond=cond)
        t = time.perf_counter()
        for _ in range(5):
            policy.diffusion.conditional_sample(1, global_cond=cond)
    chunk_s = (time.perf_counter() - t) / 5
    return {"down_dims": list(down_dims), "parameters": sum(p.numel() for p in policy.parameters()),
            "train_step_s": round(train_s, 4), "chunk_s": round(chunk_s, 4), "batch": batch, **fields}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--down-dims", nargs="+", default=["64,128,256", "128,256,512", "256,512,1024"])
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    import json

    import torch

    torch.set_num_threads(1)
    for dims in args.down_dims:
        print(json.dumps(measure(tuple(int(d) for d in dims.split(",")), args.batch)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
