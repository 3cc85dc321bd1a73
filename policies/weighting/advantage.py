"""Advantage estimators for reward-aligned behaviour cloning (rules of :mod:`policies.weighting.registry`).

Why: on mixed data the gain-only rules barely separate good from bad demonstrations (docs/experiments.md,
the first probe): an expert's frames after success have flat progress and get a low weight, degraded episodes
still make *some* progress and get a full weight, and per-episode min-max normalisation makes every episode,
failures included, climb from 0 to 1. The estimators here compare a chunk with what a typical chunk does from
the same point of the task, and add what only the episode as a whole can tell (did it succeed, how fast).

Same interface as every rule: ``rule(progress (B, H+1), stats, *, episode, frame, <its parameters>) -> (B,)
weights``, with ``stats`` an :class:`AdvantageStats` fitted ONCE per run (:meth:`AdvantageStats.fit`,
reached through the rule object's ``fit``, from ``data.progress_table.fit_progress_table``'s one pass over
the shards plus the manifest's ``episodes``), and ``episode``/``frame`` the batch's
``episode_index``/``frame_index`` (``policies.weighting.sample_info``). A rule's parameters are its
keyword-only arguments here plus those of :meth:`AdvantageStats.fit` (the fit-time ones: one fit serves all
three estimators); the registry reads them from these signatures, so nothing takes a catch-all
``**kwargs``. This module imports only :mod:`policies.weighting.core`.

Notation (per sample i of episode e at frame t, H = the policy's chunk):

- p = p[t], Δ = p[t+H] − p[t]: progress level and chunk gain from the shards (per-episode min-max scale).
- ``scale="dataset"`` (default) undoes the per-episode min-max with the manifest's raw scores: the episode's
  raw score at t is lo_e + (p − pmin_e)/(pmax_e − pmin_e)·(hi_e − lo_e) (exact: min-max and the per-frame
  interpolation are both affine), then mapped onto its task's raw range [L, U] (L = min_e lo_e, U = max_e hi_e
  over the task's episodes): p' = c_e + a_e·p, Δ' = a_e·Δ. A failure whose raw scores never leave the bottom
  of the range stays near p' = 0 and its gains shrink by a_e; on the shards' own scale it would reach 1.
  ``scale="episode"`` keeps p' = p, Δ' = Δ (needs no raw scores).
- Progress-conditioned baseline b(p'): the ``expectile``-τ of Δ' among the dataset's samples whose p' falls in
  the same of ``bins`` equal-width bins of [0, 1], smoothed as a count-weighted mean over ± ``smooth``
  neighbouring bins, linearly interpolated between bin centres (flat beyond the outer centres). τ = 0.5 is the
  binned mean of Δ' — the value baseline V(s) ≈ E[Δ | p] of AWR (Peng et al. 2019). τ > 0.5 is IQL's upper
  expectile (Kostrikov et al. 2022): the gain of the *better* chunks from that level. The default τ = 0.7
  (IQL's usual value) because in mixed data the bins where failures linger have a mean dragged down by them,
  so stalling there would look average; the upper expectile asks what good behaviour does from there. A
  constant offset of b would not matter (it cancels in Σwℓ/Σw); what the expectile changes is how the bar
  moves from one progress level to another.
- Chunk advantage: A_c = (Δ' − b(p')) / σ_A, σ_A = the std of Δ' − b(p') over the dataset (floored at eps).
- The top: T*_e = the first frame whose shard progress reaches ``top`` (episode scale); frames t ≥ T*_e are
  "after the top". On the episode scale a failure reaches the top too — at its own maximum — so what a frame
  after the top is worth is decided by the episode's quality, never by the top itself.
- Episode quality z_e (label-free, from the manifest): per task, standardised over the task's episodes,
  z(x) = (x − mean x) / max(std x, ``std_floor``·range), range = U − L for raw-score quantities (the spread
  of success scores that matters is measured against the task's raw range, so equally good episodes are not
  pulled apart by noise) and 1 for the time fraction; then
  z_e = (w_s·z(success_score) + w_f·z(final raw score) − w_t·z(T*_e / length_e)) / (w_s + w_f + w_t)
  with w_s, w_f, w_t = ``success_weight``, ``final_weight``, ``time_weight``. ``time_scale="dataset"`` measures
  the time fraction on the dataset scale instead: T*_e = the first frame whose p' (below) reaches ``top``, the
  episode's length if none does (with ``scale="episode"``, which has no common scale, the episode's own). On the episode scale a curve that starts at its maximum (a failure the reward
  model scores flat or falling) "reaches the top" at frame 0 and earns the largest time bonus of all; the
  dataset scale avoids that but counts an episode whose whole curve sits high (a per-episode offset) as at the
  top from its first frame. ``time_scale="rise"`` keeps the episode scale (immune to offsets) but lets only a
  curve that rose reach its top: T*_e is the episode scale's when the episode's raw rise (maximum minus first
  score) is at least ``RISE_SHARE`` of its task's median rise, else the episode's length (a flat or falling
  curve never reaches the top).

Weights from an advantage A (``transform``): ``"exp"``: w = min(exp(A/β), w_max), AWR's exponentiated
advantage, clipped; ``"rank"``: w = F(A), the fraction of the dataset's samples whose advantage (the same
estimator, same parameters, evaluated on every sample of the fit table) is ≤ A — invariant to the scale of
A, in (0, 1]; ``"top"``: w = 1 if fewer than ``top_fraction``·N of those N samples have an advantage
strictly above A, else 0 — filtered BC on the best ``top_fraction`` of the data (ties at the cut are all
kept). With ``episode_quality`` every frame of an episode shares A, so this keeps whole episodes: "%BC" of
the Decision Transformer paper (Chen et al. 2021), BC on the top X% of trajectories by return, with the
label-free z_e as the return.

Rules:

- ``progress_awr``: A = A_c. Chunk-level only: slow, noisy, stalled or regressing chunks score below the
  baseline at the same stage; a flat chunk at the top sits at b(top) ≈ 0, i.e. about average.
- ``episode_quality``: A = z_e for every frame of episode e. Episode-level only: a soft version of
  ``filter``'s success floor (and of TOP-AWR's trajectory-level weighting, TOPReward Eq. 3, with the success
  score as the return).
- ``quality_advantage``: A = (hold·z_e if t ≥ T*_e else A_c) + λ·z_e, λ = ``episode_weight``. After the top,
  the chunk's own gain says nothing (flat progress): in an episode that succeeded (z_e > 0) holding the goal
  is good behaviour and scores above average, not zero; after a failure's own maximum it scores below. Before
  the top, the chunk advantage against the baseline, shifted by the episode's quality. This fixes the two
  faults SARM's κ rule (lerobot RA-BC) showed on mixed MetaWorld data: expert frames after success only got
  its soft weight, and degraded chunks that still progressed got a full one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from pipeline.progress import success_score
from policies.weighting.baseline import binned_baseline
from policies.weighting.core import WeightingError, chunk_gain

SCALES = ("dataset", "episode")
# what an episode's success score is compared on: its own video's ("real"), or that minus its static-video
# control's ("minus_static": what the video shows beyond a video in which nothing moves; docs/weighting.md)
SUCCESS_FROM = ("real", "minus_static")
# "static": shrink z_e toward 0 (uniform weights) by the reliability the static controls estimate
SHRINK = ("none", "static")
# where the time to the top is measured: on the episode's own scale (every curve, a flat or falling one included,
# reaches its own maximum somewhere) or on the task's common raw scale ("dataset": only an episode whose raw
# score climbs to the top of the task's range reaches it; the rest count as never reaching it)
TIME_SCALES = ("episode", "dataset", "rise")
RISE_SHARE = 0.5  # time_scale="rise": an episode "rose" when its raw rise is at least this share of its task's median
TRANSFORMS = ("exp", "rank", "top")


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
    """What the advantage estimators read of the dataset, fitted once per run by :meth:`fit`.

    Per-episode arrays are dense, indexed by episode index (``known`` marks the indices in the dataset).
    """

    rule: str
    scale: str
    top: float
    known: np.ndarray = field(repr=False)  # (E,) bool
    slope: np.ndarray = field(repr=False)  # (E,) a_e: Δ' = a_e·Δ
    offset: np.ndarray = field(repr=False)  # (E,) c_e: p' = c_e + a_e·p
    top_frame: np.ndarray = field(repr=False)  # (E,) T*_e
    quality: np.ndarray = field(repr=False)  # (E,) z_e (NaN when the manifest lacks what it needs)
    time_frame: np.ndarray = field(repr=False)  # (E,) the T*_e z_e's time term read (on ``time_scale``)
    centres: np.ndarray = field(repr=False)  # (bins,)
    baseline: np.ndarray = field(repr=False)  # (bins,) smoothed b at the centres
    adv_std: float = 1.0
    reliability: dict = field(default_factory=dict)  # task → the factor z_e was shrunk by (shrink="static")
    table: dict = field(default_factory=dict, repr=False)  # the fit table (episode, frame, level, gain)
    _reference: dict = field(default_factory=dict, repr=False, compare=False)  # rank transform cache

    @classmethod
    def fit(cls, table, episodes: list[dict], *, rule: str = "quality_advantage", scale: str = "dataset",
            bins: int = 10, expectile: float = 0.7, smooth: int = 1, top: float = 0.95,
            success_weight: float = 1.0, final_weight: float = 0.0, time_weight: float = 0.5,
            std_floor: float = 0.1, eps: float = 1e-6, success_from: str = "real",
            shrink: str = "none", time_scale: str = "episode") -> AdvantageStats:
        """Fit from ``table`` (:class:`data.progress_table.ProgressTable`) and the manifest's ``episodes``."""
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
        if len(table) == 0:
            raise WeightingError("no progress windows to fit the advantage statistics on (empty dataset?)")
        ep_col, frame_col = np.asarray(table.episode), np.asarray(table.frame)
        level, gain = np.asarray(table.level, np.float64), np.asarray(table.gain, np.float64)
        if not (np.isfinite(level).all() and np.isfinite(gain).all()):
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
        slope, offset = np.zeros(size), np.zeros(size)
        quality = np.full(size, np.nan)
        pmin, pmax, last = np.full(size, np.inf), np.full(size, -np.inf), np.zeros(size)
        np.minimum.at(pmin, ep_col, level)
        np.maximum.at(pmax, ep_col, level)
        np.maximum.at(last, ep_col, frame_col.astype(np.float64))
        lengths = np.ones(size)
        for e in present:
            lengths[e] = float(by_index[int(e)].get("length") or last[e] + 1)
        top_frame = np.where(known, _first_at(ep_col, frame_col, level >= top - 1e-9, lengths), 0.0)
        tasks = np.array([str(by_index[int(e)].get("task", "")) for e in present])

        raw_lo, raw_hi, raw_final, raw_first = {}, {}, {}, {}
        need_raw = scale == "dataset" or final_weight > 0 or time_scale == "rise"
        for e in present:
            raw = by_index[int(e)].get("raw_scores")
            if raw is None or not np.isfinite(np.asarray(raw, dtype=np.float64)).any():
                if need_raw:
                    what = ("scale=dataset" if scale == "dataset" else "time_scale=rise" if time_scale == "rise"
                            else "final_weight > 0")
                    raise WeightingError(f"{rule} with {what} needs the manifest's raw_scores, but episode {int(e)} "
                                         "has none; re-run pipeline.annotate, or set weighting.scale=episode "
                                         "and weighting.final_weight=0")
                continue
            r = np.asarray(raw, dtype=np.float64)
            r = r[np.isfinite(r)]
            raw_lo[e], raw_hi[e], raw_final[e] = float(r.min()), float(r.max()), float(r[-1])
            raw_first[e] = float(r[0])
        ranges = {}
        for task in np.unique(tasks):
            eps_t = present[tasks == task]
            if raw_lo and all(e in raw_lo for e in eps_t):
                lo, hi = min(raw_lo[e] for e in eps_t), max(raw_hi[e] for e in eps_t)
            else:
                lo, hi = 0.0, 1.0  # success scores are then compared on their own spread (see below)
            ranges[task] = (lo, hi)
            for e in eps_t:
                if scale == "episode":
                    slope[e], offset[e] = 1.0, 0.0
                    continue
                if hi - lo <= 0:
                    raise WeightingError(f"task {task!r}: every raw score is {lo}, so progress has no common scale; "
                                         "set weighting.scale=episode")
                span = pmax[e] - pmin[e]
                a = (raw_hi[e] - raw_lo[e]) / (span * (hi - lo)) if span > 0 else 0.0
                slope[e] = a
                offset[e] = (raw_lo[e] - lo) / (hi - lo) - a * pmin[e]

        # with scale=episode there is no common scale (slope 1, offset 0): the time is the episode scale's
        if time_scale == "rise":
            rose = np.zeros(size, bool)
            for task in np.unique(tasks):
                eps_t = present[tasks == task]
                rise = np.array([raw_hi[e] - raw_first[e] for e in eps_t])
                rose[eps_t] = rise >= RISE_SHARE * float(np.median(rise)) if np.median(rise) > 0 else False
            time_frame = np.where(rose, top_frame, lengths)
        elif time_scale == "episode" or scale == "episode":
            time_frame = top_frame
        else:
            time_frame = np.where(
                known, _first_at(ep_col, frame_col, offset[ep_col] + slope[ep_col] * level >= top - 1e-9, lengths),
                0.0)

        # episode quality z_e, per task
        success = np.array([by_index[int(e)].get("success_score") for e in present], dtype=object)
        has_success = np.array([s is not None and np.isfinite(float(s)) for s in success])
        need_static = success_from == "minus_static" or shrink == "static"
        static = static_success_scores(episodes, present, rule) if need_static else None
        reliability = {}
        if has_success.all():
            s = success.astype(np.float64)
            real = s.copy()
            if success_from == "minus_static":
                s = s - static
            have_raw = bool(raw_lo) and all(e in raw_lo for e in present)
            floors = {}
            for task in np.unique(tasks):
                m = tasks == task
                span = ranges[task][1] - ranges[task][0] if have_raw else float(np.ptp(s[m]))
                floors[task] = std_floor * span
            z = success_weight * _zscore(s, tasks, floors)
            if final_weight > 0:
                f = np.array([raw_final[e] for e in present])
                z = z + final_weight * _zscore(f, tasks, floors)
            frac = time_frame[present] / lengths[present]
            z = z - time_weight * _zscore(frac, tasks, {t: std_floor for t in floors})
            quality[present] = z / (success_weight + final_weight + time_weight)
            if shrink == "static":
                for task in np.unique(tasks):
                    m = tasks == task
                    reliability[str(task)] = static_reliability(real[m], static[m])
                    quality[present[m]] *= reliability[str(task)]
        elif rule in ("episode_quality", "quality_advantage"):
            bad = [int(e) for e, ok in zip(present, has_success, strict=True) if not ok]
            raise WeightingError(f"{rule} needs every episode's success_score in the manifest; episodes {bad[:5]} "
                                 "have none (re-run pipeline.annotate, or use weighting=progress_awr)")

        p2 = offset[ep_col] + slope[ep_col] * level
        d2 = slope[ep_col] * gain
        centres, base = binned_baseline(p2, d2, bins, expectile, smooth)
        resid = d2 - np.interp(p2, centres, base)
        adv_std = max(float(resid.std()), eps)
        return cls(rule=rule, scale=scale, top=float(top), known=known, slope=slope, offset=offset,
                   top_frame=top_frame, quality=quality, time_frame=time_frame, centres=centres, baseline=base, adv_std=adv_std,
                   reliability=reliability,
                   table={"episode": ep_col, "frame": frame_col, "level": level, "gain": gain})

    # -- what the rules evaluate (numpy, per sample)
    def baseline_at(self, level) -> np.ndarray:
        """b(p') at progress levels ``level`` (on the stats' scale)."""
        return np.interp(np.asarray(level, dtype=np.float64), self.centres, self.baseline)

    def episodes_of(self, episode, rule: str) -> np.ndarray:
        if episode is None:
            raise WeightingError(f"weighting {rule!r} needs each sample's episode_index (the batch has none)")
        e = np.asarray(episode.detach().cpu() if isinstance(episode, Tensor) else episode, dtype=np.int64)
        bad = (e < 0) | (e >= self.known.size)
        bad[~bad] = ~self.known[e[~bad]]
        if bad.any():
            raise WeightingError(f"weighting {rule!r}: episodes {np.unique(e[bad])[:5].tolist()} are not in the "
                                 "dataset the statistics were fitted on (fit them on these shards)")
        return e

    def chunk_advantage(self, level, gain, episode) -> np.ndarray:
        """A_c = (Δ' − b(p')) / σ_A."""
        p2 = self.offset[episode] + self.slope[episode] * level
        return (self.slope[episode] * gain - self.baseline_at(p2)) / self.adv_std

    def reference(self, rule: str, params: dict) -> np.ndarray:
        """Sorted advantages of every fitted sample under ``rule`` with ``params`` (the rank transform's F)."""
        key = (rule, tuple(sorted(params.items())))
        if key not in self._reference:
            t = self.table
            a = _ADVANTAGES[rule](self, t["level"], t["gain"], t["episode"], t["frame"], **params)
            self._reference[key] = np.sort(a)
        return self._reference[key]


