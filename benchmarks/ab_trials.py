"""A/B trials: the sequential test's error rates and trials against the fixed-sample design, and matched pairs
against unpaired trials, over many simulated comparisons with known success rates.

    python -m benchmarks.ab_trials --json

1. Sequential (``policies.evaluation.stats``: Wald's SPRT on discordant pairs, alpha 0.05, beta 0.2,
   min_difference 0.3, a budget of 100 trials per policy) on independent trials: per pair of true rates, how
   often it says "A better", "B better", "no difference", or spends the budget, and its mean trials per policy;
   beside it the fixed-sample design of equal power: the fewest trials per policy whose Fisher exact test
   (alpha 0.05, two-sided) separates the rates as often as the sequential test did (exact power, every
   outcome enumerated), and for equal rates the design that has 80% power at the least favourable difference of
   0.3 (0.65 vs 0.35).
2. Matched pairs: the trials of a pair share their set-up, a Gaussian copula with correlation ``--rho`` on a
   latent difficulty (each policy's own success rate unchanged). The fewest pairs for 80% power of the exact
   McNemar test against the fewest trials per policy for Fisher's test on the same data, and the sequential test
   taking the pairs as matched.
"""

from __future__ import annotations

import argparse
import time
from functools import cache
from statistics import NormalDist

import numpy as np

from benchmarks import print_report
from policies.evaluation import stats

ALPHA, BETA, DIFF, BUDGET = 0.05, 0.2, 0.3, 100
CASES = ((0.5, 0.8), (0.8, 0.5), (0.6, 0.9), (0.2, 0.5), (0.5, 0.7), (0.6, 0.6), (0.5, 0.5), (0.9, 0.9),
         (0.2, 0.2))


@cache
def fisher_rejects(n: int) -> np.ndarray:
    """(n+1)×(n+1) table: does Fisher's exact test reject at ALPHA with k1 and k2 successes of n each."""
    return np.array([[stats.fisher_exact(k1, n, k2, n) < ALPHA for k2 in range(n + 1)] for k1 in range(n + 1)])


def fisher_power(p1: float, p2: float, n: int) -> float:
    from scipy.stats import binom

    w1, w2 = binom.pmf(np.arange(n + 1), n, p1), binom.pmf(np.arange(n + 1), n, p2)
    return float(w1 @ fisher_rejects(n) @ w2)


def fixed_trials(p1: float, p2: float, power: float, start: int = 4, stop: int = 400) -> int | None:
    """The fewest trials per policy whose Fisher test reaches ``power`` (exact)."""
    guess = stats.trials_to_separate(p1, p2, ALPHA, min(max(power, 0.05), 0.999)) or start
    n = max(start, guess - 12)
    while n <= stop:
        if fisher_power(p1, p2, n) >= power:
            return n
        n += 1
    return None


def sequential_study(runs: int, rng) -> list[dict]:
    rows = []
    design = fixed_trials(0.65, 0.35, 1 - BETA)
    for pa, pb in CASES:
        sim = stats.simulate_sequential(stats.discordance(pa, pb), ALPHA, BETA, DIFF, False, runs, BUDGET, rng)
        d = sim["decision"]
        share = {k: float(np.mean(d == k)) for k in (stats.A_BETTER, stats.B_BETTER, stats.NO_DIFFERENCE,
                                                     stats.BUDGET_SPENT)}
        row = {"p_a": pa, "p_b": pb, **share, "mean_trials_per_policy": float(np.mean(sim["pairs"])),
               "median_trials_per_policy": float(np.median(sim["pairs"])),
               "p90_trials_per_policy": float(np.quantile(sim["pairs"], 0.9))}
        if pa != pb:
            power = share[stats.A_BETTER if pa > pb else stats.B_BETTER]
            row["power"] = power
            row["fixed_trials_equal_power"] = fixed_trials(pa, pb, power)
        else:
            row["type1"] = share[stats.A_BETTER] + share[stats.B_BETTER]
            row["fixed_trials_design"] = design
        rows.append(row)
    return rows


def matched_trials(pa: float, pb: float, rho: float, n: int, runs: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``runs`` × ``n`` matched pairs: success when a latent difficulty, shared with correlation ``rho``, lies
    below each policy's quantile (so each policy keeps its success rate)."""
    shared = rng.standard_normal((runs, n))
    za = np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal((runs, n))
    zb = np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal((runs, n))
    q = NormalDist().inv_cdf
    return za < q(pa), zb < q(pb)


def paired_study(pa: float, pb: float, rho: float, runs: int, rng) -> dict:
    mcnemar = {}

    def mcnemar_p(x: int, y: int) -> float:
        if (x, y) not in mcnemar:
            mcnemar[(x, y)] = stats.mcnemar_exact(x, y)
        return mcnemar[(x, y)]

    power = {"mcnemar": {}, "fisher": {}}
    for n in range(6, 121, 2):
        a, b = matched_trials(pa, pb, rho, n, runs, rng)
        x, y = (a & ~b).sum(1), (b & ~a).sum(1)
        power["mcnemar"][n] = float(np.mean([mcnemar_p(int(i), int(j)) < ALPHA for i, j in zip(x, y, strict=True)]))
        rej = fisher_rejects(n)
        power["fisher"][n] = float(np.mean(rej[a.sum(1), b.sum(1)]))
        if power["fisher"][n] >= 1 - BETA and power["mcnemar"][n] >= 1 - BETA:
            break
    first = {k: next((n for n, p in v.items() if p >= 1 - BETA), None) for k, v in power.items()}
    a, b = matched_trials(pa, pb, rho, 1, runs, rng)
    both, a_only, b_only = np.mean(a & b), np.mean(a & ~b), np.mean(b & ~a)
    seq = {}
    for paired in (True, False):  # the sequential test on the same matched pairs: as matched, and as if not
        sim = stats.simulate_sequential((a_only, b_only), ALPHA, BETA, DIFF, paired, runs, BUDGET, rng)
        seq["matched" if paired else "taken_as_unpaired"] = {
            "a_better": float(np.mean(sim["decision"] == stats.A_BETTER)),
            "mean_trials_per_policy": float(np.mean(sim["pairs"]))}
    return {"p_a": pa, "p_b": pb, "rho": rho, "discordant_share": float(a_only + b_only), "both": float(both),
            "pairs_for_80pct_mcnemar": first["mcnemar"], "trials_per_policy_for_80pct_fisher": first["fisher"],
            "sequential": seq}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20000, help="simulated comparisons per case")
    ap.add_argument("--rho", type=float, default=0.6, help="correlation of matched trials' latent difficulty")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    report = {"alpha": ALPHA, "beta": BETA, "min_difference": DIFF, "budget": BUDGET, "runs": args.runs,
              "test": stats.SEQUENTIAL_TEST_NAME, "sequential": sequential_study(args.runs, rng),
              "paired": [paired_study(0.8, 0.5, args.rho, min(args.runs, 4000), rng),
                         paired_study(0.7, 0.5, args.rho, min(args.runs, 4000), rng)]}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return print_report(report, args.json)


if __name__ == "__main__":
    main()
