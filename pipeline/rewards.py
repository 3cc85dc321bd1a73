"""Reward models behind one interface: one episode in, :class:`pipeline.progress.PrefixScores` out.

    model = build_reward(cfg.reward, device="cpu")
    scores = model.score(EpisodeInput(frames=..., fps=10.0, instruction="push the block", columns={...}))
    scores.frame_progress()   # progress of every frame (per-episode min-max of the raw scores)

- ``column``: an existing per-frame column (e.g. ``next.reward``) is the raw score of the prefix ending at each
  frame, so progress is the column min-max normalised per episode (the same rule as every reward).
- ``topreward``: :class:`pipeline.topreward.TOPRewardScorer` on the episode's camera frames and task string.

A model says what it needs (``needs_frames``, ``columns``) so the caller reads nothing more, and keeps the
seconds spent inside its model (``model_seconds``), so a benchmark can tell the model from the pipeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.progress import PrefixScores

REWARDS = ("column", "topreward")


class RewardError(ValueError):
    """A reward model cannot be built or cannot score an episode; the message says why."""


@dataclass
class EpisodeInput:
    """What a reward model sees of one episode."""

    fps: float
    instruction: str | None
    num_frames: int
    frames: np.ndarray | None = None  # uint8 (T, H, W, 3) of the scoring camera
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame columns, (T, D)


class RewardModel:
    name: str = ""
    needs_frames: bool = False
    needs_instruction: bool = False
    columns: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.model_seconds = 0.0

    @property
    def provenance(self) -> dict:
        raise NotImplementedError

    def _score(self, episode: EpisodeInput) -> PrefixScores:
        raise NotImplementedError

    def episode_info(self, scores: PrefixScores) -> dict:
        """JSON-able per-episode facts of a result beyond the per-prefix arrays (e.g. the resolution used)."""
        return {}

    def score(self, episode: EpisodeInput) -> PrefixScores:
        t0 = time.perf_counter()
        try:
            return self._score(episode)
        finally:
            self.model_seconds += time.perf_counter() - t0


class ColumnReward(RewardModel):
    """A per-frame dataset column as the raw score (prefix ending at frame t+1 scores column[t])."""

    name = "column"

    def __init__(self, column: str) -> None:
        super().__init__()
        if not column:
            raise RewardError("reward=column needs reward.column=NAME (e.g. next.reward)")
        self.column = str(column)
        self.columns = (self.column,)

    @property
    def provenance(self) -> dict:
        return {"type": "column", "column": self.column, "model": None, "revision": None, "prompt": None,
                "sample_fps": None, "resolution": None}

    def _score(self, episode: EpisodeInput) -> PrefixScores:
        values = np.asarray(episode.columns[self.column], dtype=np.float64)
        if values.ndim == 2:
            if values.shape[1] != 1:
                raise RewardError(f"column {self.column!r} has {values.shape[1]} values per frame; "
                                  f"reward=column needs a scalar per frame")
            values = values[:, 0]
        if not np.all(np.isfinite(values)):
            bad = np.flatnonzero(~np.isfinite(values))
            raise RewardError(f"column {self.column!r} has NaN/inf at frames {bad[:5].tolist()}")
        n = len(values)
        return PrefixScores(prefix_ends=np.arange(1, n + 1), raw=values, num_frames=n)


class TOPReward(RewardModel):
    """TOPReward through :class:`pipeline.topreward.TOPRewardScorer`."""

    name = "topreward"
    needs_frames = True
    needs_instruction = True

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32", revision: str | None = None,
                 attn_implementation: str | None = "sdpa", **options) -> None:
        super().__init__()
        if not model:
            raise RewardError("reward=topreward needs reward.model=HUB_ID_OR_FOLDER (a Qwen3-VL checkpoint)")
        from pipeline.topreward import TOPRewardScorer

        self.scorer = TOPRewardScorer.from_pretrained(model, device=device, dtype=dtype, revision=revision,
                                                      attn_implementation=attn_implementation, **options)

    @property
    def provenance(self) -> dict:
        import transformers

        prov = dict(self.scorer.provenance)
        prov["transformers_version"] = transformers.__version__
        return prov

    def _score(self, episode: EpisodeInput) -> PrefixScores:
        return self.scorer.score(episode.frames, float(episode.fps), episode.instruction)

    def episode_info(self, scores) -> dict:
        return {"resolution": [int(x) for x in scores.resolution], "tokens": int(scores.tokens),
                "sampled_indices": np.asarray(scores.sampled_indices).tolist()}


def build_reward(reward_cfg, device: str = "cpu") -> RewardModel:
    """The reward model a ``reward`` config node names (``name`` is the option chosen: column, topreward)."""
    cfg = dict(reward_cfg)
    name = cfg.pop("name", None)
    if name == "column":
        return ColumnReward(cfg.get("column"))
    if name == "topreward":
        dev = cfg.pop("device", "auto")
        return TOPReward(cfg.pop("model", None), device=device if dev in (None, "auto") else dev, **cfg)
    raise RewardError(f"unknown reward {name!r}; valid: {', '.join(REWARDS)} (set reward=NAME)")
