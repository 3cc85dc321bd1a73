"""Weights calibrated on a person's few labels (policies/weighting/calibrated.py): the feature that separates the
labels is chosen and one that does not is not, the fall-back where labels cannot support a fit, the order of
episodes worth labelling next, and the labels' ``good`` column through training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.success_labels import Label, episode_judgements, read_labels, set_label, write_labels
from policies.weighting import WeightingError
from policies.weighting.calibrated import FEATURES, acquisition_order, calibrate, episode_features


def episodes(success: list[float], finals: list[float] | None = None, task: str = "push") -> list[dict]:
    """Manifest episodes whose raw curves share one shape (every curve feature constant) unless ``finals``
    moves each curve's end; ``success`` sets the success score."""
    out = []
    for i, s in enumerate(success):
        raw = [0.0, 0.5, 1.0, finals[i] if finals else 1.0]
        out.append({"episode_index": i, "task": task, "length": 8, "prefix_ends": [2, 4, 6, 8],
                    "raw_scores": raw, "success_score": s})
    return out


SUCCESS = [0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.15, 0.85, 0.25, 0.75, 0.35, 0.65]


def test_features_by_hand():
    eps = [{"episode_index": 3, "task": "t", "length": 10, "prefix_ends": [2, 4, 6, 8, 10],
            "raw_scores": [-4.0, -3.0, -1.0, -0.5, -0.6], "success_score": -0.7,
            "control_raw_scores": [-5.0, -5.0, -5.0, -5.0, -5.0]},
           {"episode_index": 7, "task": "t", "length": 10, "prefix_ends": [2, 4, 6, 8, 10],
            "raw_scores": [-4.0, -4.0, -4.0, -4.0, -4.0], "success_score": -4.0}]
    index, x, tasks = episode_features(eps)
    assert index.tolist() == [3, 7] and tasks == ["t", "t"]
    f = dict(zip(FEATURES, x[0], strict=True))
    assert f["success"] == -0.7 and f["static_diff"] == pytest.approx(-0.7 + 5.0)
    assert f["final"] == -0.6 and f["rise"] == pytest.approx(3.5)
    # the episode's own top (-0.5 reached first at prefix 4, frame 8 of 10); the task's top is the same here
    assert f["time_top_episode"] == pytest.approx(0.8) and f["time_top_task"] == pytest.approx(0.8)
    g = dict(zip(FEATURES, x[1], strict=True))
    assert np.isnan(g["static_diff"])  # no control scored
    assert g["time_top_episode"] == 1.0 and g["time_top_task"] == 1.0  # a flat curve never reaches a top


def test_a_separating_feature_is_chosen_and_weights_follow_it():
    eps = episodes(SUCCESS)
    labels = {i: SUCCESS[i] > 0.5 for i in range(8)}  # the first 8 labelled: good = high success score
    cal = calibrate(eps, labels)
    fit = cal.fits["push"]
    assert fit.features == ("success",) and fit.loo_accuracy == 1.0
    assert fit.candidates["success"] < fit.candidates["base rate"]
    assert all(cal.weights[i] == float(labels[i]) for i in labels)  # labelled: their label
    p = {i: cal.weights[i] for i in range(8, 12)}
    assert p[9] > 0.5 > p[8] and p[11] > 0.5 > p[10]  # unlabelled: P(good), ordered by the success score
    assert "success score" not in cal.notes[0] and "from success" in cal.notes[0]


def test_a_feature_that_does_not_separate_is_not_chosen():
    """Negative control: labels unrelated to the success score (good at both ends, bad in the middle of its
    range) leave the base rate the best leave-one-out model."""
    eps = episodes(SUCCESS)
    order = np.argsort(SUCCESS[:8])
    labels = {int(i): bool(rank in (0, 1, 6, 7)) for rank, i in enumerate(order)}
    fit = calibrate(eps, labels).fits["push"]
    assert fit.features == ()
    # ... while a second feature that does separate them is chosen over it
    finals = [1.0 if labels.get(i, False) else 0.6 for i in range(12)]
    fit = calibrate(episodes(SUCCESS, finals), labels).fits["push"]
    assert "success" not in fit.features and fit.loo_accuracy == 1.0
    assert set(fit.features) <= {"final", "rise", "time_top_episode", "time_top_task"}


@pytest.mark.parametrize("labels, why", [({0: True, 1: True, 2: True, 3: True, 4: True}, "5 labelled (5 good)"),
                                         ({0: False, 1: True, 2: False}, "3 labelled (1 good)")])
def test_labels_that_cannot_support_a_fit_fall_back(labels, why):
    cal = calibrate(episodes(SUCCESS), labels)
    assert cal.fits == {"push": None} and why in cal.notes[0] and "cannot support a fit" in cal.notes[0]
    # the label-free rule weighs the task; the ones labelled bad weigh 0 and nothing else is set
    assert cal.weights == {e: 0.0 for e, ok in labels.items() if not ok}