def _need(stats, rule: str) -> AdvantageStats:
    if not isinstance(stats, AdvantageStats):
        raise WeightingError(f"weighting {rule!r} needs AdvantageStats fitted for it "
                             f"(policies.weighting.get_rule({rule!r}).fit), got {type(stats).__name__}")
    return stats


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x)


# -------------------------------------------------------------------------------------------- advantages


def _adv_progress(st: AdvantageStats, level, gain, episode, frame) -> np.ndarray:
    return st.chunk_advantage(level, gain, episode)


def _adv_episode(st: AdvantageStats, level, gain, episode, frame) -> np.ndarray:
    return st.quality[episode].astype(np.float64)


def _adv_quality(st: AdvantageStats, level, gain, episode, frame, *, episode_weight: float = 1.0,
                 hold: float = 1.0) -> np.ndarray:
    z = st.quality[episode]
    after_top = np.asarray(frame) >= st.top_frame[episode]
    return np.where(after_top, hold * z, st.chunk_advantage(level, gain, episode)) + episode_weight * z


_ADVANTAGES = {"progress_awr": _adv_progress, "episode_quality": _adv_episode, "quality_advantage": _adv_quality}
# the estimators' own parameters (beyond the fit's and the weight transform's): what _adv_quality reads
_ADVANTAGE_PARAMS = {"progress_awr": (), "episode_quality": (),
                     "quality_advantage": ("episode_weight", "hold")}


