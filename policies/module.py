"""The LightningModule of reward-aligned behaviour cloning: a lerobot policy, its processors, a weighting rule.

Each training step: weights from the batch's progress windows (BEFORE the preprocessor, which drops keys it
does not know), the lerobot batch through the preprocessor (normalisation with the manifest's statistics),
per-sample losses ℓᵢ from the policy adapter, ``loss = Σ wᵢ ℓᵢ / Σ wᵢ``. Logged per step: loss, mean weight,
fraction of zero weights, effective sample size (Σw)²/Σw².

A non-finite loss (on any rank) raises :class:`NonFiniteLoss` before the update: training stops, no
checkpoint is written after it, and ``nan_step`` says at which step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from policies.base import get_adapter_class
from policies.weighting import GainStats, get_weighting, weight_summary, weighted_loss


class NonFiniteLoss(RuntimeError):
    """The weighted loss of a training step is NaN or infinite."""

    def __init__(self, step: int):
        super().__init__(f"loss became NaN/inf at step {step}")
        self.step = step


def _stats_arrays(stats: dict) -> dict:
    return {f: {k: np.asarray(v, dtype=np.float32) for k, v in d.items()} for f, d in stats.items()}


class BCModule(pl.LightningModule):
    """Arguments are plain data (saved as hyper-parameters, so a checkpoint rebuilds the module alone):

    ``policy``: the policy config node (``name`` + lerobot config fields); ``features``/``stats``: the
    manifest's ``features`` and ``stats``; ``weighting``: the weighting node (``name`` + the rule's params);
    ``max_steps``: for the lerobot LR scheduler; ``seed``: the per-step random streams.
    """

    def __init__(self, policy: dict, features: dict, stats: dict, weighting: dict | None = None,
                 max_steps: int = 1000, seed: int = 0, device: str = "cpu", record_samples: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        weighting = dict(weighting or {"name": "none"})
        self.weighting_name = weighting.pop("name")
        self.weighting_params = weighting
        self.weight_fn = get_weighting(self.weighting_name)
        self.adapter = get_adapter_class(policy["name"])(policy, features, device=device)
        self.policy = self.adapter.make_policy()
        self.preprocessor, self.postprocessor = self.adapter.make_processors(_stats_arrays(stats))
        self.gain_stats: GainStats | None = None
        self.nan_step: int | None = None
        self.last_loss: float | None = None
        self.record_samples = record_samples

    # -- weighting
    def set_gain_stats(self, stats: GainStats | None) -> None:
        self.gain_stats = stats

    def weights(self, batch: dict) -> torch.Tensor:
        return self.weight_fn(batch["progress"], self.gain_stats, success=batch.get("success_score"),
                              **self.weighting_params)

    # -- loss
    def per_sample_loss(self, batch: dict) -> torch.Tensor:
        pb = self.preprocessor(self.adapter.policy_batch(batch))
        return self.adapter.per_sample_loss(self.policy, pb)

    def training_step(self, batch: dict, batch_idx: int):
        # one random stream per (seed, step, rank): dropout, crops and diffusion noise replay exactly on resume
        torch.manual_seed((self.hparams.seed * 1_000_003 + self.global_step * 7919 + self.global_rank) % (2**63))
        w = self.weights(batch).to(self.device)
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
        if self.record_samples:
            path = Path(self.record_samples) / f"rank{self.global_rank}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(json.dumps({"step": int(self.global_step), "epoch": int(self.current_epoch), "batch": batch_idx, "keys": [
                    [int(e), int(f)] for e, f in zip(batch["episode_index"].tolist(), batch["frame_index"].tolist(),
                                                     strict=True)]}) + "\n")
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

    # -- checkpoints carry the fitted weighting statistics
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.gain_stats is not None:
            checkpoint["gain_stats"] = {"gains": torch.as_tensor(self.gain_stats.sorted_gains)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "gain_stats" in checkpoint:
            self.gain_stats = GainStats.from_gains(checkpoint["gain_stats"]["gains"].numpy())

    # -- export
    def export(self, out: str | Path) -> Path:
        """lerobot's ``save_pretrained`` of the policy and of its pre/post processors into one folder."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(out)
        deployment_preprocessor(self.preprocessor, self.policy.config).save_pretrained(out)
        self.postprocessor.save_pretrained(out)
        return out


def deployment_preprocessor(preprocessor, config):
    """The preprocessor as saved for deployment: camera images are first resized to the training resolution.

    Simulators and robots often give larger frames than the shards held (lerobot's MetaWorld env renders
    480×480); lerobot's registered ``image_crop_resize_processor`` step, saved with the pipeline, resizes them
    before normalisation, and is a no-op at the training size.
    """
    import copy

    from lerobot.processor.hil_processor import ImageCropResizeProcessorStep
    from lerobot.processor.normalize_processor import NormalizerProcessorStep

    sizes = {tuple(f.shape[-2:]) for f in config.image_features.values()}
    if len(sizes) != 1:  # no camera, or cameras of different sizes (one resize step serves one size)
        return preprocessor
    pre = copy.deepcopy(preprocessor)
    at = next((i for i, step in enumerate(pre.steps) if isinstance(step, NormalizerProcessorStep)), len(pre.steps))
    pre.steps.insert(at, ImageCropResizeProcessorStep(resize_size=sizes.pop()))
    return pre
