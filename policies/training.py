"""``train(cfg)``: shards in, a trained and exported lerobot policy out (``train.py`` is its command line).

    from configs import load_config
    from policies.training import train
    summary = train(load_config("train", ["data.shards=outputs/shards", "policy=act", "out=outputs/run1"]))

The run folder holds ``run.json`` (the run's identity, written first: :mod:`configs.outputs`), ``config.yaml``
(the resolved config), ``checkpoints/last.ckpt`` (the one checkpoint: weights, optimiser state and the loader
position, rewritten atomically at the end of every epoch of ``data.steps_per_epoch`` steps, every
``trainer.checkpoint_every_n_steps`` steps when set, and at the end of training), ``logs/`` (CSV metrics and
TensorBoard events) and ``export/`` (lerobot's ``save_pretrained`` of the policy and its processors: load it
with ``--policy.path=RUN_DIR/export``).

A folder holding another run's configuration, or foreign files, is refused unless ``overwrite=true`` (which
deletes the old run's entries first); the same configuration continues only with ``resume=``, whose
checkpoint must come from a run on the same shards and weighting unless ``force=true``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from configs import ConfigError, UserError, save_config
from configs.types import check_types
from data.batches import ShardDataModule
from data.manifest import load_manifest
from data.progress_table import fit_progress_table
from policies.module import BCModule, NonFiniteLoss
from policies.run_folder import (
    CHECKPOINTS,
    EXPORT,
    LAST,
    LOGS,
    LastCheckpoint,
    check_resume,
    claim_run_folder,
    read_checkpoint,
    resumable_csv_logger,
    run_info,
)
from policies.run_weights import calibration as labels_calibration
from policies.run_weights import (
    heaviest_episodes,
    left_out_episodes,
    left_out_note,
    person_labels,
    refuse_weightless,
    reward_check_notes,
    sample_weights,
    trained_weights,
    weight_notes,
)
from policies.weighting import get_rule


class TrainingDiverged(UserError, RuntimeError):
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
            f"  export      {self.export}  (lerobot --policy.path={self.export})" if self.export is not None else
            f"  export      none (export=false); make one with: python -m policies.export {self.checkpoint} OUT",
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


SAMPLINGS = ("weights", "resample")  # data.sampling (configs/train.yaml)


def _check(cfg: DictConfig) -> None:
    check_types(cfg, "train")
    if not cfg.data.shards:
        raise ConfigError("data.shards is not set: pass data.shards=DIR (or a URL), the output of "
                          "pipeline.annotate")
    if not cfg.out:
        raise ConfigError("out is not set: pass out=RUN_DIR (a new folder; or this run's own folder with "
                          f"resume=RUN_DIR/{CHECKPOINTS}/{LAST} to continue it)")
    weighting = OmegaConf.to_container(cfg.weighting, resolve=True)
    get_rule(weighting.pop("name")).check(weighting)  # a misspelt parameter fails before any data is read
    if int(cfg.trainer.max_steps) < 1:
        raise ConfigError(f"trainer.max_steps={cfg.trainer.max_steps} must be >= 1")
    if int(cfg.trainer.num_nodes) < 1:
        raise ConfigError(f"trainer.num_nodes={cfg.trainer.num_nodes} must be >= 1")
    ema = cfg.trainer.get("ema_decay")
    if ema is not None and not (isinstance(ema, float | int) and 0 < float(ema) < 1):
        raise ConfigError(f"trainer.ema_decay={ema} must be a number in (0, 1) (e.g. 0.9999), or null for no "
                          "moving average of the weights")
    devices = int(cfg.trainer.devices) if str(cfg.trainer.devices).isdigit() else 1
    world = devices * int(cfg.trainer.num_nodes)
    main_file = getattr(sys.modules.get("__main__"), "__file__", "") or ""
    if world > 1 and "LOCAL_RANK" not in os.environ and not main_file.endswith("train.py") \
            and str(cfg.trainer.strategy) in ("auto", "ddp"):
        nodes = f", trainer.num_nodes={cfg.trainer.num_nodes}" if int(cfg.trainer.num_nodes) > 1 else ""
        raise ConfigError(f"trainer.devices={cfg.trainer.devices}{nodes}: DDP starts its processes by re-running "
                          "the command line; run `python train.py ...` (or a launcher such as torchrun), or "
                          "trainer.strategy=ddp_spawn when calling train(cfg) from other code")
    if cfg.resume and not Path(cfg.resume).is_file():
        raise ConfigError(f"resume={cfg.resume} is not a checkpoint file (e.g. RUN_DIR/{CHECKPOINTS}/{LAST})")
    if cfg.data.sampling not in SAMPLINGS:
        raise ConfigError(f"data.sampling={cfg.data.sampling!r}: choose one of {', '.join(SAMPLINGS)} "
                          "(configs/train.yaml says what each does)")
    if cfg.get("labels_only") and not cfg.get("labels"):
        raise ConfigError("labels_only=true trains on the episodes a labels file marks good: pass labels=FILE (the "
                          "corpus review page writes one), or drop labels_only")
    ckpt = cfg.get("trainer", {}).get("checkpoint_every_n_steps")
    if ckpt is not None and int(ckpt) < 1:
        raise ConfigError(f"trainer.checkpoint_every_n_steps={ckpt} must be >= 1, or null (every epoch)")


def select_cameras(features: dict, cameras) -> dict:
    """The manifest's ``features`` with only the cameras ``data.cameras`` names (``all``: every one)."""
    if cameras in (None, "all"):
        return features
    names = [cameras] if isinstance(cameras, str) else [str(c) for c in cameras]
    keys = [k for k, f in features.items() if f.get("dtype") in ("video", "image")]
    chosen = []
    for name in names:
        match = [k for k in keys if k == name or k.rsplit(".", 1)[-1] == name]
        if len(match) != 1:
            raise ConfigError(f"data.cameras: {name!r} is not one camera of the shards; their cameras: {keys}")
        chosen.append(match[0])
    if not chosen:
        raise ConfigError(f"data.cameras=[] leaves no camera; give all, or some of {keys}")
    return {k: f for k, f in features.items() if k not in keys or k in chosen}


