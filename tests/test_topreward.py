"""TOPReward scorer: one-pass equals per-prefix forwards, with negative controls; schedule; bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.rewards.schedule import group_ends, sample_indices, select_groups
from pipeline.rewards.topreward import ScoringError, TOPRewardScorer
from tests.fixtures.tiny_vlm import build_processor, build_tiny_qwen3vl, moving_square_clip

TASK = "push the puck to the goal"
TOL = 1e-4


def clip(num_frames: int, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return moving_square_clip(num_frames, h, w, seed=seed)


@pytest.fixture(scope="module")
def scorer(tiny_vlm_dir):
    return TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0)


@pytest.mark.parametrize("num_frames", [80, 81])  # 32 (even) and 33 (odd) sampled frames at 10 → 4 fps
def test_one_pass_equals_naive(scorer, num_frames):
    frames = clip(num_frames)
    one = scorer.score(frames, 10.0, TASK, mode="one_pass")
    ref = scorer.score(frames, 10.0, TASK, mode="naive")
    assert len(one.raw) >= 16
    np.testing.assert_array_equal(one.prefix_ends, ref.prefix_ends)
    assert np.abs(one.logp_true - ref.logp_true).max() <= TOL
    assert np.abs(one.logp_false - ref.logp_false).max() <= TOL
    # the scores really vary between prefixes, so the equality above is not vacuous
    assert np.ptp(ref.logp_true) > 100 * TOL
    assert one.tokens < ref.tokens


def test_tail_batches_and_k_prefixes_match(tiny_vlm_dir):
    frames = clip(81)
    full = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0).score(frames, 10.0, TASK, mode="naive")
    batched = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0, tail_batch_size=3)
    np.testing.assert_allclose(batched.score(frames, 10.0, TASK).raw, full.raw, atol=TOL, rtol=0)
    k5 = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0, prefixes=5).score(frames, 10.0, TASK)
    assert len(k5.raw) == 5
    assert k5.prefix_ends[-1] == full.prefix_ends[-1]
    sel = np.searchsorted(full.prefix_ends, k5.prefix_ends)
    np.testing.assert_array_equal(full.prefix_ends[sel], k5.prefix_ends)
    np.testing.assert_allclose(k5.raw, full.raw[sel], atol=TOL, rtol=0)


def test_moe_one_pass_equals_naive(tiny_moe_vlm_dir):
    scorer = TOPRewardScorer.from_pretrained(tiny_moe_vlm_dir, sample_fps=3.0)
    frames = clip(45, seed=3)
    one = scorer.score(frames, 7.5, TASK)
    ref = scorer.score(frames, 7.5, TASK, mode="naive")
    assert type(scorer.model).__name__ == "Qwen3VLMoeForConditionalGeneration"
    assert np.abs(one.raw - ref.raw).max() <= TOL
    assert np.ptp(ref.raw) > 100 * TOL


@pytest.mark.parametrize("control", ["_leak_video", "_positions_after_video"])
def test_negative_controls_break_equality(scorer, control):
    """A tail that sees the whole video, or sits after it, must not match: the equality test can fail."""
    frames = clip(80)
    ref = scorer.score(frames, 10.0, TASK, mode="naive")
    sampled = sample_indices(80, 10.0, 4.0)
    chosen = select_groups(len(group_ends(len(sampled))))
    inputs = scorer._process(scorer._text(TASK), scorer._prepare_frames(frames, sampled), sampled, 10.0, 80)
    layout = scorer._layout(inputs)
    good, _, _ = scorer._one_pass(layout, chosen)
    bad, _, _ = scorer._one_pass(layout, chosen, **{control: True})
    assert np.abs(good - ref.raw).max() <= TOL
    assert np.abs(bad - ref.raw).max() > 100 * TOL


def test_schedule_timestamps_and_fixed_resolution(scorer, monkeypatch):
    frames = clip(50, h=60, w=90)
    seen = []
    original = scorer._process

    def spy(text, c, indices, fps, total):
        seen.append((c.shape[1:3], list(indices), fps))
        return original(text, c, indices, fps, total)

    monkeypatch.setattr(scorer, "_process", spy)
    res = scorer.score(frames, 12.5, TASK, mode="naive")
    full = sample_indices(50, 12.5, 4.0)
    # prefix-stable: every prefix's frames are the first frames of the full schedule
    for shape, indices, fps in seen:
        assert indices == list(full[: len(indices)])
        assert shape == seen[0][0] == res.resolution
        assert fps == 12.5
    # each prefix ends right after its last shown frame
    assert [len(i) for _, i, _ in seen[1:]] == [int(np.searchsorted(full, e - 1)) + 1 for e in res.prefix_ends]
    # timestamps are true seconds: the mean of each pair of raw indices / native fps
    padded = np.concatenate([full, full[-1:]]) if len(full) % 2 else full
    np.testing.assert_allclose(res.timestamps, padded.reshape(-1, 2).mean(1) / 12.5)
    # resolution is fixed by the frame size, not the clip length
    assert scorer.score(frames[:6], 12.5, TASK).resolution == res.resolution
    h, w = res.resolution
    assert h % scorer.factor == 0 and w % scorer.factor == 0


def test_progress_per_frame(scorer):
    res = scorer.score(clip(40), 10.0, TASK)
    p = res.frame_progress()
    assert p.shape == (40,)
    assert p.min() == pytest.approx(0.0) and p.max() == pytest.approx(1.0)
    np.testing.assert_allclose(p[res.prefix_ends - 1], res.progress)
    assert res.success_score == pytest.approx(float(np.mean(res.raw[-3:])))


def test_chat_template_mode_differs(tiny_vlm_dir):
    """The ablation mode closes the user turn and opens the assistant's: a different text, different scores."""
    frames = clip(30)
    plain = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0)
    chat = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0, add_chat_template=True)
    assert "<|im_end|>" not in plain._text(TASK) and plain._text(TASK).endswith("The answer is:")
    assert chat._text(TASK).endswith("<|im_end|>\n<|im_start|>assistant\n")
    a, b = plain.score(frames, 10.0, TASK), chat.score(frames, 10.0, TASK)
    assert np.abs(a.raw - b.raw).max() > 1e-3
    np.testing.assert_allclose(chat.score(frames, 10.0, TASK, mode="naive").raw, b.raw, atol=TOL, rtol=0)


