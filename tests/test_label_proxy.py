"""The label screen (experiments/label_proxy.py) on a hand-made cell: the good share and effective sample size of
training's weights, the labels' effect through the calibration or only zeroing, and the features' bound."""

import numpy as np
import pytest

from experiments.label_proxy import features_best, labels_to_find, measures, separation


def cell() -> dict:
    """Four episodes of two samples each: 0 and 1 good, 2 and 3 bad; the rule weighs the bad ones most."""
    episodes = [{"episode_index": e, "task": "t", "length": 2, "count": 2, "prefix_ends": [1, 2],
                 "raw_scores": [0.0, 1.0 if e < 2 else 0.5], "success_score": 0.9 if e < 2 else 0.2}
                for e in range(4)]
    rule = np.array([1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0])
    episode = np.repeat(np.arange(4), 2)
    return {"episode": episode, "rule": rule, "episodes": episodes,
            "good": {0: True, 1: True, 2: False, 3: False}, "heavy": {0: 2.0, 1: 2.0, 2: 6.0, 3: 6.0}}


def test_good_share_and_effective_sample_size_by_hand():
    m = measures(cell(), {})
    assert m["good_share"] == pytest.approx(4 / 16)  # Σw on good / Σw
    # the good episodes 0 and 1 weigh 2 each: two effective good episodes, times the good share
    assert m["effective_good"] == pytest.approx(2.0) and m["good_episodes"] == pytest.approx(0.5)
    assert m["ess"] == pytest.approx(16 ** 2 / (4 * 1 + 4 * 9) / 8)
    # a label that only zeroes (calibrate=false): episode 2 out, the rest keep the rule's weights
    z = measures(cell(), {2: False}, calibrated=False)
    assert z["good_share"] == pytest.approx(4 / 10) and z["labelled_good"] == 0
    # negative control: the same label through the calibration changes nothing more here (too few labels to fit)
    assert measures(cell(), {2: False})["good_share"] == pytest.approx(4 / 10)


def test_features_best_uses_the_separating_feature():
    best = features_best(cell())
    # P(good) of an L2-penalised fit on four episodes: towards the truth, not all the way
    assert best["feature"] in ("rule", "success", "final", "rise") and best["good_share"] > 0.7
    assert measures(cell(), {})["good_share"] < 0.5  # control: the rule alone leans on the bad ones


def test_labels_to_find_good_episodes_by_hand():
    c = cell()  # heaviest first: 2, 3 (bad, 6.0 each), then 0, 1 (good)
    found = labels_to_find(c, [1, 2, 3], orders=("heaviest", "spread", "random"))
    assert found["heaviest"] == {1: 3.0, 2: 4.0, 3: found["heaviest"][3]} and np.isnan(found["heaviest"][3])
    # spread: 2 (heaviest), then the farthest in rank, 1 (good); 3 and 0 are one rank from those: the heavier, 3
    assert found["spread"][1] == 2.0 and found["spread"][2] == 4.0
    # random: half the four episodes good, so one good needs between 1 and 3 labels, two good between 2 and 4
    assert 1.0 <= found["random"][1] <= 3.0 and 2.0 <= found["random"][2] <= 4.0
    flipped = {**c, "heavy": {0: 6.0, 1: 6.0, 2: 2.0, 3: 2.0}}  # control: the rule's heaviest now good
    assert labels_to_find(flipped, [2], orders=("heaviest",))["heaviest"] == {2: 2.0}


def test_separation_tells_good_from_detours_only_where_a_feature_does():
    """Six episodes: 0, 1 good, 2, 3 detours (succeed), 4, 5 failures. The success score ranks good > detour >
    failure: AUROC 1 on each comparison; the rule weighs detours most: below 0.5 good vs detour."""
    scores = {0: 0.9, 1: 0.8, 2: 0.7, 3: 0.6, 4: 0.1, 5: 0.0}
    quality = {0: "expert", 1: "noisy", 2: "detour", 3: "detour", 4: "failure", 5: "failure"}
    episodes = [{"episode_index": e, "task": "t", "length": 2, "count": 2, "prefix_ends": [1, 2],
                 "raw_scores": [0.0, s], "success_score": s} for e, s in scores.items()]
    c = {"episodes": episodes, "quality": quality, "good": {e: q in ("expert", "noisy") for e, q in quality.items()},
         "heavy": {0: 2.0, 1: 2.0, 2: 8.0, 3: 8.0, 4: 1.0, 5: 1.0}}
    sep = separation(c)
    assert sep["success"] == {"good_vs_bad": 1.0, "success_vs_failure": 1.0, "good_vs_detour": 1.0}
    assert sep["rule"]["good_vs_detour"] == 0.0 and sep["rule"]["success_vs_failure"] == 1.0
    # negative control: a success score that scores detours as high as direct successes tells them apart at chance
    for e in (2, 3):
        episodes[e]["success_score"] = episodes[e - 2]["success_score"]
    tied = separation(c)["success"]
    assert tied["good_vs_detour"] == 0.5 and tied["success_vs_failure"] == 1.0


def test_rise_counts_as_risen_only_what_rose_half_the_tasks_median():
    """time_scale=rise's test, by hand: rises 0.2, 1.0, 1.0, 1.2 (median 1.0) → the first did not rise; a flat task
    (median 0) has none risen. rose_shares reports it per quality: here the direct success that rose little is the
    one not counted, the detour is (the cost the docs name); control: with the success rising fully, all do."""
    from experiments.label_proxy import rose_shares
    from policies.weighting.advantage import risen

    one = ["t"] * 3
    assert risen(np.array([0.2, 1.0, 1.0, 1.2]), ["t"] * 4).tolist() == [False, True, True, True]
    assert risen(np.array([0.49, 1.0, 1.0]), one).tolist() == [False, True, True]
    assert risen(np.array([0.5, 1.0, 1.0]), one).tolist() == [True, True, True]  # at half the median: risen
    assert not risen(np.zeros(3), one).any() and not risen(np.array([-1.0, 0.0, 0.0]), one).any()
    # per task: 0.2 is below half of its own task's median (1.0) but above half of the other's (0.3)
    assert risen(np.array([0.2, 1.0, 1.0, 0.2, 0.3, 0.4]), ["a"] * 3 + ["b"] * 3).tolist() == \
        [False, True, True, True, True, True]
    quality = {0: "expert", 1: "expert", 2: "detour", 3: "failure"}
    rises = {0: 0.2, 1: 1.0, 2: 1.2, 3: 1.0}
    c = {"episodes": [{"episode_index": e, "task": "t", "length": 2, "count": 2, "prefix_ends": [1, 2],
                       "raw_scores": [0.0, r], "success_score": r} for e, r in rises.items()],
         "quality": quality, "heavy": {e: 1.0 for e in quality}}
    assert rose_shares(c) == {"expert": 0.5, "detour": 1.0, "failure": 1.0}
    c["episodes"][0]["raw_scores"] = [0.0, 1.0]
    assert rose_shares(c) == {"expert": 1.0, "detour": 1.0, "failure": 1.0}
