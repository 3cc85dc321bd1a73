"""Which label each recorded episode gets, and how far the automatic judge can be trusted.

Order of trust, per episode: a person's label (the labels file, :mod:`data.success_labels`), then the
recording's success column (``next.success``-like: the episode succeeded if any frame says so), then the
reward model's success detection (its success score — the mean raw score of the last prefixes,
:func:`pipeline.progress.success_score` — above a threshold). An episode none of them labels is *unlabelled*:
it is counted apart and never as a failure.

The threshold is given (``judge.threshold``) or fitted on the episodes a person or the column labelled: the
cut between two sorted scores that classifies the most of them right (ties: the middle of the best run of cuts).
Its accuracy is reported leave-one-out (fitted without the episode it then judges), since the in-sample
accuracy of a fitted cut flatters it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.report.metrics import auroc

SOURCES = ("human", "column", "judge")  # in the order of trust
UNLABELLED = "none"


def fit_threshold(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """The success-score threshold (call success when score > threshold) with the highest accuracy on
    (``scores``, ``labels``); None without at least one success and one failure."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    if y.all() or not y.any():
        return None
    u = np.unique(s)
    cuts = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    acc = np.array([np.mean((s > c) == y) for c in cuts])
    best = np.flatnonzero(acc == acc.max())
    run = best[: np.argmax(np.diff(np.append(best, best[-1] + 2)) > 1) + 1]  # the first run of equal-best cuts
    return float((cuts[run[0]] + cuts[run[-1]]) / 2)


def leave_one_out_accuracy(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Accuracy of :func:`fit_threshold` on each episode when fitted on all the others (None when some fold
    cannot fit: fewer than two episodes of a class)."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    right = []
    for i in range(len(s)):
        keep = np.arange(len(s)) != i
        t = fit_threshold(s[keep], y[keep])
        if t is None:
            return None
        right.append((s[i] > t) == y[i])
    return float(np.mean(right)) if right else None


@dataclass(frozen=True)
class Judge:
    """The automatic judge: success when score > threshold (no call without a threshold)."""

    threshold: float | None
    fitted_on: str  # "given", "human", "human+column", or "none"
    fitted_episodes: int = 0
    cv_accuracy: float | None = None

    def call(self, score: float | None) -> bool | None:
        if self.threshold is None or score is None or not np.isfinite(score):
            return None
        return bool(score > self.threshold)


def make_judge(threshold: float | None, scores: list, human: list, column: list) -> Judge:
    """The judge for one evaluation: ``threshold`` when given, else fitted on the episodes labelled by a person
    (``human``: True/False/None per episode) or, where no person did, by the success column (``column``)."""
    if threshold is not None:
        return Judge(float(threshold), "given")
    trusted = [h if h is not None else c for h, c in zip(human, column, strict=True)]
    keep = [i for i, (t, s) in enumerate(zip(trusted, scores, strict=True))
            if t is not None and s is not None and np.isfinite(s)]
    if not keep:
        return Judge(None, "none")
    s = np.array([scores[i] for i in keep], np.float64)
    y = np.array([trusted[i] for i in keep], bool)
    fitted = fit_threshold(s, y)
    used = sorted({"human" if human[i] is not None else "column" for i in keep}, key=SOURCES.index)
    return Judge(fitted, "+".join(used) if fitted is not None else "none", len(keep),
                 leave_one_out_accuracy(s, y) if fitted is not None else None)


def resolve(human: bool | None, column: bool | None, judge_call: bool | None) -> tuple[bool | None, str]:
    """The episode's label and its source, by the order of trust."""
    for value, source in zip((human, column, judge_call), SOURCES, strict=True):
        if value is not None:
            return bool(value), source
    return None, UNLABELLED


def agreement(calls: list, scores: list, truth: list) -> dict | None:
    """How the judge's calls agree with labels a person gave (episodes with both): confusion matrix (rows:
    the person's label, columns: the judge's call), accuracy, and the AUROC of its scores."""
    both = [(c, s, t) for c, s, t in zip(calls, scores, truth, strict=True) if c is not None and t is not None]
    if not both:
        return None
    c = np.array([b[0] for b in both], bool)
    t = np.array([b[2] for b in both], bool)
    s = np.array([b[1] for b in both], np.float64)
    return {"episodes": len(both),
            "confusion": {"success_called_success": int((t & c).sum()), "success_called_failure": int((t & ~c).sum()),
                          "failure_called_success": int((~t & c).sum()),
                          "failure_called_failure": int((~t & ~c).sum())},
            "accuracy": float(np.mean(c == t)), "auroc": auroc(s, t)}
