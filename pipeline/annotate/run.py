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
over; an output folder of a different run is refused. Every run on an existing output first checks its
shards against the journal (sha256, count) and writes a damaged or missing one again from the journaled
scores, byte for byte (the summary says ``repaired ...``).

The stages: :mod:`pipeline.annotate.output` claims the output folder, :mod:`pipeline.annotate.episode` annotates
one episode (decode, score, encode), :mod:`pipeline.annotate.overlap` runs those three over the episodes so that
decoding the next episodes and encoding/writing the previous ones overlap with the reward model
(``pipeline.overlap``, ``pipeline.prefetch``; the output is the same either way), :mod:`pipeline.annotate.finish`
writes the manifest and the progress parquet; this module runs them.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from configs import ConfigError, parse_cli, save_config
from configs.commands import run_command
from configs.outputs import OutputError
from data.manifest import PLOTS_DIR
from data.schema import IMAGE_FORMATS
from data.shards import ShardWriter
from data.source import SourceError, open_dataset
from pipeline.annotate.episode import (
    EpisodeError,
    encode_episode,
    import_plots,
    instruction_map,
    make_plan,
    plot_episode,
    read_episode,
    reencode_episode,
    score_episode,
)
from pipeline.annotate.finish import finish
from pipeline.annotate.output import (
    fingerprint,
    inspect_output,
    prepare_output,
    read_rank_results,
    write_rank_result,
)
from pipeline.annotate.overlap import SideProcess, run_stages
from pipeline.rewards.registry import RewardModel, build_reward

__all__ = ["RESUME_HINT", "AnnotateResult", "OutputError", "annotate", "main", "summary_text"]
# what Ctrl-C prints: shards are committed whole, so an interrupted run loses at most the episodes in progress
RESUME_HINT = "interrupted; re-run the same command to resume (finished episodes are kept)"


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
    repaired: list[dict] = field(default_factory=list)  # damaged shards written again: name, reason, episodes
    manifest: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


# ------------------------------------------------------------------------------------------------ run
def _check_config(cfg: DictConfig) -> None:
    from configs.types import check_types

    check_types(cfg, "annotate")  # typed values, the one check every command shares
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
    for key in ("static", "debias"):
        if not isinstance(cfg.control[key], bool):
            raise ConfigError(f"control.{key}={cfg.control[key]!r} must be true or false")
    if not isinstance(cfg.pipeline.overlap, bool):
        raise ConfigError(f"pipeline.overlap={cfg.pipeline.overlap!r} must be true or false")
    prefetch = cfg.pipeline.prefetch
    if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 1:
        raise ConfigError(f"pipeline.prefetch={prefetch!r} must be an integer >= 1 (episodes decoded ahead of "
                          f"the reward model)")
    if cfg.control.debias and not cfg.control.static:
        raise ConfigError("control.debias=true needs control.static=true: the debiased progress is the raw "
                          "scores minus the static-video control's, so the control must be scored")
    if cfg.reward.get("control_column") and not cfg.control.static:
        raise ConfigError(f"reward.control_column={cfg.reward.control_column} is read only with control.static=true "
                          "(the static-video control it holds): add control.static=true, or drop "
                          "reward.control_column")
    instruction_map(cfg.instructions)


def _fabric(cfg: DictConfig):
    from lightning_fabric import Fabric

    return Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=cfg.strategy)


