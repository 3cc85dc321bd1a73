"""Reward models behind one interface: one episode in, :class:`pipeline.progress.PrefixScores` out.

    model = build_reward(cfg.reward, device="cpu")
    scores = model.score(EpisodeInput(frames=..., fps=10.0, instruction="push the block", columns={...}))
    scores.frame_progress()   # progress of every frame (per-episode min-max of the raw scores)

- ``column``: an existing per-frame column (e.g. ``next.reward``) is the raw score of the prefix ending at each
  frame, so progress is the column min-max normalised per episode (the same rule as every reward); an optional
  ``control_column`` holds static-video control scores computed elsewhere.
- ``topreward``: :class:`pipeline.rewards.topreward.TOPRewardScorer` on the episode's camera frames and task string.
- ``gvl``: :class:`pipeline.rewards.gvl.GVLScorer`, the generative baseline (per-frame completion percentages).

A model says what it needs (``needs_frames``, ``columns``) so the caller reads nothing more, and keeps the
seconds spent inside its model (``model_seconds``), so a benchmark can tell the model from the pipeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from configs import UserError
from pipeline.progress import PrefixScores

REWARDS = ("column", "topreward", "gvl", "vlm_errors")
# characters of each GVL generation kept in the manifest: enough to see how a parse failed, without letting
# a runaway generation bloat the manifest
GENERATED_TEXT_KEPT = 2000


class RewardError(UserError, ValueError):
    """A reward model cannot be built or cannot score an episode; the message says why."""


@dataclass
class EpisodeInput:
    """What a reward model sees of one episode."""

    fps: float
    instruction: str | None
    num_frames: int
    episode_index: int = 0  # seeds what a model randomises per episode (GVL's frame order)
    frames: np.ndarray | None = None  # uint8 (T, H, W, 3) of the scoring camera
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame columns, (T, D)

    def static(self) -> EpisodeInput:
        """The static-video control of this episode: its first frame (and first row of every column) held
        for the episode's length, on the same frame count, so it is scored on the identical prefix schedule."""
        def hold(a: np.ndarray) -> np.ndarray:
            return np.repeat(a[:1], self.num_frames, axis=0)

        return EpisodeInput(fps=self.fps, instruction=self.instruction, num_frames=self.num_frames,
                            episode_index=self.episode_index,
                            frames=None if self.frames is None else hold(self.frames),
                            columns={k: hold(np.asarray(v)) for k, v in self.columns.items()})


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

    def check_static(self) -> None:
        """Raise :class:`RewardError` when this model cannot score the static-video control (checked once,
        before any episode is scored, so a run asking for the control fails at the start)."""

    def score_static(self, episode: EpisodeInput) -> PrefixScores:
        """Scores of the episode's static-video control (:meth:`EpisodeInput.static`): what the model gives a
        video in which nothing moves, on the same prefixes. A model whose control cannot be computed from the
        episode (a column of scores made elsewhere) overrides this."""
        return self.score(episode.static())


class ColumnReward(RewardModel):
    """A per-frame dataset column as the raw score (prefix ending at frame t+1 scores column[t]).

    ``control_column``: a per-frame column holding the static-video control's scores computed elsewhere (a
    held column of the dataset itself would only give a constant), returned by :meth:`score_static`.
    """

    name = "column"

    def __init__(self, column: str, control_column: str | None = None) -> None:
        super().__init__()
        if not column:
            raise RewardError("reward=column needs reward.column=NAME (e.g. next.reward)")
        self.column = str(column)
        self.control_column = str(control_column) if control_column else None
        self.columns = (self.column, *([self.control_column] if self.control_column else []))

    @property
    def provenance(self) -> dict:
        prov = {"type": "column", "column": self.column, "model": None, "revision": None, "prompt": None,
                "sample_fps": None, "resolution": None}
        if self.control_column:  # only when set, so outputs without a control read as before
            prov["control_column"] = self.control_column
        return prov

    def _column_scores(self, episode: EpisodeInput, column: str) -> PrefixScores:
        values = np.asarray(episode.columns[column], dtype=np.float64)
        if values.ndim == 2:
            if values.shape[1] != 1:
                raise RewardError(f"column {column!r} has {values.shape[1]} values per frame; "
                                  f"reward=column needs a scalar per frame")
            values = values[:, 0]
        if not np.all(np.isfinite(values)):
            bad = np.flatnonzero(~np.isfinite(values))
            raise RewardError(f"column {column!r} has NaN/inf at frames {bad[:5].tolist()}")
        n = len(values)
        return PrefixScores(prefix_ends=np.arange(1, n + 1), raw=values, num_frames=n)

    def _score(self, episode: EpisodeInput) -> PrefixScores:
        return self._column_scores(episode, self.column)

    def check_static(self) -> None:
        if not self.control_column:
            raise RewardError("control.static=true with reward=column needs reward.control_column=NAME: a "
                              "per-frame column holding the static-video scores computed elsewhere (or set "
                              "control.static=false)")

    def score_static(self, episode: EpisodeInput) -> PrefixScores:
        self.check_static()
        return self._column_scores(episode, self.control_column)


class VLMReward(RewardModel):
    """A reward computed by a video VLM scorer loaded with ``from_pretrained`` (hub id or local folder)."""

    needs_frames = True
    needs_instruction = True

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32", revision: str | None = None,
                 attn_implementation: str | None = "sdpa", **options) -> None:
        super().__init__()
        if not model:
            raise RewardError(f"reward={self.name} needs reward.model=HUB_ID_OR_FOLDER (a Qwen3-VL checkpoint)")
        self.scorer = self.scorer_class().from_pretrained(model, device=device, dtype=dtype, revision=revision,
                                                          attn_implementation=attn_implementation, **options)

    @staticmethod
    def scorer_class():
        raise NotImplementedError

    @property
    def provenance(self) -> dict:
        import transformers

        prov = dict(self.scorer.provenance)
        prov["transformers_version"] = transformers.__version__
        return prov


