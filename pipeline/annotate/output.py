"""The annotation output folder: claiming it (run fingerprint, refusing another run's folder, resuming), where
the bookkeeping lives (cached episode scores, per-rank results) and atomic writes.

A folder is ours when it holds ``run.json`` (written first, before anything else): its fingerprint is a hash
of the resolved config (without the keys that change nothing in the output), the source dataset's identity,
the world size and the shard schema version. A re-run with the same fingerprint resumes (``data.shards``),
one with another is refused unless ``overwrite=true``. Every option that changes scores or progress is in the
config and so in the fingerprint (``instructions``, ``control.static``, ``control.debias`` included): a run
with the static-video control never continues one without it, and the cached scores of a run with the
control hold the control's too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from configs import ConfigError
from configs.outputs import atomic_write, differences
from configs.outputs import fingerprint as identity_hash
from data.manifest import MANIFEST, PLOTS_DIR, PROGRESS_PARQUET, SHARDS_DIR
from data.schema import SCHEMA_VERSION
from data.shards import JOURNAL_DIR
from data.source import SourceDataset
from pipeline.rewards.registry import reward_files

RUN_FILE = "run.json"
SCORES_DIR = "scores"  # under journal/: the scores of episodes scored but not yet in a committed shard
# keys that change nothing in the output: a re-run may differ in them and still resume
NOT_FINGERPRINTED = ("overwrite", "progress_bar", "out")
OUR_ENTRIES = (SHARDS_DIR, JOURNAL_DIR, PLOTS_DIR, MANIFEST, PROGRESS_PARQUET, RUN_FILE, "config.yaml")


class OutputError(ConfigError):
    """The output folder holds something this run must not mix with."""




# ------------------------------------------------------------------------------------------------ claiming
def fingerprint(cfg: DictConfig, src: SourceDataset, world_size: int) -> dict:
    """The run's identity (``run.json``): what must match for a re-run to continue this output."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for k in NOT_FINGERPRINTED:
        resolved.pop(k, None)
    identity = {
        "config": resolved,
        "source": {"root": str(src.root.resolve()), "repo_id": src.repo_id, "total_episodes": src.total_episodes,
                   "total_frames": int(src.meta.total_frames)},
        "world_size": world_size,
        "schema_version": SCHEMA_VERSION,
    }
    files = reward_files(cfg.reward)
    if files:  # only where a reward reads a file, so other runs keep their fingerprints
        identity["reward_files"] = files
    digest = identity_hash(identity)
    return {"fingerprint": digest, **identity}


SHOWN_CHANGES = 5  # changed keys named in the refusal; the rest are counted


def inspect_output(out: Path, run: dict, overwrite: bool) -> None:
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
        diff = differences(previous.get("config", {}), run["config"])
        if previous.get("source") != run["source"]:
            diff.append(f"source {previous.get('source')} -> {run['source']}")
        if previous.get("world_size") != run["world_size"]:
            diff.append(f"world size {previous.get('world_size')} -> {run['world_size']}")
        if previous.get("reward_files") != run.get("reward_files"):
            diff.append("the reward's profile file changed")
        more = f"; and {len(diff) - SHOWN_CHANGES} more" if len(diff) > SHOWN_CHANGES else ""
        raise OutputError(
            f"out={out} holds the output of a different run ({'; '.join(diff[:SHOWN_CHANGES]) or 'different settings'}"
            f"{more}); use another folder, or set overwrite=true to delete it and start over"
        )


def prepare_output(out: Path, run: dict, overwrite: bool) -> None:
    """Rank 0: empty our entries (``overwrite``), write ``run.json`` if absent, make the journal folders."""
    if overwrite and out.exists():
        for name in OUR_ENTRIES:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / RUN_FILE).exists():  # first, so a folder of ours is never without it
        atomic_write(out / RUN_FILE, json.dumps(run, indent=1, default=str))
    (out / JOURNAL_DIR / SCORES_DIR).mkdir(parents=True, exist_ok=True)


def scores_path(out: Path, episode_index: int) -> Path:
    """Where the scores of one episode are kept until its shard is committed (a resumed run reuses them)."""
    return out / JOURNAL_DIR / SCORES_DIR / f"e{episode_index:06d}.json"


# ------------------------------------------------------------------------------------------------ rank results
def _result_path(out: Path, rank: int) -> Path:
    return out / JOURNAL_DIR / f"rank{rank:03d}.result.json"


def write_rank_result(out: Path, rank: int, result: dict) -> None:
    """What this rank's invocation did (failures, frames, timings), for rank 0's manifest and every rank's report."""
    atomic_write(_result_path(out, rank), json.dumps(result))


def read_rank_results(out: Path, world: int) -> list[dict]:
    return [json.loads(_result_path(out, r).read_text()) for r in range(world)]