def advantage(rule: str, progress: Tensor, stats, *, episode=None, frame=None, **params) -> np.ndarray:
    """The advantage A of each sample under estimator ``rule`` (before the weight transform); ``params``:
    the estimator's own parameters (``episode_weight``, ``hold`` for ``quality_advantage``; none else)."""
    st = _need(stats, rule)
    d = _np(chunk_gain(progress)).astype(np.float64)
    level = _np(progress[:, 0]).astype(np.float64)
    if rule == "progress_awr" and st.scale == "episode" and episode is None:
        e = np.zeros(len(d), np.int64)  # slope 1, offset 0 everywhere: the episode is not needed
        return (d - st.baseline_at(level)) / st.adv_std
    e = st.episodes_of(episode, rule)
    if rule == "quality_advantage":
        if frame is None:
            raise WeightingError("weighting 'quality_advantage' needs each sample's frame_index (the batch has none)")
        f = _np(frame).astype(np.int64)
    else:
        f = np.zeros(len(d), np.int64)
    return _ADVANTAGES[rule](st, level, d, e, f, **_adv_params(rule, params))


def _adv_params(rule: str, params: dict) -> dict:
    if rule not in _ADVANTAGES:
        raise WeightingError(f"unknown advantage estimator {rule!r}; valid: {', '.join(_ADVANTAGES)}")
    valid = _ADVANTAGE_PARAMS[rule]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise WeightingError(f"advantage estimator {rule!r} has no parameter {unknown[0]!r}; valid: "
                             f"{', '.join(valid) or '(none)'}")
    return {k: float(params[k]) for k in valid if k in params}


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