def build(cfg: DictConfig) -> tuple[BCModule, ShardDataModule, dict]:
    """The module and data of a run (weighting statistics fitted, samples resampled by weight under
    ``data.sampling=resample``), without a Trainer."""
    module, dm, manifest, table, _, w = weighted_run(cfg)
    uniform = table is None and not len(module.left_out) and not len(module.calibrated_ids)
    if cfg.data.sampling == "resample" and not uniform:  # (plain BC without labels: nothing to resample)
        if table is None:
            table, w = plain_weights(cfg, module, manifest)
        dm.keep = keep_probabilities(table.episode, table.frame, w)
        module.resampled = True
        module.weight_notes.append(f"sampling=resample: each sample read is kept with probability w / max w "
                                   f"({100 * float(np.mean(list(dm.keep.values()))):.0f}% on average) and weighs 1")
    return module, dm, manifest


def plain_weights(cfg: DictConfig, module: BCModule, manifest: dict):
    """(progress table, per-sample weights) of a rule without statistics (plain BC): every sample 1, but for the
    calibrated and left-out episodes (``module`` as :func:`weighted_run` leaves it)."""
    table = fit_progress_table(cfg.data.shards, module.adapter.needs().future_actions, manifest)
    return table, trained_weights(module, torch.ones(len(table.episode)), table.episode)


