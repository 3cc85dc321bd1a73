"""Instrumentation beside training, not part of it: Lightning callbacks the trainer adds when asked.

- :class:`LabelShares`: where the source corpus has demonstration-quality labels (the simulated corpora of
  ``python -m data.demo``), the share of the batch's Σw and of its samples each label receives, logged per step
  as ``train/weight_share/<label>`` and ``train/sample_share/<label>`` (reporting only: the rule never sees them).
- :class:`SampleRecorder` (``debug.record_samples=true``): the (episode, frame) keys of every batch trained on,
  one JSON line per step in ``RUN_DIR/samples/rank<R>.jsonl`` (what the exact-resume tests compare).

And one that changes what is exported: :func:`ema` (``trainer.ema_decay``), an exponential moving average of
the weights on Lightning's ``WeightAveraging``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch

from policies.weighting import weight_shares


class LabelShares(pl.Callback):
    """Logs the share of Σw and of the samples per demonstration-quality label (``labels``: episode → label)."""

    def __init__(self, labels: dict[int, str]):
        self.names = sorted(set(labels.values()))
        self.lookup = torch.full((max(labels) + 1,), -1, dtype=torch.long)
        for e, name in labels.items():
            self.lookup[int(e)] = self.names.index(name)

    def shares(self, w: torch.Tensor, episode: torch.Tensor) -> dict[str, float]:
        """``weight_share/<label>`` and ``sample_share/<label>`` of one batch."""
        e = episode.detach().cpu().long()
        inside = (e >= 0) & (e < len(self.lookup))
        groups = torch.where(inside, self.lookup[e.clamp(0, len(self.lookup) - 1)], -1)
        out = {f"weight_share/{k}": v for k, v in weight_shares(w.detach().cpu(), groups, self.names).items()}
        out.update({f"sample_share/{k}": v for k, v in
                    weight_shares(torch.ones(len(e)), groups, self.names).items()})
        return out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        w = pl_module.weights(batch)
        for key, value in self.shares(w, batch["episode_index"]).items():
            pl_module.log(f"train/{key}", value, batch_size=int(w.shape[0]))


class SampleRecorder(pl.Callback):
    """Appends the batch's (episode, frame) keys to ``folder/rank<R>.jsonl`` after every training step."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        path = self.folder / f"rank{trainer.global_rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        # global_step counts this step already: the step it trained is the one before
        keys = [[int(e), int(f)] for e, f in zip(batch["episode_index"].tolist(), batch["frame_index"].tolist(),
                                                 strict=True)]
        with path.open("a") as fh:
            fh.write(json.dumps({"step": int(trainer.global_step) - 1, "epoch": int(trainer.current_epoch),
                                 "batch": batch_idx, "keys": keys}) + "\n")


class WarmupEMA:
    """The averaging function of Diffusion Policy's EMA (Chi et al. 2023, through diffusers' ``EMAModel``): after
    n updates, decay = min(``max_decay``, 1 − (1 + n)^−``power``), so a short run is not pinned to its first
    weights (a constant 0.9999 would still give the initial weights 67 % of the average after 4,000 steps)."""

    def __init__(self, max_decay: float, power: float = 0.75):
        if not 0.0 < max_decay < 1.0:
            raise ValueError(f"trainer.ema_decay={max_decay} must be in (0, 1) (e.g. 0.9999), or null for no EMA")
        self.max_decay, self.power = float(max_decay), float(power)

    def decay(self, n: int) -> float:
        return min(self.max_decay, 1.0 - (1.0 + n) ** -self.power)

    def __call__(self, averaged: torch.Tensor, current: torch.Tensor, num_averaged) -> torch.Tensor:
        return averaged + (current - averaged) * (1.0 - self.decay(int(num_averaged)))


def ema(max_decay: float) -> pl.Callback:
    """Lightning's weight averaging with :class:`WarmupEMA` over the parameters (buffers stay the model's own): a
    checkpoint holds the average as its weights and the trained ones beside them (so a resume continues both
    exactly), and at the end of training the average replaces the weights, so the export is the average."""
    from pytorch_lightning.callbacks import WeightAveraging

    return WeightAveraging(avg_fn=WarmupEMA(max_decay), use_buffers=False)
