"""Weighting rules against hand-computed weights on a known set of progress windows; the rule objects of
policies/weighting/registry.py (what they fit, which parameters they accept)."""

import math
import pickle

import numpy as np
import pytest
import torch

from data.schema import windows
from policies.weighting import (
    RULES,
    GainStats,
    Rule,
    WeightingError,
    fit_weighting_stats,
    get_rule,
    weigh,
    weight_summary,
    weighted_loss,
)


def _episode_end_window():
    # an episode of 6 frames whose progress ends ... 0.9, 1.0; the window of t = 4 (H = 4) runs past the end
    # and is clamped at the last frame by the shard schema: [p4, p5, p5, p5, p5]
    prog = np.array([0.0, 0.2, 0.4, 0.6, 0.9, 1.0], dtype=np.float32)
    win = windows(4, len(prog), obs_steps=1, horizon=4)
    return prog[win.progress]


@pytest.fixture
def progress():
    rows = [
        [0.0, 0.1, 0.2, 0.3, 0.4],        # A: gain 0.4
        [0.5, 0.5, 0.5, 0.5, 0.5],        # B: flat, gain 0
        [0.6, 0.5, 0.4, 0.3, 0.2],        # C: regress, gain -0.4
        list(_episode_end_window()),      # D: clamped at the episode end, gain 0.1
        [0.2, 0.2, 0.2, 0.2, 0.205],      # E: tiny gain 0.005 (below kappa)
    ]
    return torch.tensor(rows, dtype=torch.float32)


@pytest.fixture
def stats():
    # mean 0.1, std 0.2 chosen so the hand computation stays readable; sorted gains for the filter quantile
    return GainStats(mean=0.1, std=0.2, count=5, sorted_gains=np.array([-0.4, 0.0, 0.005, 0.1, 0.4]))


def test_episode_end_window_is_clamped():
    np.testing.assert_allclose(_episode_end_window(), [0.9, 1.0, 1.0, 1.0, 1.0])


def test_none_is_plain_bc(progress):
    w = weigh("none", progress)
    assert torch.equal(w, torch.ones(5))
    per = torch.tensor([0.3, 1.7, 0.2, 5.0, 0.01])
    assert weighted_loss(per, w).item() == per.mean().item()


