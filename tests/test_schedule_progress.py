"""Frame schedule, prefix selection and the progress maths, on values computed by hand or by scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from pipeline.progress import PrefixScores, minmax, success_score, to_frames, voc
from pipeline.rewards.schedule import group_ends, prefix_ends, sample_indices, select_groups


def test_sample_indices_known_values():
    np.testing.assert_array_equal(sample_indices(10, 30.0, 2.0), [0])
    np.testing.assert_array_equal(sample_indices(46, 30.0, 2.0), [0, 15, 30, 45])
    # step 2.5, rounded half up: 0, 2.5→3, 5, 7.5→8, 10
    np.testing.assert_array_equal(sample_indices(11, 10.0, 4.0), [0, 3, 5, 8, 10])
    # sampling faster than recorded keeps every frame once
    np.testing.assert_array_equal(sample_indices(5, 2.0, 10.0), [0, 1, 2, 3, 4])


@pytest.mark.parametrize("fps, sample_fps", [(30.0, 2.0), (10.0, 4.0), (12.5, 3.0), (7.0, 7.0)])
def test_schedule_is_prefix_stable(fps, sample_fps):
    full = sample_indices(200, fps, sample_fps)
    for t in range(1, 201):
        np.testing.assert_array_equal(sample_indices(t, fps, sample_fps), full[full < t])


def test_groups_and_prefix_ends():
    np.testing.assert_array_equal(group_ends(5), [2, 4, 5])
    np.testing.assert_array_equal(group_ends(4), [2, 4])
    np.testing.assert_array_equal(group_ends(1), [1])
    sampled = np.array([0, 3, 5, 8, 10])
    np.testing.assert_array_equal(prefix_ends(sampled, group_ends(5)), [4, 9, 11])
    np.testing.assert_array_equal(select_groups(17, "all"), np.arange(17))
    np.testing.assert_array_equal(select_groups(17, 5), [0, 4, 8, 12, 16])
    np.testing.assert_array_equal(select_groups(3, 15), [0, 1, 2])


@pytest.mark.parametrize("bad", [dict(num_frames=0, native_fps=10, sample_fps=2),
                                 dict(num_frames=5, native_fps=0, sample_fps=2),
                                 dict(num_frames=5, native_fps=10, sample_fps=-1)])
def test_schedule_bad_input(bad):
    with pytest.raises(ValueError):
        sample_indices(**bad)
    with pytest.raises(ValueError, match="prefixes"):
        select_groups(4, 0)


def test_minmax_rules():
    np.testing.assert_allclose(minmax([-3.0, -1.0, -2.0]), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(minmax([-2.0, -2.0]), [1.0, 1.0])
    np.testing.assert_array_equal(minmax([-7.0]), [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        minmax([0.0, np.nan])


def test_to_frames_interpolates_between_prefix_ends():
    # prefixes end (exclusive) at 3, 5, 9 → anchored at frames 2, 4, 8
    out = to_frames(np.array([3, 5, 9]), np.array([0.0, 1.0, 0.5]), 10)
    np.testing.assert_allclose(out, [0, 0, 0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.5])
    with pytest.raises(ValueError, match="increase strictly"):
        to_frames(np.array([3, 3]), np.array([0.0, 1.0]), 10)


def test_success_score_and_prefix_scores():
    raw = np.array([-5.0, -4.0, -3.0, -2.0, -1.0])
    assert success_score(raw) == pytest.approx(-2.0)
    s = PrefixScores(prefix_ends=[2, 4, 6, 8, 10], raw=raw, num_frames=10)
    np.testing.assert_allclose(s.progress, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(s.frame_progress()[[1, 3, 9]], [0, 0.25, 1.0])
    assert s.success_score == pytest.approx(-2.0)


def test_voc_matches_scipy_and_counts_undefined():
    rng = np.random.default_rng(0)
    for _ in range(5):
        v = rng.normal(size=20)
        v[3] = v[7]  # a tie
        ref = rng.normal(size=20)
        assert voc(v, ref) == pytest.approx(spearmanr(v, ref).statistic, abs=1e-6)
        assert voc(v) == pytest.approx(spearmanr(v, np.arange(20)).statistic, abs=1e-6)
    assert voc(np.arange(5.0)) == pytest.approx(1.0)
    assert np.isnan(voc(np.ones(5)))
    assert np.isnan(voc(np.array([0.3])))


def test_missing_scores_are_left_out_and_counted():
    s = PrefixScores(prefix_ends=[2, 4, 6, 8], raw=[0.0, np.nan, 1.0, 0.5], num_frames=8)
    assert s.missing == 1
    np.testing.assert_array_equal(np.isnan(s.progress), [False, True, False, False])
    # frame 3 (anchor of the missing prefix) is interpolated between frames 1 and 5
    np.testing.assert_allclose(s.frame_progress(), [0, 0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5])
    assert s.success_score == pytest.approx(0.5)  # mean of the last 3 scored prefixes: 0, 1, 0.5
    with pytest.raises(ValueError, match="all 2 prefix scores are missing"):
        PrefixScores(prefix_ends=[1, 2], raw=[np.nan, np.nan], num_frames=2)
    with pytest.raises(ValueError, match="infinite"):
        PrefixScores(prefix_ends=[1, 2], raw=[0.0, -np.inf], num_frames=2)
