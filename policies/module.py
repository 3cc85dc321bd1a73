"""The LightningModule of reward-aligned behaviour cloning: a lerobot policy, its processors, a weighting rule.

Each training step: weights from the batch's progress windows (BEFORE the preprocessor, which drops keys it
does not know), the lerobot batch through the preprocessor (normalisation with the manifest's statistics),
per-sample losses ℓᵢ from the policy adapter, ``loss = Σ wᵢ ℓᵢ / Σ wᵢ``. Logged per step: loss, mean weight,
fraction of zero weights, effective sample size (Σw)²/Σw² (the shares per demonstration-quality label and the
record of the samples trained on are callbacks beside it: :mod:`policies.callbacks`).

A non-finite loss (on any rank) raises :class:`NonFiniteLoss` before the update: training stops, no
checkpoint is written after it, and ``nan_step`` says at which step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from data.manifest import stats_arrays
from policies.adapters.base import get_adapter_class
from policies.weighting import GainStats, get_rule, sample_info, weight_summary, weighted_loss

# Strides of the per-step seed: primes larger than any rank count (7919) and step count (1_000_003) a run
# reaches, so (seed, step, rank) map to distinct streams and a resumed step replays its own.
SEED_STRIDE = 1_000_003
EXPORT_INFO = "topbc.json"  # beside lerobot's files in an export folder
STEP_STRIDE = 7919


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of training step ``step`` on ``rank`` (dropout, crops, diffusion noise)."""
    return (seed * SEED_STRIDE + step * STEP_STRIDE + rank) % (2**63)


class NonFiniteLoss(RuntimeError):
    """The weighted loss of a training step is NaN or infinite."""

    def __init__(self, step: int):
        super().__init__(f"loss became NaN/inf at step {step}")
        self.step = step


