"""The prefix-stable frame schedule and prefix selection (one definition, used by every reward model).

Frames are sampled at ``sample_fps`` from a clip recorded at ``native_fps``: step = native_fps / sample_fps,
indices = round-half-up(arange(0, T, step)), deduplicated. The schedule of a prefix that ends at raw frame t
is exactly the scheduled indices < t, so a longer prefix never changes what a shorter one saw.

Qwen-VL video models merge frames in temporal groups of ``temporal_patch`` (2): a prefix ends on a group
boundary, and the exclusive raw end of the prefix ending with group g is its last sampled index + 1 (the
first raw frame at which that prefix has been fully observed).
"""

from __future__ import annotations

import numpy as np


def sample_indices(num_frames: int, native_fps: float, sample_fps: float) -> np.ndarray:
    """Raw frame indices sampled at ``sample_fps`` (int64, strictly increasing, all < num_frames)."""
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: an episode needs at least 1 frame")
    if not native_fps > 0:
        raise ValueError(f"native fps={native_fps} must be > 0 (the dataset's recording rate)")
    if not sample_fps > 0:
        raise ValueError(f"sample_fps={sample_fps} must be > 0 (frames per second fed to the model, e.g. 2)")
    step = native_fps / sample_fps
    idx = np.floor(np.arange(0, num_frames, step) + 0.5).astype(np.int64)
    idx = np.unique(idx[idx < num_frames])
    return idx


def group_ends(num_sampled: int, temporal_patch: int = 2) -> np.ndarray:
    """Exclusive end (in sampled-frame units) of every temporal group; the last may be a partial group."""
    if num_sampled < 1:
        raise ValueError("no sampled frames")
    ends = np.arange(temporal_patch, num_sampled + temporal_patch, temporal_patch)
    ends[-1] = min(ends[-1], num_sampled)
    return np.unique(ends)


def select_groups(num_groups: int, prefixes: int | str = "all") -> np.ndarray:
    """Indices of the groups that end a scored prefix: every group (``"all"``) or K evenly spaced ones.

    The last group (the whole clip) is always included.
    """
    if prefixes == "all":
        return np.arange(num_groups)
    k = int(prefixes)
    if k < 1:
        raise ValueError(f"prefixes={prefixes!r}: use 'all' or a positive number of evenly spaced prefixes")
    if k >= num_groups:
        return np.arange(num_groups)
    return np.unique(np.floor(np.linspace(0, num_groups - 1, k) + 0.5).astype(np.int64))


def prefix_ends(sampled: np.ndarray, ends_sampled: np.ndarray) -> np.ndarray:
    """Exclusive raw-frame end of each prefix: last sampled raw index of the prefix + 1."""
    return sampled[np.asarray(ends_sampled) - 1] + 1
