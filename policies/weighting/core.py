"""What every weighting rule shares: the error, the chunk gain Δ, the per-sample keywords, the weighted loss.

The loss of a batch is ``Σ wᵢ ℓᵢ / Σ wᵢ`` (:func:`weighted_loss`) with one weight per sample from a rule of
:mod:`policies.weighting.registry`. Every rule reads the progress gain over a sample's action chunk,
``Δᵢ = p[t+H] − p[t]`` (:func:`chunk_gain`), i.e. the last minus the first entry of its progress window (the
shards store the window already clamped at the episode's last frame, so a chunk that runs past the end gains
only what the episode still made). ``H`` is the number of future actions the policy is trained on from ``t``;
the trainer cuts the shards' windows to that length before it calls the rules and before it fits their
statistics, so both see the same Δ.

Besides its window, a rule may read the per-sample keywords of :func:`sample_info` (``success``, ``episode``,
``frame``: the batch's ``success_score``, ``episode_index``, ``frame_index``).

This module holds no rule: the gain rules are in :mod:`policies.weighting.gain`, the advantage estimators in
:mod:`policies.weighting.advantage`, the table of both in :mod:`policies.weighting.registry`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from configs import UserError


class WeightingError(UserError, ValueError):
    """An unknown rule, a bad parameter, or statistics the rule needs are missing."""


def chunk_gain(progress: Tensor) -> Tensor:
    """Δ = p[t+H] − p[t] for windows ``progress`` of shape (B, H+1)."""
    if progress.ndim != 2 or progress.shape[1] < 2:
        raise WeightingError(f"progress windows must be (batch, H+1) with H >= 1, got {tuple(progress.shape)}")
    return (progress[:, -1] - progress[:, 0]).float()


# what a rule may read of each sample besides its progress window: keyword → batch key (see data/batches.py)
SAMPLE_FIELDS = {"success": "success_score", "episode": "episode_index", "frame": "frame_index"}


def sample_info(batch: dict) -> dict[str, Tensor | None]:
    """The per-sample keywords a rule is called with (each rule is passed the ones it declares)."""
    return {kw: batch.get(key) for kw, key in SAMPLE_FIELDS.items()}


def weight_summary(w: Tensor) -> dict[str, float]:
    """What the trainer logs each step: mean weight, fraction of zero weights, effective sample size."""
    w = w.detach().float()
    s1, s2 = w.sum(), (w * w).sum()
    ess = (s1 * s1 / s2).item() if s2 > 0 else 0.0
    return {"weight_mean": w.mean().item(), "weight_zero_frac": (w == 0).float().mean().item(), "ess": ess}


def weight_shares(w: Tensor, groups: Tensor, names: list[str] | tuple[str, ...]) -> dict[str, float]:
    """Share of the batch's total weight Σw that each group receives (``groups``: (B,) index into ``names``,
    −1 for samples in no group). For reporting, e.g. by demonstration-quality label; shares sum to 1 over the
    groups when every sample has one (all 0 when Σw = 0)."""
    w = w.detach().float()
    g = groups.to(w.device).long()
    total = w.sum()
    scale = 1.0 / total.item() if total.item() > 0 else 0.0
    sums = torch.zeros(len(names), dtype=w.dtype, device=w.device).index_add_(0, g.clamp_min(0), w * (g >= 0))
    return {name: float(sums[i]) * scale for i, name in enumerate(names)}


def weighted_loss(per_sample: Tensor, w: Tensor) -> Tensor:
    """Σ wᵢ ℓᵢ / Σ wᵢ (a batch whose weights are all zero contributes a zero loss with zero gradient)."""
    w = w.to(per_sample.dtype)
    total = w.sum()
    return (w * per_sample).sum() / total.clamp_min(torch.finfo(per_sample.dtype).tiny)
