"""Episode weights calibrated on a person's few labels: what the annotation's episode features say of *good*.

A person marks some demonstrations good (worth copying) or bad (a failure, or a success reached by wandering,
stalling or going to the wrong goal first). Per task, a small L2-regularised logistic regression predicts good
from the annotation's per-episode features (:data:`FEATURES`, standardised within the task); which features it
uses is chosen by leave-one-out log-loss on the labels among: none (the labels' base rate), each feature alone,
and all features together (ties: fewer features, then the order of :data:`FEATURES`). Labelled episodes weigh
their label (1 good, 0 bad); unlabelled ones the predicted probability of good. Where a task's labels cannot
support a fit (fewer than :data:`MIN_LABELS`, or all one class), :func:`calibrate` says so and returns no fit:
the label-free rule weighs that task's episodes, the ones labelled bad 0 (as ``labels=`` always did).

    fit = calibrate(manifest_episodes, labels)   # labels: episode -> good (True) / bad (False)
    fit.weights        # episode -> weight, for the tasks with a fit (and every labelled episode)
    fit.notes          # what was fitted, its leave-one-out accuracy, or why a task fell back

It also orders the episodes worth labelling next (:func:`acquisition_order`): ``heaviest`` (the label-free
rule's heaviest first: the episodes a policy would copy most), ``uncertain`` (the fit's probability nearest
one half first; heaviest while there is no fit), or ``mix`` (the two alternating).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from policies.weighting.core import WeightingError

FEATURES = ("success", "static_diff", "final", "rise", "time_top_episode", "time_top_task")
FEATURE_TEXT = {
    "success": "success score (mean raw score of the last prefixes)",
    "static_diff": "success score minus its static-video control's",
    "final": "last raw score",
    "rise": "rise of the raw score (maximum minus first)",
    "time_top_episode": "time to the top of the episode's own curve (fraction of its length)",
    "time_top_task": "time to the top of the task's raw scale (1: never)",
}
MIN_LABELS = 4  # per task, and at least one of each class
L2 = 1.0  # ridge penalty on the standardised coefficients (not the intercept): a weak prior towards no effect
TOP = 0.95  # the fraction of a scale's range that counts as its top (as the label-free rule's `top`)
ORDERS = ("heaviest", "uncertain", "mix")


@dataclass
class TaskFit:
    """The model chosen for one task: its features, coefficients on their standardised values, intercept, and
    leave-one-out log-loss and accuracy on the task's labels."""

    task: str
    features: tuple[str, ...]
    coef: np.ndarray
    intercept: float
    mean: np.ndarray
    std: np.ndarray
    loo_loss: float
    loo_accuracy: float
    labels: int
    candidates: dict[str, float] = field(default_factory=dict)  # model name -> its leave-one-out log-loss

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(good) for rows of the task's raw feature matrix (all :data:`FEATURES` columns)."""
        cols = [FEATURES.index(f) for f in self.features]
        z = (x[:, cols] - self.mean) / self.std if cols else np.zeros((len(x), 0))
        return _sigmoid(z @ self.coef + self.intercept)


@dataclass
class Calibration:
    """Per task the fit (or None where it fell back), the weight of every episode that has one, the
    predicted probability of good of every episode of a fitted task, and the notes training prints."""

    fits: dict[str, TaskFit | None]
    weights: dict[int, float]
    probability: dict[int, float]
    notes: list[str]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def _first_top(raw: np.ndarray, ends: np.ndarray, lo: float, hi: float, length: int) -> float:
    """The fraction of the episode before its raw score first reaches ``lo + TOP (hi - lo)`` (1 if never)."""
    if hi - lo <= 0:
        return 1.0
    hit = np.flatnonzero(raw >= lo + TOP * (hi - lo) - 1e-12)
    return float(ends[hit[0]]) / max(length, 1) if hit.size else 1.0


def _control_success(episode: dict) -> float:
    """The static-video control's success score: the mean of its last three prefix scores (NaN without one)."""
    c = episode.get("control_raw_scores")
    if not c:
        return float("nan")
    c = np.asarray(c, dtype=np.float64)
    c = c[np.isfinite(c)]
    return float(c[-3:].mean()) if c.size else float("nan")