def test_single_frame_episode(scorer):
    res = scorer.score(clip(1), 10.0, TASK)
    np.testing.assert_array_equal(res.prefix_ends, [1])
    np.testing.assert_array_equal(res.frame_progress(), [1.0])


@pytest.mark.parametrize(
    "frames, fps, task, match",
    [
        (np.zeros((0, 32, 32, 3), np.uint8), 10.0, TASK, "0 frames"),
        (np.zeros((4, 32, 32, 3), np.float32), 10.0, TASK, "uint8"),
        (np.zeros((4, 32, 32), np.uint8), 10.0, TASK, "T×H×W×3"),
        (np.zeros((4, 32, 32, 3), np.uint8), 10.0, "  ", "instruction"),
        (np.zeros((4, 32, 32, 3), np.uint8), 0.0, TASK, "fps=0.0"),
        (np.zeros((4, 32, 32, 3), np.uint8), -5, TASK, "fps=-5"),
    ],
)
def test_bad_input(scorer, frames, fps, task, match):
    with pytest.raises(ScoringError, match=match):
        scorer.score(frames, fps, task)


def test_true_must_be_one_token(scorer):
    processor = build_processor(vocab_size=270)  # too few merges for " True" to be one token
    with pytest.raises(ScoringError, match="' True' is .* tokens"):
        TOPRewardScorer(scorer.model, processor)


def test_too_long_for_context(tmp_path):
    short = build_tiny_qwen3vl(tmp_path / "short", max_positions=64)
    scorer = TOPRewardScorer.from_pretrained(short, sample_fps=4.0)
    assert len(scorer.score(clip(2), 10.0, TASK).raw) == 1  # a short clip fits
    with pytest.raises(ScoringError, match="lower sample_fps"):
        scorer.score(clip(80), 10.0, TASK)


def test_eager_attention_matches(tiny_vlm_dir):
    scorer = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=4.0, attn_implementation="eager")
    frames = clip(41, seed=5)
    one, ref = scorer.score(frames, 10.0, TASK), scorer.score(frames, 10.0, TASK, mode="naive")
    assert scorer.model.config._attn_implementation == "eager"
    assert np.abs(one.raw - ref.raw).max() <= TOL


def test_one_pass_uses_thecache_keyword_transformers_takes(scorer):
    """No deprecation warning from the model call (transformers renamed past_key_values to cache; the old name
    goes in 5.40), and the keyword chosen is the one the installed forward declares."""
    import inspect
    import warnings

    from pipeline.rewards.topreward import cache_keyword

    inner = scorer.model.model
    declared = inspect.signature(inner.forward).parameters
    assert cache_keyword(inner) in declared
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        scorer.score(clip(40), 10.0, TASK, mode="one_pass")
