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
from pathlib import Path

from omegaconf import DictConfig

from configs import DEFAULT_SIMULATOR
from configs.outputs import atomic_write, check_output, claim_output, config_identity
from configs.outputs import fingerprint as identity_hash
from data.manifest import MANIFEST, PLOTS_DIR, PROGRESS_PARQUET, SHARDS_DIR
from data.schema import SCHEMA_VERSION
from data.shards import JOURNAL_DIR
from data.source import SourceDataset
from pipeline.rewards.registry import reward_files

SCORES_DIR = "scores"  # under journal/: the scores of episodes scored but not yet in a committed shard
# keys that change nothing in the output: a re-run may differ in them and still resume. dataset.task_default only
# gives an instruction to episodes without a task string, which fail without it and so are not in the output yet:
# adding it (what the error of such an episode says to do) continues the run instead of refusing it
# pipeline.*: how the stages are scheduled (the output is the same either way); a section left empty by them is
# dropped, so outputs made before it existed keep their fingerprints
NOT_FINGERPRINTED = ("overwrite", "progress_bar", "out", "dataset.task_default", "pipeline.overlap",
                     "pipeline.prefetch")
OUR_ENTRIES = (SHARDS_DIR, JOURNAL_DIR, PLOTS_DIR, MANIFEST, PROGRESS_PARQUET, "config.yaml")


# ------------------------------------------------------------------------------------------------ claiming
def fingerprint(cfg: DictConfig, src: SourceDataset, world_size: int) -> dict:
    """The run's identity (``run.json``): what must match for a re-run to continue this output."""
    resolved = config_identity(cfg, NOT_FINGERPRINTED)
    if (resolved.get("reward") or {}).get("simulator") == DEFAULT_SIMULATOR:
        resolved["reward"].pop("simulator")  # the default: outputs made before the key existed keep their identity
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


KIND = "annotate"


def identity_of(run: dict) -> dict:
    """The identity part of :func:`fingerprint`'s dict (what :mod:`configs.outputs` hashes and compares)."""
    return {k: v for k, v in run.items() if k != "fingerprint"}


def inspect_output(out: Path, run: dict, overwrite: bool) -> None:
    """Refuse an output folder that holds a different run (or foreign files) unless ``overwrite`` (every rank;
    :func:`configs.outputs.check_output`, the one check every command's output goes through)."""
    check_output(out, identity_of(run), overwrite, KIND)


def prepare_output(out: Path, run: dict, overwrite: bool) -> None:
    """Rank 0: claim the folder (:func:`configs.outputs.claim_output`: ``overwrite`` empties our entries,
    ``run.json`` is written first), then make the journal folders."""
    claim_output(out, identity_of(run), overwrite, KIND, OUR_ENTRIES)
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