def test_each_task_is_fitted_alone():
    eps = episodes(SUCCESS, task="push") + [e | {"episode_index": e["episode_index"] + 100, "task": "pick"}
                                            for e in episodes(SUCCESS)]
    labels = {i: SUCCESS[i] > 0.5 for i in range(8)}  # push only
    cal = calibrate(eps, labels)
    assert cal.fits["pick"] is None and cal.fits["push"].features == ("success",)
    assert not any(e >= 100 for e in cal.weights)


def test_acquisition_orders():
    eps = episodes(SUCCESS)
    heavy = {i: float(12 - i) for i in range(12)}  # episode 0 heaviest
    assert acquisition_order("heaviest", heavy, {0: True}) == list(range(1, 12))
    labels = {i: SUCCESS[i] > 0.5 for i in range(6)}
    # uncertain: P(good) nearest 1/2 first; the success scores nearest the labels' boundary (0.5)
    unsure = acquisition_order("uncertain", heavy, labels, eps)
    p = calibrate(eps, labels).probability
    assert [abs(p[e] - 0.5) for e in unsure] == sorted(abs(p[e] - 0.5) for e in unsure)
    assert set(unsure) == set(range(6, 12))
    mix = acquisition_order("mix", heavy, labels, eps)
    assert mix[0] == 6 and mix[1] == unsure[0] and sorted(mix) == list(range(6, 12))
    # without a fit nothing is more uncertain than anything else: heaviest first
    assert acquisition_order("uncertain", heavy, {0: True}, eps) == list(range(1, 12))
    with pytest.raises(WeightingError, match="order='random'"):
        acquisition_order("random", heavy, {})


def test_good_labels_in_the_file(tmp_path):
    path = tmp_path / "labels.csv"
    set_label(path, "", 3, good=False, note="went to the wrong goal first")
    set_label(path, "", 4, success=True)
    set_label(path, "", 4, good=True)  # keeps its success
    assert read_labels(path) == {("", 4): Label(True, "", True)}  # the evaluation of rollouts: success rows
    assert read_labels(path, need="any")[("", 3)] == Label(None, "went to the wrong goal first", False)
    write_labels(tmp_path / "s.csv", {("", 1): Label(False)})
    assert episode_judgements(path) == {3: False, 4: True}
    assert episode_judgements(tmp_path / "s.csv") == {1: False}  # a failure is never good
    set_label(path, "", 3, good=None)  # cleared: the row goes
    assert set(read_labels(path, need="any")) == {("", 4)}


def test_training_weighs_unlabelled_episodes_by_the_calibrated_probability(tmp_path):
    from policies.training import build
    from tests.fixtures.bc import tiny_cfg
    from tests.fixtures.shards import write_tiny_shards

    shards = write_tiny_shards(tmp_path / "s", episodes=6, length=12, obs_steps=2, horizon=8, images=False)
    import json

    manifest = json.loads((shards / "manifest.json").read_text())
    scores = [0.1, 0.9, 0.2, 0.8, 0.3, 0.7]
    for e, s in zip(manifest["episodes"], scores, strict=True):
        e["success_score"] = s  # the annotation's success score decides "good" here
    (shards / "manifest.json").write_text(json.dumps(manifest))
    labels = tmp_path / "labels.csv"
    labels.write_text("episode_index,good\n0,0\n1,1\n2,0\n3,1\n")
    module, _, _ = build(tiny_cfg(shards, tmp_path / "run", "act", "none", f"labels={labels}", "calibrate=true"))
    ep = torch.arange(6)
    w = module.weights({"episode_index": ep, "progress": torch.zeros(6, 9)}).tolist()
    assert w[:4] == [0.0, 1.0, 0.0, 1.0]
    assert 0.5 < w[5] < 1.0 and 0.0 < w[4] < 0.5  # unlabelled: P(good) from the success score
    assert any("calibrated weights" in n and "accuracy 100%" in n for n in module.weight_notes)
    # negative control: calibrate=false — the default since Decision 12 — leaves them at the rule's weight (plain
    # BC: 1), the bad ones 0
    for extra in ([], ["calibrate=false"]):
        module, _, _ = build(tiny_cfg(shards, tmp_path / f"run2{len(extra)}", "act", "none", f"labels={labels}",
                                      *extra))
        assert module.weights({"episode_index": ep, "progress": torch.zeros(6, 9)}).tolist() == [0, 1, 0, 1, 1, 1]
        assert not any("calibrated weights" in n for n in module.weight_notes)


def test_an_episode_without_a_chosen_feature_keeps_the_rules_weight():
    eps = episodes(SUCCESS)
    eps[11] = eps[11] | {"success_score": None}  # the success score the fit reads is missing here
    cal = calibrate(eps, {i: SUCCESS[i] > 0.5 for i in range(8)})
    assert cal.fits["push"].features == ("success",)
    assert 11 not in cal.weights and 10 in cal.weights  # control: its neighbour is weighed by P(good)