def _rule(name: str, progress: Tensor, stats, *, episode, frame, transform: str, beta: float, w_max: float,
          top_fraction: float, **params) -> Tensor:
    """The weights of estimator ``name``; ``params``: its own parameters (checked by :func:`_adv_params`)."""
    st = _need(stats, name)
    if st.rule != name:
        raise WeightingError(f"weighting {name!r} got statistics fitted for {st.rule!r}; fit them for {name!r}")
    a = advantage(name, progress, st, episode=episode, frame=frame, **params)
    ref = st.reference(name, _adv_params(name, params)) if transform in ("rank", "top") else None
    w = to_weights(a, transform=transform, beta=float(beta), w_max=float(w_max), reference=ref,
                   top_fraction=float(top_fraction), rule=name)
    return torch.as_tensor(w, dtype=torch.float32, device=progress.device)


def progress_awr(progress: Tensor, stats=None, *, episode=None, frame=None, transform: str = "exp",
                 beta: float = 1.0, w_max: float = 20.0, top_fraction: float = 0.5) -> Tensor:
    """AWR on the chunk advantage against the progress-conditioned baseline: A = (Δ' − b(p')) / σ_A."""
    return _rule("progress_awr", progress, stats, episode=episode, frame=frame, transform=transform, beta=beta,
                 w_max=w_max, top_fraction=top_fraction)


def episode_quality(progress: Tensor, stats=None, *, episode=None, frame=None, transform: str = "exp",
                    beta: float = 0.25, w_max: float = 20.0, top_fraction: float = 0.5) -> Tensor:
    """Episode-level weighting: A = z_e (standardised success score, final raw score, time to the top).
    ``beta`` 0.25: the measured best of 1 / 0.25 / 0.1 on mixed MetaWorld corpora (docs/experiments.md)."""
    return _rule("episode_quality", progress, stats, episode=episode, frame=frame, transform=transform, beta=beta,
                 w_max=w_max, top_fraction=top_fraction)


def quality_advantage(progress: Tensor, stats=None, *, episode=None, frame=None, transform: str = "exp",
                      beta: float = 1.0, w_max: float = 20.0, top_fraction: float = 0.5,
                      episode_weight: float = 1.0, hold: float = 1.0) -> Tensor:
    """A = (hold·z_e after the episode's top, else A_c) + episode_weight·z_e (see the module docstring)."""
    return _rule("quality_advantage", progress, stats, episode=episode, frame=frame, transform=transform,
                 beta=beta, w_max=w_max, top_fraction=top_fraction, episode_weight=episode_weight, hold=hold)
