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
    # exactly 0 (1) at k = 0 (n), where rounding left centre - half a hair above 0 (a negative error bar)
    return (0.0 if successes == 0 else max(0.0, centre - half)), (1.0 if successes == n else min(1.0, centre + half))


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


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z_95) -> tuple[float, float]:
    """95% interval of the difference of two success rates k1/n1 − k2/n2: Newcombe's hybrid score interval
    (method 10 of Newcombe 1998), built from each rate's Wilson interval. Unlike the Wald interval it stays
    inside [−1, 1] and keeps its coverage at the small counts and extreme rates robot trials give."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test on the 2×2 table [[k1, n1−k1], [k2, n2−k2]]: the probability,
    given both margins, of a table at most as likely as the one observed (the convention of R's fisher.test and
    scipy's ``fisher_exact``). Exact at any count, so it holds at the 10–50 trials per policy a robot gives,
    where a χ² or z test's normal approximation does not."""
    if not (0 <= k1 <= n1 and 0 <= k2 <= n2) or n1 < 1 or n2 < 1:
        raise ValueError(f"a 2x2 table needs 0 <= k <= n and n >= 1, got {k1}/{n1} and {k2}/{n2}")
    successes, n = k1 + k2, n1 + n2
    lo, hi = max(0, successes - n2), min(successes, n1)
    total = math.comb(n, successes)

    def prob(x: int) -> float:
        return math.comb(n1, x) * math.comb(n2, successes - x) / total

    observed = prob(k1)
    return min(1.0, sum(p for x in range(lo, hi + 1) if (p := prob(x)) <= observed * (1 + 1e-7)))


def trials_to_separate(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Trials per policy for a two-sided test at level ``alpha`` to tell success rates ``p1`` and ``p2`` apart
    with probability ``power`` (the normal-approximation sample size of two proportions, Fleiss 1981, without
    continuity correction); None when the rates are equal (no number of trials separates them)."""
    from statistics import NormalDist

    if p1 == p2:
        return None
    za, zb = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2
    return max(1, math.ceil(n))
