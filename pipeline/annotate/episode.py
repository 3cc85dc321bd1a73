"""One episode's annotation: what to read (the run's :class:`Plan`), reading and checking it, scoring it (or
reusing the scores a killed run cached), and encoding its shard samples with the episode's summary.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from configs import ConfigError
from data.manifest import IMAGE_HIST, image_histogram
from data.schema import episode_samples
from data.source import SourceDataset, SourceEpisode, SourceError
from pipeline.annotate.output import atomic_write, scores_path
from pipeline.progress import PrefixScores, voc
from pipeline.rewards.registry import EpisodeInput, RewardModel


class EpisodeError(ValueError):
    """One episode cannot be annotated; the run records the reason and goes on with the others."""


@dataclass
class Plan:
    """What is read from every episode, fixed once for the run."""

    camera: str  # scored camera
    cameras: list[str]  # stored in the shards
    state_keys: list[str]
    ground_truth: str | None
    columns: list[str]  # all per-frame columns read


def make_plan(cfg: DictConfig, src: SourceDataset, reward: RewardModel) -> Plan:
    """The cameras, state features, ground-truth column and per-frame columns of the run (checked to exist)."""
    camera = src.camera(cfg.dataset.camera) if (reward.needs_frames or cfg.dataset.camera) else (
        src.video_keys[0] if src.video_keys else None)
    if cfg.dataset.cameras in (None, "all"):
        cameras = list(src.video_keys)
    else:
        names = [cfg.dataset.cameras] if isinstance(cfg.dataset.cameras, str) else list(cfg.dataset.cameras)
        cameras = [src.camera(c) for c in names]
    available = src.numeric_columns()
    missing = [c for c in reward.columns if c not in available]
    if missing:
        raise ConfigError(f"reward column {missing[0]!r} is not in dataset {src.repo_id} ({src.root}); "
                          f"available per-frame columns: {available} (set reward.column to one of them)")
    if "action" not in available:
        raise ConfigError(f"dataset {src.repo_id} has no 'action' feature; columns: {available}")
    gt = cfg.dataset.ground_truth
    if gt == "auto":
        gt = "next.reward" if "next.reward" in available else None
    elif gt and gt not in available:
        raise ConfigError(f"dataset.ground_truth={gt!r} is not a column of {src.repo_id}; available: {available}")
    state_keys = src.state_keys()
    columns = list(dict.fromkeys([*state_keys, "action", *reward.columns, *([gt] if gt else [])]))
    return Plan(camera=camera, cameras=cameras, state_keys=state_keys, ground_truth=gt, columns=columns)


def _check_finite(ep: SourceEpisode, name: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        frames = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))
        raise EpisodeError(f"episode {ep.index}: {name} has NaN/inf at frames {frames[:5].tolist()}"
                           f"{' ...' if len(frames) > 5 else ''} ({len(frames)} frames); fix or drop the episode")


def _load_cached_scores(path: Path, length: int) -> tuple[PrefixScores, dict] | None:
    """Scores of an episode scored by an earlier (killed) run; None when absent or unreadable."""
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
        scores = PrefixScores(prefix_ends=d["prefix_ends"], raw=d["raw"], num_frames=length,
                              extras={k: np.asarray(v) for k, v in d["extras"].items()})
        return scores, d["info"]
    except (json.JSONDecodeError, KeyError, ValueError):
        return None


def _cache_scores(path: Path, scores: PrefixScores, info: dict) -> None:
    atomic_write(path, json.dumps({"prefix_ends": scores.prefix_ends.tolist(), "raw": scores.raw.tolist(),
                                   "extras": {k: np.asarray(v).tolist() for k, v in scores.extras.items()},
                                   "info": info}))


def annotate_episode(ep: SourceEpisode, *, cfg: DictConfig, src: SourceDataset, plan: Plan, reward: RewardModel,
                     out: Path) -> tuple[list, dict, np.ndarray | None]:
    """Read, score and encode one episode: returns (samples, summary, ground truth column)."""
    if ep.length < 2:
        raise EpisodeError(f"episode {ep.index} has {ep.length} frame(s): progress needs at least 2 frames")
    task = ep.task or cfg.dataset.task_default
    if not task:
        raise EpisodeError(f"episode {ep.index} has no task string; set dataset.task_default=TEXT to use one "
                           f"instruction for such episodes")
    try:
        cols = src.read_columns(ep, plan.columns)
        for name in [*plan.state_keys, "action"]:
            _check_finite(ep, name, cols[name])
        needed = list(dict.fromkeys([*plan.cameras, *([plan.camera] if reward.needs_frames else [])]))
        frames = {cam: src.decode_frames(ep, cam, cols["timestamp"]) for cam in needed}
    except SourceError as exc:
        raise EpisodeError(str(exc)) from exc

    cache = scores_path(out, ep.index)
    cached = _load_cached_scores(cache, ep.length)
    if cached is None:
        try:
            scores = reward.score(EpisodeInput(fps=src.fps, instruction=task, num_frames=ep.length,
                                               episode_index=ep.index, frames=frames.get(plan.camera),
                                               columns=cols))
        except Exception as exc:  # noqa: BLE001 - one episode the model cannot score must not stop the others
            raise EpisodeError(f"episode {ep.index}: scoring failed: {type(exc).__name__}: {exc}") from exc
        info = reward.episode_info(scores)
        _cache_scores(cache, scores, info)
    else:
        scores, info = cached
    if scores.num_frames != ep.length:
        raise EpisodeError(f"episode {ep.index}: the reward scored {scores.num_frames} frames, not {ep.length}")
    try:
        progress = scores.frame_progress()
    except ValueError as exc:
        raise EpisodeError(f"episode {ep.index}: {exc}") from exc
    gt = cols[plan.ground_truth][:, 0] if plan.ground_truth else None
    summary = {
        "episode_index": ep.index,
        "length": ep.length,
        "task": task,
        "index_offset": ep.from_index,
        "success_score": scores.success_score,
        "voc": voc(progress),
        "voc_ground_truth": voc(progress, gt) if gt is not None else None,
        "final_progress": float(progress[-1]),
        "raw_scores": scores.raw.tolist(),
        "prefix_ends": scores.prefix_ends.tolist(),
        "missing_prefixes": int(np.isnan(scores.raw).sum()),
        **{k: np.asarray(v).tolist() for k, v in scores.extras.items()},
        **info,
        IMAGE_HIST: {cam: image_histogram(frames[cam]) for cam in plan.cameras},
    }
    samples = episode_samples(
        episode_index=ep.index, index_offset=ep.from_index, task=task, fps=src.fps,
        images={cam: frames[cam] for cam in plan.cameras},
        arrays={k: cols[k] for k in plan.state_keys},
        action=cols["action"], progress=progress.astype(np.float32),
        obs_steps=cfg.window.obs_steps, horizon=cfg.window.horizon,
        image_format=cfg.image.format, quality=cfg.image.quality,
    )
    return samples, summary, gt


def plot_episode(plots_dir: Path, summary: dict, fps: float, gt: np.ndarray | None, gt_name: str | None) -> None:
    """The episode's progress plot (``plots/``), written atomically."""
    from pipeline.plots import episode_png_name
    from pipeline.plots import plot_episode as draw

    progress = PrefixScores.from_manifest_episode(summary).frame_progress()
    path = plots_dir / episode_png_name(summary["episode_index"])
    tmp = path.with_name("." + path.name)
    draw(tmp, episode_index=summary["episode_index"], fps=fps, progress=progress,
         prefix_ends=np.asarray(summary["prefix_ends"]), raw=np.asarray(summary["raw_scores"]),
         ground_truth=gt, ground_truth_name=gt_name or "", task=summary["task"], voc=summary["voc"],
         success_score=summary["success_score"])
    os.replace(tmp, path)
