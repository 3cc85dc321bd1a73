"""Annotate a LeRobot dataset with per-frame progress and write WebDataset shards.

    python -m pipeline.annotate dataset.root=DIR reward=column reward.column=next.reward out=OUT
    python -m pipeline.annotate dataset.repo_id=ID reward=topreward reward.model=Qwen/Qwen3-VL-8B-Instruct out=OUT
    python -m pipeline.annotate ... devices=2          # two processes, each scores its share of episodes

Configuration: ``configs/annotate.yaml`` (+ ``configs/reward/*.yaml``). Output in ``out``: ``shards/*.tar``
(``data.schema``), ``manifest.json`` (``data.manifest``), ``progress.parquet`` (lerobot's RA-BC schema),
``plots/`` (a PNG per episode, ``index.html``), ``config.yaml``, and the resume bookkeeping (``run.json``,
``journal/``).

The unit of work is an episode; rank r of W takes episodes ``sorted[r::W]`` and writes its own shards (on
several nodes ``out`` must be a shared file system). An episode that cannot be read or
scored is recorded with its reason and skipped; the command then exits with status 1 and names it. A killed
run re-run with the same command continues where it stopped (``data.shards``); ``overwrite=true`` starts
over; an output folder of a different run is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from configs import ConfigError, parse_cli, save_config
from data.manifest import MANIFEST, PLOTS_DIR, PROGRESS_PARQUET, SHARDS_DIR, STATS_FIELDS
from data.schema import IMAGE_FORMATS, SCHEMA_VERSION, episode_samples
from data.shards import JOURNAL_DIR, ShardWriter, read_journal
from data.source import Episode, SourceDataset, SourceError, open_dataset
from pipeline.progress import PrefixScores, voc
from pipeline.rewards.registry import EpisodeInput, RewardModel, build_reward

RUN_FILE = "run.json"
SCORES_DIR = "scores"
QUANTILES = {f: int(f[1:]) / 100 for f in STATS_FIELDS if f.startswith("q")}  # q01 -> 0.01, ...
# keys that change nothing in the output: a re-run may differ in them and still resume
_NOT_FINGERPRINTED = ("overwrite", "progress_bar", "out")


class EpisodeError(ValueError):
    """One episode cannot be annotated; the run records the reason and goes on with the others."""


class OutputError(ConfigError):
    """The output folder holds something this run must not mix with."""


@dataclass
class AnnotateResult:
    """What one invocation did (episodes it annotated or failed); the manifest holds the whole output."""

    out: Path
    episodes_ok: list[int] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    skipped: int = 0  # episodes already done by an earlier run
    manifest: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


# ------------------------------------------------------------------------------------------------ config
def _check_config(cfg: DictConfig) -> None:
    if not cfg.out:
        raise ConfigError("no output folder: set out=DIR")
    if not cfg.dataset.root and not cfg.dataset.repo_id:
        raise ConfigError("no dataset: set dataset.root=DIR (local LeRobot v3 dataset) or dataset.repo_id=ID")
    for key in ("horizon", "obs_steps"):
        v = cfg.window[key]
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"window.{key}={v!r} must be an integer >= 1")
    if cfg.image.format not in IMAGE_FORMATS:
        raise ConfigError(f"image.format={cfg.image.format!r} must be one of {IMAGE_FORMATS}")
    if not (isinstance(cfg.image.quality, int) and 1 <= cfg.image.quality <= 100):
        raise ConfigError(f"image.quality={cfg.image.quality!r} must be an integer in 1..100")
    for key in ("max_count", "max_bytes"):
        v = cfg.shards[key]
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"shards.{key}={v!r} must be a positive integer")
    for key in ("devices", "num_nodes"):
        v = cfg[key]
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{key}={v!r} must be a positive integer")


def _fingerprint(cfg: DictConfig, src: SourceDataset, world_size: int) -> dict:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for k in _NOT_FINGERPRINTED:
        resolved.pop(k, None)
    identity = {
        "config": resolved,
        "source": {"root": str(src.root.resolve()), "repo_id": src.repo_id, "total_episodes": src.total_episodes,
                   "total_frames": int(src.meta.total_frames)},
        "world_size": world_size,
        "schema_version": SCHEMA_VERSION,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"fingerprint": digest, **identity}


_OUR_ENTRIES = (SHARDS_DIR, JOURNAL_DIR, PLOTS_DIR, MANIFEST, PROGRESS_PARQUET, RUN_FILE, "config.yaml")


def _inspect_output(out: Path, run: dict, overwrite: bool) -> None:
    """Refuse an output folder that holds a different run (or foreign files) unless ``overwrite``."""
    if overwrite or not out.exists():
        return
    entries = [p.name for p in out.iterdir()]
    if not entries:
        return
    run_file = out / RUN_FILE
    if not run_file.exists():
        raise OutputError(f"out={out} is not empty ({sorted(entries)[:5]}) and holds no annotation run; "
                          f"choose another folder or set overwrite=true to delete our outputs there")
    try:
        previous = json.loads(run_file.read_text())
    except json.JSONDecodeError:
        previous = {}
    if previous.get("fingerprint") != run["fingerprint"]:
        diff = _diff(previous.get("config", {}), run["config"])
        if previous.get("source") != run["source"]:
            diff.append(f"source {previous.get('source')} -> {run['source']}")
        if previous.get("world_size") != run["world_size"]:
            diff.append(f"world size {previous.get('world_size')} -> {run['world_size']}")
        raise OutputError(
            f"out={out} holds the output of a different run ({'; '.join(diff[:5]) or 'different settings'}); "
            f"use another folder, or set overwrite=true to delete it and start over"
        )


def _diff(a, b, prefix: str = "") -> list[str]:
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
    elif a != b:
        out.append(f"{prefix[:-1]}: {a!r} -> {b!r}")
    return out


def _prepare_output(out: Path, run: dict, overwrite: bool) -> None:
    if overwrite and out.exists():
        for name in _OUR_ENTRIES:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / RUN_FILE).exists():  # first, so a folder of ours is never without it
        _atomic_write(out / RUN_FILE, json.dumps(run, indent=1, default=str))
    (out / JOURNAL_DIR / SCORES_DIR).mkdir(parents=True, exist_ok=True)


def _atomic_write(path: Path, text: str | bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    if isinstance(text, bytes):
        tmp.write_bytes(text)
    else:
        tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ episodes
@dataclass
class Plan:
    """What is read from every episode, fixed once for the run."""

    camera: str  # scored camera
    cameras: list[str]  # stored in the shards
    state_keys: list[str]
    ground_truth: str | None
    columns: list[str]  # all per-frame columns read


def _plan(cfg: DictConfig, src: SourceDataset, reward: RewardModel) -> Plan:
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


def _check_finite(ep: Episode, name: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        frames = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))
        raise EpisodeError(f"episode {ep.index}: {name} has NaN/inf at frames {frames[:5].tolist()}"
                           f"{' ...' if len(frames) > 5 else ''} ({len(frames)} frames); fix or drop the episode")


def _channel_histograms(frames: np.ndarray) -> list[list[int]]:
    # one pass over contiguous memory: channel c's value v counts in bin 256*c + v
    codes = frames.reshape(-1, 3).astype(np.uint16) + np.array([0, 256, 512], dtype=np.uint16)
    return np.bincount(codes.ravel(), minlength=768).reshape(3, 256).tolist()


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


def annotate_episode(ep: Episode, *, cfg: DictConfig, src: SourceDataset, plan: Plan, reward: RewardModel,
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

    cache = out / JOURNAL_DIR / SCORES_DIR / f"e{ep.index:06d}.json"
    cached = _load_cached_scores(cache, ep.length)
    if cached is None:
        try:
            scores = reward.score(EpisodeInput(fps=src.fps, instruction=task, num_frames=ep.length,
                                               episode_index=ep.index, frames=frames.get(plan.camera),
                                               columns=cols))
        except Exception as exc:  # noqa: BLE001 - one episode the model cannot score must not stop the others
            raise EpisodeError(f"episode {ep.index}: scoring failed: {type(exc).__name__}: {exc}") from exc
        info = reward.episode_info(scores)
        _atomic_write(cache, json.dumps({"prefix_ends": scores.prefix_ends.tolist(), "raw": scores.raw.tolist(),
                                         "extras": {k: np.asarray(v).tolist() for k, v in scores.extras.items()},
                                         "info": info}))
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
        "image_hist": {cam: _channel_histograms(frames[cam]) for cam in plan.cameras},
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


# ------------------------------------------------------------------------------------------------ stats
def array_stats(values: np.ndarray) -> dict[str, list]:
    """lerobot's stats fields of an (N, D) array, per dimension."""
    v = np.asarray(values, dtype=np.float64)
    stats = {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0),
             **{k: np.quantile(v, q, axis=0) for k, q in QUANTILES.items()}}
    out = {k: np.asarray(s).tolist() for k, s in stats.items()}
    out["count"] = [int(len(v))]
    return out


