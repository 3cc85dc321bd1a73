"""Sample weighting for reward-aligned behaviour cloning (the single definition of the rules).

The interface is one function per rule: given a batch's progress windows (and the dataset statistics the rule
needs) return one weight per sample. The training step then uses ``loss = Σ wᵢ ℓᵢ / Σ wᵢ``.

    stats = GainStats.from_gains(gains)             # once per run, see below
    w = weigh("rabc", progress, stats, kappa=0.01)  # progress: (B, H+1) windows p[t : t+H+1]

Every rule reads the progress gain over a sample's action chunk, ``Δᵢ = p[t+H] − p[t]``, i.e. the last minus
the first entry of its progress window (the shards store the window already clamped at the episode's last
frame, so a chunk that runs past the end gains only what the episode still made). ``H`` is the number of
future actions the policy is trained on from ``t``; the trainer cuts the shards' windows to that length before
it calls the rules and before it fits the statistics, so both see the same Δ.

Dataset statistics are fitted ONCE per run, before training (``policies.training.build``), by
:func:`fit_weighting_stats` on :func:`data.loader.fit_progress_table`: one pass over the ``progress.npy``
windows of every shard sample (no image is decoded), cut to the policy's chunk — exactly the Δ the rules see
in training — plus the manifest's ``episodes``. :class:`GainStats` (mean and std of Δ, the sorted Δ for the
``filter`` threshold) for the rules below; :class:`policies.advantage.AdvantageStats` for the advantage
estimators. The fit inputs travel in the checkpoints, so a resumed run weighs with the same statistics.

Besides its window, every rule is called with the per-sample keywords of :func:`sample_info` (``success``,
``episode``, ``frame``: the batch's ``success_score``, ``episode_index``, ``frame_index``) and reads the
ones it needs.

Rules (../shared/docs/TOPREWARD.md, "Reward-aligned behaviour cloning"):

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
- ``progress_awr``, ``episode_quality``, ``quality_advantage``: advantage estimators against a
  progress-conditioned baseline and the episode's quality (:mod:`policies.advantage`, docs/weighting.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


class WeightingError(ValueError):
    """An unknown rule, a bad parameter, or statistics the rule needs are missing."""


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
            raise WeightingError(f"{int((~np.isfinite(g)).sum())} progress gains are NaN/inf; check the shards' progress")
        return cls(mean=float(g.mean()), std=float(g.std()), count=int(g.size), sorted_gains=g)

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.sorted_gains, q))


def chunk_gain(progress: Tensor) -> Tensor:
    """Δ = p[t+H] − p[t] for windows ``progress`` of shape (B, H+1)."""
    if progress.ndim != 2 or progress.shape[1] < 2:
        raise WeightingError(f"progress windows must be (batch, H+1) with H >= 1, got {tuple(progress.shape)}")
    return (progress[:, -1] - progress[:, 0]).float()


def _need(stats: GainStats | None, rule: str) -> GainStats:
    if stats is None:
        raise WeightingError(f"weighting {rule!r} needs dataset statistics of the progress gain (GainStats); got None")
    return stats


def none(progress: Tensor, stats: GainStats | None = None, **_) -> Tensor:
    """Plain behaviour cloning: every weight is 1."""
    return torch.ones(progress.shape[0], dtype=torch.float32, device=progress.device)


def top_awr(progress: Tensor, stats: GainStats | None = None, *, tau: float = 2.0, delta_max: float = 2.0,
            centered: bool = False, **_) -> Tensor:
    """TOPReward Eq. 3: clip(τ·exp(Δ), 0, δ_max); ``centered`` uses Δ − mean Δ (needs ``stats``)."""
    if tau <= 0 or delta_max <= 0:
        raise WeightingError(f"top_awr needs tau > 0 and delta_max > 0, got tau={tau}, delta_max={delta_max}")
    d = chunk_gain(progress)
    if centered:
        d = d - _need(stats, "top_awr (centered)").mean
    return torch.clamp(tau * torch.exp(d), 0.0, delta_max)


def rabc(progress: Tensor, stats: GainStats | None = None, *, kappa: float = 0.01, eps: float = 1e-6, **_) -> Tensor:
    """The SARM / lerobot RA-BC κ rule (hard 1 above κ, soft in [0, κ], 0 for regress)."""
    st = _need(stats, "rabc")
    d = chunk_gain(progress)
    mu = max(st.mean, 0.0)
    sigma = max(st.std, eps)
    soft = torch.clamp((d - (mu - 2 * sigma)) / (4 * sigma + eps), 0.0, 1.0)
    w = torch.where(d > kappa, torch.ones_like(d), soft)
    return torch.where(d < 0, torch.zeros_like(d), w)


def awr(progress: Tensor, stats: GainStats | None = None, *, beta: float = 1.0, w_max: float = 20.0,
        eps: float = 1e-6, **_) -> Tensor:
    """Advantage-weighted regression on the standardised gain: min(exp((Δ − mean)/(β·std)), w_max)."""
    if beta <= 0 or w_max <= 0:
        raise WeightingError(f"awr needs beta > 0 and w_max > 0, got beta={beta}, w_max={w_max}")
    st = _need(stats, "awr")
    d = chunk_gain(progress)
    return torch.clamp(torch.exp((d - st.mean) / (beta * max(st.std, eps))), max=w_max)


def filter_top(progress: Tensor, stats: GainStats | None = None, *, top_fraction: float = 0.5,
               min_success: float | None = None, success: Tensor | None = None, **_) -> Tensor:
    """Keep (w = 1) samples whose Δ is in the dataset's top ``top_fraction``; optionally drop episodes whose
    success score is below ``min_success`` (``success``: one score per sample, from the manifest)."""
    if not 0 < top_fraction <= 1:
        raise WeightingError(f"filter.top_fraction={top_fraction} must be in (0, 1]")
    st = _need(stats, "filter")
    d = chunk_gain(progress)
    keep = d >= st.quantile(1.0 - top_fraction) if top_fraction < 1 else torch.ones_like(d, dtype=torch.bool)
    if min_success is not None:
        if success is None:
            raise WeightingError("filter.min_success is set but the batch carries no success scores "
                                 "(the manifest's episodes lack success_score)")
        s = success.to(d.device).float()
        if torch.isnan(s).any():
            raise WeightingError("filter.min_success is set but some episodes have no success_score in the manifest")
        keep = keep & (s >= min_success)
    return keep.float()


WeightFn = Callable[..., Tensor]


def _lazy(module: str, attr: str) -> WeightFn:
    """A table entry for a rule defined in another module, imported on first use."""
    def rule(progress: Tensor, stats=None, **params) -> Tensor:
        return getattr(importlib.import_module(module), attr)(progress, stats, **params)

    rule.__name__ = attr
    rule.__doc__ = f"{module}.{attr} (imported on first use)"
    return rule


# advantage estimators against a progress-conditioned baseline and episode quality (policies/advantage.py)
ADVANTAGE_RULES = ("progress_awr", "episode_quality", "quality_advantage")

WEIGHTINGS: dict[str, WeightFn] = {
    "none": none,
    "top_awr": top_awr,
    "rabc": rabc,
    "awr": awr,
    "filter": filter_top,
    **{name: _lazy("policies.weighting.advantage", name) for name in ADVANTAGE_RULES},
}

# rules that may read dataset statistics (top_awr only when centered); the trainer fits them once per run
NEEDS_STATS = {"rabc", "awr", "filter", "top_awr", *ADVANTAGE_RULES}

# what a rule may read of each sample besides its progress window: keyword → batch key (see data/loader.py)
SAMPLE_FIELDS = {"success": "success_score", "episode": "episode_index", "frame": "frame_index"}


def sample_info(batch: dict) -> dict[str, Tensor | None]:
    """The per-sample keywords every rule is called with (rules ignore the ones they don't read)."""
    return {kw: batch.get(key) for kw, key in SAMPLE_FIELDS.items()}


def fit_weighting_stats(name: str, table, episodes: list[dict], **params):
    """The dataset statistics rule ``name`` reads, fitted once per run.

    ``table``: :class:`data.loader.ProgressTable` (every sample's episode, frame, p[t], Δ); ``episodes``: the
    manifest's ``episodes`` list; ``params``: the rule's parameters (the advantage estimators read their
    fit-time ones: bins, expectile, ...). :class:`GainStats` for the rules above, an
    :class:`policies.advantage.AdvantageStats` for the advantage estimators.
    """
    get_weighting(name)
    if name in ADVANTAGE_RULES:
        from policies.weighting.advantage import AdvantageStats

        return AdvantageStats.fit(table, episodes, rule=name, **params)
    return GainStats.from_gains(table.gain)


def get_weighting(name: str) -> WeightFn:
    try:
        return WEIGHTINGS[name]
    except KeyError:
        raise WeightingError(f"unknown weighting {name!r}; valid: {', '.join(WEIGHTINGS)}") from None


def weigh(name: str, progress: Tensor, stats: GainStats | None = None, **params) -> Tensor:
    """One weight per sample of ``progress`` (B, H+1) under rule ``name`` with its ``params``."""
    return get_weighting(name)(progress, stats, **params)


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