def test_the_rules_weight_is_a_feature_the_labels_can_choose():
    """With every annotation feature alike, the rule's weight is what separates the labels: it is chosen, and the
    unlabelled episodes follow it; a rule that puts its weight on the bad ones is turned round by the fit."""
    eps = episodes([0.5] * 12)  # the success score and the curve: the same for every episode
    good = [i % 2 == 1 for i in range(12)]
    rule = {i: (30.0 if good[i] else 10.0) + i for i in range(12)}  # total weight over the episode's 8 samples
    cal = calibrate(eps, {i: good[i] for i in range(8)}, rule)
    fit = cal.fits["push"]
    assert fit.features == ("rule",) and fit.weighing == "fit"
    assert fit.shares["fit"] > fit.shares["rule"] > fit.shares["alike"] == 0.5
    assert cal.weights[9] > 0.5 > cal.weights[8] and cal.weights[11] > 0.5 > cal.weights[10]
    misleading = {i: (10.0 if good[i] else 30.0) + i for i in range(12)}
    cal = calibrate(eps, {i: good[i] for i in range(8)}, misleading)
    fit = cal.fits["push"]
    assert fit.features == ("rule",) and fit.coef[0] < 0 and fit.shares["rule"] < 0.5
    assert cal.weights[9] > 0.5 > cal.weights[8]


def test_a_rule_the_labels_cannot_fault_keeps_weighing():
    """A rule unrelated to the labels (an even split of heavy and light within each class): no feature beats the
    base rate, the rule's share of good ties all-alike's, and the tie keeps the rule: the unlabelled episodes
    keep its weight, the bad ones 0. Control: the same labels with a rule that weighs the bad ones more weigh
    the unlabelled episodes alike (the base rate)."""
    eps = episodes([0.5] * 12)
    good = [i % 2 == 1 for i in range(12)]
    labels = {i: good[i] for i in range(8)}
    unrelated = {i: float(1 + (i in (0, 3, 4, 7, 8, 11))) for i in range(12)}
    cal = calibrate(eps, labels, unrelated)
    fit = cal.fits["push"]
    assert fit.features == () and fit.weighing == "rule" and fit.shares["rule"] == pytest.approx(0.5)
    assert cal.weights == {0: 0.0, 2: 0.0, 4: 0.0, 6: 0.0}
    assert "the label-free rule weighs the unlabelled episodes" in cal.notes[0]
    # four good of eight: leaving one out tips the base rate to the other class every time, and the note says so
    assert fit.base_accuracy == 0.0 and "base rate 0%; on near-even labels leaving one out tips" in cal.notes[0]
    uneven = calibrate(eps, {i: good[i] or i == 0 for i in range(8)}, unrelated)  # 5 good of 8: no such note
    assert uneven.fits["push"].base_accuracy == pytest.approx(5 / 8) and "tips the base rate" not in uneven.notes[0]
    heavier_bad = {i: float(1 + (i in (0, 2, 7, 8, 11))) for i in range(12)}  # 0, 2 bad heavy; 7 good heavy
    cal = calibrate(eps, labels, heavier_bad)
    fit = cal.fits["push"]
    assert fit.features == () and fit.shares["rule"] < 0.5 and fit.weighing == "alike"
    assert cal.weights[8] == cal.weights[9] == pytest.approx(0.5) and cal.weights[1] == 1.0
    assert "no feature beat the base rate" in cal.notes[0]


def test_a_feature_is_kept_only_where_its_leave_one_out_accuracy_beats_the_base_rate(monkeypatch):
    """The decision rule on leave-one-out scores: a feature whose log-loss wins while its accuracy does not is
    refused (the base rate is chosen); control: the same log-loss with a better accuracy is kept."""
    import policies.weighting.calibrated as cal

    x = np.column_stack([np.arange(10.0)] * len(cal.FEATURES))
    x[:, 2:] = 0.0  # only "rule" and "success" usable
    y = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=float)
    scores = {0: (0.70, 0.60), 1: (0.60, 0.60)}  # (log-loss, accuracy): the base rate, each feature
    monkeypatch.setattr(cal, "_loo", lambda xs, ys: scores[0] if xs.shape[1] == 0 else scores[1])
    fit = cal.fit_task("t", x, y)
    assert fit.features == () and fit.base_accuracy == 0.60
    monkeypatch.setattr(cal, "_loo", lambda xs, ys: scores[0] if xs.shape[1] == 0 else (0.60, 0.70))
    fit = cal.fit_task("t", x, y)
    assert fit.features == ("rule",) and fit.loo_accuracy == 0.70


def test_the_spread_order_covers_the_rules_ranking():
    heavy = {e: float(100 - e) for e in range(10)}  # ranked 0 (heaviest) … 9
    assert acquisition_order("spread", heavy, {})[:5] == [0, 9, 4, 2, 6]
    # what is labelled already counts: with 0 and 9 labelled the middle comes first
    assert acquisition_order("spread", heavy, {0: True, 9: False})[:2] == [4, 2]
    assert sorted(acquisition_order("spread", heavy, {3: True})) == [e for e in range(10) if e != 3]
