"""One episode's annotation: what to read (the run's :class:`Plan`), then three stages: reading and checking it
(:func:`read_episode`), scoring it or reusing the scores a killed run cached (:func:`score_episode`), and encoding
its shard samples with the episode's summary (:func:`encode_episode`). Each stage raises :class:`EpisodeError`
for what is the episode's own fault; :mod:`pipeline.annotate.overlap` runs the stages of successive episodes
side by side, :func:`annotate_episode` one after the other.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from configs import ConfigError, UserError
from data.manifest import IMAGE_HIST, image_histogram
from data.schema import episode_samples
from data.source import SourceDataset, SourceEpisode, SourceError
from pipeline.annotate.output import atomic_write, scores_path
from pipeline.progress import PrefixScores, voc
from pipeline.rewards.registry import EpisodeInput, RewardError, RewardModel


class EpisodeError(UserError, ValueError):
    """One episode cannot be annotated; the run records the reason and goes on with the others."""


@dataclass
class Plan:
    """What is read from every episode, fixed once for the run."""

    camera: str  # scored camera
    cameras: list[str]  # stored in the shards
    state_keys: list[str]
    ground_truth: str | None
    columns: list[str]  # all per-frame columns read
    instructions: dict[str, str] = field(default_factory=dict)  # task -> instruction (``instructions``)
    static_control: bool = False  # also score the static-video control (``control.static``)
    debias: bool = False  # progress from raw - control (``control.debias``)

    def instruction(self, task: str) -> str:
        """The instruction the reward model is shown for a dataset task string (the task when unmapped)."""
        return self.instructions.get(task, task)


def instruction_map(value) -> dict[str, str]:
    """The ``instructions`` config value as a dict, checked: null or a mapping of task strings to non-empty
    instructions."""
    if value is None:
        return {}
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, dict):
        raise ConfigError(f"instructions={value!r} must be a mapping of dataset task strings to "
                          f"instructions, e.g. "
                          f'instructions={{"Clean the table.": "clean the table by ..."}}, or null')
    bad = {k: v for k, v in value.items() if not isinstance(v, str) or not v.strip()}
    if bad:
        raise ConfigError(f"instructions maps {sorted(map(str, bad))[:3]} to {list(bad.values())[:3]}: every "
                          f"task must map to a non-empty instruction (drop a task to show it as is)")
    return {str(k): v for k, v in value.items()}


def make_plan(cfg: DictConfig, src: SourceDataset, reward: RewardModel) -> Plan:
    """The cameras, state features, ground-truth column and per-frame columns of the run (checked to exist)."""
    camera = src.camera(cfg.dataset.camera) if (reward.needs_frames or cfg.dataset.camera) else (
        src.camera_keys[0] if src.camera_keys else None)
    if cfg.dataset.cameras in (None, "all"):
        cameras = list(src.camera_keys)
    else:
        names = [cfg.dataset.cameras] if isinstance(cfg.dataset.cameras, str) else list(cfg.dataset.cameras)
        cameras = [src.camera(c) for c in names]
    available = src.numeric_columns()
    missing = [c for c in reward.columns if c not in available]
    if missing:
        raise ConfigError(f"reward column {missing[0]!r} is not in dataset {src.repo_id} ({src.root}); "
                          f"available per-frame columns: {available} (set reward.column, or "
                          f"reward.control_column, to one of them)")
    if "action" not in available:
        raise ConfigError(f"dataset {src.repo_id} has no 'action' feature; columns: {available}")
    gt = cfg.dataset.ground_truth
    if gt == "auto":
        gt = "next.reward" if "next.reward" in available else None
    elif gt and gt not in available:
        raise ConfigError(f"dataset.ground_truth={gt!r} is not a column of {src.repo_id}; available: {available}")
    state_keys = src.state_keys()
    columns = list(dict.fromkeys([*state_keys, "action", *reward.columns, *([gt] if gt else [])]))
    static, debias = bool(cfg.control.static), bool(cfg.control.debias)
    if static:
        try:
            reward.check_static()
        except RewardError as exc:
            raise ConfigError(str(exc)) from exc
    return Plan(camera=camera, cameras=cameras, state_keys=state_keys, ground_truth=gt, columns=columns,
                instructions=instruction_map(cfg.instructions), static_control=static, debias=debias)


def _check_finite(ep: SourceEpisode, name: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        frames = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))
        raise EpisodeError(f"episode {ep.index}: {name} has NaN/inf at frames {frames[:5].tolist()}"
                           f"{' ...' if len(frames) > 5 else ''} ({len(frames)} frames); fix or drop the episode")


def _load_cached_scores(path: Path, length: int, control: bool
                        ) -> tuple[PrefixScores, PrefixScores | None, dict] | None:
    """Scores (and, with ``control``, the static-video control's) of an episode scored by an earlier (killed)
    run; None when absent, unreadable or without the control this run needs."""
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
        scores = PrefixScores(prefix_ends=d["prefix_ends"], raw=d["raw"], num_frames=length,
                              extras={k: np.asarray(v) for k, v in d["extras"].items()})
        static = None
        if control:
            c = d["control"]
            static = PrefixScores(prefix_ends=c["prefix_ends"], raw=c["raw"], num_frames=length)
        return scores, static, d["info"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _cache_scores(path: Path, scores: PrefixScores, static: PrefixScores | None, info: dict) -> None:
    d = {"prefix_ends": scores.prefix_ends.tolist(), "raw": scores.raw.tolist(),
         "extras": {k: np.asarray(v).tolist() for k, v in scores.extras.items()}, "info": info}
    if static is not None:
        d["control"] = {"prefix_ends": static.prefix_ends.tolist(), "raw": static.raw.tolist()}
    atomic_write(path, json.dumps(d))


def _read_episode(ep: SourceEpisode, *, cfg: DictConfig, src: SourceDataset, plan: Plan, cameras: list[str]
                  ) -> tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The episode's task, per-frame columns (checked finite) and the frames of ``cameras``."""
    if ep.length < 2:
        raise EpisodeError(f"episode {ep.index} has {ep.length} frame(s): progress needs at least 2 frames")
    task = ep.task or cfg.dataset.task_default
    if not task:
        raise EpisodeError(f"episode {ep.index} has no task string; re-run the same command with "
                           "dataset.task_default=TEXT to use one instruction for such episodes (finished episodes "
                           "are kept)")
    try:
        cols = src.read_columns(ep, plan.columns)
        for name in [*plan.state_keys, "action"]:
            _check_finite(ep, name, cols[name])
        frames = {cam: src.decode_frames(ep, cam, cols["timestamp"]) for cam in cameras}
    except SourceError as exc:
        raise EpisodeError(str(exc)) from exc
    return task, cols, frames


def _encode(ep: SourceEpisode, *, cfg: DictConfig, src: SourceDataset, plan: Plan, task: str, cols: dict,
            frames: dict, progress: np.ndarray) -> list:
    return episode_samples(
        episode_index=ep.index, index_offset=ep.from_index, task=task, fps=src.fps,
        images={cam: frames[cam] for cam in plan.cameras},
        arrays={k: cols[k] for k in plan.state_keys},
        action=cols["action"], progress=progress.astype(np.float32),
        obs_steps=cfg.window.obs_steps, horizon=cfg.window.horizon,
        image_format=cfg.image.format, quality=cfg.image.quality,
    )


@dataclass
class DecodedEpisode:
    """The decode stage's result: what was read of one episode (:func:`read_episode`)."""

    ep: SourceEpisode
    task: str
    cols: dict[str, np.ndarray]
    frames: dict[str, np.ndarray]  # camera -> uint8 (T, H, W, 3)
    histograms: dict[str, list]  # stored camera -> per-channel value histograms (the manifest's image stats)


@dataclass
class ScoredEpisode:
    """The scoring stage's result (:func:`score_episode`): the decoded episode and the model's scores."""

    decoded: DecodedEpisode
    instruction: str
    scores: PrefixScores
    static: PrefixScores | None
    info: dict


def read_episode(ep: SourceEpisode, *, cfg: DictConfig, src: SourceDataset, plan: Plan, reward: RewardModel
                 ) -> DecodedEpisode:
    """The decode stage: read and check the episode's columns, decode the frames of the stored cameras (and of
    the scored one when the model needs frames), and histogram the stored cameras' pixels."""
    needed = list(dict.fromkeys([*plan.cameras, *([plan.camera] if reward.needs_frames else [])]))
    task, cols, frames = _read_episode(ep, cfg=cfg, src=src, plan=plan, cameras=needed)
    return DecodedEpisode(ep=ep, task=task, cols=cols, frames=frames,
                          histograms={cam: image_histogram(frames[cam]) for cam in plan.cameras})


def score_episode(decoded: DecodedEpisode, *, src: SourceDataset, plan: Plan, reward: RewardModel, out: Path
                  ) -> ScoredEpisode:
    """The scoring stage: the reward model's scores of the episode (and of its static-video control), or the
    scores an earlier (killed) run cached; fresh scores are cached before this returns."""
    ep = decoded.ep
    instruction = plan.instruction(decoded.task)
    cache = scores_path(out, ep.index)
    cached = _load_cached_scores(cache, ep.length, plan.static_control)
    if cached is None:
        episode = EpisodeInput(fps=src.fps, instruction=instruction, num_frames=ep.length,
                               episode_index=ep.index, frames=decoded.frames.get(plan.camera), columns=decoded.cols)
        try:
            scores = reward.score(episode)
            static = reward.score_static(episode) if plan.static_control else None
        except Exception as exc:  # noqa: BLE001 - one episode the model cannot score must not stop the others
            raise EpisodeError(f"episode {ep.index}: scoring failed: {type(exc).__name__}: {exc}") from exc
        info = reward.episode_info(scores)
        _cache_scores(cache, scores, static, info)
    else:
        scores, static, info = cached
    return ScoredEpisode(decoded=decoded, instruction=instruction, scores=scores, static=static, info=info)


def encode_episode(scored: ScoredEpisode, *, cfg: DictConfig, src: SourceDataset, plan: Plan
                   ) -> tuple[list, dict, np.ndarray | None]:
    """The encode stage: progress, the episode's summary and its shard samples, all encoded (a list, so an
    error here leaves nothing half-written): returns (samples, summary, ground truth column). Any error is
    the episode's own (:class:`EpisodeError`)."""
    try:
        return _encode_scored(scored, cfg=cfg, src=src, plan=plan)
    except EpisodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - an image or array this episode cannot encode stops it alone
        raise EpisodeError(f"episode {scored.decoded.ep.index}: encoding failed: {type(exc).__name__}: "
                           f"{exc}") from exc


def _encode_scored(scored: ScoredEpisode, *, cfg: DictConfig, src: SourceDataset, plan: Plan
                   ) -> tuple[list, dict, np.ndarray | None]:
    d = scored.decoded
    ep, scores, static, cols = d.ep, scored.scores, scored.static, d.cols
    if scores.num_frames != ep.length:
        raise EpisodeError(f"episode {ep.index}: the reward scored {scores.num_frames} frames, not {ep.length}")
    try:
        if static is not None:
            scores = scores.with_control(static, plan.debias)
        progress = scores.frame_progress()
    except ValueError as exc:
        raise EpisodeError(f"episode {ep.index}: {exc}") from exc
    gt = cols[plan.ground_truth][:, 0] if plan.ground_truth else None
    summary = {
        "episode_index": ep.index,
        "length": ep.length,
        "task": d.task,
        **({"instruction": scored.instruction} if plan.instructions else {}),  # only with a map: else the task
        "index_offset": ep.from_index,
        "success_score": scores.success_score,
        "voc": voc(progress),
        "voc_ground_truth": voc(progress, gt) if gt is not None else None,
        "final_progress": float(progress[-1]),
        "raw_scores": scores.raw.tolist(),
        "prefix_ends": scores.prefix_ends.tolist(),
        "missing_prefixes": int(np.isnan(scores.raw).sum()),
        **{k: np.asarray(v).tolist() for k, v in scores.extras.items()},
        **scored.info,
        # only with the control, so outputs without it read as before
        **({"control_raw_scores": scores.control.tolist(), "control_prefix_ends": scores.prefix_ends.tolist(),
            "progress_from": scores.progress_from} if static is not None else {}),
        IMAGE_HIST: {cam: d.histograms[cam] for cam in plan.cameras},
    }
    samples = list(_encode(ep, cfg=cfg, src=src, plan=plan, task=d.task, cols=cols, frames=d.frames,
                           progress=progress))
    return samples, summary, gt


def annotate_episode(ep: SourceEpisode, *, cfg: DictConfig, src: SourceDataset, plan: Plan, reward: RewardModel,
                     out: Path) -> tuple[list, dict, np.ndarray | None]:
    """Read, score and encode one episode (the three stages in a row): returns (samples, summary, ground
    truth column)."""
    decoded = read_episode(ep, cfg=cfg, src=src, plan=plan, reward=reward)
    scored = score_episode(decoded, src=src, plan=plan, reward=reward, out=out)
    return encode_episode(scored, cfg=cfg, src=src, plan=plan)


def reencode_episode(ep: SourceEpisode, *, cfg: DictConfig, src: SourceDataset, plan: Plan, summary: dict
                     ) -> list:
    """The shard samples of an episode annotated before, from its journaled ``summary`` (its scores, so the
    reward model is not run again): what repairs a damaged shard, equal to the samples first written."""
    if summary["length"] != ep.length:
        raise EpisodeError(f"episode {ep.index} has {ep.length} frames in the dataset but {summary['length']} "
                           f"in the journal: the dataset changed since the annotation; set overwrite=true to "
                           f"annotate it again")
    task, cols, frames = _read_episode(ep, cfg=cfg, src=src, plan=plan, cameras=plan.cameras)
    try:
        progress = PrefixScores.from_manifest_episode(summary).frame_progress()
    except ValueError as exc:
        raise EpisodeError(f"episode {ep.index}: {exc}") from exc
    return _encode(ep, cfg=cfg, src=src, plan=plan, task=summary["task"], cols=cols, frames=frames,
                   progress=progress)


def import_plots() -> None:
    """Import what :func:`plot_episode` draws with (a plotting worker process does it before its first plot)."""
    import matplotlib.backends.backend_agg  # noqa: F401

    import pipeline.plots  # noqa: F401


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
