"""``train(cfg)``: shards in, a trained and exported lerobot policy out (``train.py`` is its command line).

    from configs import load_config
    from policies.training import train
    summary = train(load_config("train", ["data.shards=outputs/shards", "policy=act", "out=outputs/run1"]))

The run folder holds ``config.yaml`` (the resolved config), ``checkpoints/`` (``last.ckpt``, written at the end
of every epoch of ``data.steps_per_epoch`` steps and at the end of training),
``logs/`` (CSV metrics and TensorBoard events) and ``export/`` (lerobot's ``save_pretrained`` of the policy
and its processors: load it with ``--policy.path=RUN_DIR/export``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from configs import ConfigError, save_config
from data.batches import ShardDataModule
from data.manifest import load_manifest
from data.progress_table import fit_progress_table
from policies.module import BCModule, NonFiniteLoss
from policies.weighting import get_rule

CHECKPOINTS = "checkpoints"
EXPORT = "export"
LAST = "last.ckpt"


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; training stopped and the last good checkpoint was kept."""


@dataclass
class TrainSummary:
    run_dir: Path
    steps: int
    seconds: float
    final_loss: float | None
    checkpoint: Path | None
    export: Path | None

    def text(self) -> str:
        loss = f"{self.final_loss:.4f}" if self.final_loss is not None else "n/a"
        return "\n".join([
            "training finished",
            f"  steps       {self.steps}",
            f"  time        {self.seconds:.1f} s ({self.steps / max(self.seconds, 1e-9):.2f} steps/s)",
            f"  final loss  {loss}",
            f"  run folder  {self.run_dir}",
            f"  checkpoint  {self.checkpoint}",
            f"  export      {self.export}  (lerobot --policy.path={self.export})",
        ])


def _accelerator(name: str) -> str:
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return name


def _precision(precision: str, accelerator: str) -> str:
    if precision != "auto":
        return precision
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def _check(cfg: DictConfig) -> None:
    if not cfg.data.shards:
        raise ConfigError("data.shards is not set: pass data.shards=DIR, the output folder of pipeline.annotate")
    if not cfg.out:
        raise ConfigError("out is not set: pass out=RUN_DIR")
    weighting = OmegaConf.to_container(cfg.weighting, resolve=True)
    get_rule(weighting.pop("name")).check(weighting)  # a misspelt parameter fails before any data is read
    if int(cfg.trainer.max_steps) < 1:
        raise ConfigError(f"trainer.max_steps={cfg.trainer.max_steps} must be >= 1")
    world = int(cfg.trainer.devices) if str(cfg.trainer.devices).isdigit() else 1
    main_file = getattr(sys.modules.get("__main__"), "__file__", "") or ""
    if world > 1 and "LOCAL_RANK" not in os.environ and not main_file.endswith("train.py") \
            and str(cfg.trainer.strategy) in ("auto", "ddp"):
        raise ConfigError(f"trainer.devices={cfg.trainer.devices}: DDP starts its processes by re-running the command "
                          "line; run `python train.py ...` (or a launcher such as torchrun), or "
                          "trainer.strategy=ddp_spawn when calling train(cfg) from other code")
    if cfg.resume and not Path(cfg.resume).is_file():
        raise ConfigError(f"resume={cfg.resume} is not a checkpoint file (e.g. RUN_DIR/{CHECKPOINTS}/{LAST})")


