"""A/B trials on a robot: the sequential test, the matched-pairs test, the partial-credit interval and the run
plan, on hand-computed cases and against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policies.evaluation import stats
from policies.evaluation.plan import PlanError, check_counts, make_plan, read_plan, write_plan

# ------------------------------------------------------------------------------------------ sequential test


def test_alternative_and_boundaries_by_hand():
    # a difference of 0.3 between independent trials: least favourable at 0.65 vs 0.35, odds ratio (1.3/0.7)^2
    assert stats.discordant_alternative(0.3) == pytest.approx(0.65 * 0.65 / (0.65 * 0.65 + 0.35 * 0.35))
    assert stats.discordant_alternative(0.3) == pytest.approx(0.77523, abs=1e-5)
    # the same difference between matched trials can come with any discordance: (1 + d) / 2
    assert stats.discordant_alternative(0.3, paired=True) == pytest.approx(0.65)
    # theta of 0.8 vs 0.5 (0.4 / (0.4 + 0.1)) is beyond it: a difference of 0.3 at another base rate
    pa, pb = stats.discordance(0.8, 0.5)
    assert (pa, pb) == pytest.approx((0.4, 0.1)) and pa / (pa + pb) > stats.discordant_alternative(0.3)
    assert stats.sequential_boundaries(0.05, 0.2) == pytest.approx((math.log(40), math.log(0.2)))
    with pytest.raises(ValueError, match="min_difference=1.2"):
        stats.discordant_alternative(1.2)


def test_sequential_decisions_by_hand():
    # theta1 = 0.77523: an A-only pair adds log(2 * 0.77523) = 0.4386 to A's log LR, a B-only pair
    # log(2 * 0.22477) = -0.7994; A is better once the sum reaches log(40) = 3.689: after 9 A-only pairs (3.947),
    # not 8 (3.509)
    run = dict(alpha=0.05, beta=0.2, min_difference=0.3)
    assert stats.sequential_path([True] * 8, **run)["decision"] == stats.CONTINUE
    r = stats.sequential_path([True] * 12, **run)
    assert (r["decision"], r["at"]) == (stats.A_BETTER, 9)
    assert r["log_lr_a"] == pytest.approx(9 * math.log(2 * stats.discordant_alternative(0.3)))
    assert stats.sequential_path([False] * 9, **run)["decision"] == stats.B_BETTER  # the mirror
    # alternating pairs: each two add 0.4386 - 0.7994 = -0.3608 to both ratios; both are at or below
    # log(0.2) = -1.609 first after 5 such twos (-1.804; after 4.5 A's ratio is -1.005)
    r = stats.sequential_path([True, False] * 8, **run)
    assert (r["decision"], r["at"]) == (stats.NO_DIFFERENCE, 10)
    # matched pairs: theta1 = 0.65, log(1.3) = 0.2624 per A-only pair: 15 pairs to reach 3.689 (14 give 3.673)
    assert stats.sequential_path([True] * 14, paired=True, **run)["decision"] == stats.CONTINUE
    assert stats.sequential_path([True] * 15, paired=True, **run)["decision"] == stats.A_BETTER


def test_equal_rates_rarely_say_better_and_unequal_ones_do():
    rng = np.random.default_rng(3)
    runs = 4000
    for p in (0.6, 0.2, 0.9):  # negative control: equal rates, the budget of 100 pairs, many looks
        sim = stats.simulate_sequential(stats.discordance(p, p), 0.05, 0.2, 0.3, False, runs, 100, rng)
        a_better = np.mean(sim["decision"] == stats.A_BETTER)
        either = np.mean(np.isin(sim["decision"], [stats.A_BETTER, stats.B_BETTER]))
        assert a_better <= 0.05 and either <= 0.05, (p, a_better, either)
    # the positive control: 0.8 vs 0.5 is found (power >= 1 - beta), and the rare wrong verdict is not "B"
    sim = stats.simulate_sequential(stats.discordance(0.8, 0.5), 0.05, 0.2, 0.3, False, runs, 100, rng)
    assert np.mean(sim["decision"] == stats.A_BETTER) >= 0.8
    assert np.mean(sim["decision"] == stats.B_BETTER) <= 0.025
    # a difference of 0.3 is rarely called "no difference" (<= beta)
    assert np.mean(sim["decision"] == stats.NO_DIFFERENCE) <= 0.2


def test_simulation_and_path_agree_run_by_run():
    # one definition of the test: the vectorised runs decide as the sequential path does on the same draws
    rng = np.random.default_rng(0)
    u = rng.random((50, 60))
    p_a, p_b = stats.discordance(0.7, 0.5)

    class Replay:
        i = 0

        def random(self, n):
            Replay.i += 1
            return u[:, Replay.i - 1]

    sim = stats.simulate_sequential((p_a, p_b), 0.05, 0.2, 0.3, False, 50, 60, Replay())
    for run in range(50):
        draws = u[run]
        disc = [bool(x < p_a) for x in draws if x < p_a + p_b]
        path = stats.sequential_path(disc, 0.05, 0.2, 0.3)
        want = stats.BUDGET_SPENT if path["decision"] == stats.CONTINUE else path["decision"]
        assert sim["decision"][run] == want, run
        if want != stats.BUDGET_SPENT:  # the pair at which the path's last discordant pair came
            where = np.flatnonzero(draws < p_a + p_b)[path["at"] - 1] + 1
            assert sim["pairs"][run] == where


def test_more_pairs_needed_shrinks_as_the_evidence_grows():
    weak = stats.more_pairs_needed((3, 3, 1, 3), (0.0, 0.0), 0.05, 0.2, 0.3, False, 100, runs=500)
    r = stats.sequential_path([True] * 7 + [False], 0.05, 0.2, 0.3)
    strong = stats.more_pairs_needed((5, 7, 1, 3), (r["log_lr_a"], r["log_lr_b"]), 0.05, 0.2, 0.3, False, 100,
                                     runs=500)
    assert 0 < strong["median"] < weak["median"] <= 100


# ------------------------------------------------------------------------------------------- paired tests


def test_mcnemar_exact_by_hand_and_against_scipy():
    from scipy.stats import binomtest, fisher_exact

    # 8 pairs only A succeeded, 2 only B: 2 * (C(10,8) + C(10,9) + C(10,10)) / 2^10 = 112 / 1024
    assert stats.mcnemar_exact(8, 2) == pytest.approx(112 / 1024)
    assert stats.mcnemar_exact(0, 0) == 1.0 and stats.mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    for a_only, b_only in ((3, 9), (12, 1), (7, 7), (0, 11)):
        assert stats.mcnemar_exact(a_only, b_only) == pytest.approx(binomtest(a_only, a_only + b_only).pvalue)
    # matched pairs 20 both, 7 A only, 0 B only, 3 neither: the paired test sees the 7 discordant pairs
    # (p = 2/128 < 0.05); Fisher on the same trials taken apart (27/30 vs 20/30) does not separate them
    assert stats.mcnemar_exact(7, 0) == pytest.approx(2 / 128)
    assert fisher_exact([[27, 3], [20, 10]])[1] > 0.05
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 3)


def test_mean_difference_interval_matches_the_formulas():
    from scipy.stats import t

    a = np.array([1.0, 1.0, 0.4, 0.9, 0.2])
    b = np.array([0.3, 1.0, 0.1, 0.2, 0.25])
    got = stats.mean_difference_interval(a, b)
    va, vb = a.var(ddof=1) / 5, b.var(ddof=1) / 5
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 4)  # Welch–Satterthwaite
    half = t.ppf(0.975, df) * math.sqrt(va + vb)
    d = a.mean() - b.mean()
    assert (got["difference"], got["ci_low"], got["ci_high"]) == pytest.approx((d, d - half, d + half))
    paired = stats.mean_difference_interval(a, b, paired=True)
    diff = a - b
    half = t.ppf(0.975, 4) * diff.std(ddof=1) / math.sqrt(5)
    assert (paired["ci_low"], paired["ci_high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert paired["ci_low"] != pytest.approx(got["ci_low"])  # the two analyses differ on the same numbers
    assert stats.mean_difference_interval([1.0], [0.5, 0.2]) is None
    assert stats.mean_difference_interval([1.0, 1.0], [1.0, 1.0]) is None


# ------------------------------------------------------------------------------------------------ the plan


def test_plan_is_balanced_seeded_and_reproducible():
    rows = make_plan(["a", "b", "c"], trials=10, seed=5)
    assert len(rows) == 30 and [r["run"] for r in rows] == list(range(30))
    for block in range(10):
        in_block = [r for r in rows if r["block"] == block]
        assert sorted(r["policy"] for r in in_block) == ["a", "b", "c"]
        assert {r["trial"] for r in in_block} == {block}
    assert make_plan(["a", "b", "c"], 10, 5) == rows
    other = make_plan(["a", "b", "c"], 10, 6)
    assert [r["policy"] for r in other] != [r["policy"] for r in rows]  # the seed matters
    firsts = [r["policy"] for r in make_plan(["a", "b"], 400, 1) if r["run"] % 2 == 0]
    assert 0.4 < firsts.count("a") / 400 < 0.6  # randomised: neither policy always runs first
    with pytest.raises(PlanError, match="more than once"):
        make_plan(["a", "a"], 3, 0)
    with pytest.raises(PlanError, match="trials=0"):
        make_plan(["a", "b"], 0, 0)


def test_plan_file_round_trip_and_its_command(tmp_path, capsys):
    from policies.plan import main

    path = tmp_path / "plan.csv"
    assert main(["policies=[weighted,plain]", "trials=4", "seed=9", f"out={path}"]) == 0
    assert read_plan(path) == make_plan(["weighted", "plain"], 4, 9)
    assert main(["policies=[weighted,plain]", "trials=4", "seed=9", f"out={path}"]) == 0  # the same plan: fine
    assert main(["policies=[weighted,plain]", "trials=4", "seed=10", f"out={path}"]) == 2
    assert "holds another run plan" in capsys.readouterr().err
    assert read_plan(path) == make_plan(["weighted", "plain"], 4, 9)  # untouched
    notes = tmp_path / "notes.csv"
    notes.write_text("mine\n")
    assert main(["policies=[a,b]", f"out={notes}", "overwrite=true"]) == 2
    assert "is not a run plan" in capsys.readouterr().err and notes.read_text() == "mine\n"
    assert main(["policies=a", f"out={tmp_path / 'x.csv'}"]) == 2
    assert "policies='a'" in capsys.readouterr().err


def test_recordings_are_checked_against_the_plan(tmp_path):
    rows = make_plan(["a", "b"], 3, 2)
    check_counts(rows, {"a": 3, "b": 3}, "plan.csv")
    order = [r["policy"] for r in rows]
    first = {p: int(order[0] == p) for p in ("a", "b")}
    check_counts(rows, first, "plan.csv")  # one run done, the plan's first
    second = {p: 1 - first[p] for p in first}
    with pytest.raises(PlanError, match=r"never gives \(after 1 runs"):  # negative control: the other one first
        check_counts(rows, second, "plan.csv")
    with pytest.raises(PlanError, match="holds 4 trials"):
        check_counts(rows, {"a": 4, "b": 3}, "plan.csv")
    with pytest.raises(PlanError, match=r"not planned: \['c'\]"):
        check_counts(rows, {"a": 3, "c": 3}, "plan.csv")
    edited = tmp_path / "plan.csv"
    write_plan(edited, rows)
    lines = edited.read_text().splitlines()
    edited.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    with pytest.raises(PlanError, match="out of order"):
        read_plan(edited)
