"""Episode quality: the label-free weighting of whole demonstrations (``episode_quality``, the recommended rule).

Why: on mixed data the gain-only rules barely separate good from bad demonstrations (docs/experiments.md,
the first probe): an expert's frames after success have flat progress and get a low weight, degraded episodes
still make *some* progress and get a full weight, and per-episode min-max normalisation makes every episode,
failures included, climb from 0 to 1. What separates them is what only the episode as a whole can tell: did
it succeed, and how fast. (Two chunk-level estimators that compared a chunk with a progress-conditioned
baseline, AWR/IQL-style, measured below plain BC on the mixed corpora and were retired; their results stay in
docs/experiments.md.)

Same interface as every rule: ``episode_quality(progress (B, H+1), stats, *, episode, <parameters>) ->
(B,) weights``, with ``stats`` an :class:`AdvantageStats` fitted ONCE per run (:meth:`AdvantageStats.fit`,
reached through the rule object's ``fit``, from ``data.progress_table.fit_progress_table``'s one pass over
the shards plus the manifest's ``episodes``), and ``episode`` the batch's ``episode_index``
(``policies.weighting.sample_info``). The rule's parameters are its keyword-only arguments here plus those of
:meth:`AdvantageStats.fit`; the registry reads them from these signatures, so nothing takes a catch-all
``**kwargs``. This module imports only :mod:`policies.weighting.core` (and :func:`pipeline.progress.success_score`).

Notation (per sample i of episode e at frame t):

- p = p[t]: progress level from the shards (per-episode min-max scale).
- ``scale="dataset"`` (default) undoes the per-episode min-max with the manifest's raw scores: the episode's
  raw score at t is lo_e + (p − pmin_e)/(pmax_e − pmin_e)·(hi_e − lo_e) (exact: min-max and the per-frame
  interpolation are both affine), then mapped onto its task's raw range [L, U] (L = min_e lo_e, U = max_e hi_e
  over the task's episodes): p' = c_e + a_e·p. A failure whose raw scores never leave the bottom of the range
  stays near p' = 0; on the shards' own scale it would reach 1. ``scale="episode"`` keeps p' = p (needs no raw
  scores).
- The top: T*_e = the first frame whose shard progress reaches ``top`` (episode scale). On the episode scale a
  failure reaches the top too — at its own maximum.
- Episode quality z_e (label-free, from the manifest): per task, standardised over the task's episodes,
  z(x) = (x − mean x) / max(std x, ``std_floor``·range), range = U − L for raw-score quantities (the spread
  of success scores that matters is measured against the task's raw range, so equally good episodes are not
  pulled apart by noise) and 1 for the time fraction; then
  z_e = (w_s·z(success_score) + w_f·z(final raw score) − w_t·z(T*_e / length_e)) / (w_s + w_f + w_t)
  with w_s, w_f, w_t = ``success_weight``, ``final_weight``, ``time_weight``. ``time_scale="dataset"``
  measures the time fraction on the dataset scale: T*_e = the first frame whose p' reaches ``top``,
  the episode's length if none does (with ``scale="episode"``, which has no common scale, the episode's own).
  ``time_scale="episode"`` measures it on the episode scale, where a curve that starts at its maximum (a
  failure the reward model scores flat or falling) "reaches the top" at frame 0 and earns the largest time
  bonus of all; the dataset scale avoids that but counts an episode whose whole curve sits high (a per-episode
  offset) as at the top from its first frame. ``time_scale="rise"`` keeps the episode scale (immune to
  offsets) but lets only a curve that rose reach its top: T*_e is the episode scale's when the episode's raw
  rise (maximum minus first score) is at least ``RISE_SHARE`` of its task's median rise, else the episode's
  length (a flat or falling curve never reaches the top). ``"rise"`` is the default (Decision 11 in
  docs/experiments.md: with a perfect reward ``"episode"`` fell to 68–75% of expert-only BC on two of four tasks,
  where a failure that stalls early reaches its own low top first).

Weights from A = z_e, shared by every frame of the episode (``transform``): ``"exp"``: w = min(exp(A/β),
w_max), AWR's exponentiated advantage, clipped (a soft version of ``filter``'s success floor and of TOP-AWR's
trajectory-level weighting, TOPReward Eq. 3, with the success score as the return); ``"rank"``: w = F(A), the
fraction of the dataset's samples whose A is ≤ A — invariant to the scale of A, in (0, 1]; ``"top"``: w = 1 if
fewer than ``top_fraction``·N of those N samples have an A strictly above A, else 0 — filtered BC on the best
``top_fraction`` of the data (ties at the cut are all kept): "%BC" of the Decision Transformer paper (Chen et
al. 2021), BC on the top X% of trajectories by return, with the label-free z_e as the return.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from pipeline.progress import success_score
from policies.weighting.core import WeightingError

SCALES = ("dataset", "episode")
# what an episode's success score is compared on: its own video's ("real"), or that minus its static-video
# control's ("minus_static": what the video shows beyond a video in which nothing moves; docs/weighting.md)
SUCCESS_FROM = ("real", "minus_static")
# "static": shrink z_e toward 0 (uniform weights) by the reliability the static controls estimate;
# "above_static": z_e set to 0 in a task where fewer than ABOVE_STATIC of its episodes score above their static
# control (the reward shows no more progress than a video in which nothing moves; docs/weighting.md)
SHRINK = ("none", "static", "above_static")
ABOVE_STATIC = 0.5
# where the time to the top is measured: on the episode's own scale (every curve, a flat or falling one included,
# reaches its own maximum somewhere) or on the task's common raw scale ("dataset": only an episode whose raw
# score climbs to the top of the task's range reaches it; the rest count as never reaching it)
TIME_SCALES = ("episode", "dataset", "rise")
RISE_SHARE = 0.5  # time_scale="rise": an episode "rose" when its raw rise is at least this share of its task's median
TRANSFORMS = ("exp", "rank", "top")
RULE = "episode_quality"


# ------------------------------------------------------------------------------------------------ fitting


def _first_at(episode: np.ndarray, frame: np.ndarray, reached: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per episode index, the first frame where ``reached`` holds; the episode's length where it never does."""
    first = lengths.astype(np.float64).copy()
    np.minimum.at(first, episode[reached], frame[reached].astype(np.float64))
    return first


