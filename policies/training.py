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
from configs.outputs import claim_output, config_identity
from configs.policies import identity as policy_identity
from configs.types import check_types
from data.batches import ShardDataModule, episode_success
from data.manifest import as_root, load_manifest
from data.progress_table import fit_progress_table
from policies.module import BCModule, NonFiniteLoss
from policies.weighting import get_rule
from policies.weighting.calibrated import calibrate

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
    """The module and data of a run (weighting statistics fitted), without a Trainer."""
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
        left_out=sorted(e for e, ok in labels.items() if not ok),
    )
    needs = module.adapter.needs()
    dm = ShardDataModule(cfg.data.shards, needs, batch_size=int(cfg.data.batch_size),
                         num_workers=int(cfg.data.num_workers), shuffle_buffer=int(cfg.data.shuffle_buffer),
                         steps_per_epoch=int(cfg.data.steps_per_epoch), seed=int(cfg.seed))
    if module.needs_weighting_stats():
        # fitted once, before training, over every sample's progress window (policies/weighting/registry.py)
        table = fit_progress_table(cfg.data.shards, needs.future_actions, manifest)
        module.fit_weighting(table, _episode_fields(manifest))
        rule, w = sample_weights(module, table, manifest)
        calibration = _calibration(cfg, manifest, labels, dict(heaviest_episodes(table.episode, rule)))
        if calibration is not None:
            module.set_episode_weights(calibration.weights)
            rule, w = sample_weights(module, table, manifest)
        refuse_weightless(cfg, w.sum() > 0, labels, len(manifest.get("episodes", [])))
        module.weight_notes = weight_notes(table.episode, rule, w, labels)
    else:  # a rule without statistics (plain BC, every sample 1): only the failures left out
        calibration = _calibration(cfg, manifest, labels, None)
        if calibration is not None:
            module.set_episode_weights(calibration.weights)
        if labels:
            episodes = {int(e["episode_index"]) for e in manifest.get("episodes", [])}
            weight = calibration.weights if calibration else {}
            refuse_weightless(cfg, any(labels.get(e, True) and weight.get(e, 1.0) > 0 for e in episodes), labels,
                              len(episodes))
            module.weight_notes = [left_out_note(labels)]
    if calibration is not None:
        module.weight_notes += calibration.notes
    module.run_info = run_info(cfg, manifest, module.left_out.tolist(), calibration)
    return module, dm, manifest


def _calibration(cfg: DictConfig, manifest: dict, labels: dict[int, bool], rule: dict[int, float] | None):
    """The weights calibrated on the person's labels (policies.weighting.calibrated), None without labels or
    with ``calibrate=false``; ``rule``: episode → the label-free rule's total weight (None: plain BC)."""
    if not labels or not cfg.get("calibrate", True):
        return None
    return calibrate(manifest.get("episodes", []), labels, rule)


def refuse_weightless(cfg: DictConfig, anything: bool, labels: dict[int, bool], episodes: int) -> None:
    """Refuse a run in which no sample weighs anything: it would learn nothing and export an untrained policy."""
    if anything:
        return
    failed = sum(not ok for ok in labels.values())
    why = (f"labels={cfg.labels} marks {failed} of the {episodes} episodes failed" if labels else
           f"weighting={cfg.weighting.name} gives every one of the {episodes} episodes weight 0")
    raise ConfigError(f"every sample weighs 0 ({why}): training would learn nothing and export an untrained "
                      "policy; label some episodes successes, or choose another weighting (weighting=none is "
                      "plain BC); nothing was written")


def person_labels(cfg: DictConfig, manifest: dict) -> dict[int, bool]:
    """Episode → success of the labels file ``labels=`` (:mod:`data.success_labels`; the review page writes
    one), checked against the shards' episodes; {} without a file."""
    path = cfg.get("labels")
    if not path:
        return {}
    from data.success_labels import episode_judgements

    labels = episode_judgements(path)
    known = {int(e["episode_index"]) for e in manifest.get("episodes", [])}
    unknown = sorted(set(labels) - known)
    if unknown:
        raise ConfigError(f"labels={path} labels episodes {unknown[:10]}{' …' if len(unknown) > 10 else ''} that "
                          f"data.shards={cfg.data.shards} does not hold (it holds {len(known)} episodes, "
                          f"{min(known, default=0)}–{max(known, default=0)}); label episodes of these shards")
    return labels


