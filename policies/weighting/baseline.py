"""The progress-conditioned baseline of the advantage estimators: b(p) = the τ-expectile of the chunk gain Δ
among the samples at progress level p, per equal-width bin, smoothed over neighbouring bins.

τ = 0.5 is the binned mean of Δ, the value baseline V(s) ≈ E[Δ | p] of AWR (Peng et al. 2019); τ > 0.5 is IQL's
upper expectile (Kostrikov et al. 2022), the gain of the better chunks from that level
(:mod:`policies.weighting.advantage` explains the default τ = 0.7).
"""

from __future__ import annotations

import numpy as np

from policies.weighting.core import WeightingError


def expectile(x, tau: float, iters: int = 200) -> float:
    """The τ-expectile of ``x``: m with τ·Σ_{x≥m}(x − m) = (1 − τ)·Σ_{x<m}(m − x); τ = 0.5 is the mean.

    Solved by the weighted-mean fixed point (exact once the split of ``x`` around m stops changing).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        raise WeightingError("expectile of no values")
    if not 0 < tau < 1:
        raise WeightingError(f"expectile={tau} must be in (0, 1) (0.5 = mean, IQL uses 0.7-0.9)")
    m = float(x.mean())
    for _ in range(iters):
        w = np.where(x >= m, tau, 1.0 - tau)
        new = float((w * x).sum() / w.sum())
        if new == m:
            break
        m = new
    return m


def binned_baseline(level, gain, bins: int = 10, tau: float = 0.7, smooth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, baseline values): the τ-expectile of ``gain`` per equal-width bin of ``level`` in [0, 1],
    then a count-weighted mean over ± ``smooth`` neighbouring bins; bins with no samples within reach take
    the linear interpolation of their neighbours."""
    if int(bins) < 1 or int(smooth) < 0:
        raise WeightingError(f"bins={bins} must be >= 1 and smooth={smooth} >= 0")
    level = np.clip(np.asarray(level, dtype=np.float64), 0.0, 1.0)
    gain = np.asarray(gain, dtype=np.float64)
    idx = np.minimum((level * bins).astype(np.int64), bins - 1)
    counts = np.bincount(idx, minlength=bins).astype(np.float64)
    values = np.array([expectile(gain[idx == k], tau) if counts[k] else 0.0 for k in range(bins)])
    out = np.full(bins, np.nan)
    for k in range(bins):
        lo, hi = max(0, k - smooth), min(bins, k + smooth + 1)
        n = counts[lo:hi].sum()
        if n > 0:
            out[k] = (counts[lo:hi] * values[lo:hi]).sum() / n
    centres = (np.arange(bins) + 0.5) / bins
    ok = ~np.isnan(out)
    if not ok.any():
        raise WeightingError("no samples to fit the progress baseline on (empty dataset?)")
    out[~ok] = np.interp(centres[~ok], centres[ok], out[ok])
    return centres, out