def histogram_stats(hists: np.ndarray) -> dict[str, list]:
    """Per-channel image stats from (3, 256) uint8 value histograms, in lerobot's [0, 1] scale, shape (3,1,1)."""
    h = np.asarray(hists, dtype=np.float64)
    levels = np.arange(256) / 255.0
    count = h.sum(1)
    mean = (h * levels).sum(1) / count
    std = np.sqrt(np.maximum((h * levels**2).sum(1) / count - mean**2, 0))
    nz = h > 0
    mins = np.array([levels[np.flatnonzero(r)[0]] for r in nz])
    maxs = np.array([levels[np.flatnonzero(r)[-1]] for r in nz])
    cdf = np.cumsum(h, 1) / count[:, None]
    stats = {"min": mins, "max": maxs, "mean": mean, "std": std,
             **{k: np.array([levels[np.searchsorted(c, q)] for c in cdf]) for k, q in QUANTILES.items()}}
    out = {k: v.reshape(3, 1, 1).tolist() for k, v in stats.items()}
    out["count"] = [int(count[0])]
    return out


# ------------------------------------------------------------------------------------------------ run
def _fabric(cfg: DictConfig):
    from lightning_fabric import Fabric

    return Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=cfg.strategy)


def annotate(cfg: DictConfig, fabric=None) -> AnnotateResult:
    """Run the annotation described by ``cfg`` (see ``configs/annotate.yaml``) on this process's rank.

    Without ``fabric`` a single-process Fabric is made. Returns, on every rank, the run's result (rank 0's
    includes the manifest).
    """
    _check_config(cfg)
    if fabric is None:
        if cfg.devices * cfg.num_nodes > 1 and "LOCAL_RANK" not in os.environ:
            raise ConfigError(f"devices={cfg.devices}, num_nodes={cfg.num_nodes}: several processes are started "
                              f"by the command line (python -m pipeline.annotate ...) or a launcher such as "
                              f"torchrun; call annotate(cfg) in-process with devices=1, or pass a launched Fabric")
        fabric = _fabric(cfg)
        fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size
    if world > 1 and fabric.device.type == "cpu":
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, fabric.world_size // cfg.num_nodes)))
    out = Path(cfg.out)
    t_start = time.perf_counter()

    src = open_dataset(cfg.dataset.root, cfg.dataset.repo_id, video_backend=cfg.dataset.video_backend)
    run = _fingerprint(cfg, src, world)
    _inspect_output(out, run, bool(cfg.overwrite))
    fabric.barrier()
    if rank == 0:
        _prepare_output(out, run, bool(cfg.overwrite))
        save_config(cfg, out)
    fabric.barrier()

    device = str(fabric.device)
    reward = build_reward(cfg.reward, device=device)
    plan = _plan(cfg, src, reward)
    selection = None if cfg.dataset.episodes is None else [int(i) for i in (
        cfg.dataset.episodes if isinstance(cfg.dataset.episodes, ListConfig) else [cfg.dataset.episodes])]
    try:
        all_eps = src.episodes(selection)
    except SourceError as exc:
        raise ConfigError(str(exc)) from exc
    mine = all_eps[rank::world]

    result = AnnotateResult(out=out)
    plots_dir = out / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    with ShardWriter(out, rank=rank, max_count=cfg.shards.max_count, max_bytes=cfg.shards.max_bytes) as writer:
        done = writer.done_episodes
        todo = [e for e in mine if e.index not in done]
        result.skipped = len(mine) - len(todo)
        bar = _progress_bar(cfg, rank, world, len(mine), result.skipped)
        t_loop = time.perf_counter()
        for ep in todo:
            try:
                samples, summary, gt = annotate_episode(ep, cfg=cfg, src=src, plan=plan, reward=reward, out=out)
                writer.write_episode(samples, summary)
            except EpisodeError as exc:
                result.failures.append({"episode_index": ep.index, "reason": str(exc)})
            else:
                result.episodes_ok.append(ep.index)
                result.frames += ep.length
                if cfg.plots:
                    _plot(plots_dir, summary, src.fps, gt, plan.ground_truth)
            if bar is not None:
                elapsed = time.perf_counter() - t_loop
                bar.set_postfix_str(f"{result.frames / max(elapsed, 1e-9):.0f} frames/s, "
                                    f"{len(result.failures)} failed", refresh=False)
                bar.update(1)
        if bar is not None:
            bar.close()
    result.model_seconds = reward.model_seconds
    _atomic_write(out / JOURNAL_DIR / f"rank{rank:03d}.result.json", json.dumps({
        "failures": result.failures, "frames": result.frames, "model_seconds": result.model_seconds,
        "seconds": time.perf_counter() - t_start, "episodes_ok": result.episodes_ok}))
    fabric.barrier()
    if rank == 0:
        result.manifest = _finish(cfg, src, plan, reward, out, world, all_eps)
    fabric.barrier()
    # every rank reports the whole run
    totals = [json.loads((out / JOURNAL_DIR / f"rank{r:03d}.result.json").read_text()) for r in range(world)]
    result.failures = sorted((f for t in totals for f in t["failures"]), key=lambda f: f["episode_index"])
    result.frames = sum(t["frames"] for t in totals)
    result.model_seconds = sum(t["model_seconds"] for t in totals)
    result.episodes_ok = sorted(i for t in totals for i in t["episodes_ok"])
    result.seconds = time.perf_counter() - t_start
    return result


