"""Success statistics of rollouts: the binomial intervals and exact tests (scipy underneath) and the summary
written to ``eval.json``. The one home of Wilson, Newcombe, Fisher and McNemar; AUROC and VOC live with the
reward report (:func:`pipeline.report.metrics.auroc`, :func:`pipeline.progress.voc`)."""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy's ``binomtest(...).proportion_ci``), exactly 0 at
    ``successes`` = 0 and 1 at ``successes`` = n."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError(f"n={n}: an interval needs at least one episode")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside 0..{n}")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return (0.0 if successes == 0 else float(ci.low)), (1.0 if successes == n else float(ci.high))


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


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval of the difference of two success rates k1/n1 − k2/n2: Newcombe's hybrid score interval
    (method 10 of Newcombe 1998), built from each rate's :func:`wilson_interval`. Unlike the Wald interval it
    stays inside [−1, 1] and keeps its coverage at the small counts and extreme rates robot trials give."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, confidence)
    l2, u2 = wilson_interval(k2, n2, confidence)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test on the 2×2 table [[k1, n1−k1], [k2, n2−k2]] (scipy's
    ``fisher_exact``). Exact at any count, so it holds at the 10–50 trials per policy a robot gives, where a χ²
    or z test's normal approximation does not."""
    from scipy.stats import fisher_exact as scipy_fisher_exact

    if not (0 <= k1 <= n1 and 0 <= k2 <= n2) or n1 < 1 or n2 < 1:
        raise ValueError(f"a 2x2 table needs 0 <= k <= n and n >= 1, got {k1}/{n1} and {k2}/{n2}")
    return float(scipy_fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)


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


