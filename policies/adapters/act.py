"""ACT (lerobot's ``ACTPolicy``) with a per-sample loss.

Per sample i: ℓᵢ = mean over its valid (not padded) action steps and dims of |â − a| + kl_weight · KLᵢ, where
KLᵢ = Σ_latent −½(1 + log σ² − μ² − σ²) (with ``use_vae``). lerobot's ``forward`` returns the L1 averaged over
all valid elements of the batch plus kl_weight · mean KL, so Σ nᵢ L1ᵢ / Σ nᵢ (nᵢ = valid elements of sample i)
equals its L1 term exactly, and the plain mean of ℓᵢ equals its loss whenever every sample has the same number
of valid steps (always true away from episode ends).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from data.batches import WindowNeeds
from policies.adapters.base import PolicyAdapter


class ACTAdapter(PolicyAdapter):
    name = "act"

    @classmethod
    def policy_class(cls):
        from lerobot.policies.act.modeling_act import ACTPolicy

        return ACTPolicy

    def needs(self) -> WindowNeeds:
        return WindowNeeds(obs_steps=self.config.n_obs_steps, future_actions=self.config.chunk_size,
                           past_actions=0, features=self.observation_features)

    def policy_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        # ACT takes one observation step: drop the window axis (B, 1, ...) -> (B, ...)
        out = {k: batch[k][:, -1] for k in self.observation_features}
        out["action"] = batch["action"]
        out["action_is_pad"] = batch["action_is_pad"]
        return out

    def outputs(self, policy, batch: dict[str, Tensor]):
        from lerobot.utils.constants import OBS_IMAGES

        if self.config.image_features:
            batch = dict(batch)
            batch[OBS_IMAGES] = [batch[k] for k in self.config.image_features]
        return policy.model(batch)

    def per_sample_loss(self, policy, batch: dict[str, Tensor]) -> Tensor:
        actions_hat, (mu, log_sigma_x2) = self.outputs(policy, batch)
        err = F.l1_loss(batch["action"], actions_hat, reduction="none")
        l1, _ = self.masked_mean(err, batch["action_is_pad"])
        if self.config.use_vae and log_sigma_x2 is not None:
            kld = (-0.5 * (1 + log_sigma_x2 - mu.pow(2) - log_sigma_x2.exp())).sum(-1)
            return l1 + self.config.kl_weight * kld
        return l1