def sample_weights(module: BCModule, table, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """The weight the run's rule gives every sample of ``table`` (data.progress_table.ProgressTable, as fitted):
    (the rule's, and with the episodes left out at 0 — exactly what training weighs each sample by)."""
    level = torch.as_tensor(table.level, dtype=torch.float32)
    progress = torch.stack([level, level + torch.as_tensor(table.gain, dtype=torch.float32)], dim=1)
    success = episode_success(manifest)
    episode = torch.as_tensor(table.episode)
    batch = {"progress": progress, "episode_index": episode, "frame_index": torch.as_tensor(table.frame),
             "success_score": torch.tensor([float(success.get(int(e), float("nan"))) for e in table.episode])}
    rule = module.rule_weights(batch).detach()
    return rule.double().numpy(), module.leave_out(module.calibrate(rule, episode), episode).double().numpy()


def episode_weights(cfg: DictConfig) -> tuple[dict[int, float], dict[int, float], BCModule]:
    """Per episode, the total weight of its samples under the run's rule alone and as training weighs them
    (labels and calibration applied), and the module they were fitted with; for the corpus review page and the
    order of episodes worth labelling. Plain BC (a rule without statistics) weighs every sample 1."""
    module, _, manifest = build(cfg)
    if module.needs_weighting_stats():
        table = fit_progress_table(cfg.data.shards, module.adapter.needs().future_actions, manifest)
        rule, w = sample_weights(module, table, manifest)
        episodes = np.asarray(table.episode)
    else:
        episodes = np.concatenate([np.full(int(e.get("count") or e["length"]), int(e["episode_index"]))
                                   for e in manifest.get("episodes", [])])
        rule = np.ones(len(episodes))
        w = module.leave_out(module.calibrate(torch.as_tensor(rule), torch.as_tensor(episodes)),
                             torch.as_tensor(episodes)).double().numpy()
    by_rule = dict(heaviest_episodes(episodes, rule))
    by_training = dict(heaviest_episodes(episodes, w))
    return by_rule, by_training, module


def left_out_note(labels: dict[int, bool]) -> str:
    failed = sorted(e for e, ok in labels.items() if not ok)
    return (f"labels: {len(failed)} of {len(labels)} labelled episodes are failures and weigh 0"
            + (f" ({', '.join(map(str, failed[:10]))}{' …' if len(failed) > 10 else ''})" if failed else ""))


def heaviest_episodes(episodes: np.ndarray, w: np.ndarray, top: int | None = None) -> list[tuple[int, float]]:
    """(episode index, its sum of ``w``) of the ``top`` episodes carrying the most weight, heaviest first (ties:
    the lower index first); every episode when ``top`` is None. ``episodes``: each sample's episode index."""
    episodes = np.asarray(episodes)
    ids = np.unique(episodes)
    per = np.array([w[episodes == e].sum() for e in ids])
    return [(int(ids[i]), float(per[i])) for i in np.argsort(-per, kind="stable")[:top]]


def weight_notes(episodes: np.ndarray, rule: np.ndarray, w: np.ndarray, labels: dict[int, bool],
                 top: int = 5) -> list[str]:
    """What to look at before training: the episodes the weights ``w`` lean on most and the effective sample
    size; with ``labels=``, the failures left out and how the rule's own weights ``rule`` rank the labelled
    episodes (a few labels say whether the reward can be trusted)."""
    from pipeline.report.metrics import success_detection

    episodes = np.asarray(episodes)
    ids = np.unique(episodes)
    total = float(w.sum())
    notes = []
    if total <= 0:
        notes.append("weights: every sample weighs 0, nothing would be learned; check the weighting and labels=")
    else:
        heavy = heaviest_episodes(episodes, w, top)
        ess = float(w.sum() ** 2 / (w * w).sum()) / len(w)
        lean = ", ".join(f"{e} ({100 * s / total:.0f}%)" for e, s in heavy)
        notes.append(f"weights: effective sample size {100 * ess:.0f}% of {len(w)} samples; the {len(heavy)} "
                     f"episodes with the most weight carry {100 * sum(s for _, s in heavy) / total:.0f}% of it: {lean}. "
                     "Look at those (the annotation's plots/); labels=FILE takes the ones a person marks failed out")
    if labels:
        notes.append(left_out_note(labels))
        mean_rule = {int(e): float(rule[episodes == e].mean()) for e in ids}
        scored = [e for e in labels if e in mean_rule]
        auc = success_detection(np.array([mean_rule[e] for e in scored]),
                                np.array([labels[e] for e in scored]))["auroc"]
        if auc is not None:
            notes.append(f"labels: the rule's weights rank the {len(scored)} labelled episodes' successes above their "
                         f"failures with AUROC {auc:.2f} (0.5 = chance, 1 = every success above every failure)"
                         + (" — below 0.6: if the labelled episodes are a random sample, weighting by this reward "
                            "may do worse than weighting=none; if they are the heaviest ones, the failures among "
                            "them are what labels= takes out (docs/weighting.md)" if auc < 0.6 else ""))
    return notes


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
    # episodes left out by labels= (a checkpoint from before labels= existed left none out)
    same = {"left_out": lambda a, b: (a or []) == (b or []), "calibrated": lambda a, b: (a or {}) == (b or {})}
    diff = [f"{k}: {saved.get(k)!r} (checkpoint) vs {info[k]!r} (this run)"
            for k in ("data.shards", "weighting", "left_out", "calibrated")
            if not same.get(k, lambda a, b: a == b)(saved.get(k), info.get(k))]
    if diff:
        raise CheckpointError(f"resume={cfg.resume} was trained with other settings: {'; '.join(diff)}. Resume "
                              "with the same data.shards, weighting and labels, or set force=true to continue "
                              "anyway")


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


def identity(cfg: DictConfig) -> dict:
    """The resolved config without the keys that change nothing in what is trained (:data:`NOT_IDENTITY`), and
    without the policy fields a run's identity omits at lerobot's default (:func:`configs.policies.identity`)."""
    resolved = config_identity(cfg, NOT_IDENTITY)
    if isinstance(resolved.get("policy"), dict):
        resolved["policy"] = policy_identity(resolved["policy"])
    if resolved.get("data", {}).get("shards"):
        resolved["data"]["shards"] = str(Path(resolved["data"]["shards"]).resolve())
    if resolved.get("trainer", {}).get("ema_decay", 0) is None:  # no EMA: the identity of a run without the key
        resolved["trainer"].pop("ema_decay")
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
