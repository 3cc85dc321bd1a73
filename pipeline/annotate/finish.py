"""Finishing an annotation output (rank 0, once every rank is done): the RA-BC progress parquet, the dataset
stats, ``manifest.json`` (built by :func:`data.manifest.build_manifest`) and the plots' overview page.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from data.manifest import (
    IMAGE_HIST,
    PLOTS_DIR,
    PROGRESS_PARQUET,
    build_manifest,
    compute_stats,
    journal_episodes,
    write_manifest,
)
from data.shards import read_journal
from data.source import SourceDataset, SourceEpisode
from pipeline.annotate.episode import Plan
from pipeline.annotate.output import read_rank_results
from pipeline.progress import PROGRESS_FROM_DEBIASED, PROGRESS_FROM_RAW, PrefixScores
from pipeline.rewards.registry import RewardModel


def finish(cfg: DictConfig, src: SourceDataset, plan: Plan, reward: RewardModel, out: Path, world: int,
           all_eps: list[SourceEpisode]) -> dict:
    """Rank 0, after every rank is done: manifest, progress parquet, stats, overview page."""
    import pandas as pd

    records = [r for rank in range(world) for r in read_journal(out, rank)]
    failures = sorted((f for t in read_rank_results(out, world) for f in t["failures"]),
                      key=lambda f: f["episode_index"])
    episodes = journal_episodes(records)
    by_index = {e.index: e for e in all_eps}

    # progress parquet (lerobot RA-BC schema) and state/action stats, from what the shards hold
    rows, arrays = [], {k: [] for k in [*plan.state_keys, "action"]}
    hists = {cam: np.zeros((3, 256), dtype=np.int64) for cam in plan.cameras}
    for e in episodes:
        p = PrefixScores.from_manifest_episode(e).frame_progress().astype(np.float32)
        idx = e["index_offset"] + np.arange(e["length"])
        rows.append(pd.DataFrame({"index": idx, "episode_index": e["episode_index"],
                                  "frame_index": np.arange(e["length"]), "progress_sparse": p}))
        cols = src.read_columns(by_index[e["episode_index"]], list(arrays))
        for k in arrays:
            arrays[k].append(cols[k])
        for cam in plan.cameras:
            hists[cam] += np.asarray(e[IMAGE_HIST][cam], dtype=np.int64)
    if rows:
        df = pd.concat(rows, ignore_index=True).sort_values("index", kind="stable").reset_index(drop=True)
    else:
        df = pd.DataFrame({"index": [], "episode_index": [], "frame_index": [], "progress_sparse": []})
    df = df.astype({"index": "int64", "episode_index": "int64", "frame_index": "int64", "progress_sparse": "float32"})
    tmp = out / f".{PROGRESS_PARQUET}.tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out / PROGRESS_PARQUET)

    src_features = src.features
    features = {}
    for name in [*plan.cameras, *plan.state_keys, "action"]:
        f = src_features[name]
        features[name] = {"dtype": f["dtype"], "shape": f["shape"], "names": f.get("names")}
    provenance = {**reward.provenance, "package_version": _version("topbc"),
                  "lerobot_version": _version("lerobot")}
    used = sorted({tuple(e["resolution"]) for e in episodes if "resolution" in e})
    if used:
        provenance["resolutions_used"] = [list(r) for r in used]
    if reward.name == "column":
        provenance["sample_fps"] = src.fps
        provenance["resolution"] = list(src_features[plan.camera]["shape"][:2]) if plan.camera else None
    if plan.instructions:  # what the reward model was shown instead of the task strings
        provenance["instructions"] = dict(plan.instructions)
        tasks = {e["task"] for e in episodes}
        unused = sorted(t for t in plan.instructions if t not in tasks)
        if unused:  # a misspelt task string leaves its episodes on the dataset's own wording
            provenance["instructions_unused"] = unused
    manifest = build_manifest(
        source={"repo_id": src.repo_id, "root": str(src.root.resolve()), "fps": src.fps, "features": src_features,
                "total_episodes": src.total_episodes, "episodes": [e.index for e in all_eps]},
        reward=provenance, obs_steps=cfg.window.obs_steps, horizon=cfg.window.horizon,
        image_format=cfg.image.format, image_quality=cfg.image.quality, camera=plan.camera, cameras=plan.cameras,
        ground_truth=plan.ground_truth, features=features, stats=compute_stats(arrays, hists), records=records,
        failures=failures, world_size=world, config=OmegaConf.to_container(cfg, resolve=True),
    )
    if plan.static_control:
        manifest["control"] = {"static": True, "debias": plan.debias,
                               "progress_from": PROGRESS_FROM_DEBIASED if plan.debias else PROGRESS_FROM_RAW}
    if cfg.plots:
        from pipeline.plots import write_overview

        write_overview(out / PLOTS_DIR, manifest["episodes"], failures, src.fps)
    write_manifest(out, manifest)
    return manifest


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
