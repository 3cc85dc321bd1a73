"""Diffusion Policy (lerobot's ``DiffusionPolicy``) with a per-sample loss.

Per sample i: the noise-prediction (or sample-prediction) MSE of lerobot's ``compute_loss``, averaged over the
sample's action steps and dims — over its valid steps only when ``do_mask_loss_for_padding`` is set. The
random draws (image crops, noise, timesteps) happen in lerobot's order, so under the same RNG state the mean
of ℓᵢ equals ``forward``'s loss (exactly without padding masking; with it, the valid-count-weighted mean does).

lerobot's Diffusion action window starts n_obs_steps−1 frames BEFORE t (actions t−o+1 … t−o+horizon); the shards
hold a[t:t+H], so the loader adds the o−1 earlier actions while reading (``WindowNeeds.past_actions``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from data.batches import WindowNeeds
from policies.adapters.base import PolicyAdapter, PolicyConfigError


class DiffusionAdapter(PolicyAdapter):
    name = "diffusion"

    def __init__(self, policy_cfg: dict, features: dict, device: str = "cpu"):
        cameras = {k: tuple(f["shape"]) for k, f in features.items() if f.get("dtype") in ("video", "image")}
        if len(set(cameras.values())) > 1:  # lerobot's own check only says the shapes differ
            sizes = ", ".join(f"{k} {'x'.join(map(str, s))}" for k, s in cameras.items())
            raise PolicyConfigError(f"policy diffusion: lerobot's Diffusion policy needs every camera at one size, "
                                    f"and the shards hold {sizes}; train on cameras of one size "
                                    f"(data.cameras=[{next(iter(cameras))}, ...]), or annotate the source with "
                                    "its cameras at one size")
        super().__init__(policy_cfg, features, device)

    @classmethod
    def policy_class(cls):
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

        return DiffusionPolicy

    def needs(self) -> WindowNeeds:
        o, h = self.config.n_obs_steps, self.config.horizon
        return WindowNeeds(obs_steps=o, future_actions=h - o + 1, past_actions=o - 1,
                           features=self.observation_features)

    def policy_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {k: batch[k] for k in self.observation_features}  # (B, n_obs_steps, ...)
        out["action"] = batch["action"]
        out["action_is_pad"] = batch["action_is_pad"]
        return out

    def per_sample_loss(self, policy, batch: dict[str, Tensor]) -> Tensor:
        from lerobot.utils.constants import OBS_IMAGES

        model = policy.diffusion
        cfg = self.config
        if cfg.image_features:
            batch = dict(batch)
            batch[OBS_IMAGES] = torch.stack([batch[k] for k in cfg.image_features], dim=-4)
        global_cond = model._prepare_global_conditioning(batch)
        trajectory = batch["action"]
        eps = torch.randn(trajectory.shape, device=trajectory.device)
        timesteps = torch.randint(0, model.noise_scheduler.config.num_train_timesteps, (trajectory.shape[0],),
                                  device=trajectory.device).long()
        noisy = model.noise_scheduler.add_noise(trajectory, eps, timesteps)
        pred = model.unet(noisy, timesteps, global_cond=global_cond)
        target = eps if cfg.prediction_type == "epsilon" else trajectory
        err = F.mse_loss(pred, target, reduction="none")
        if cfg.do_mask_loss_for_padding:
            loss, _ = self.masked_mean(err, batch["action_is_pad"])
            return loss
        return err.mean(dim=(1, 2))