def weighted_run(cfg: DictConfig):
    """The module and data of a run with the weighting statistics fitted and labels applied, and — where the rule
    has statistics — the progress table and every sample's weight under the rule alone and as training weighs it
    (else None, None, None)."""
    _check(cfg)
    manifest = load_manifest(cfg.data.shards)
    # seeded before the policy is built: its initial weights are a function of the seed alone
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    accelerator = _accelerator(str(cfg.trainer.accelerator))
    labels = person_labels(cfg, manifest)
    module = BCModule(
        policy=OmegaConf.to_container(cfg.policy, resolve=True),
        features=select_cameras(manifest["features"], cfg.data.get("cameras", "all")), stats=manifest["stats"],
        weighting=OmegaConf.to_container(cfg.weighting, resolve=True),
        max_steps=int(cfg.trainer.max_steps), seed=int(cfg.seed),
        device="cuda" if accelerator in ("gpu", "cuda") else "cpu",
        left_out=left_out_episodes(cfg, manifest, labels),
    )
    needs = module.adapter.needs()
    dm = ShardDataModule(cfg.data.shards, needs, batch_size=int(cfg.data.batch_size),
                         num_workers=int(cfg.data.num_workers), shuffle_buffer=int(cfg.data.shuffle_buffer),
                         steps_per_epoch=int(cfg.data.steps_per_epoch), seed=int(cfg.seed),
                         skip_episodes=module.left_out.tolist() if cfg.data.skip_left_out else None)
    table = rule = w = None
    if module.needs_weighting_stats():
        # fitted once, before training, over every sample's progress window (policies/weighting/registry.py)
        table = fit_progress_table(cfg.data.shards, needs.future_actions, manifest)
        module.fit_weighting(table, _episode_fields(manifest))
        rule, w = sample_weights(module, table, manifest)
        calibration = labels_calibration(cfg, manifest, labels, dict(heaviest_episodes(table.episode, rule)))
        if calibration is not None:
            module.set_episode_weights(calibration.weights)
            w = trained_weights(module, rule, table.episode)
        refuse_weightless(cfg, w.sum() > 0, labels, len(manifest.get("episodes", [])))
        module.weight_notes = [*reward_check_notes(module),
                               *weight_notes(table.episode, rule, w, labels, labels_only=bool(cfg.get("labels_only")))]
    else:  # a rule without statistics (plain BC, every sample 1): only the failures left out
        calibration = labels_calibration(cfg, manifest, labels, None)
        if calibration is not None:
            module.set_episode_weights(calibration.weights)
        if labels:
            episodes = {int(e["episode_index"]) for e in manifest.get("episodes", [])}
            weight = calibration.weights if calibration else {}
            out = set(module.left_out.tolist())
            refuse_weightless(cfg, any(e not in out and weight.get(e, 1.0) > 0 for e in episodes), labels,
                              len(episodes))
            module.weight_notes = [left_out_note(labels, bool(cfg.get("labels_only")))]
    if calibration is not None:
        module.weight_notes += calibration.notes
    module.run_info = run_info(cfg, manifest, module.left_out.tolist(), calibration)
    return module, dm, manifest, table, rule, w


def keep_probabilities(episode, frame, w) -> dict[tuple[int, int], float]:
    """Weighted resampling: per (episode, frame), the probability w / max w of keeping the sample once read."""
    w = np.asarray(w, dtype=np.float64)
    top = float(w.max()) if w.size else 0.0
    if top <= 0:
        raise ConfigError("sampling=resample: every sample weighs 0; nothing to train on")
    return {(int(e), int(f)): float(x) / top for e, f, x in zip(episode, frame, w, strict=True)}


def episode_weights(cfg: DictConfig) -> tuple[dict[int, float], dict[int, float], BCModule]:
    """Per episode, the total weight of its samples under the run's rule alone and as training weighs them
    (labels and calibration applied), and the module they were fitted with; for the corpus review page and the
    order of episodes worth labelling. Plain BC (a rule without statistics) weighs every sample 1."""
    module, _, manifest, table, rule, w = weighted_run(cfg)
    if table is not None:
        episodes = np.asarray(table.episode)
    else:
        episodes = np.concatenate([np.full(int(e.get("count") or e["length"]), int(e["episode_index"]))
                                   for e in manifest.get("episodes", [])])
        rule = np.ones(len(episodes))
        w = trained_weights(module, rule, episodes)
    by_rule = dict(heaviest_episodes(episodes, rule))
    by_training = dict(heaviest_episodes(episodes, w))
    return by_rule, by_training, module


def _episode_fields(manifest: dict) -> list[dict]:
    """What the weighting statistics read of the manifest's episodes (kept in checkpoints, so kept small)."""
    keys = ("episode_index", "length", "task", "success_score", "final_progress", "raw_scores",
            "control_raw_scores")
    return [{k: e.get(k) for k in keys} for e in manifest.get("episodes", [])]


