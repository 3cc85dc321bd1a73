"""What a report reads besides the manifest: the source dataset's columns and the episodes' success labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from configs import ConfigError
from data.success_labels import LabelsError, episode_labels


def open_source(manifest: dict):
    """The annotation's source dataset, or None when it cannot be opened (moved, or a hub id offline)."""
    from data.source import SourceError, open_dataset

    src = manifest.get("source", {})
    try:
        return open_dataset(root=src.get("root"), repo_id=src.get("repo_id"))
    except SourceError:
        return None


def column_per_episode(source, episodes: list[int], column: str) -> dict[int, np.ndarray]:
    """The first value per frame of ``column`` for each episode index."""
    eps = {e.index: e for e in source.episodes(episodes)}
    return {i: source.read_columns(eps[i], [column])[column][:, 0] for i in episodes}


def read_success_labels(spec, manifest: dict, source) -> tuple[dict[int, int] | None, str | None]:
    """Episode success labels (episode index -> 0|1) and where they came from (``None`` when there are none).

    ``spec``: ``auto`` (the ``next.success`` column when the source has one), a column name, a labels file
    (``.csv`` ``episode_index,success``, or ``.json``: :mod:`data.success_labels`, the one reader of such files,
    the same files the review page writes), or ``none``.
    """
    if spec in (None, "none", False):
        return None, None
    episodes = [e["episode_index"] for e in manifest["episodes"]]
    spec = str(spec)
    path = Path(spec)
    if path.suffix in (".json", ".csv"):
        if not path.exists():
            raise ConfigError(f"labels={spec}: no such file (a CSV episode_index,success[,note] or JSON; "
                              "data/success_labels.py)")
        try:
            labels = episode_labels(path)
        except LabelsError as exc:
            raise ConfigError(str(exc)) from exc
        return {e: int(labels[e]) for e in episodes if e in labels}, str(path)
    if spec == "auto":
        if source is None or "next.success" not in source.numeric_columns():
            return None, None
        spec = "next.success"
    if source is None:
        raise ConfigError(f"labels={spec}: the source dataset of this annotation cannot be opened to read it")
    if spec not in source.numeric_columns():
        raise ConfigError(f"labels={spec!r} is not a column of the source dataset; available: "
                          f"{source.numeric_columns()} (or give a labels .json/.csv file, or labels=none)")
    cols = column_per_episode(source, episodes, spec)
    return {e: int((v > 0.5).any()) for e, v in cols.items()}, f"column {spec} (an episode succeeds if any frame does)"