class TOPReward(VLMReward):
    """TOPReward through :class:`pipeline.rewards.topreward.TOPRewardScorer`."""

    name = "topreward"

    @staticmethod
    def scorer_class():
        from pipeline.rewards.topreward import TOPRewardScorer

        return TOPRewardScorer

    def _score(self, episode: EpisodeInput) -> PrefixScores:
        return self.scorer.score(episode.frames, float(episode.fps), episode.instruction)

    def episode_info(self, scores) -> dict:
        return {"resolution": [int(x) for x in scores.resolution], "tokens": int(scores.tokens),
                "sampled_indices": np.asarray(scores.sampled_indices).tolist()}


class GVLReward(VLMReward):
    """The GVL baseline through :class:`pipeline.rewards.gvl.GVLScorer` (frames shuffled per episode, seeded)."""

    name = "gvl"

    def __init__(self, model: str, prompt=None, **options) -> None:
        # the prompt texts are defined once, in configs/reward/gvl.yaml; the scorer reads no config itself
        if prompt is None:
            raise RewardError("reward=gvl needs reward.prompt with the intro, reference and frame texts "
                              "(configs/reward/gvl.yaml `prompt`)")
        super().__init__(model, prompt=prompt, **options)

    @staticmethod
    def scorer_class():
        from pipeline.rewards.gvl import GVLScorer

        return GVLScorer

    def _score(self, episode: EpisodeInput) -> PrefixScores:
        return self.scorer.score(episode.frames, float(episode.fps), episode.instruction,
                                 episode_key=episode.episode_index)

    def episode_info(self, scores) -> dict:
        p = scores.parse
        return {"order": np.asarray(scores.order).tolist(), "nan_frames": scores.missing,
                "parse": {"missing": p.missing, "malformed": p.malformed, "out_of_range": p.out_of_range,
                          "duplicates": p.duplicates, "unknown_frames": p.unknown_frames},
                "generated_text": scores.text[:GENERATED_TEXT_KEPT]}


class VLMErrorsReward(RewardModel):
    """Simulated VLM reward errors (:class:`pipeline.rewards.vlm_errors.VLMErrorSimulator`, or with
    ``simulator="rank"`` :class:`pipeline.rewards.vlm_errors_rank.RankErrorSimulator`): a calibrated stand-in
    for corpora with ground-truth progress, not a VLM; its provenance says ``simulated``."""

    name = "vlm_errors"

    def __init__(self, profile: str, parameters: dict, simulator: str = "additive", **options) -> None:
        from pipeline.rewards.vlm_errors import VLMErrorSimulator
        from pipeline.rewards.vlm_errors_rank import RankErrorSimulator

        super().__init__()
        classes = {"additive": VLMErrorSimulator, "rank": RankErrorSimulator}
        if simulator not in classes:
            raise RewardError(f"unknown reward.simulator {simulator!r}; valid: {', '.join(classes)} "
                              f"(set reward.simulator=NAME)")
        self.simulator = classes[simulator](profile, parameters, **options)
        # the displacement column is optional (absent: no wrong credit), so only the progress column is required
        self.columns = (self.simulator.column,)

    @property
    def provenance(self) -> dict:
        return self.simulator.provenance

    def _score(self, episode: EpisodeInput) -> PrefixScores:
        return self.simulator.simulate(episode)

    def score_static(self, episode: EpisodeInput) -> PrefixScores:
        t0 = time.perf_counter()
        try:
            return self.simulator.simulate(episode, static=True)  # its own noise draw: another video
        finally:
            self.model_seconds += time.perf_counter() - t0

    def episode_info(self, scores: PrefixScores) -> dict:
        return {"simulated": True}


VLM_REWARDS = {"topreward": TOPReward, "gvl": GVLReward}


def reward_files(reward_cfg) -> dict:
    """What a reward reads from files besides its config node (a run's identity must include it): the
    simulated reward's profile parameters; {} for the others."""
    if reward_cfg.get("name") != "vlm_errors":
        return {}
    from configs import DEFAULT_SIMULATOR, simulator_profile

    simulator = str(reward_cfg.get("simulator") or DEFAULT_SIMULATOR)
    return {"profile_parameters": simulator_profile(str(reward_cfg.get("profile")), simulator)["parameters"]}


def build_reward(reward_cfg, device: str = "cpu") -> RewardModel:
    """The reward model a ``reward`` config node names (``name`` is the option chosen: column, topreward, gvl)."""
    cfg = dict(reward_cfg)
    name = cfg.pop("name", None)
    if name == "column":
        return ColumnReward(cfg.get("column"), cfg.get("control_column"))
    if name == "vlm_errors":  # the simulated stand-in; its profile file is composed by the config loader
        from configs import DEFAULT_SIMULATOR, simulator_profile

        profile = cfg.pop("profile", None)
        simulator = str(cfg.pop("simulator", None) or DEFAULT_SIMULATOR)
        return VLMErrorsReward(profile, simulator_profile(str(profile), simulator)["parameters"],
                               simulator=simulator, **cfg)
    if name in VLM_REWARDS:
        dev = cfg.pop("device", "auto")
        return VLM_REWARDS[name](cfg.pop("model", None), device=device if dev in (None, "auto") else dev, **cfg)
    raise RewardError(f"unknown reward {name!r}; valid: {', '.join(REWARDS)} (set reward=NAME)")
