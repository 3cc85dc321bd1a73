"""Tiny policy settings and config composition shared by the trainer tests (the real config, debug sizes)."""

from __future__ import annotations

from pathlib import Path

from configs import load_config

TINY_POLICY = {
    "act": {"chunk_size": 8, "n_action_steps": 8, "dim_model": 32, "n_heads": 2, "dim_feedforward": 64,
            "n_encoder_layers": 1, "n_decoder_layers": 1, "n_vae_encoder_layers": 1, "latent_dim": 4,
            "vision_backbone": "resnet18", "optimizer_lr": 3e-3, "optimizer_lr_backbone": 3e-3},
    "diffusion": {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4, "down_dims": "[16,32]",
                  "spatial_softmax_num_keypoints": 8, "diffusion_step_embed_dim": 16, "n_groups": 4,
                  "kernel_size": 3, "num_train_timesteps": 20, "optimizer_lr": 3e-3, "scheduler_warmup_steps": 0},
}


def tiny_cfg(shards: Path, out: Path, policy: str = "act", weighting: str = "none", *extra: str,
             steps: int = 4, steps_per_epoch: int = 2, batch_size: int = 8):
    overrides = [f"data.shards={shards}", f"out={out}", f"policy={policy}", f"weighting={weighting}",
                 f"trainer.max_steps={steps}", f"data.steps_per_epoch={steps_per_epoch}",
                 f"data.batch_size={batch_size}", "data.num_workers=0", "data.shuffle_buffer=64",
                 "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.log_every_n_steps=1"]
    overrides += [f"policy.{k}={v}" for k, v in TINY_POLICY[policy].items()]
    return load_config("train", [*overrides, *extra])


def make_adapter(policy: str, manifest: dict, **fields):
    """An adapter, its lerobot policy and processors for the tiny settings (fields override)."""
    from omegaconf import OmegaConf

    from data.manifest import lerobot_stats
    from policies.base import get_adapter_class

    node = load_config("train", [f"policy={policy}", *(f"policy.{k}={v}" for k, v in TINY_POLICY[policy].items())]).policy
    cfg = {**OmegaConf.to_container(node, resolve=True), **fields}
    adapter = get_adapter_class(policy)(cfg, manifest["features"])
    pre, post = adapter.make_processors(lerobot_stats(manifest))
    return adapter, adapter.make_policy(), pre, post


def first_batch(shards: Path, needs, batch_size: int = 48, seed: int = 0) -> dict:
    from data.loader import ShardDataModule

    dm = ShardDataModule(shards, needs, batch_size=batch_size, num_workers=0, steps_per_epoch=1,
                         shuffle_buffer=200, seed=seed)
    return next(iter(dm.train_dataloader()))


def select(batch: dict, rows) -> dict:
    return {k: v[rows] for k, v in batch.items()}