def instrumentation(cfg: DictConfig) -> list[pl.Callback]:
    """The callbacks that only report (:mod:`policies.callbacks`): the weight shares per quality label where the
    source corpus has such labels, and the record of the samples trained on with ``debug.record_samples``."""
    from policies.callbacks import LabelShares, SampleRecorder

    out = []
    labels = quality_labels(load_manifest(cfg.data.shards))
    if labels:
        out.append(LabelShares(labels))
    if cfg.get("debug", {}).get("record_samples"):
        out.append(SampleRecorder(Path(cfg.out) / "samples"))
    return out


def quality_labels(manifest: dict) -> dict[int, str] | None:
    """Episode index → demonstration-quality label of the source dataset (:mod:`data.quality_labels`, under
    the manifest's ``source.root``), or None when the source has no labels. For the weight-share logs only."""
    from data.quality_labels import has_quality_labels, quality_by_episode, read_quality_labels

    root = (manifest.get("source") or {}).get("root")
    if not root or not has_quality_labels(root):
        return None
    return quality_by_episode(read_quality_labels(root))


def _is_rank_zero() -> bool:
    """Before the Trainer starts DDP, the process the user ran is rank 0 (the children set LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def train(cfg: DictConfig) -> TrainSummary:
    from pytorch_lightning.callbacks import TQDMProgressBar
    from pytorch_lightning.loggers import TensorBoardLogger

    _check(cfg)
    ck = read_checkpoint(cfg.resume) if cfg.resume else None  # a damaged file fails before anything is written
    module, dm, _ = build(cfg)
    if ck is not None:
        check_resume(cfg, ck, module.run_info)
    if _is_rank_zero():
        for note in module.weight_notes:
            print(note, flush=True)
    out = Path(cfg.out)
    if _is_rank_zero():
        claim_run_folder(cfg)
    ckpt_dir = out / CHECKPOINTS
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    accelerator = _accelerator(str(cfg.trainer.accelerator))
    t = cfg.trainer
    clip = t.gradient_clip_val if t.gradient_clip_val is not None else module.grad_clip_norm()
    last = ckpt_dir / LAST
    saver = LastCheckpoint(last, t.get("checkpoint_every_n_steps"))
    callbacks = [saver, *instrumentation(cfg)]
    if t.get("ema_decay") is not None:
        from policies.callbacks import ema

        callbacks.append(ema(float(t.ema_decay)))
    if t.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    resume_step = int(ck["global_step"]) if ck is not None else None
    loggers = [resumable_csv_logger(out, resume_step), TensorBoardLogger(out, name=LOGS, version="tb")] \
        if t.loggers else False
    trainer = pl.Trainer(
        accelerator=accelerator, devices=t.devices, num_nodes=int(t.num_nodes), strategy=t.strategy,
        precision=_precision(str(t.precision), accelerator), gradient_clip_val=clip,
        gradient_clip_algorithm="norm", max_steps=int(t.max_steps), max_epochs=-1,
        callbacks=callbacks, logger=loggers, log_every_n_steps=int(t.log_every_n_steps),
        enable_progress_bar=bool(t.progress_bar), enable_model_summary=False, default_root_dir=out,
        use_distributed_sampler=False, num_sanity_val_steps=0, enable_checkpointing=False,
    )
    if trainer.is_global_zero:
        save_config(cfg, out)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.resume or None)
    except NonFiniteLoss as exc:
        kept = f"{last} (step {torch.load(last, map_location='cpu', weights_only=True)['global_step']})" \
            if last.exists() else "none (it diverged before the first checkpoint)"
        raise TrainingDiverged(f"loss became NaN/inf at step {exc.step}: training stopped without applying "
                               f"that update; last good checkpoint: {kept}. Lower the learning rate, check the "
                               "shards for NaN values, or resume from it.") from exc
    seconds = time.perf_counter() - start
    saver.save(trainer)  # the final step, when no epoch end or step interval wrote it
    export = None
    if trainer.is_global_zero and cfg.get("export", True):
        export = module.export(out / EXPORT)
    return TrainSummary(run_dir=out, steps=int(trainer.global_step), seconds=seconds, final_loss=module.last_loss,
                        checkpoint=last, export=export)