def episode_features(episodes: list[dict]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(episode indices, the (E, len(FEATURES)) raw feature matrix, each episode's task) of the manifest's
    ``episodes``. A feature the annotation lacks for an episode (no static control) is NaN."""
    index = np.array([int(e["episode_index"]) for e in episodes])
    tasks = [str(e.get("task", "")) for e in episodes]
    raws, ends = [], []
    for e in episodes:
        r = np.asarray(e.get("raw_scores") or [np.nan], dtype=np.float64)
        pe = np.asarray(e.get("prefix_ends") or np.arange(1, len(r) + 1), dtype=np.float64)
        keep = np.isfinite(r)
        raws.append(r[keep] if keep.any() else np.array([np.nan]))
        ends.append(pe[keep] if keep.any() else np.array([1.0]))
    x = np.full((len(episodes), len(FEATURES)), np.nan)
    task_range = {}
    for t in set(tasks):
        vals = np.concatenate([r for r, tt in zip(raws, tasks, strict=True) if tt == t])
        vals = vals[np.isfinite(vals)]
        task_range[t] = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 0.0)
    for i, (e, r, pe, t) in enumerate(zip(episodes, raws, ends, tasks, strict=True)):
        length = int(e.get("length") or pe[-1])
        s = e.get("success_score")
        x[i, 0] = float(s) if s is not None else np.nan
        x[i, 1] = x[i, 0] - _control_success(e)
        x[i, 2] = r[-1]
        x[i, 3] = float(np.max(r) - r[0])
        x[i, 4] = _first_top(r, pe, float(np.min(r)), float(np.max(r)), length)
        x[i, 5] = _first_top(r, pe, *task_range[t], length)
    return index, x, tasks


def _fit_logistic(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Coefficients and intercept of an L2-penalised logistic regression (intercept unpenalised)."""
    k = z.shape[1]

    def loss(theta):
        w, b = theta[:k], theta[k]
        p = _sigmoid(z @ w + b)
        eps = 1e-12
        nll = -np.sum(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))
        grad_logit = p - y
        g = np.concatenate([z.T @ grad_logit + L2 * w, [grad_logit.sum()]])
        return nll + 0.5 * L2 * float(w @ w), g

    prior = np.clip(y.mean(), 1e-3, 1 - 1e-3)
    theta0 = np.concatenate([np.zeros(k), [np.log(prior / (1 - prior))]])
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B")
    return res.x[:k], float(res.x[k])


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return (x - mean) / std, mean, std


def _loo(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Leave-one-out mean log-loss and accuracy of the model on columns ``x`` (standardised inside each fold)."""
    losses, hits = [], []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        if x.shape[1]:
            z, mean, std = _standardise(x[keep])
            w, b = _fit_logistic(z, y[keep])
            p = float(_sigmoid(((x[i] - mean) / std) @ w + b))
        else:
            _, b = _fit_logistic(np.zeros((keep.sum(), 0)), y[keep])
            p = float(_sigmoid(np.array(b)))
        p = min(max(p, 1e-6), 1 - 1e-6)
        losses.append(-(y[i] * np.log(p) + (1 - y[i]) * np.log(1 - p)))
        hits.append((p > 0.5) == bool(y[i]))
    return float(np.mean(losses)), float(np.mean(hits))


def fit_task(task: str, x: np.ndarray, y: np.ndarray) -> TaskFit:
    """Choose and fit the model of one task on its labelled rows ``x`` (all FEATURES) and labels ``y`` (0/1)."""
    usable = [f for j, f in enumerate(FEATURES) if np.isfinite(x[:, j]).all() and np.ptp(x[:, j]) > 1e-12]
    candidates: list[tuple[str, ...]] = [(), *((f,) for f in usable)]
    if len(usable) > 1:
        candidates.append(tuple(usable))
    scored = {}
    for feats in candidates:
        cols = [FEATURES.index(f) for f in feats]
        scored[feats] = _loo(x[:, cols], y)
    # lowest leave-one-out loss; ties (1e-9) go to fewer features, then to the order they were listed in
    best = min(candidates, key=lambda f: (round(scored[f][0], 9), len(f), candidates.index(f)))
    cols = [FEATURES.index(f) for f in best]
    if cols:
        z, mean, std = _standardise(x[:, cols])
        coef, intercept = _fit_logistic(z, y)
    else:
        mean, std, coef = np.zeros(0), np.ones(0), np.zeros(0)
        intercept = _fit_logistic(np.zeros((len(y), 0)), y)[1]
    return TaskFit(task=task, features=best, coef=coef, intercept=intercept, mean=mean, std=std,
                   loo_loss=scored[best][0], loo_accuracy=scored[best][1], labels=len(y),
                   candidates={"+".join(f) or "base rate": round(v[0], 4) for f, v in scored.items()})


def calibrate(episodes: list[dict], labels: dict[int, bool]) -> Calibration:
    """Fit each task's model on the labelled episodes among the manifest's ``episodes`` (see the module)."""
    index, x, tasks = episode_features(episodes)
    fits: dict[str, TaskFit | None] = {}
    weights: dict[int, float] = {}
    probability: dict[int, float] = {}
    notes = []
    for task in sorted(set(tasks)):
        rows = np.array([i for i, t in enumerate(tasks) if t == task])
        lab = [i for i in rows if int(index[i]) in labels]
        y = np.array([float(labels[int(index[i])]) for i in lab])
        good = int(y.sum())
        name = repr(task) if task else "the dataset"
        if len(lab) < MIN_LABELS or good in (0, len(lab)):
            fits[task] = None
            notes.append(f"calibrated weights, task {name}: {len(lab)} labelled ({good} good) cannot support a fit "
                         f"(at least {MIN_LABELS} with both good and bad); the label-free rule weighs its episodes, "
                         "the bad ones 0")
            weights.update({int(index[i]): 0.0 for i in lab if not labels[int(index[i])]})
            continue
        else:
            fit = fit_task(task, x[lab], y)
            fits[task] = fit
            p = fit.predict(x[rows])
            for i, pi in zip(rows, p, strict=True):
                if np.isfinite(pi):  # an episode lacking a chosen feature keeps the rule's weight
                    probability[int(index[i])] = float(pi)
                    weights[int(index[i])] = float(pi)
            chosen = ", ".join(fit.features) or "none (the labels' base rate)"
            coefs = ", ".join(f"{f} {c:+.2f}" for f, c in zip(fit.features, fit.coef, strict=True))
            notes.append(f"calibrated weights, task {name}: P(good) from {chosen}" + (f" ({coefs} per s.d.)" if coefs else "")
                         + f", chosen by leave-one-out on {len(lab)} labels ({good} good): accuracy "
                         f"{fit.loo_accuracy:.0%}, log-loss {fit.loo_loss:.3f} (base rate "
                         f"{fit.candidates['base rate']:.3f}); unlabelled episodes weigh P(good)")
        for i in lab:  # a labelled episode weighs its label
            weights[int(index[i])] = 1.0 if labels[int(index[i])] else 0.0
    return Calibration(fits=fits, weights=weights, probability=probability, notes=notes)


def acquisition_order(order: str, heaviness: dict[int, float], labels: dict[int, bool],
                      episodes: list[dict] | None = None) -> list[int]:
    """The unlabelled episodes in the order worth labelling next (see the module docstring). ``heaviness``:
    episode → the label-free rule's total weight; ``episodes``: the manifest's (needed by ``uncertain``/``mix``
    to refit on ``labels``)."""
    if order not in ORDERS:
        raise WeightingError(f"order={order!r}: choose one of {', '.join(ORDERS)}")
    todo = [e for e in heaviness if e not in labels]
    heavy = sorted(todo, key=lambda e: (-heaviness[e], e))
    if order == "heaviest":
        return heavy
    prob = calibrate(episodes or [], labels).probability if episodes else {}
    if not any(e in prob for e in todo):  # no fit yet: nothing is more uncertain than anything else
        return heavy
    unsure = sorted(todo, key=lambda e: (abs(prob.get(e, 0.5) - 0.5), -heaviness[e], e))
    if order == "uncertain":
        return unsure
    out: list[int] = []
    for pair in zip(heavy, unsure, strict=True):
        for e in pair:
            if e not in out:
                out.append(e)
    return out
