"""The dataset-level progress table: every shard sample's episode, frame, p[t] and chunk gain Δ.

    table = fit_progress_table("outputs/shards", future_actions=10)   # one pass over the shards' progress.npy

The weighting statistics are fitted on it (:func:`policies.weighting.fit_weighting_stats`); training reads it
once before the first step, and checkpoints keep it as plain arrays (:meth:`ProgressTable.as_arrays`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.manifest import load_manifest, shard_counts, shard_hashes, shard_paths
from data.schema import PROGRESS, WindowError, decode_array, parse_key
from data.shards import ShardError, tar_samples


@dataclass(frozen=True)
class ProgressTable:
    """One row per shard sample: its episode, frame t, progress level p[t] and chunk gain Δ = p[t+F] − p[t].

    What the dataset-level weighting statistics are fitted on (:func:`policies.weighting.fit_weighting_stats`).
    ``as_arrays``/``from_arrays`` give plain arrays for checkpoints.
    """

    episode: np.ndarray  # (N,) int64
    frame: np.ndarray  # (N,) int64
    level: np.ndarray  # (N,) float64, p[t]
    gain: np.ndarray  # (N,) float64, p[t+F] - p[t] (windows clamped at the episode end, as the shards store them)

    def __len__(self) -> int:
        return int(self.gain.size)

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"episode": self.episode, "frame": self.frame, "level": self.level, "gain": self.gain}

    @classmethod
    def from_arrays(cls, arrays: dict) -> ProgressTable:
        return cls(episode=np.asarray(arrays["episode"], dtype=np.int64), frame=np.asarray(arrays["frame"], dtype=np.int64),
                   level=np.asarray(arrays["level"], dtype=np.float64), gain=np.asarray(arrays["gain"], dtype=np.float64))


def fit_progress_table(root: str | Path, future_actions: int, manifest: dict | None = None) -> ProgressTable:
    """Every sample's (episode, frame, p[t], Δ = p[t+F] − p[t]), read once from the shards' ``progress.npy``.

    ``root``: the annotation output, a local folder or a URL / ``pipe:`` template (:mod:`data.manifest`). Only
    the progress members of each tar are decoded (no images); the windows are cut to the policy's chunk F, so
    Δ is exactly the gain the rules see in training.
    """
    manifest = manifest if manifest is not None else load_manifest(root)
    episode, frame, level, gain = [], [], [], []
    for sample in tar_samples(shard_paths(root, manifest), counts=shard_counts(root, manifest),
                              hashes=shard_hashes(root, manifest)):
        if PROGRESS not in sample:
            raise ShardError(f"sample {sample['__key__']} in {sample.get('__url__')} lacks {PROGRESS}")
        p = decode_array(sample[PROGRESS])
        if len(p) < future_actions + 1:
            raise WindowError(f"progress window of {sample['__key__']} holds {len(p)} values; need {future_actions + 1}")
        ep, t = parse_key(sample["__key__"])
        episode.append(ep)
        frame.append(t)
        level.append(float(p[0]))
        gain.append(float(p[future_actions] - p[0]))
    return ProgressTable(episode=np.asarray(episode, dtype=np.int64), frame=np.asarray(frame, dtype=np.int64),
                         level=np.asarray(level, dtype=np.float64), gain=np.asarray(gain, dtype=np.float64))


def fit_gain_stats(root: str | Path, future_actions: int, manifest: dict | None = None) -> np.ndarray:
    """Progress gains Δ = p[t+F] − p[t] of every sample (the ``gain`` column of :func:`fit_progress_table`).

    The weighting statistics (:class:`policies.weighting.GainStats`) are fitted on these.
    """
    return fit_progress_table(root, future_actions, manifest).gain