def test_top_awr_literal_saturates(progress, stats):
    w = weigh("top_awr", progress, stats, tau=2.0, delta_max=2.0)
    expected = [2.0, 2.0, 2 * math.exp(-0.4), 2.0, 2.0]  # 2·e^0.4 and 2·e^0.1 clip at 2; only regress < 2
    torch.testing.assert_close(w, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_top_awr_centered(progress, stats):
    w = weigh("top_awr", progress, stats, tau=2.0, delta_max=2.0, centered=True)
    expected = [2.0, 2 * math.exp(-0.1), 2 * math.exp(-0.5), 2.0, 2 * math.exp(-0.095)]
    torch.testing.assert_close(w, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(w, weigh("top_awr", progress, stats))  # the option changes the weights


def test_rabc_kappa_rule(progress, stats):
    w = weigh("rabc", progress, stats, kappa=0.01, eps=0.0)
    # mu = 0.1, sigma = 0.2: soft = clip((gain + 0.3) / 0.8, 0, 1)
    expected = [1.0, 0.3 / 0.8, 0.0, 1.0, 0.305 / 0.8]
    torch.testing.assert_close(w, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    # negative mean gain: mu is floored at 0 -> soft for gain 0 is (0 + 0.4) / 0.8
    neg = GainStats(mean=-0.3, std=0.2, count=5, sorted_gains=stats.sorted_gains)
    assert weigh("rabc", progress, neg, eps=0.0)[1].item() == pytest.approx(0.5)


def test_awr(progress, stats):
    w = weigh("awr", progress, stats, beta=0.5, w_max=20.0, eps=0.0)
    expected = [20.0, math.exp(-1.0), math.exp(-5.0), 1.0, math.exp(-0.95)]  # exp(3) = 20.09 clips at 20
    torch.testing.assert_close(w, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_filter_top_fraction_and_success_floor(progress, stats):
    # 0.6 quantile of [-0.4, 0, 0.005, 0.1, 0.4] = 0.005 + 0.4 * 0.095 = 0.043: keeps A (0.4) and D (0.1)
    w = weigh("filter", progress, stats, top_fraction=0.4)
    assert w.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    success = torch.tensor([0.9, 0.9, 0.9, 0.2, 0.9])
    w2 = weigh("filter", progress, stats, top_fraction=0.4, min_success=0.5, success=success)
    assert w2.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert weigh("filter", progress, stats, top_fraction=1.0).tolist() == [1.0] * 5
    with pytest.raises(WeightingError, match="success"):
        weigh("filter", progress, stats, min_success=0.5, success=torch.tensor([0.9, float("nan"), 0.9, 0.2, 0.9]))


def test_summary_and_weighted_loss():
    w = torch.tensor([1.0, 1.0, 0.0, 0.0])
    s = weight_summary(w)
    assert s == {"weight_mean": 0.5, "weight_zero_frac": 0.5, "ess": 2.0}
    assert weight_summary(torch.tensor([4.0, 0.0, 0.0, 0.0]))["ess"] == 1.0
    per = torch.tensor([1.0, 3.0, 100.0, 100.0])
    assert weighted_loss(per, w).item() == 2.0  # zero-weighted samples do not count
    assert weighted_loss(per, torch.zeros(4)).item() == 0.0


def test_gain_stats_fit():
    st = GainStats.from_gains([0.0, 0.2, 0.4, -0.2])
    assert st.mean == pytest.approx(0.1) and st.std == pytest.approx(np.std([0.0, 0.2, 0.4, -0.2]))
    with pytest.raises(WeightingError, match="NaN"):
        GainStats.from_gains([0.1, float("nan")])


def test_unknown_name_lists_valid_ones(progress):
    with pytest.raises(WeightingError) as exc:
        get_rule("advantage")
    for name in RULES:
        assert name in str(exc.value)
    with pytest.raises(WeightingError, match="statistics"):
        weigh("rabc", progress, None)


def test_unknown_parameter_names_key_rule_and_valid_ones(progress, stats):
    # the control first: the correctly spelt key is accepted and changes the weights
    assert weigh("filter", progress, stats, top_fraction=0.4).tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    with pytest.raises(WeightingError) as exc:
        weigh("filter", progress, stats, top_fracton=0.4)
    assert str(exc.value).startswith(
        "weighting 'filter' has no parameter 'top_fracton'; valid: top_fraction, min_success. "
        "Did you mean top_fraction?")
    with pytest.raises(WeightingError, match="'top_fracton'"):
        get_rule("filter").check({"top_fraction": 0.5, "top_fracton": 0.4})
    with pytest.raises(WeightingError, match="'top_fracton'"):  # fitting checks them too
        fit_weighting_stats("filter", None, [], top_fracton=0.4)
    with pytest.raises(WeightingError, match=r"'none' has no parameter 'kappa'; valid: \(none\)"):
        weigh("none", progress, kappa=0.01)
    # a key of another rule is no key of this one
    with pytest.raises(WeightingError, match="'rabc' has no parameter 'beta'"):
        weigh("rabc", progress, stats, beta=1.0)


def test_rules_declare_what_they_fit_and_read():
    assert {name for name, rule in RULES.items() if rule.fit_fn is not None} == set(RULES) - {"none"}
    assert not get_rule("none").needs_stats()
    # the literal TOPReward rule reads no statistics; the centred one reads mean Δ
    assert not get_rule("top_awr").needs_stats() and get_rule("top_awr").needs_stats(centered=True)
    assert all(get_rule(name).needs_stats() for name in ("rabc", "awr", "filter"))
    gains = type("Table", (), {"gain": np.array([0.0, 0.2, 0.4, -0.2])})()
    assert fit_weighting_stats("top_awr", gains, []) is None
    assert fit_weighting_stats("none", gains, []) is None
    assert fit_weighting_stats("top_awr", gains, [], centered=True).mean == pytest.approx(0.1)
    assert get_rule("filter").reads == ("success",) and get_rule("rabc").reads == ()
    assert get_rule("awr").params == {"beta": 1.0, "w_max": 20.0, "eps": 1e-6}
    # module-level functions only: the rules pickle (the module holds one, e.g. into ddp_spawn's processes)
    assert all(pickle.loads(pickle.dumps(rule)).params == rule.params for rule in RULES.values())


def test_a_catch_all_keyword_cannot_enter_the_table():
    def sloppy(progress, stats=None, *, beta=1.0, **_):
        return progress[:, 0]

    def listed(progress, stats=None, *, beta=1.0, episode=None):
        return progress[:, 0]

    assert Rule.of("listed", listed).params == {"beta": 1.0}  # the control
    assert Rule.of("listed", listed).reads == ("episode",)
    with pytest.raises(TypeError, match="must list its parameters"):
        Rule.of("sloppy", sloppy)


def test_parameter_errors_name_the_key_a_user_types():
    """Overrides are typed as weighting.<param>=...; the message names that key (not a rule-prefixed one)."""
    from policies.weighting import GainStats

    with pytest.raises(WeightingError, match=r"weighting=filter: weighting\.top_fraction=1\.5 must be in") as e:
        weigh("filter", torch.zeros(2, 3), GainStats.from_gains([0.0, 1.0]), top_fraction=1.5)
    assert "filter.top_fraction" not in str(e.value).replace("weighting=filter: weighting.top_fraction", "")

