"""``manifest.json`` beside the shards: what the trainer and the reports read (the single definition).

Layout (keys the code relies on)::

    {
      "schema_version": 1,
      "source": {"repo_id", "root", "fps", "features": {lerobot feature dict}, "total_episodes", "episodes": [...]},
      "reward": {"type", "model", "revision", "prompt", "sample_fps", "resolution", "package_version", ...},
      "window": {"obs_steps", "horizon"},
      "image": {"format", "quality"},
      "camera": "observation.images.<name>",
      "features": {name: {"dtype", "shape", "names"}}   # the features stored in the shards
      "stats": {name: {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}},
      "episodes": [{"episode_index", "length", "task", "index_offset", "success_score", "voc",
                    "final_progress", "raw_scores", "prefix_ends", "shard", ...}],
      "shards": [{"name": "shards/xxx.tar", "count", "episodes": [...]}],
      "failures": [{"episode_index", "reason"}],
    }

Also written by ``pipeline.annotate`` (informative): ``cameras`` (every camera stored in the shards),
``ground_truth`` (the per-frame column used for ``voc_ground_truth``, or null), ``totals`` (episodes_ok,
episodes_failed, samples, world_size), ``config`` (the resolved annotate config); per episode also
``voc_ground_truth``, ``missing_prefixes``, ``count`` (samples), and reward extras (TOPReward: ``logp_false``,
``resolution``, ``tokens``, ``sampled_indices``); in ``reward`` also ``resolutions_used`` and
``lerobot_version``.

Stats fields are lerobot's ``meta/stats.json`` fields (lists of floats per dimension; images per channel
with shape (3, 1, 1)), so :func:`lerobot_stats` hands them straight to ``make_pre_post_processors``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
PROGRESS_PARQUET = "progress.parquet"
SHARDS_DIR = "shards"
PLOTS_DIR = "plots"
STATS_FIELDS = ("min", "max", "mean", "std", "q01", "q10", "q50", "q90", "q99")


class ManifestError(FileNotFoundError):
    """The annotation output folder or its manifest is missing or unreadable."""


def load_manifest(out_dir: str | Path) -> dict:
    out = Path(out_dir)
    if not out.is_dir():
        raise ManifestError(f"shards folder {out} does not exist; run `python -m pipeline.annotate ... out={out}` first")
    path = out / MANIFEST
    if not path.exists():
        raise ManifestError(
            f"{path} is missing: {out} is not a finished annotation output (re-run pipeline.annotate to finish it)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); re-run pipeline.annotate to rewrite it") from exc


def shard_paths(out_dir: str | Path, manifest: dict | None = None) -> list[Path]:
    """Absolute paths of the shards the manifest lists, each checked to exist."""
    out = Path(out_dir)
    manifest = manifest if manifest is not None else load_manifest(out)
    paths = [out / s["name"] for s in manifest["shards"]]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ManifestError(f"shards listed in {out / MANIFEST} are missing: {missing[:5]}")
    return paths


def lerobot_stats(manifest: dict) -> dict[str, dict[str, np.ndarray]]:
    """Manifest stats as lerobot's ``dataset_stats`` (numpy arrays per field)."""
    return {
        feature: {k: np.asarray(v, dtype=np.float32) for k, v in fields.items() if k in (*STATS_FIELDS, "count")}
        for feature, fields in manifest["stats"].items()
    }