# ---------------------------------------------------------------------------------------- paired trials


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided p-value of the exact McNemar test of matched pairs: ``a_only`` pairs where only A succeeded,
    ``b_only`` where only B did. Under "equal success rates" each discordant pair is A's with probability 1/2,
    so this is the exact binomial test of ``a_only`` out of ``a_only + b_only`` at 1/2 (scipy's
    ``binomtest``); concordant pairs carry no information about the difference. 1.0 without discordant pairs."""
    from scipy.stats import binomtest

    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant pair counts must be >= 0, got {a_only} and {b_only}")
    n = a_only + b_only
    return 1.0 if n == 0 else float(binomtest(a_only, n, 0.5).pvalue)


def mean_difference_interval(a, b, paired: bool = False, confidence: float = 0.95) -> dict | None:
    """Mean of ``a`` − mean of ``b`` with its t-interval: Welch's (unequal variances; scipy's ``ttest_ind``) for
    independent trials, the paired t (``ttest_rel``) for matched ones (``a[i]`` beside ``b[i]``). None with fewer
    than two values a side (or pairs), or no spread at all (the interval is undefined)."""
    from scipy.stats import ttest_ind, ttest_rel

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if paired and len(a) != len(b):
        raise ValueError(f"a paired interval needs as many values a side, got {len(a)} and {len(b)}")
    if len(a) < 2 or len(b) < 2:
        return None
    spread = np.std(a - b) if paired else max(np.std(a), np.std(b))
    if spread == 0:
        return None
    res = ttest_rel(a, b) if paired else ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence)
    return {"difference": float(np.mean(a) - np.mean(b)), "ci_low": float(ci.low), "ci_high": float(ci.high),
            "p_value": float(res.pvalue), "test": "paired t" if paired else "Welch t", "confidence": confidence}


# ----------------------------------------------------------------------------------- the sequential test
#
# Wald's sequential comparison of two success rates (Wald 1947, "Sequential Analysis", ch. 6): trials are taken
# in pairs (one of A, one of B; the run plan interleaves them), and only discordant pairs (one succeeds, the
# other fails) carry information about which is better. Whatever the common rate, when A and B succeed equally
# often a discordant pair is A's with probability exactly 1/2; in general with probability
# theta = pA(1 − pB) / (pA(1 − pB) + pB(1 − pA)) for independent trials. Two one-sided sequential probability
# ratio tests on the discordant pairs, theta = 1/2 against theta1 (A better) and against 1 − theta1 (B better),
# with Ville's inequality for the boundaries (not Wald's approximations), give error rates that hold exactly, at
# any count and however often one looks:
#   P(say "A better") <= alpha/2 whenever pA <= pB (so <= alpha for either "better" when they are equal);
#   P(say "no difference") <= beta whenever |pA − pB| >= min_difference.
# theta1 is the least favourable theta of a difference of min_difference: for independent trials the smallest
# odds ratio pA(1 − pB)/(pB(1 − pA)) at pA − pB = d is ((1 + d)/(1 − d))^2 (at pA + pB = 1); for matched pairs,
# whose discordance can be anything, (1 + d)/2 (since P(A only) + P(B only) <= 1).

SEQUENTIAL_TEST_NAME = "Wald's sequential probability ratio test on discordant pairs (two one-sided tests)"
A_BETTER, B_BETTER, NO_DIFFERENCE, BUDGET_SPENT, CONTINUE = ("a_better", "b_better", "no_difference",
                                                             "budget_spent", "continue")


def discordant_alternative(min_difference: float, paired: bool = False) -> float:
    """theta1: the probability that a discordant pair is A's at the least favourable difference of
    ``min_difference`` in success rate (see the comment above)."""
    d = float(min_difference)
    if not 0 < d < 1:
        raise ValueError(f"min_difference={min_difference} must lie strictly between 0 and 1")
    if paired:
        return (1 + d) / 2
    odds = ((1 + d) / (1 - d)) ** 2
    return odds / (1 + odds)


def sequential_boundaries(alpha: float, beta: float) -> tuple[float, float]:
    """(upper, lower) bounds of each one-sided log likelihood ratio: log(2/alpha) (Ville: crossed with
    probability <= alpha/2 under the null) and log(beta) (crossed with probability <= beta under theta1)."""
    if not 0 < alpha < 1 or not 0 < beta < 1:
        raise ValueError(f"alpha={alpha} and beta={beta} must lie strictly between 0 and 1")
    return math.log(2 / alpha), math.log(beta)


def sequential_path(a_only, alpha: float, beta: float, min_difference: float, paired: bool = False,
                    max_pairs: int | None = None) -> dict:
    """The sequential test over discordant pairs in the order they were run: ``a_only[i]`` is True when the i-th
    discordant pair is A's (only A succeeded), False when it is B's; ``max_pairs`` caps the number of discordant
    pairs looked at (the caller counts all pairs against its budget). Stops at the first boundary crossed:
    ``decision`` (``a_better``, ``b_better``, ``no_difference`` or ``continue``), ``at`` (discordant pairs
    used), and the two log likelihood ratios there."""
    t1 = discordant_alternative(min_difference, paired)
    upper, lower = sequential_boundaries(alpha, beta)
    win, lose = math.log(2 * t1), math.log(2 * (1 - t1))
    up = down = 0.0  # log LR of "A better" and of "B better" against "equal"
    seq = list(a_only)[: max_pairs] if max_pairs is not None else list(a_only)
    for i, a in enumerate(seq, start=1):
        up += win if a else lose
        down += lose if a else win
        if up >= upper:
            return {"decision": A_BETTER, "at": i, "log_lr_a": up, "log_lr_b": down}
        if down >= upper:
            return {"decision": B_BETTER, "at": i, "log_lr_a": up, "log_lr_b": down}
        if up <= lower and down <= lower:
            return {"decision": NO_DIFFERENCE, "at": i, "log_lr_a": up, "log_lr_b": down}
    return {"decision": CONTINUE, "at": len(seq), "log_lr_a": up, "log_lr_b": down}


def simulate_sequential(p_pair, alpha: float, beta: float, min_difference: float, paired: bool,
                        runs: int, max_pairs: int, rng, start: tuple[float, float] = (0.0, 0.0)) -> dict:
    """Many runs of the sequential test, vectorised: each run draws pairs with outcome probabilities ``p_pair``
    (P(A only), P(B only) per pair; an array of shape (runs, 2) gives each run its own) until a decision or
    ``max_pairs`` pairs, starting from the log likelihood ratios ``start``. Returns per run the ``decision``
    (A_BETTER, B_BETTER, NO_DIFFERENCE or BUDGET_SPENT) and the number of ``pairs`` drawn."""
    t1 = discordant_alternative(min_difference, paired)
    upper, lower = sequential_boundaries(alpha, beta)
    win, lose = math.log(2 * t1), math.log(2 * (1 - t1))
    p = np.broadcast_to(np.asarray(p_pair, np.float64), (runs, 2))
    up, down = np.full(runs, float(start[0])), np.full(runs, float(start[1]))
    decision = np.full(runs, BUDGET_SPENT, dtype=object)
    pairs = np.full(runs, max_pairs, dtype=np.int64)
    live = np.ones(runs, bool)
    for i in range(1, max_pairs + 1):
        u = rng.random(runs)
        a = u < p[:, 0]
        b = (u >= p[:, 0]) & (u < p[:, 0] + p[:, 1])
        up += np.where(a, win, 0.0) + np.where(b, lose, 0.0)
        down += np.where(a, lose, 0.0) + np.where(b, win, 0.0)
        for mask, what in ((up >= upper, A_BETTER), (down >= upper, B_BETTER),
                           ((up <= lower) & (down <= lower), NO_DIFFERENCE)):
            hit = live & mask
            decision[hit], pairs[hit] = what, i
            live &= ~hit
        if not live.any():
            break
    return {"decision": decision, "pairs": pairs}


def discordance(p_a: float, p_b: float) -> tuple[float, float]:
    """(P(A only), P(B only)) of a pair of independent trials with success rates ``p_a`` and ``p_b``."""
    return p_a * (1 - p_b), p_b * (1 - p_a)


def more_pairs_needed(table: tuple[int, int, int, int], log_lr: tuple[float, float], alpha: float, beta: float,
                      min_difference: float, paired: bool, max_more: int, runs: int = 2000, seed: int = 0) -> dict:
    """How many more pairs the sequential test will likely need from where it stands: continuations simulated
    from the pairs so far, ``table`` = (both succeeded, A only, B only, neither), with the rates drawn from their
    posterior under a uniform prior (each rate Beta for independent trials, the four cells Dirichlet for matched
    ones), so an uncertain estimate spreads the answer. ``median``: the median of the simulated continuations
    (those that reach ``max_more`` count as ``max_more``); ``budget_spent``: the share that reach it undecided."""
    rng = np.random.default_rng(seed)
    both, a_only, b_only, neither = (int(x) for x in table)
    if paired:
        cells = rng.dirichlet(np.array([both, a_only, b_only, neither], np.float64) + 1, size=runs)
        p_pair = cells[:, 1:3]
    else:
        pa = rng.beta(1 + both + a_only, 1 + b_only + neither, size=runs)
        pb = rng.beta(1 + both + b_only, 1 + a_only + neither, size=runs)
        p_pair = np.stack(discordance(pa, pb), axis=1)
    sim = simulate_sequential(p_pair, alpha, beta, min_difference, paired, runs, max(1, int(max_more)), rng,
                              start=log_lr)
    return {"median": int(np.median(sim["pairs"])), "budget_spent": float(np.mean(sim["decision"] == BUDGET_SPENT)),
            "runs": runs}