def _progress_bar(cfg, rank: int, world: int, total: int, initial: int):
    if not cfg.progress_bar or rank != 0:
        return None
    from tqdm import tqdm

    desc = "annotate" if world == 1 else f"annotate (rank 0 of {world})"
    return tqdm(total=total, initial=initial, desc=desc, unit="ep", dynamic_ncols=True, file=sys.stderr)


def _plot(plots_dir: Path, summary: dict, fps: float, gt, gt_name) -> None:
    from pipeline.plots import episode_png_name, plot_episode

    progress = PrefixScores(summary["prefix_ends"], summary["raw_scores"], summary["length"]).frame_progress()
    path = plots_dir / episode_png_name(summary["episode_index"])
    tmp = path.with_name("." + path.name)
    plot_episode(tmp, episode_index=summary["episode_index"], fps=fps, progress=progress,
                 prefix_ends=np.asarray(summary["prefix_ends"]), raw=np.asarray(summary["raw_scores"]),
                 ground_truth=gt, ground_truth_name=gt_name or "", task=summary["task"], voc=summary["voc"],
                 success_score=summary["success_score"])
    os.replace(tmp, path)


def _finish(cfg: DictConfig, src: SourceDataset, plan: Plan, reward: RewardModel, out: Path, world: int,
            all_eps: list[Episode]) -> dict:
    """Rank 0, after every rank is done: manifest, progress parquet, stats, overview page."""
    import pandas as pd

    records = [r for rank in range(world) for r in read_journal(out, rank)]
    failures = []
    for rank in range(world):
        failures += json.loads((out / JOURNAL_DIR / f"rank{rank:03d}.result.json").read_text())["failures"]
    failures.sort(key=lambda f: f["episode_index"])
    episodes = sorted((e for r in records for e in r["episodes"]), key=lambda e: e["episode_index"])
    by_index = {e.index: e for e in all_eps}

    # progress parquet (lerobot RA-BC schema) and state/action stats, from what the shards hold
    rows, arrays = [], {k: [] for k in [*plan.state_keys, "action"]}
    hists = {cam: np.zeros((3, 256), dtype=np.int64) for cam in plan.cameras}
    for e in episodes:
        p = PrefixScores(e["prefix_ends"], e["raw_scores"], e["length"]).frame_progress().astype(np.float32)
        idx = e["index_offset"] + np.arange(e["length"])
        rows.append(pd.DataFrame({"index": idx, "episode_index": e["episode_index"],
                                  "frame_index": np.arange(e["length"]), "progress_sparse": p}))
        cols = src.read_columns(by_index[e["episode_index"]], list(arrays))
        for k in arrays:
            arrays[k].append(cols[k])
        for cam in plan.cameras:
            hists[cam] += np.asarray(e["image_hist"][cam], dtype=np.int64)
    if rows:
        df = pd.concat(rows, ignore_index=True).sort_values("index", kind="stable").reset_index(drop=True)
    else:
        df = pd.DataFrame({"index": [], "episode_index": [], "frame_index": [], "progress_sparse": []})
    df = df.astype({"index": "int64", "episode_index": "int64", "frame_index": "int64", "progress_sparse": "float32"})
    tmp = out / f".{PROGRESS_PARQUET}.tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out / PROGRESS_PARQUET)

    stats = {k: array_stats(np.concatenate(v)) for k, v in arrays.items() if v}
    stats.update({cam: histogram_stats(h) for cam, h in hists.items() if h.sum() > 0})

    features = {}
    src_features = src.features
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
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "source": {"repo_id": src.repo_id, "root": str(src.root.resolve()), "fps": src.fps,
                   "features": src_features, "total_episodes": src.total_episodes,
                   "episodes": [e.index for e in all_eps]},
        "reward": provenance,
        "window": {"obs_steps": int(cfg.window.obs_steps), "horizon": int(cfg.window.horizon)},
        "image": {"format": cfg.image.format, "quality": int(cfg.image.quality)},
        "camera": plan.camera,
        "cameras": plan.cameras,
        "ground_truth": plan.ground_truth,
        "features": features,
        "stats": stats,
        "episodes": [{k: v for k, v in e.items() if k != "image_hist"} for e in episodes],
        "shards": sorted(({"name": r["name"], "count": r["count"],
                           "episodes": [e["episode_index"] for e in r["episodes"]]} for r in records),
                         key=lambda s: s["name"]),
        "failures": failures,
        "totals": {"episodes_ok": len(episodes), "episodes_failed": len(failures),
                   "samples": int(sum(r["count"] for r in records)), "world_size": world},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if cfg.plots:
        from pipeline.plots import write_overview

        write_overview(out / PLOTS_DIR, manifest["episodes"], failures, src.fps)
    _atomic_write(out / MANIFEST, json.dumps(manifest, indent=1, default=_json_default))
    return manifest


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ------------------------------------------------------------------------------------------------ CLI
def summary_text(result: AnnotateResult) -> str:
    lines = [
        f"annotated {len(result.episodes_ok)} episodes ({result.frames} frames) in {result.seconds:.1f} s "
        f"({result.frames / max(result.seconds, 1e-9):.0f} frames/s; {result.skipped} done earlier), "
        f"{len(result.failures)} failed",
        f"output: {result.out.resolve()} (manifest.json, progress.parquet, shards/, plots/index.html)",
    ]
    if result.failures:
        lines.append("failed episodes: " + ", ".join(str(f["episode_index"]) for f in result.failures))
        lines += [f"  episode {f['episode_index']}: {f['reason']}" for f in result.failures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_cli("annotate", argv)
        _check_config(cfg)
        fabric = _fabric(cfg)
        fabric.launch()
        result = annotate(cfg, fabric)
    except (ConfigError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if fabric.global_rank == 0:
        print(summary_text(result), file=sys.stderr if result.failures else sys.stdout)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