class BCModule(pl.LightningModule):
    """Arguments are plain data (saved as hyper-parameters, so a checkpoint rebuilds the module alone):

    ``policy``: the policy config node (``name`` + lerobot config fields); ``features``/``stats``: the
    manifest's ``features`` and ``stats``; ``weighting``: the weighting node (``name`` + the rule's params,
    checked here, so a misspelt key fails before any data is read); ``max_steps``: for the lerobot LR
    scheduler; ``seed``: the per-step random streams; ``left_out``: episodes a person labelled failures
    (``labels=``), weighted 0 whatever the rule; ``episode_weights``: episode → weight calibrated on a person's
    labels (:mod:`policies.weighting.calibrated`), which replaces the rule's weight for those episodes.
    """

    def __init__(self, policy: dict, features: dict, stats: dict, weighting: dict | None = None,
                 max_steps: int = 1000, seed: int = 0, device: str = "cpu", left_out: list[int] | None = None, episode_weights: dict[int, float] | None = None):
        super().__init__()
        self.save_hyperparameters()
        weighting = dict(weighting or {"name": "none"})
        self.weighting_name = weighting.pop("name")
        self.weighting_rule = get_rule(self.weighting_name)  # policies.weighting.Rule: fits and weighs
        self.weighting_params = self.weighting_rule.check(weighting)
        self.adapter = get_adapter_class(policy["name"])(policy, features, device=device)
        self.policy = self.adapter.make_policy()
        self.preprocessor, self.postprocessor = self.adapter.make_processors(stats_arrays(stats))
        self.left_out = torch.tensor(sorted(int(e) for e in left_out or []), dtype=torch.long)
        self.set_episode_weights(episode_weights)
        self.weight_notes: list[str] = []  # what training says of the weights before it starts (policies.training)
        self.weighting_stats = None  # what the rule fitted: GainStats, AdvantageStats, None (it reads none)
        self._fit_inputs: tuple | None = None  # (ProgressTable, manifest episodes) the statistics were fitted on
        self.nan_step: int | None = None
        self.last_loss: float | None = None
        self.resampled = False  # data.sampling=resample: the stream keeps samples ∝ their weight (policies.training)
        # what the run trained on (policies.run_folder.run_info): checked on resume, written beside an export
        self.run_info: dict = {}

    # -- weighting
    def needs_weighting_stats(self) -> bool:
        """Whether the rule, with these parameters, reads dataset statistics (see :meth:`fit_weighting`)."""
        return self.weighting_rule.needs_stats(**self.weighting_params)

    def fit_weighting(self, table, episodes: list[dict]) -> None:
        """Fit the rule's dataset statistics on ``table`` (data.progress_table.ProgressTable) and the
        manifest's episodes; both travel in the checkpoints, so a resumed run refits exactly the same
        statistics."""
        self.weighting_stats = self.weighting_rule.fit(table, episodes, **self.weighting_params)
        # a rule that reads no statistics needs no fit inputs in its checkpoints
        self._fit_inputs = (table, episodes) if self.weighting_stats is not None else None

    def set_episode_weights(self, episode_weights: dict[int, float] | None) -> None:
        """Set the calibrated weights (episode → weight; they replace the rule's for those episodes), also in the
        hyper-parameters, so a checkpoint rebuilds the module with them."""
        calibrated = {int(e): float(w) for e, w in (episode_weights or {}).items()}
        self.hparams["episode_weights"] = calibrated or None
        self.calibrated_ids = torch.tensor(sorted(calibrated), dtype=torch.long)
        self.calibrated_w = torch.tensor([calibrated[e] for e in sorted(calibrated)], dtype=torch.float32)

    def weights(self, batch: dict) -> torch.Tensor:
        """The weight of each sample: the calibrated one of its episode where there is one, else the rule's;
        0 for the episodes left out (``left_out``)."""
        return self.leave_out(self.calibrate(self.rule_weights(batch), batch["episode_index"]),
                              batch["episode_index"])

    def calibrate(self, w: torch.Tensor, episode: torch.Tensor) -> torch.Tensor:
        if not len(self.calibrated_ids):
            return w
        e = episode.to(w.device).long()
        ids, vals = self.calibrated_ids.to(w.device), self.calibrated_w.to(device=w.device, dtype=w.dtype)
        pos = torch.searchsorted(ids, e).clamp(max=len(ids) - 1)
        return torch.where(ids[pos] == e, vals[pos], w)

    def rule_weights(self, batch: dict) -> torch.Tensor:
        return self.weighting_rule.weigh(batch["progress"], self.weighting_stats, **sample_info(batch),
                                         **self.weighting_params)

    def leave_out(self, w: torch.Tensor, episode: torch.Tensor) -> torch.Tensor:
        if not len(self.left_out):
            return w
        return w.masked_fill(torch.isin(episode.to(w.device).long(), self.left_out.to(w.device)), 0.0)

    # -- loss
    def per_sample_loss(self, batch: dict) -> torch.Tensor:
        pb = self.preprocessor(self.adapter.policy_batch(batch))
        return self.adapter.per_sample_loss(self.policy, pb)

    def training_step(self, batch: dict, batch_idx: int):
        # one random stream per (seed, step, rank): dropout, crops and diffusion noise replay exactly on resume
        torch.manual_seed(step_seed(self.hparams.seed, self.global_step, self.global_rank))
        w = self.weights(batch).to(self.device)
        if self.resampled:  # the stream kept samples with probability ∝ w: the kept ones weigh alike
            w = (w > 0).to(w.dtype)
        per = self.per_sample_loss(batch)
        local = weighted_loss(per, w)
        loss = local
        world = self.trainer.world_size
        if world > 1:
            # DDP averages gradients over ranks; dividing by the GLOBAL Σw (× world) makes that average the
            # gradient of Σwℓ/Σw over the whole global batch, not a mean of per-rank weighted means
            total = self.trainer.strategy.reduce(w.sum().detach(), reduce_op="sum")
            loss = (w.to(per.dtype) * per).sum() * world / total.clamp_min(torch.finfo(per.dtype).tiny)
        finite = bool(torch.isfinite(loss).item())
        if world > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            # raised before backward: no update is applied and no further checkpoint is written, so the last
            # one on disk is the last good state
            self.nan_step = int(self.global_step)
            raise NonFiniteLoss(self.nan_step)
        ws = weight_summary(w)
        bs = int(w.shape[0])
        self.log("train/loss", local, prog_bar=True, batch_size=bs)
        self.log("train/weight_mean", ws["weight_mean"], batch_size=bs)
        self.log("train/weight_zero_frac", ws["weight_zero_frac"], batch_size=bs)
        self.log("train/ess", ws["ess"], prog_bar=True, batch_size=bs)
        self.last_loss = float(local.detach())
        return loss

    # -- optimiser: lerobot's presets for the policy
    def configure_optimizers(self):
        cfg = self.policy.config
        opt = cfg.get_optimizer_preset().build(self.policy.get_optim_params())
        sched_cfg = cfg.get_scheduler_preset()
        if sched_cfg is None:
            return opt
        sched = sched_cfg.build(opt, num_training_steps=int(self.hparams.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def grad_clip_norm(self) -> float:
        return float(self.policy.config.get_optimizer_preset().grad_clip_norm)

    # -- checkpoints carry the fitted weighting statistics: their fit inputs, refitted on load
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._fit_inputs is not None:
            table, episodes = self._fit_inputs
            checkpoint["weighting_fit"] = {"table": {k: torch.as_tensor(v) for k, v in table.as_arrays().items()},
                                           "episodes": json.dumps(episodes)}
        elif isinstance(self.weighting_stats, GainStats):
            # GainStats assigned without fit inputs: its gains are all it is made of
            checkpoint["gain_stats"] = {"gains": torch.as_tensor(self.weighting_stats.sorted_gains)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # written by the trainer's checkpoint callback (policies.run_folder.LastCheckpoint)
        self.run_info = dict((checkpoint.get("topbc") or {}).get("run") or {})
        if "weighting_fit" in checkpoint:
            from data.progress_table import ProgressTable

            fit = checkpoint["weighting_fit"]
            table = ProgressTable.from_arrays({k: v.numpy() for k, v in fit["table"].items()})
            self.fit_weighting(table, json.loads(fit["episodes"]))
        elif "gain_stats" in checkpoint:
            # GainStats saved without fit inputs (on_save_checkpoint)
            self.weighting_stats = GainStats.from_gains(checkpoint["gain_stats"]["gains"].numpy())

    # -- export
    def export(self, out: str | Path) -> Path:
        """lerobot's ``save_pretrained`` of the policy and of its pre/post processors into one folder."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        # the trained weights supersede ImageNet's: a saved config naming them would download them on every load
        named = getattr(self.policy.config, "pretrained_backbone_weights", None)
        if named is not None:
            self.policy.config.pretrained_backbone_weights = None
        try:
            self.policy.save_pretrained(out)
        finally:
            if named is not None:
                self.policy.config.pretrained_backbone_weights = named
        deployment_preprocessor(self.preprocessor, self.policy.config).save_pretrained(out)
        self.postprocessor.save_pretrained(out)
        # what lerobot's files do not say: the tasks it was trained on (an evaluation on another is refused)
        # and each camera's training size (what a robot's frames must be given at where no resize step is saved)
        (out / EXPORT_INFO).write_text(json.dumps({"tasks": self.run_info.get("tasks", []),
                                                   "data.shards": self.run_info.get("data.shards"),
                                                   "cameras": camera_sizes(self.policy.config)}, indent=1))
        return out


def camera_sizes(config) -> dict[str, list[int]]:
    """Each camera feature's training size, ``{key: [height, width]}``."""
    return {key: [int(n) for n in f.shape[-2:]] for key, f in config.image_features.items()}


def deployment_preprocessor(preprocessor, config):
    """The preprocessor as saved for deployment: camera images are first resized to the training resolution.

    Simulators and robots often give larger frames than the shards held (lerobot's MetaWorld env renders
    480×480); lerobot's registered ``image_crop_resize_processor`` step, saved with the pipeline, resizes them
    before normalisation, and is a no-op at the training size.
    """
    import copy

    from lerobot.processor.hil_processor import ImageCropResizeProcessorStep
    from lerobot.processor.normalize_processor import NormalizerProcessorStep

    cameras = camera_sizes(config)
    sizes = {tuple(hw) for hw in cameras.values()}
    if len(sizes) > 1:  # one resize step serves one size: it would change every camera to it
        listed = ", ".join(f"{key} {h}x{w}" for key, (h, w) in cameras.items())
        print(f"note: cameras of different sizes ({listed}): the export saves no resize step, so give each camera "
              f"at its training size at inference (listed in {EXPORT_INFO})", file=sys.stderr)
    if len(sizes) != 1:
        return preprocessor
    pre = copy.deepcopy(preprocessor)
    at = next((i for i, step in enumerate(pre.steps) if isinstance(step, NormalizerProcessorStep)), len(pre.steps))
    pre.steps.insert(at, ImageCropResizeProcessorStep(resize_size=sizes.pop()))
    return pre