def _zscore(x: np.ndarray, groups: np.ndarray, floors: dict) -> np.ndarray:
    """(x − group mean) / max(group std, floor of the group, tiny), per group."""
    z = np.zeros_like(x, dtype=np.float64)
    for g in np.unique(groups):
        m = groups == g
        z[m] = (x[m] - x[m].mean()) / max(float(x[m].std()), floors[g], 1e-12)
    return z


def static_success_scores(episodes: list[dict], present: np.ndarray, rule: str) -> np.ndarray:
    """The success score of each present episode's static-video control (the manifest's
    ``control_raw_scores``, written by ``pipeline.annotate`` with ``control.static=true``)."""
    by_index = {int(e["episode_index"]): e for e in episodes}
    out = []
    for e in present:
        control = by_index[int(e)].get("control_raw_scores")
        c = np.asarray(control if control is not None else [], dtype=np.float64)
        c = c[np.isfinite(c)]
        if c.size == 0:
            raise WeightingError(f"{rule} with success_from=minus_static or shrink=static needs the static-video "
                                 f"control scores of every episode; episode {int(e)} has none. Annotate with "
                                 "control.static=true (reward=column: reward.control_column=NAME)")
        out.append(success_score(c))
    return np.asarray(out, dtype=np.float64)


def above_static_share(real: np.ndarray, static: np.ndarray) -> float:
    """The share of episodes whose real video's success score is above its static-video control's (NaN for
    none): below ABOVE_STATIC, most real videos score no higher than a still frame of themselves."""
    real, static = np.asarray(real, np.float64), np.asarray(static, np.float64)
    return float(np.mean(real > static)) if real.size else float("nan")


