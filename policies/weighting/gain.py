"""The rules on the chunk progress gain Δ alone, and the dataset statistics they read (:class:`GainStats`).

Each rule is ``rule(progress (B, H+1), stats, *, <its parameters>) -> (B,) weights``; ``filter_top`` also
reads the per-sample ``success`` keyword (:func:`policies.weighting.core.sample_info`). Parameters are
keyword-only with their defaults; the registry (:mod:`policies.weighting.registry`) reads the accepted
names from these signatures, so a rule takes no catch-all ``**kwargs``.

Rules (TOPReward, arXiv 2602.19313, "Reward-aligned behaviour cloning"; docs/topreward.md):

- ``none``: w = 1 (plain behaviour cloning; Σwℓ/Σw is the batch mean).
- ``top_awr`` (TOPReward Eq. 3): w = clip(τ · exp(Δ), 0, δ_max), τ = 2, δ_max = 2. Read literally this
  saturates at δ_max for every Δ ≥ log(δ_max/τ) (= 0 with the defaults) and only down-weights regress.
  ``centered=True`` is the mean-centred variant the paper's text describes: exp(Δ − mean Δ).
- ``rabc`` (SARM / lerobot RA-BC, κ rule): μ = max(mean Δ, 0), σ = max(std Δ, ε);
  w̃ = clip((Δ − (μ − 2σ)) / (4σ + ε), 0, 1); w = 1 if Δ > κ, w̃ if 0 ≤ Δ ≤ κ, 0 if Δ < 0.
- ``awr``: w = min(exp((Δ − mean Δ) / (β · std Δ)), w_max).
- ``filter``: w ∈ {0, 1}: 1 for Δ at or above the dataset's (1 − q) quantile of Δ (the top q fraction; ties
  at the threshold are all kept), and, with ``min_success`` set, 0 for every sample of an episode whose
  success score (manifest ``episodes[].success_score``) is below it.

:class:`GainStats` (mean and std of Δ, the sorted Δ for the ``filter`` threshold) is fitted ONCE per run,
before training, by :meth:`GainStats.fit` on :func:`data.progress_table.fit_progress_table` (every shard
sample's Δ, cut to the policy's chunk: exactly the Δ the rules see in training).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from policies.weighting.core import WeightingError, chunk_gain


@dataclass(frozen=True)
class GainStats:
    """Statistics of the chunk progress gain Δ over the training set (see the module docstring for where)."""

    mean: float
    std: float
    count: int
    sorted_gains: np.ndarray = field(repr=False)

    @classmethod
    def from_gains(cls, gains) -> GainStats:
        g = np.sort(np.asarray(gains, dtype=np.float64).ravel())
        if g.size == 0:
            raise WeightingError("no progress windows to fit the weighting statistics on (empty dataset?)")
        if not np.all(np.isfinite(g)):
            raise WeightingError(f"{int((~np.isfinite(g)).sum())} progress gains are NaN/inf; "
                                 "check the shards' progress")
        return cls(mean=float(g.mean()), std=float(g.std()), count=int(g.size), sorted_gains=g)

    @classmethod
    def fit(cls, table, episodes: list[dict]) -> GainStats:
        """From ``table`` (:class:`data.progress_table.ProgressTable`); the gain rules read nothing of
        ``episodes`` (the manifest's, taken for the same call shape as :meth:`AdvantageStats.fit`)."""
        return cls.from_gains(table.gain)

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.sorted_gains, q))


def _need(stats: GainStats | None, rule: str) -> GainStats:
    if stats is None:
        raise WeightingError(f"weighting {rule!r} needs dataset statistics of the progress gain (GainStats); "
                             "got None")
    return stats


def none(progress: Tensor, stats: GainStats | None = None) -> Tensor:
    """Plain behaviour cloning: every weight is 1."""
    return torch.ones(progress.shape[0], dtype=torch.float32, device=progress.device)


def top_awr(progress: Tensor, stats: GainStats | None = None, *, tau: float = 2.0, delta_max: float = 2.0,
            centered: bool = False) -> Tensor:
    """TOPReward Eq. 3: clip(τ·exp(Δ), 0, δ_max); ``centered`` uses Δ − mean Δ (needs ``stats``)."""
    if tau <= 0 or delta_max <= 0:
        raise WeightingError(f"top_awr needs tau > 0 and delta_max > 0, got tau={tau}, delta_max={delta_max}")
    d = chunk_gain(progress)
    if centered:
        d = d - _need(stats, "top_awr (centered)").mean
    return torch.clamp(tau * torch.exp(d), 0.0, delta_max)


def rabc(progress: Tensor, stats: GainStats | None = None, *, kappa: float = 0.01,
         eps: float = 1e-6) -> Tensor:
    """The SARM / lerobot RA-BC κ rule (hard 1 above κ, soft in [0, κ], 0 for regress)."""
    st = _need(stats, "rabc")
    d = chunk_gain(progress)
    mu = max(st.mean, 0.0)
    sigma = max(st.std, eps)
    soft = torch.clamp((d - (mu - 2 * sigma)) / (4 * sigma + eps), 0.0, 1.0)
    w = torch.where(d > kappa, torch.ones_like(d), soft)
    return torch.where(d < 0, torch.zeros_like(d), w)


def awr(progress: Tensor, stats: GainStats | None = None, *, beta: float = 1.0, w_max: float = 20.0,
        eps: float = 1e-6) -> Tensor:
    """Advantage-weighted regression on the standardised gain: min(exp((Δ − mean)/(β·std)), w_max)."""
    if beta <= 0 or w_max <= 0:
        raise WeightingError(f"awr needs beta > 0 and w_max > 0, got beta={beta}, w_max={w_max}")
    st = _need(stats, "awr")
    d = chunk_gain(progress)
    return torch.clamp(torch.exp((d - st.mean) / (beta * max(st.std, eps))), max=w_max)


def filter_top(progress: Tensor, stats: GainStats | None = None, *, top_fraction: float = 0.5,
               min_success: float | None = None, success: Tensor | None = None) -> Tensor:
    """Keep (w = 1) samples whose Δ is in the dataset's top ``top_fraction``; optionally drop episodes whose
    success score is below ``min_success`` (``success``: one score per sample, from the manifest)."""
    if not 0 < top_fraction <= 1:
        raise WeightingError(f"weighting=filter: weighting.top_fraction={top_fraction} must be in (0, 1]")
    st = _need(stats, "filter")
    d = chunk_gain(progress)
    keep = d >= st.quantile(1.0 - top_fraction) if top_fraction < 1 else torch.ones_like(d, dtype=torch.bool)
    if min_success is not None:
        if success is None:
            raise WeightingError("weighting=filter: weighting.min_success is set but the batch carries no success scores "
                                 "(the manifest's episodes lack success_score)")
        s = success.to(d.device).float()
        if torch.isnan(s).any():
            raise WeightingError("weighting=filter: weighting.min_success is set but some episodes have no success_score in the "
                                 "manifest")
        keep = keep & (s >= min_success)
    return keep.float()