def annotate(cfg: DictConfig, fabric=None, reward: RewardModel | None = None) -> AnnotateResult:
    """Run the annotation described by ``cfg`` (see ``configs/annotate.yaml``) on this process's rank.

    Without ``fabric`` a single-process Fabric is made. ``reward``: a reward model to score with instead of the
    one ``cfg.reward`` builds (tests and benchmarks; the output's fingerprint is still ``cfg``'s, so give each
    such model its own output folder). Returns, on every rank, the run's result (rank 0's includes the
    manifest).
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
    run = fingerprint(cfg, src, world)
    inspect_output(out, run, bool(cfg.overwrite))
    fabric.barrier()
    if rank == 0:
        prepare_output(out, run, bool(cfg.overwrite))
        save_config(cfg, out)
    fabric.barrier()

    device = str(fabric.device)
    if reward is None:
        reward = build_reward(cfg.reward, device=device)
    plan = make_plan(cfg, src, reward)
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
        # first the shards an earlier run wrote that no longer match the journal, under their own names (an
        # episode that fails there is recorded once, not tried again below)
        in_damaged = {e["episode_index"] for d in writer.damaged for e in d["record"]["episodes"]}
        for damaged in list(writer.damaged):
            result.repaired.append(_repair(writer, damaged, cfg=cfg, src=src, plan=plan, result=result,
                                           episodes={e.index: e for e in all_eps}))
        done = writer.done_episodes
        todo = [e for e in mine if e.index not in done and e.index not in in_damaged]
        result.skipped = sum(e.index in done and e.index not in in_damaged for e in mine)
        bar = _progress_bar(cfg, rank, world, len(mine), result.skipped)
        t_loop = time.perf_counter()

        # the three stages of an episode (pipeline.annotate.overlap runs them, overlapped unless
        # pipeline.overlap=false): decode, score (the calling thread), then encode, write, plot and record (one
        # thread, in episode order: the only one that writes). Overlapped, the plots are drawn in a worker
        # process: matplotlib holds the GIL for most of a plot, which would delay the model's thread
        plotter = (SideProcess(max_pending=cfg.pipeline.prefetch + 2, initializer=import_plots,
                               name="plotting process") if cfg.plots and cfg.pipeline.overlap and todo else None)

        def decode(ep):
            return read_episode(ep, cfg=cfg, src=src, plan=plan, reward=reward)

        def score(ep, decoded):
            return score_episode(decoded, src=src, plan=plan, reward=reward, out=out)

        def write(ep, scored, error: EpisodeError | None) -> None:
            if error is None:
                try:
                    samples, summary, gt = encode_episode(scored, cfg=cfg, src=src, plan=plan)
                except EpisodeError as exc:
                    error = exc
                else:
                    writer.write_episode(samples, summary)
                    result.episodes_ok.append(ep.index)
                    result.frames += ep.length
                    if plotter is not None:
                        plotter.submit(plot_episode, plots_dir, summary, src.fps, gt, plan.ground_truth)
                    elif cfg.plots:
                        plot_episode(plots_dir, summary, src.fps, gt, plan.ground_truth)
            if error is not None:
                result.failures.append({"episode_index": ep.index, "reason": str(error)})
            if bar is not None:
                elapsed = time.perf_counter() - t_loop
                bar.set_postfix_str(f"{result.frames / max(elapsed, 1e-9):.0f} frames/s, "
                                    f"{len(result.failures)} failed", refresh=False)
                bar.update(1)

        try:
            run_stages(todo, decode=decode, score=score, finish=write, prefetch=cfg.pipeline.prefetch,
                       overlap=cfg.pipeline.overlap, expected=(EpisodeError,))
            if plotter is not None:
                plotter.close()
        except BaseException:
            if plotter is not None:
                plotter.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
    result.model_seconds = reward.model_seconds
    write_rank_result(out, rank, {
        "failures": result.failures, "frames": result.frames, "model_seconds": result.model_seconds,
        "seconds": time.perf_counter() - t_start, "episodes_ok": result.episodes_ok,
        "repaired": result.repaired})
    fabric.barrier()
    if rank == 0:
        result.manifest = finish(cfg, src, plan, reward, out, world, all_eps)
    fabric.barrier()
    # every rank reports the whole run
    totals = read_rank_results(out, world)
    result.failures = sorted((f for t in totals for f in t["failures"]), key=lambda f: f["episode_index"])
    result.frames = sum(t["frames"] for t in totals)
    result.model_seconds = sum(t["model_seconds"] for t in totals)
    result.episodes_ok = sorted(i for t in totals for i in t["episodes_ok"])
    result.repaired = sorted((r for t in totals for r in t.get("repaired", [])), key=lambda r: r["name"])
    result.seconds = time.perf_counter() - t_start
    return result


def _repair(writer: ShardWriter, damaged: dict, *, cfg: DictConfig, src, plan, result: AnnotateResult,
            episodes: dict) -> dict:
    """Write a damaged shard again from its journaled episode summaries (no scoring); an episode that can no
    longer be read is recorded as a failure like any other."""
    def items():
        for summary in damaged["record"]["episodes"]:
            ep = episodes.get(summary["episode_index"])
            try:
                if ep is None:
                    raise EpisodeError(f"episode {summary['episode_index']} of {damaged['name']} is no longer "
                                       f"in the dataset; set overwrite=true to annotate it again")
                samples = reencode_episode(ep, cfg=cfg, src=src, plan=plan, summary=summary)
            except EpisodeError as exc:
                result.failures.append({"episode_index": summary["episode_index"], "reason": str(exc)})
                continue
            result.frames += ep.length
            yield samples, summary

    record = writer.rewrite_shard(damaged, items())
    return {"name": damaged["name"], "reason": damaged["reason"],
            "episodes": [e["episode_index"] for e in (record or {"episodes": []})["episodes"]]}


def _progress_bar(cfg, rank: int, world: int, total: int, initial: int):
    if not cfg.progress_bar or rank != 0:
        return None
    from tqdm import tqdm

    desc = "annotate" if world == 1 else f"annotate (rank 0 of {world})"
    return tqdm(total=total, initial=initial, desc=desc, unit="ep", dynamic_ncols=True, file=sys.stderr)


# ------------------------------------------------------------------------------------------------ CLI
def failure_line(failure: dict) -> str:
    """``episode N: reason``, without doubling the prefix of a reason that starts by naming its episode."""
    head, reason = f"episode {failure['episode_index']}", failure["reason"]
    return reason if reason.startswith((f"{head}:", f"{head} ")) else f"{head}: {reason}"


def summary_text(result: AnnotateResult) -> str:
    lines = [
        f"annotated {len(result.episodes_ok)} episodes ({result.frames} frames) in {result.seconds:.1f} s "
        f"({result.frames / max(result.seconds, 1e-9):.0f} frames/s; {result.skipped} done earlier), "
        f"{len(result.failures)} failed",
        f"output: {result.out.resolve()} (manifest.json, progress.parquet, shards/, plots/index.html)",
    ]
    for r in result.repaired:
        lines.append(f"repaired {r['name']} ({r['reason']}): rewrote episodes "
                     f"{', '.join(map(str, r['episodes'])) or '(none)'}")
    if result.failures:
        lines.append("failed episodes: " + ", ".join(str(f["episode_index"]) for f in result.failures))
        lines += [f"  {failure_line(f)}" for f in result.failures]
    return "\n".join(lines)


def _main(argv: list[str]) -> int:
    cfg = parse_cli("annotate", argv)
    _check_config(cfg)
    fabric = _fabric(cfg)
    fabric.launch()
    result = annotate(cfg, fabric)
    if fabric.global_rank == 0:
        print(summary_text(result), file=sys.stderr if result.failures else sys.stdout)
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.annotate``: exit 0 (done), 1 (some episodes failed), 2 (bad input: one line saying
    what to do), 130 (interrupted: the finished episodes are kept and the same command resumes)."""
    return run_command(_main, argv, interrupted=RESUME_HINT)


if __name__ == "__main__":
    raise SystemExit(main())
