"""A training run's folder and its one checkpoint: what the folder holds, whether a config may write into it,
whether a checkpoint may be resumed, and the writers that keep both whole (the checkpoint saved through a
temporary file, the CSV log keeping its rows across a resume). :func:`policies.training.train` uses them."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from configs import ConfigError
from configs.outputs import claim_output, config_identity
from data.manifest import as_root

CHECKPOINTS = "checkpoints"
EXPORT = "export"
LAST = "last.ckpt"
LOGS = "logs"
# what a training run writes into its folder (overwrite=true deletes these and nothing else)
RUN_ENTRIES = (CHECKPOINTS, LOGS, EXPORT, "samples", "config.yaml")
# keys a re-run may change and still be the same run: they change nothing in what is trained, or (max_steps)
# are what a resume into the run's own folder exists to change ("train it longer")
NOT_IDENTITY = ("out", "overwrite", "resume", "force", "export", "debug", "trainer.progress_bar",
                "trainer.log_every_n_steps", "trainer.loggers", "trainer.checkpoint_every_n_steps",
                "trainer.max_steps")


class CheckpointError(ConfigError):
    """A checkpoint cannot be read, or belongs to another run; the message names the file and what to do."""


def read_checkpoint(path: str | Path, key: str = "resume") -> dict:
    """A Lightning checkpoint as a dict (memory-mapped: the weights are not read), or :class:`CheckpointError`
    naming the file when it is missing, truncated or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{key}={path} is not a checkpoint file (runs keep theirs as "
                              f"RUN_DIR/{CHECKPOINTS}/{LAST})")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a damaged file
        raise CheckpointError(f"{key}={path} cannot be read as a checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120]}); the file is truncated or not a checkpoint: "
                              f"use another one (RUN_DIR/{CHECKPOINTS}/{LAST} is rewritten whole at every save)"
                              ) from None
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise CheckpointError(f"{key}={path} is not a training checkpoint (no state_dict); pass "
                              f"RUN_DIR/{CHECKPOINTS}/{LAST}")
    return ck


def run_info(cfg: DictConfig, manifest: dict, left_out: list[int] | None = None, calibration=None) -> dict:
    """What a checkpoint and an export remember of the run's data: a resume on other shards or with another
    weighting is refused (:func:`check_resume`), an evaluation on another task too (policies.evaluation)."""
    tasks = sorted({str(e["task"]) for e in manifest.get("episodes", []) if e.get("task")})
    root = as_root(cfg.data.shards)
    return {"data.shards": str(root.resolve()) if isinstance(root, Path) else root,
            "weighting": OmegaConf.to_container(cfg.weighting, resolve=True), "tasks": tasks,
            "left_out": list(left_out or []),  # episodes labels= marks failed (or bad)
            **({"calibrated": {str(e): round(w, 6) for e, w in sorted(calibration.weights.items())}}
               if calibration is not None and calibration.weights else {})}


def check_resume(cfg: DictConfig, ck: dict, info: dict) -> None:
    """Refuse a checkpoint of a run on other shards or with another weighting, unless ``force=true``."""
    saved = (ck.get("topbc") or {}).get("run")
    if not saved or cfg.get("force"):
        return
    # no episodes left out and none calibrated: the same whether the key is absent or empty
    same = {"left_out": lambda a, b: (a or []) == (b or []), "calibrated": lambda a, b: (a or {}) == (b or {})}
    diff = [f"{k}: {saved.get(k)!r} (checkpoint) vs {info[k]!r} (this run)"
            for k in ("data.shards", "weighting", "left_out", "calibrated")
            if not same.get(k, lambda a, b: a == b)(saved.get(k), info.get(k))]
    if diff:
        raise CheckpointError(f"resume={cfg.resume} was trained with other settings: {'; '.join(diff)}. Resume "
                              "with the same data.shards, weighting and labels, or set force=true to continue "
                              "anyway")


def identity(cfg: DictConfig) -> dict:
    """The resolved config without the keys that change nothing in what is trained (:data:`NOT_IDENTITY`)."""
    resolved = config_identity(cfg, NOT_IDENTITY)
    if resolved.get("data", {}).get("shards"):
        resolved["data"]["shards"] = str(Path(resolved["data"]["shards"]).resolve())
    return {"config": resolved}


def claim_run_folder(cfg: DictConfig) -> None:
    """Claim ``cfg.out`` for this run (rank 0, before anything is written): see the module docstring."""
    out = Path(cfg.out)
    last = out / CHECKPOINTS / LAST
    resume = Path(cfg.resume).resolve() if cfg.resume else None
    overwrite = bool(cfg.get("overwrite"))
    if overwrite and resume is not None and (out / CHECKPOINTS).resolve() in resume.parents:
        raise ConfigError(f"overwrite=true would delete {resume}, the checkpoint resume= names; resume into "
                          "another out=, or drop overwrite=true to continue this run in its folder")
    state = claim_output(out, identity(cfg), overwrite, kind="train", ours=RUN_ENTRIES)
    if state == "same" and resume is None and last.exists():
        raise ConfigError(f"out={out} already holds this run's checkpoints; pass resume={last} to continue it, "
                          "or overwrite=true to delete them and start over")


class LastCheckpoint(pl.Callback):
    """Writes ``RUN_DIR/checkpoints/last.ckpt``, the run's one full checkpoint (weights, optimiser state, loader
    position), through a temporary file: a kill while saving leaves the previous one whole, and there is never
    a second full copy (Lightning's ModelCheckpoint kept a step file beside it and, when last.ckpt existed from
    an earlier run, wrote last-v1.ckpt instead, leaving last.ckpt stale)."""

    def __init__(self, path: Path, every_n_steps: int | None):
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps) if every_n_steps else 0
        self.saved_step: int | None = None

    def on_train_batch_end(self, trainer, *args) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer, module) -> None:
        self.save(trainer)

    def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        # what the run trained on, for check_resume and the export's topbc.json
        checkpoint["topbc"] = {"run": dict(getattr(module, "run_info", {}) or {})}

    def save(self, trainer) -> None:
        step = int(trainer.global_step)
        if step == self.saved_step or step == 0:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp)  # every rank calls it; rank 0 writes, then all wait
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("last.ckpt")
        self.saved_step = step


def resumable_csv_logger(out: Path, resume_step: int | None):
    """Lightning's CSVLogger under ``out/logs``, keeping the rows before ``resume_step`` on a resume.

    Lightning deletes ``metrics.csv`` when its folder is not empty; here the rows of the steps the checkpoint
    holds are kept and the resumed steps appended, so the file has every logged step once (rows of steps after
    the checkpoint, logged before a kill, are dropped: the resumed run logs them again)."""
    import csv

    from pytorch_lightning.loggers import CSVLogger

    path = out / LOGS / "metrics.csv"
    kept, header = [], []
    if resume_step is not None and path.is_file():
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            kept = [r for r in reader if r.get("step") not in (None, "") and int(float(r["step"])) < resume_step]

    class ResumableCSVLogger(CSVLogger):
        @property
        def experiment(self):
            import warnings

            fresh = self._experiment is None
            with warnings.catch_warnings():
                if header:  # its "previous log files will be deleted" is untrue here: the rows are put back
                    warnings.filterwarnings("ignore", message="Experiment logs directory")
                exp = super().experiment  # creating the writer deletes metrics.csv
            if fresh and header:
                with path.open("w", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=header)
                    writer.writeheader()
                    writer.writerows(kept)
                exp.metrics_keys = sorted(header)
            return exp

    return ResumableCSVLogger(out, name=LOGS, version="")