def _has_static(episodes: list[dict], present: np.ndarray) -> bool:
    by_index = {int(e["episode_index"]): e for e in episodes}
    return all(np.isfinite(np.asarray(by_index[int(e)].get("control_raw_scores") or [np.nan], np.float64)).any()
               for e in present)


def static_reliability(real: np.ndarray, static: np.ndarray) -> float:
    """The share of the success scores' spread across episodes that their static videos do not show:
    clip(1 − var(static) / var(real), 0, 1). A static video shows what the scene and the wording alone score
    (and the length bias); where that explains the spread of the real scores, they cannot rank the episodes
    and the weights should fall back to uniform (1 → keep z_e, 0 → plain BC)."""
    v_real = float(np.var(real))
    if v_real <= 0:
        return 0.0
    return float(np.clip(1.0 - float(np.var(static)) / v_real, 0.0, 1.0))


@dataclass(frozen=True)
class AdvantageStats:
    """What ``episode_quality`` reads of the dataset, fitted once per run by :meth:`fit`: per episode index
    (dense arrays; ``known`` marks the indices in the dataset) the common scale, the top frames and z_e."""

    scale: str
    top: float
    known: np.ndarray = field(repr=False)  # (E,) bool
    slope: np.ndarray = field(repr=False)  # (E,) a_e: p' = c_e + a_e·p
    offset: np.ndarray = field(repr=False)  # (E,) c_e
    top_frame: np.ndarray = field(repr=False)  # (E,) T*_e on the episode scale
    quality: np.ndarray = field(repr=False)  # (E,) z_e
    time_frame: np.ndarray = field(repr=False)  # (E,) the T*_e z_e's time term read (on ``time_scale``)
    reliability: dict = field(default_factory=dict)  # task → the factor z_e was shrunk by (shrink="static"|"above_static")
    # shrink="above_static": task → the share of its episodes above their static control; None: no control to check
    above_static: dict | None = None
    table: dict = field(default_factory=dict, repr=False)  # the fit table's episode column (rank/top transforms)
    _reference: dict = field(default_factory=dict, repr=False, compare=False)  # sorted A of every sample

    @classmethod
    def fit(cls, table, episodes: list[dict], *, scale: str = "dataset", top: float = 0.95,
            success_weight: float = 1.0, final_weight: float = 0.0, time_weight: float = 0.5,
            std_floor: float = 0.1, success_from: str = "real", shrink: str = "above_static",
            time_scale: str = "rise") -> AdvantageStats:
        """Fit from ``table`` (:class:`data.progress_table.ProgressTable`) and the manifest's ``episodes``."""
        _check_params(scale, top, success_weight, final_weight, time_weight, success_from, shrink, time_scale)
        if len(table) == 0:
            raise WeightingError("no progress windows to fit the episode statistics on (empty dataset?)")
        ep_col, frame_col = np.asarray(table.episode), np.asarray(table.frame)
        level = np.asarray(table.level, np.float64)
        if not (np.isfinite(level).all() and np.isfinite(np.asarray(table.gain, np.float64)).all()):
            raise WeightingError("some progress values are NaN/inf; check the shards' progress")
        by_index = {int(e["episode_index"]): e for e in episodes}
        present = np.unique(ep_col)
        missing = [int(e) for e in present if int(e) not in by_index]
        if missing:
            raise WeightingError(f"shard samples of episodes {missing[:5]} have no entry in the manifest's episodes; "
                                 "re-run pipeline.annotate")
        size = int(present.max()) + 1
        known = np.zeros(size, bool)
        known[present] = True
        last = np.zeros(size)
        np.maximum.at(last, ep_col, frame_col.astype(np.float64))
        lengths = np.ones(size)
        for e in present:
            lengths[e] = float(by_index[int(e)].get("length") or last[e] + 1)
        top_frame = np.where(known, _first_at(ep_col, frame_col, level >= top - 1e-9, lengths), 0.0)
        tasks = np.array([str(by_index[int(e)].get("task", "")) for e in present])
        need_raw = scale == "dataset" or final_weight > 0 or time_scale == "rise"
        raw = _raw_ranges(by_index, present, need_raw, scale, time_scale)
        slope, offset, ranges = _common_scale(ep_col, level, present, tasks, raw, scale, size)
        if time_scale == "rise":
            rose = np.zeros(size, bool)
            rose[present] = risen(np.array([raw["hi"][e] - raw["first"][e] for e in present]), tasks)
            time_frame = np.where(rose, top_frame, lengths)
        elif time_scale == "episode" or scale == "episode":  # no common scale: the episode scale's time
            time_frame = top_frame
        else:
            time_frame = np.where(
                known, _first_at(ep_col, frame_col, offset[ep_col] + slope[ep_col] * level >= top - 1e-9, lengths),
                0.0)
        quality = np.full(size, np.nan)
        checked = shrink == "above_static" and _has_static(episodes, present)
        reliability = _episode_quality(quality, by_index, episodes, present, tasks, raw, ranges,
                                       time_frame[present] / lengths[present], success_weight, final_weight,
                                       time_weight, std_floor, success_from,
                                       "none" if shrink == "above_static" and not checked else shrink)
        above = None
        if checked:
            above = {t: share for t, (share, _) in reliability.items()}
            reliability = {t: factor for t, (_, factor) in reliability.items()}
        return cls(scale=scale, top=float(top), known=known, slope=slope, offset=offset, top_frame=top_frame,
                   quality=quality, time_frame=time_frame, reliability=reliability, above_static=above,
                   table={"episode": ep_col})

    def episodes_of(self, episode) -> np.ndarray:
        if episode is None:
            raise WeightingError(f"weighting {RULE!r} needs each sample's episode_index (the batch has none)")
        e = np.asarray(episode.detach().cpu() if isinstance(episode, Tensor) else episode, dtype=np.int64)
        bad = (e < 0) | (e >= self.known.size)
        bad[~bad] = ~self.known[e[~bad]]
        if bad.any():
            raise WeightingError(f"weighting {RULE!r}: episodes {np.unique(e[bad])[:5].tolist()} are not in the "
                                 "dataset the statistics were fitted on (fit them on these shards)")
        return e

    def reference(self) -> np.ndarray:
        """Sorted A of every fitted sample (the rank and top transforms' F)."""
        if "A" not in self._reference:
            self._reference["A"] = np.sort(self.quality[self.table["episode"]].astype(np.float64))
        return self._reference["A"]


