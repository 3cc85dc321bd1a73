"""Episode weights calibrated on a person's few labels: what the annotation's episode features say of *good*.

A person marks some demonstrations good (worth copying) or bad (a failure, or a success reached by wandering,
stalling or going to the wrong goal first). Per task, a small L2-regularised logistic regression predicts good
from one of the episode's features (:data:`FEATURES`, standardised within the task; among them the label-free
rule's own weight, so the labels also say whether the rule is worth trusting on this corpus). Which feature is
chosen by leave-one-out log-loss on the labels among: none (the labels' base rate) and each feature alone (ties:
the order of :data:`FEATURES`); a feature is kept only where its leave-one-out accuracy beats the base rate's
(on ten labels the base rate's leave-one-out log-loss is pessimistic, and a fit that only wins on it
extrapolates). Then the labels choose how the task's unlabelled episodes are weighed (:data:`WEIGHINGS`): by
the label-free rule, by the fit's P(good), or all alike, whichever puts the largest share of its weight on good
episodes among the labelled ones (:func:`good_shares`; the fit's judged on its leave-one-out predictions; ties
keep the rule). With the rule, only the episodes labelled bad change (to 0); otherwise labelled episodes weigh
their label (1 good, 0 bad) and unlabelled ones P(good) (the base rate where no feature beat it: plain BC on
them). Where a task's labels cannot support a fit (fewer than :data:`MIN_LABELS`, or all one class),
:func:`calibrate` says so and returns no fit: the label-free rule weighs that task's episodes, the ones labelled
bad 0 (as ``labels=`` always did).

    fit = calibrate(manifest_episodes, labels, rule)   # labels: episode -> good (True) / bad (False)
    fit.weights        # episode -> weight, for the tasks with a fit (and every labelled episode)
    fit.notes          # what was fitted, its leave-one-out accuracy, or why a task fell back

It also orders the episodes worth labelling next (:func:`acquisition_order`): ``heaviest`` (the label-free
rule's heaviest first: the episodes a policy would copy most), ``uncertain`` (the fit's probability nearest
one half first; heaviest while there is no fit), ``mix`` (the two alternating), or ``spread`` (along the rule's
ranking, each next episode the farthest in rank from those labelled: heaviest, lightest, middle, …; labels
that cover the range, so the fit sees good and bad at every level of the rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from policies.weighting.core import WeightingError

FEATURES = ("rule", "success", "static_diff", "final", "rise", "time_top_episode", "time_top_task")
FEATURE_TEXT = {
    "rule": "the label-free rule's weight (log of its mean over the episode's samples)",
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
ORDERS = ("heaviest", "uncertain", "mix", "spread")
# why a base rate's leave-one-out accuracy can read 0%: said beside it where it is below one half
BALANCED = ("; on near-even labels leaving one out tips the base rate to the other class, so it misses most: "
            "the log-loss decides")
# how the unlabelled episodes of a task are weighed, chosen by the labels (ties: this order): the label-free rule,
# the fit's P(good), or all alike (the base rate)
WEIGHINGS = ("rule", "fit", "alike")


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
    base_accuracy: float = float("nan")  # the base rate's leave-one-out accuracy, which a feature must beat
    weighing: str = "fit"  # which of WEIGHINGS the labels chose for the unlabelled episodes
    shares: dict[str, float] = field(default_factory=dict)  # each weighing's share of good on the labelled ones

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


def _rule_feature(episodes: list[dict], rule: dict[int, float] | None) -> np.ndarray:
    """Log of the rule's mean weight per sample of each episode (``rule``: episode → its samples' total weight;
    NaN without it), floored at a millionth of the largest so a weight of 0 stays finite."""
    if not rule:
        return np.full(len(episodes), np.nan)
    mean = np.array([float(rule.get(int(e["episode_index"]), np.nan)) / max(int(e.get("count") or e.get("length")
                                                                                 or 1), 1) for e in episodes])
    top = np.nanmax(mean) if np.isfinite(mean).any() else np.nan
    return np.log(np.maximum(mean, 1e-6 * top)) if np.isfinite(top) and top > 0 else np.full(len(episodes), np.nan)


def episode_features(episodes: list[dict], rule: dict[int, float] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(episode indices, the (E, len(FEATURES)) raw feature matrix, each episode's task) of the manifest's
    ``episodes``; ``rule``: episode → the label-free rule's total weight over its samples. A feature the
    annotation lacks for an episode (no static control, no rule given) is NaN."""
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
    x[:, 0] = _rule_feature(episodes, rule)
    task_range = {}
    for t in set(tasks):
        vals = np.concatenate([r for r, tt in zip(raws, tasks, strict=True) if tt == t])
        vals = vals[np.isfinite(vals)]
        task_range[t] = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 0.0)
    for i, (e, r, pe, t) in enumerate(zip(episodes, raws, ends, tasks, strict=True)):
        length = int(e.get("length") or pe[-1])
        s = e.get("success_score")
        x[i, 1] = float(s) if s is not None else np.nan
        x[i, 2] = x[i, 1] - _control_success(e)
        x[i, 3] = r[-1]
        x[i, 4] = float(np.max(r) - r[0])
        x[i, 5] = _first_top(r, pe, float(np.min(r)), float(np.max(r)), length)
        x[i, 6] = _first_top(r, pe, *task_range[t], length)
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