def build(cfg: DictConfig) -> tuple[BCModule, ShardDataModule, dict]:
    """The module and data of a run (weighting statistics fitted), without a Trainer."""
    import pytorch_lightning as pl

    _check(cfg)
    manifest = load_manifest(cfg.data.shards)
    # seeded before the policy is built: its initial weights are a function of the seed alone
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    accelerator = _accelerator(str(cfg.trainer.accelerator))
    record = str(Path(cfg.out) / "samples") if cfg.get("debug", {}).get("record_samples") else None
    module = BCModule(
        policy=OmegaConf.to_container(cfg.policy, resolve=True),
        features=manifest["features"], stats=manifest["stats"],
        weighting=OmegaConf.to_container(cfg.weighting, resolve=True),
        max_steps=int(cfg.trainer.max_steps), seed=int(cfg.seed),
        device="cuda" if accelerator in ("gpu", "cuda") else "cpu", record_samples=record,
    )
    needs = module.adapter.needs()
    dm = ShardDataModule(cfg.data.shards, needs, batch_size=int(cfg.data.batch_size),
                         num_workers=int(cfg.data.num_workers), shuffle_buffer=int(cfg.data.shuffle_buffer),
                         steps_per_epoch=int(cfg.data.steps_per_epoch), seed=int(cfg.seed))
    if module.needs_weighting_stats():
        # fitted once, before training, over every sample's progress window (policies/weighting/registry.py)
        table = fit_progress_table(cfg.data.shards, needs.future_actions, manifest)
        module.fit_weighting(table, _episode_fields(manifest))
    module.set_quality_labels(quality_labels(manifest))
    return module, dm, manifest


def _episode_fields(manifest: dict) -> list[dict]:
    """What the weighting statistics read of the manifest's episodes (kept in checkpoints, so kept small)."""
    keys = ("episode_index", "length", "task", "success_score", "final_progress", "raw_scores",
            "control_raw_scores")
    return [{k: e.get(k) for k in keys} for e in manifest.get("episodes", [])]


def quality_labels(manifest: dict) -> dict[int, str] | None:
    """Episode index → demonstration-quality label of the source dataset (:mod:`data.quality_labels`, under
    the manifest's ``source.root``), or None when the source has no labels. For the weight-share logs only."""
    from data.quality_labels import has_quality_labels, quality_by_episode, read_quality_labels

    root = (manifest.get("source") or {}).get("root")
    if not root or not has_quality_labels(root):
        return None
    return quality_by_episode(read_quality_labels(root))


def train(cfg: DictConfig) -> TrainSummary:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    module, dm, _ = build(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / CHECKPOINTS
    accelerator = _accelerator(str(cfg.trainer.accelerator))
    t = cfg.trainer
    clip = t.gradient_clip_val if t.gradient_clip_val is not None else module.grad_clip_norm()
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:07d}", auto_insert_metric_name=False,
                                 every_n_epochs=1, save_on_train_epoch_end=True, save_top_k=1,
                                 save_last="link")]  # last.ckpt: a link, not a second copy
    if t.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    loggers = [CSVLogger(out, name="logs", version=""), TensorBoardLogger(out, name="logs", version="tb")] \
        if t.loggers else False
    trainer = pl.Trainer(
        accelerator=accelerator, devices=t.devices, strategy=t.strategy,
        precision=_precision(str(t.precision), accelerator), gradient_clip_val=clip,
        gradient_clip_algorithm="norm", max_steps=int(t.max_steps), max_epochs=-1,
        callbacks=callbacks, logger=loggers, log_every_n_steps=int(t.log_every_n_steps),
        enable_progress_bar=bool(t.progress_bar), enable_model_summary=False, default_root_dir=out,
        use_distributed_sampler=False, num_sanity_val_steps=0,
    )
    if trainer.is_global_zero:
        save_config(cfg, out)
    start = time.perf_counter()
    last = ckpt_dir / LAST
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.resume or None)
    except NonFiniteLoss as exc:
        kept = f"{last} (step {torch.load(last, map_location='cpu', weights_only=True)['global_step']})" \
            if last.exists() else "none (it diverged before the first checkpoint)"
        raise TrainingDiverged(f"loss became NaN/inf at step {exc.step}: training stopped without applying "
                               f"that update; last good checkpoint: {kept}. Lower the learning rate, check the "
                               "shards for NaN values, or resume from it.") from exc
    seconds = time.perf_counter() - start
    if not last.exists():  # ModelCheckpoint writes one at every epoch end, including the one max_steps cuts short
        trainer.save_checkpoint(last)
    export = None
    if trainer.is_global_zero and cfg.get("export", True):
        export = module.export(out / EXPORT)
    return TrainSummary(run_dir=out, steps=int(trainer.global_step), seconds=seconds, final_loss=module.last_loss,
                        checkpoint=last, export=export)