def _check_params(scale, top, success_weight, final_weight, time_weight, success_from, shrink, time_scale) -> None:
    rule = RULE
    if scale not in SCALES:
        raise WeightingError(f"weighting={rule}: weighting.scale={scale!r} must be one of {SCALES}")
    if success_from not in SUCCESS_FROM or shrink not in SHRINK:
        raise WeightingError(f"weighting={rule}: weighting.success_from={success_from!r} must be one of {SUCCESS_FROM} and "
                             f"weighting.shrink={shrink!r} one of {SHRINK}")
    if time_scale not in TIME_SCALES:
        raise WeightingError(f"weighting={rule}: weighting.time_scale={time_scale!r} must be one of {TIME_SCALES}")
    if not 0 < top <= 1:
        raise WeightingError(f"weighting={rule}: weighting.top={top} must be in (0, 1] (the shard progress that counts as the top)")
    if min(success_weight, final_weight, time_weight) < 0 or success_weight + final_weight + time_weight <= 0:
        raise WeightingError(f"{rule}: success_weight={success_weight}, final_weight={final_weight}, "
                             f"time_weight={time_weight} must be >= 0 and not all 0")


def risen(rise: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """``time_scale="rise"``: which episodes, given each one's raw rise (highest minus first score) and task, rose —
    at least ``RISE_SHARE`` of their task's median rise; the rest never reach the top (in a task whose median rise
    is not above 0, none does)."""
    rise, tasks = np.asarray(rise, dtype=np.float64), np.asarray(tasks)
    rose = np.zeros(len(rise), bool)
    for task in np.unique(tasks):
        mine = tasks == task
        median = float(np.median(rise[mine]))
        rose[mine] = rise[mine] >= RISE_SHARE * median if median > 0 else False
    return rose


def _raw_ranges(by_index: dict, present: np.ndarray, need_raw: bool, scale: str, time_scale: str) -> dict:
    """Per episode its raw scores' lowest, highest, last and first value (``lo``, ``hi``, ``final``, ``first``:
    dicts keyed by episode index; an episode without raw scores is absent, refused where they are needed)."""
    raw = {"lo": {}, "hi": {}, "final": {}, "first": {}}
    for e in present:
        scores = by_index[int(e)].get("raw_scores")
        if scores is None or not np.isfinite(np.asarray(scores, dtype=np.float64)).any():
            if need_raw:
                what = ("scale=dataset" if scale == "dataset" else "time_scale=rise" if time_scale == "rise"
                        else "final_weight > 0")
                raise WeightingError(f"{RULE} with {what} needs the manifest's raw_scores, but episode {int(e)} "
                                     "has none; re-run pipeline.annotate, or set weighting.scale=episode, "
                                     "weighting.time_scale=episode and weighting.final_weight=0")
            continue
        r = np.asarray(scores, dtype=np.float64)
        r = r[np.isfinite(r)]
        raw["lo"][e], raw["hi"][e], raw["final"][e], raw["first"][e] = (float(r.min()), float(r.max()),
                                                                        float(r[-1]), float(r[0]))
    return raw


def _common_scale(ep_col, level, present, tasks, raw, scale: str, size: int):
    """(slope a_e, offset c_e, per task its raw range (L, U)) of p' = c_e + a_e·p (see the module)."""
    slope, offset = np.zeros(size), np.zeros(size)
    pmin, pmax = np.full(size, np.inf), np.full(size, -np.inf)
    np.minimum.at(pmin, ep_col, level)
    np.maximum.at(pmax, ep_col, level)
    lo_, hi_ = raw["lo"], raw["hi"]
    ranges = {}
    for task in np.unique(tasks):
        eps_t = present[tasks == task]
        if lo_ and all(e in lo_ for e in eps_t):
            lo, hi = min(lo_[e] for e in eps_t), max(hi_[e] for e in eps_t)
        else:
            lo, hi = 0.0, 1.0  # success scores are then compared on their own spread (_episode_quality)
        ranges[task] = (lo, hi)
        for e in eps_t:
            if scale == "episode":
                slope[e], offset[e] = 1.0, 0.0
                continue
            if hi - lo <= 0:
                raise WeightingError(f"task {task!r}: every raw score is {lo}, so progress has no common scale; "
                                     "set weighting.scale=episode")
            span = pmax[e] - pmin[e]
            a = (hi_[e] - lo_[e]) / (span * (hi - lo)) if span > 0 else 0.0
            slope[e] = a
            offset[e] = (lo_[e] - lo) / (hi - lo) - a * pmin[e]
    return slope, offset, ranges


def _episode_quality(quality, by_index, episodes, present, tasks, raw, ranges, frac, success_weight,
                     final_weight, time_weight, std_floor, success_from, shrink) -> dict:
    """Write z_e of the present episodes into ``quality``; returns per task the static shrink factor (for
    ``above_static``: (the share above the static control, the factor))."""
    success = np.array([by_index[int(e)].get("success_score") for e in present], dtype=object)
    has_success = np.array([s is not None and np.isfinite(float(s)) for s in success])
    if not has_success.all():
        bad = [int(e) for e, ok in zip(present, has_success, strict=True) if not ok]
        raise WeightingError(f"{RULE} needs every episode's success_score in the manifest; episodes {bad[:5]} "
                             "have none (re-run pipeline.annotate)")
    static = (static_success_scores(episodes, present, RULE)
              if success_from == "minus_static" or shrink in ("static", "above_static") else None)
    s = success.astype(np.float64)
    real = s.copy()
    if success_from == "minus_static":
        s = s - static
    have_raw = bool(raw["lo"]) and all(e in raw["lo"] for e in present)
    floors = {}
    for task in np.unique(tasks):
        m = tasks == task
        span = ranges[task][1] - ranges[task][0] if have_raw else float(np.ptp(s[m]))
        floors[task] = std_floor * span
    z = success_weight * _zscore(s, tasks, floors)
    if final_weight > 0:
        f = np.array([raw["final"][e] for e in present])
        z = z + final_weight * _zscore(f, tasks, floors)
    z = z - time_weight * _zscore(frac, tasks, {t: std_floor for t in floors})
    quality[present] = z / (success_weight + final_weight + time_weight)
    reliability = {}
    if shrink == "static":
        for task in np.unique(tasks):
            m = tasks == task
            reliability[str(task)] = static_reliability(real[m], static[m])
            quality[present[m]] *= reliability[str(task)]
    if shrink == "above_static":
        for task in np.unique(tasks):
            m = tasks == task
            share = above_static_share(real[m], static[m])
            reliability[str(task)] = (share, 1.0 if share >= ABOVE_STATIC else 0.0)
            quality[present[m]] *= reliability[str(task)][1]
    return reliability


def _need(stats) -> AdvantageStats:
    if not isinstance(stats, AdvantageStats):
        raise WeightingError(f"weighting {RULE!r} needs AdvantageStats fitted for it "
                             f"(policies.weighting.get_rule({RULE!r}).fit), got {type(stats).__name__}")
    return stats


def to_weights(a: np.ndarray, *, transform: str = "exp", beta: float = 1.0, w_max: float = 20.0,
               reference: np.ndarray | None = None, top_fraction: float = 0.5, rule: str = "?") -> np.ndarray:
    """w = min(exp(A/β), w_max) (``exp``), the fraction of ``reference`` advantages ≤ A (``rank``), or 1 where
    fewer than ``top_fraction`` of the ``reference`` advantages lie strictly above A, else 0 (``top``)."""
    if transform == "exp":
        if beta <= 0 or w_max <= 0:
            raise WeightingError(f"{rule} needs beta > 0 and w_max > 0, got beta={beta}, w_max={w_max}")
        return np.minimum(np.exp(np.minimum(a / beta, 80.0)), w_max)
    if transform == "rank":
        return np.searchsorted(reference, a, side="right") / len(reference)
    if transform == "top":
        if not 0 < top_fraction <= 1:
            raise WeightingError(f"weighting={rule}: weighting.top_fraction={top_fraction} must be in (0, 1] (the fraction of the samples "
                                 "to keep)")
        above = len(reference) - np.searchsorted(reference, a, side="right")
        return (above < top_fraction * len(reference)).astype(np.float64)
    raise WeightingError(f"weighting={rule}: weighting.transform={transform!r} must be one of {TRANSFORMS}")


def episode_quality(progress: Tensor, stats=None, *, episode=None, transform: str = "exp", beta: float = 0.25,
                    w_max: float = 20.0, top_fraction: float = 0.5) -> Tensor:
    """Episode-level weighting: A = z_e (standardised success score, final raw score, time to the top).
    ``beta`` 0.25: the measured best of 1 / 0.25 / 0.1 on mixed MetaWorld corpora (docs/experiments.md)."""
    st = _need(stats)
    a = st.quality[st.episodes_of(episode)].astype(np.float64)
    ref = st.reference() if transform in ("rank", "top") else None
    w = to_weights(a, transform=transform, beta=float(beta), w_max=float(w_max), reference=ref,
                   top_fraction=float(top_fraction), rule=RULE)
    return torch.as_tensor(w, dtype=torch.float32, device=progress.device)
