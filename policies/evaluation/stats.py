"""Success statistics of rollouts: the Wilson score interval and the summary written to ``eval.json``."""

from __future__ import annotations

import math

import numpy as np

Z_95 = 1.959963984540054  # the standard normal quantile of 0.975: a two-sided 95% interval


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (``z`` for other levels)."""
    if n <= 0:
        raise ValueError(f"n={n}: an interval needs at least one episode")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside 0..{n}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(episodes: list) -> dict:
    """Success rate, its 95% Wilson interval, mean return and lengths of a list of rollouts
    (:class:`policies.evaluation.rollouts.RolloutResult`: ``success``, ``length``, ``ret``)."""
    n = len(episodes)
    k = sum(e.success for e in episodes)
    lo, hi = wilson_interval(k, n)
    lengths = [e.length for e in episodes]
    return {
        "episodes": n, "successes": k, "success_rate": k / n, "ci_low": lo, "ci_high": hi, "confidence": 0.95,
        "mean_return": float(np.mean([e.ret for e in episodes])),
        "mean_length": float(np.mean(lengths)), "lengths": lengths,
    }