def _loo_predictions(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each labelled row's P(good) from the model on columns ``x`` (none: the base rate) fitted without it,
    standardised inside each fold."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        if x.shape[1]:
            z, mean, std = _standardise(x[keep])
            w, b = _fit_logistic(z, y[keep])
            out[i] = float(_sigmoid(((x[i] - mean) / std) @ w + b))
        else:
            out[i] = float(_sigmoid(np.array(_fit_logistic(np.zeros((keep.sum(), 0)), y[keep])[1])))
    return out


def _loo(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Leave-one-out mean log-loss and accuracy of the model on columns ``x``."""
    p = np.clip(_loo_predictions(x, y), 1e-6, 1 - 1e-6)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(losses.mean()), float(np.mean((p > 0.5) == y.astype(bool)))


def fit_task(task: str, x: np.ndarray, y: np.ndarray) -> TaskFit:
    """Choose and fit the model of one task on its labelled rows ``x`` (all FEATURES) and labels ``y`` (0/1):
    the lowest leave-one-out log-loss among the base rate and each usable feature alone (ties: the order of
    FEATURES), a feature kept only where its leave-one-out accuracy beats the base rate's."""
    usable = [f for j, f in enumerate(FEATURES) if np.isfinite(x[:, j]).all() and np.ptp(x[:, j]) > 1e-12]
    candidates: list[tuple[str, ...]] = [(), *((f,) for f in usable)]
    scored = {feats: _loo(x[:, [FEATURES.index(f) for f in feats]], y) for feats in candidates}
    base_accuracy = scored[()][1]
    admissible = [f for f in candidates if not f or scored[f][1] > base_accuracy + 1e-9]
    best = min(admissible, key=lambda f: (round(scored[f][0], 9), candidates.index(f)))
    cols = [FEATURES.index(f) for f in best]
    if cols:
        z, mean, std = _standardise(x[:, cols])
        coef, intercept = _fit_logistic(z, y)
    else:
        mean, std, coef = np.zeros(0), np.ones(0), np.zeros(0)
        intercept = _fit_logistic(np.zeros((len(y), 0)), y)[1]
    return TaskFit(task=task, features=best, coef=coef, intercept=intercept, mean=mean, std=std,
                   loo_loss=scored[best][0], loo_accuracy=scored[best][1], labels=len(y),
                   candidates={"+".join(f) or "base rate": round(v[0], 4) for f, v in scored.items()},
                   base_accuracy=base_accuracy)


def calibrate(episodes: list[dict], labels: dict[int, bool], rule: dict[int, float] | None = None) -> Calibration:
    """Fit each task's model on the labelled episodes among the manifest's ``episodes`` (see the module);
    ``rule``: episode → the label-free rule's total weight over its samples (the ``rule`` feature)."""
    index, x, tasks = episode_features(episodes, rule)
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
        fit = fit_task(task, x[lab], y)
        fits[task] = fit
        p = fit.predict(x[rows])
        for i, pi in zip(rows, p, strict=True):
            if np.isfinite(pi):
                probability[int(index[i])] = float(pi)
        chosen = ", ".join(fit.features) or "none (the labels' base rate)"
        coefs = ", ".join(f"{f} {c:+.2f}" for f, c in zip(fit.features, fit.coef, strict=True))
        fitted = (f"P(good) from {chosen}" + (f" ({coefs} per s.d.)" if coefs else "")
                  + f", chosen by leave-one-out on {len(lab)} labels ({good} good): accuracy "
                  f"{fit.loo_accuracy:.0%} (base rate {fit.base_accuracy:.0%}{BALANCED if fit.base_accuracy < 0.5 else ''}), "
                  f"log-loss {fit.loo_loss:.3f} (base rate {fit.candidates['base rate']:.3f})")
        shares = good_shares(x[lab], y, fit)
        pick = max(WEIGHINGS, key=lambda k: (round(shares.get(k, -1.0), 9), -WEIGHINGS.index(k)))
        fit.weighing, fit.shares = pick, shares
        said = ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
        if pick == "rule":  # the rule weighs the task's episodes; only the ones labelled bad change (to 0)
            weights.update({int(index[i]): 0.0 for i in lab if not labels[int(index[i])]})
            notes.append(f"calibrated weights, task {name}: {fitted}; the labelled episodes' share of good under "
                         f"each weighing: {said}: the label-free rule weighs the unlabelled episodes, the bad ones 0")
            continue
        for i, pi in zip(rows, p, strict=True):
            if np.isfinite(pi):  # an episode lacking a chosen feature keeps the rule's weight
                weights[int(index[i])] = float(pi)
        notes.append(f"calibrated weights, task {name}: {fitted}; the labelled episodes' share of good under each "
                     f"weighing: {said}: unlabelled episodes weigh P(good)"
                     + ("" if fit.features else ", alike: no feature beat the base rate"))
        for i in lab:  # a labelled episode weighs its label
            weights[int(index[i])] = 1.0 if labels[int(index[i])] else 0.0
    return Calibration(fits=fits, weights=weights, probability=probability, notes=notes)


def good_shares(x: np.ndarray, y: np.ndarray, fit: TaskFit) -> dict[str, float]:
    """Per weighing of the unlabelled episodes, its share of good estimated on the labelled ones (rows ``x``,
    labels ``y``): Σ w·good / Σ w with w the rule's weight (``rule``; absent without it), the fit's leave-one-out
    P(good) (``fit``; only with a feature) or 1 (``alike``: plain BC)."""
    shares = {"alike": float(y.mean())}
    r = x[:, 0]
    if np.isfinite(r).all():
        w = np.exp(r - r.max())
        shares["rule"] = float(w @ y / w.sum())
    if fit.features:
        q = _loo_predictions(x[:, [FEATURES.index(f) for f in fit.features]], y)
        shares["fit"] = float(q @ y / q.sum()) if q.sum() > 0 else 0.0
    return {k: shares[k] for k in WEIGHINGS if k in shares}


def _spread(ranked: list[int], labels: dict[int, bool]) -> list[int]:
    """The unlabelled episodes of ``ranked`` (heaviest first), each next the farthest in rank from every episode
    labelled so far (ties: the heavier); the heaviest first while nothing is labelled."""
    rank = {e: i for i, e in enumerate(ranked)}
    taken = [rank[e] for e in labels if e in rank]
    out: list[int] = []
    todo = [e for e in ranked if e not in labels]
    while todo:
        e = max(todo, key=lambda e: (min((abs(rank[e] - t) for t in taken), default=len(ranked)), -rank[e]))
        out.append(e)
        taken.append(rank[e])
        todo.remove(e)
    return out


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
    if order == "spread":
        return _spread(sorted(heaviness, key=lambda e: (-heaviness[e], e)), labels)
    prob = calibrate(episodes or [], labels, heaviness).probability if episodes else {}
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
