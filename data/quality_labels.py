"""Demonstration-quality labels of a dataset: the file ``meta/demo.json`` beside a LeRobot dataset.

The simulated MetaWorld corpus (:mod:`data.metaworld.corpus`) writes it; training reads it to log how its
weights split over the labels, and the experiments to report the same. The labels are for reporting only:
nothing may train on them. One document per dataset::

    {"format": 1, "task": ..., "instruction": ..., "qualities": ["expert", ...], "quality_column": "quality",
     "note": ..., "seconds": ..., "config": {...},
     "episodes": [{"episode_index": 0, "quality": "expert", ...}, ...]}
"""

from __future__ import annotations

import json
from pathlib import Path

LABELS_FILE = "meta/demo.json"
FORMAT_VERSION = 1
NOTE = "labels are for reporting only; never train on them"


def has_quality_labels(root: str | Path) -> bool:
    return (Path(root) / LABELS_FILE).is_file()


def read_quality_labels(root: str | Path) -> dict:
    """The labels document of the dataset at ``root``; FileNotFoundError when it has none."""
    path = Path(root) / LABELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: {root} is not a corpus written by python -m data.demo "
                                "(no demonstration-quality labels)")
    return json.loads(path.read_text())


def quality_by_episode(labels: dict) -> dict[int, str]:
    """Episode index -> quality label of a labels document."""
    return {int(e["episode_index"]): str(e["quality"]) for e in labels["episodes"]}


def write_quality_labels(root: str | Path, *, task: str, instruction: str, qualities: list[str],
                         quality_column: str, seconds: float, config: dict, episodes: list[dict]) -> Path:
    """Write the labels document of the dataset at ``root`` (one dict per episode, with ``episode_index`` and
    ``quality``); returns its path."""
    path = Path(root) / LABELS_FILE
    document = {
        "format": FORMAT_VERSION, "task": task, "instruction": instruction, "qualities": list(qualities),
        "quality_column": quality_column, "note": NOTE, "seconds": seconds, "config": config,
        "episodes": episodes,
    }
    path.write_text(json.dumps(document, indent=1))
    return path
