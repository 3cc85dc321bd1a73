"""From per-prefix scores to per-frame progress, success score and VOC (one definition for all rewards)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

SUCCESS_LAST_PREFIXES = 3
# what an episode's progress was normalised from (the manifest's per-episode ``progress_from``): the real
# video's raw scores, or those minus the static-video control's (the climb a video in which nothing moves
# also gets, e.g. a VLM's length bias, removed)
PROGRESS_FROM_RAW = "raw"
PROGRESS_FROM_DEBIASED = "raw-control"


def minmax(raw: np.ndarray) -> np.ndarray:
    """Per-episode min-max normalisation (the paper's rule): all-equal → ones, a single prefix → [1]."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.size == 0:
        raise ValueError("no scores to normalise")
    if not np.all(np.isfinite(raw)):
        raise ValueError(f"non-finite scores {raw[~np.isfinite(raw)][:5]}: the reward model produced NaN/inf")
    lo, hi = raw.min(), raw.max()
    if hi - lo <= 0:
        return np.ones_like(raw)
    return (raw - lo) / (hi - lo)


def to_frames(ends: np.ndarray, values: np.ndarray, num_frames: int) -> np.ndarray:
    """Per-frame values from per-prefix values.

    The prefix with exclusive end e is anchored at its last frame e-1; frames between anchors are linearly
    interpolated, frames before the first anchor take the first value, frames after the last take the last.
    """
    ends = np.asarray(ends, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if ends.shape != values.shape or ends.ndim != 1 or ends.size == 0:
        raise ValueError(f"prefix ends {ends.shape} and values {values.shape} must be equal-length 1-D arrays")
    if np.any(np.diff(ends) <= 0) or ends[0] < 1 or ends[-1] > num_frames:
        raise ValueError(f"prefix ends must increase strictly within 1..{num_frames}, got {ends.tolist()}")
    return np.interp(np.arange(num_frames), ends - 1, values)


def success_score(raw: np.ndarray, last: int = SUCCESS_LAST_PREFIXES) -> float:
    """Mean raw score of the last ``last`` prefixes."""
    raw = np.asarray(raw, dtype=np.float64)
    return float(raw[-last:].mean())


def voc(values: np.ndarray, reference: np.ndarray | None = None) -> float:
    """Value-order correlation: Spearman rank correlation of ``values`` against ``reference`` (time when None).

    NaN when there are fewer than 2 points or either side is constant (undefined; report it, don't average it).
    """
    import torch
    from torchmetrics.functional import spearman_corrcoef

    v = np.asarray(values, dtype=np.float64)
    r = np.arange(len(v), dtype=np.float64) if reference is None else np.asarray(reference, dtype=np.float64)
    if len(v) != len(r):
        raise ValueError(f"VOC needs equal lengths, got {len(v)} values and {len(r)} reference points")
    if len(v) < 2 or np.ptp(v) == 0 or np.ptp(r) == 0:
        return float("nan")
    return float(spearman_corrcoef(torch.from_numpy(np.ascontiguousarray(v)), torch.from_numpy(np.ascontiguousarray(r))))


@dataclass
class PrefixScores:
    """What every reward model returns for one episode: raw scores of K prefixes of a T-frame clip.

    A NaN raw score means the model gave no score for that prefix (GVL's unparsable answers): it is left out
    of the normalisation, the interpolation and the success score, and counted by :attr:`missing`.

    ``control`` holds the raw scores of the episode's static-video control on the same prefixes, when it was
    scored; with ``debias`` progress is normalised from ``raw - control`` instead of ``raw`` (the success
    score stays the real video's).
    """

    prefix_ends: np.ndarray  # (K,) int64, exclusive raw frame index where each prefix ends
    raw: np.ndarray  # (K,) float, the raw reward of each prefix (TOPReward: log p(" True")); NaN = no score
    num_frames: int  # T
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # other per-prefix arrays (e.g. logp_false)
    control: np.ndarray | None = None  # (K,) raw scores of the static-video control; NaN = no score
    debias: bool = False  # progress from raw - control

    def __post_init__(self) -> None:
        self.prefix_ends = np.asarray(self.prefix_ends, dtype=np.int64)
        self.raw = np.asarray(self.raw, dtype=np.float64)
        if self.prefix_ends.shape != self.raw.shape:
            raise ValueError(f"{self.prefix_ends.shape} prefix ends vs {self.raw.shape} scores")
        if self.control is not None:
            self.control = np.asarray(self.control, dtype=np.float64)
            if self.control.shape != self.raw.shape:
                raise ValueError(f"{self.control.shape} control scores vs {self.raw.shape} scores: the "
                                 f"static-video control must be scored on the same prefixes")
            if np.isinf(self.control).any():
                raise ValueError(f"infinite control scores at prefixes "
                                 f"{np.flatnonzero(np.isinf(self.control))[:5].tolist()}")
        if self.debias and self.control is None:
            raise ValueError("debiased progress needs the static-video control's scores (control=...)")
        if np.isinf(self.raw).any():
            raise ValueError(f"infinite scores at prefixes {np.flatnonzero(np.isinf(self.raw))[:5].tolist()}")
        if self.raw.size and np.isnan(self.raw).all():
            raise ValueError(f"all {self.raw.size} prefix scores are missing (NaN): nothing to make progress from")

    @classmethod
    def from_manifest_episode(cls, episode: dict) -> PrefixScores:
        """The scores a manifest episode records (``prefix_ends``, ``raw_scores``, ``length``, and with a
        static control ``control_raw_scores``, ``control_prefix_ends``, ``progress_from``; see data.manifest),
        so their progress is the progress the shards hold."""
        control, ends = episode.get("control_raw_scores"), list(episode["prefix_ends"])
        if control is not None and list(episode.get("control_prefix_ends", [])) != ends:
            raise ValueError(f"episode {episode.get('episode_index')}: the control's prefix ends "
                             f"{episode.get('control_prefix_ends')} differ from the episode's {ends}")
        return cls(prefix_ends=ends, raw=episode["raw_scores"], num_frames=episode["length"],
                   control=None if control is None else np.asarray(control, dtype=np.float64),
                   debias=episode.get("progress_from") == PROGRESS_FROM_DEBIASED)

    def with_control(self, control: PrefixScores, debias: bool) -> PrefixScores:
        """These scores with the static-video control's (checked to be on the same prefixes)."""
        if not np.array_equal(control.prefix_ends, self.prefix_ends) or control.num_frames != self.num_frames:
            raise ValueError(f"the static-video control was scored on prefixes "
                             f"{control.prefix_ends.tolist()} of {control.num_frames} frames, the episode on "
                             f"{self.prefix_ends.tolist()} of {self.num_frames}: they must share the prefix "
                             f"schedule")
        return replace(self, control=control.raw, debias=bool(debias))

    @property
    def progress_from(self) -> str:
        """What progress is normalised from (:data:`PROGRESS_FROM_RAW` or :data:`PROGRESS_FROM_DEBIASED`)."""
        return PROGRESS_FROM_DEBIASED if self.debias else PROGRESS_FROM_RAW

    @property
    def progress_basis(self) -> np.ndarray:
        """The per-prefix scores progress is the min-max of: ``raw``, or ``raw - control`` when debiased
        (NaN where either is missing)."""
        return self.raw - self.control if self.debias else self.raw

    @property
    def valid(self) -> np.ndarray:
        """Prefixes that have a score."""
        return ~np.isnan(self.raw)

    @property
    def missing(self) -> int:
        return int((~self.valid).sum())

    @property
    def progress(self) -> np.ndarray:
        """Per-prefix progress in [0, 1] (min-max of :attr:`progress_basis`; NaN where a score is missing)."""
        basis = self.progress_basis
        ok = ~np.isnan(basis)
        out = np.full(self.raw.shape, np.nan)
        out[ok] = minmax(basis[ok])
        return out

    def frame_progress(self) -> np.ndarray:
        """Progress for every raw frame 0..T-1 (interpolated between the prefixes that have a score)."""
        progress = self.progress
        v = ~np.isnan(progress)
        return to_frames(self.prefix_ends[v], progress[v], self.num_frames)

    @property
    def success_score(self) -> float:
        return success_score(self.raw[self.valid])
