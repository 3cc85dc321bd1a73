"""How TOPReward's tails are batched: the automatic choice from a memory budget, user values, bad values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs import ConfigError, load_config
from configs.types import check_types
from pipeline.rewards.topreward import (
    MemoryModel,
    ScoringError,
    TOPRewardScorer,
    choose_tail_batch,
    memory_budget_bytes,
    speed_cap,
)
from tests.fixtures.tiny_vlm import moving_square_clip

TASK = "push the puck to the goal"
# a Qwen3-VL-8B-like language model in bf16: 36 layers, 8 key/value heads of 128
BIG = MemoryModel(hidden=4096, intermediate=12288, dtype_bytes=2, kv_bytes_per_token=2 * 36 * 8 * 128 * 2)


@pytest.mark.parametrize("budget_gb", [0.5, 1.0, 2.0, 4.0, 64.0])
@pytest.mark.parametrize("shared", [2_000, 9_000])
def test_automatic_batch_is_the_largest_within_budget(budget_gb, shared):
    budget, lt, k = int(budget_gb * 2**30), 38, 240
    b, predicted = choose_tail_batch(BIG, shared, lt, k, budget)
    assert 1 <= b <= k and predicted == BIG.peak_bytes(shared, b * lt)
    if BIG.peak_bytes(shared, lt) <= budget:
        assert predicted <= budget
        assert b == k or BIG.peak_bytes(shared, (b + 1) * lt) > budget  # the largest that fits
    else:
        assert b == 1  # nothing fits: the least memory there is


def test_memory_model_grows_with_the_batch_and_the_video():
    peaks = [BIG.peak_bytes(5_000, q) for q in (0, 38, 380, 3_800)]
    assert peaks == sorted(peaks) and len(set(peaks)) == 4
    assert BIG.peak_bytes(10_000, 380) > BIG.peak_bytes(5_000, 380)
    assert speed_cap(3_015, 38) == 20 and speed_cap(10, 38) == 1


def test_budget_sources():
    assert memory_budget_bytes(torch.device("cpu"), 2) == (2 * 2**30, "memory_budget_gb")
    budget, source = memory_budget_bytes(torch.device("cpu"), None)
    assert budget > 0 and source == "half the available RAM"


@pytest.fixture(scope="module")
def frames():
    return moving_square_clip(81, 40, 48)  # 33 frames sampled at 4 fps: 17 prefixes


def test_automatic_plan_respects_the_budget_and_user_values_win(tiny_vlm_dir, frames, capsys):
    auto = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0)
    auto.score(frames, 10.0, TASK)
    plan = auto.last_plan
    assert plan.automatic and plan.prefixes == 17 and plan.predicted_bytes <= plan.budget_bytes
    assert plan.tail_batch_size == min(17, speed_cap(plan.shared_tokens, plan.tail_tokens))
    assert capsys.readouterr().err.count("tail_batch_size=") == 1  # one line
    auto.score(frames, 10.0, TASK)
    assert capsys.readouterr().err == ""  # said once per scorer

    # a budget that fits 2 tails per call and not 3 → 2
    S, Lt = plan.shared_tokens, plan.tail_tokens
    gb = (auto.memory.peak_bytes(S, 2 * Lt) + auto.memory.peak_bytes(S, 3 * Lt)) / 2 / 2**30
    tight = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0, memory_budget_gb=gb)
    assert tight.plan_tails(S, Lt, 17).tail_batch_size == 2
    # below the shared pass alone: one tail at a time, and the line says it is over the budget
    tiny = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0, memory_budget_gb=1e-6)
    tiny.score(frames, 10.0, TASK)
    assert tiny.last_plan.tail_batch_size == 1 and "OVER the budget" in capsys.readouterr().err

    # explicit values win over any budget: 0 = all tails in one call, N = N; prefixes too
    for given, used in [(0, 17), (5, 5), (40, 17)]:
        s = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0, tail_batch_size=given, memory_budget_gb=1e-6)
        s.score(frames, 10.0, TASK)
        assert s.last_plan.tail_batch_size == used and not s.last_plan.automatic
    k5 = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0, prefixes=5)
    assert len(k5.score(frames, 10.0, TASK).raw) == 5 and k5.last_plan.prefixes == 5
    assert "OVER" not in capsys.readouterr().err


def test_automatic_choice_gives_the_scores_of_the_same_explicit_value(tiny_vlm_dir, frames):
    probe = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0)
    probe.score(frames, 10.0, TASK)
    S, Lt = probe.last_plan.shared_tokens, probe.last_plan.tail_tokens
    gb = (probe.memory.peak_bytes(S, 3 * Lt) + probe.memory.peak_bytes(S, 4 * Lt)) / 2 / 2**30
    auto = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0, memory_budget_gb=gb)
    a = auto.score(frames, 10.0, TASK)
    b = min(3, speed_cap(S, Lt))
    assert auto.last_plan.automatic and auto.last_plan.tail_batch_size == b and 1 < b < len(a.raw)
    explicit = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0, tail_batch_size=b).score(frames, 10.0, TASK)
    np.testing.assert_array_equal(a.logp_true, explicit.logp_true)
    np.testing.assert_array_equal(a.logp_false, explicit.logp_false)
    np.testing.assert_array_equal(a.prefix_ends, explicit.prefix_ends)
    # and, within float rounding, those of one call for all tails
    allin = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0, tail_batch_size=0).score(frames, 10.0, TASK)
    np.testing.assert_allclose(a.logp_true, allin.logp_true, atol=1e-5, rtol=0)


@pytest.mark.parametrize("key,value", [
    ("tail_batch_size", -1), ("tail_batch_size", "many"), ("tail_batch_size", 2.5), ("tail_batch_size", True),
    ("memory_budget_gb", 0), ("memory_budget_gb", -3.0), ("memory_budget_gb", "lots"),
    ("memory_budget_gb", float("nan")), ("memory_budget_gb", True),
    ("prefixes", 0), ("prefixes", "some"), ("prefixes", True),
])
def test_bad_values_name_the_key(tiny_vlm_dir, key, value):
    with pytest.raises(ScoringError, match=f"^{key}="):
        TOPRewardScorer.from_pretrained(tiny_vlm_dir, **{key: value})


@pytest.mark.parametrize("override", ["reward.tail_batch_size=lots", "reward.memory_budget_gb=[1,2]"])
def test_config_types_name_the_key(override):
    cfg = load_config("annotate", ["reward=topreward", override])
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        check_types(cfg, "annotate")
