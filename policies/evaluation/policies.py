"""What a rollout drives: the policy interface, MetaWorld's scripted expert, random actions, an exported
lerobot policy (run through its saved processors and ``select_action``, as ``lerobot-eval`` runs it)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from omegaconf import DictConfig

from configs import UserError
from data.metaworld import sim as simlib

SCRIPTED = ("expert", "random")


class FeatureMismatch(UserError, ValueError):
    """An exported policy expects observation features the simulator does not provide."""


class RolloutPolicy(Protocol):
    """What :func:`rollout` drives: ``reset()`` at each episode start, then one action per step.

    ``raw`` is MetaWorld's full 39-d observation (what the scripted expert reads); ``obs`` the policy features
    (``observation.state``; when ``needs_environment_state``, ``observation.environment_state``, the same 39-d
    observation; when ``needs_images``, the camera image ``observation.images.<camera>``). Nothing is rendered
    for a policy that needs no images (unless a rollout is recorded).
    """

    needs_images: bool
    needs_environment_state: bool

    def reset(self) -> None: ...

    def __call__(self, raw: np.ndarray, obs: dict[str, np.ndarray]) -> np.ndarray: ...


class ExpertPolicy:
    """MetaWorld's scripted expert for the task."""

    needs_images = False
    needs_environment_state = False

    def __init__(self, task: str):
        self.expert = simlib.expert_policy(task)

    def reset(self) -> None:
        pass

    def __call__(self, raw: np.ndarray, obs: dict[str, np.ndarray]) -> np.ndarray:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": the env clips
            return np.clip(self.expert.get_action(raw), -1.0, 1.0).astype(np.float32)


class RandomPolicy:
    """Uniform random actions in [-1, 1]^4 from a seeded stream."""

    needs_images = False
    needs_environment_state = False

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def __call__(self, raw: np.ndarray, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, size=simlib.ACTION_DIM).astype(np.float32)


class LeRobotPolicy:
    """An exported lerobot policy folder, run as ``lerobot-eval`` runs it (processors + ``select_action``)."""

    def __init__(self, path: str | Path, instruction: str, device: str = "cpu"):
        import torch  # noqa: F401
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(
                f"{self.path} is not an exported policy (no config.json); export a checkpoint with "
                "python -m policies.export CKPT OUT, or pass policy=expert / policy=random"
            )
        cfg = PreTrainedConfig.from_pretrained(self.path)
        cfg.device = device
        cfg.pretrained_path = self.path
        self.config = cfg
        self.policy = get_policy_class(cfg.type).from_pretrained(self.path, config=cfg)
        self.policy.eval()
        self.preprocessor, self.postprocessor = make_pre_post_processors(
            policy_cfg=cfg, pretrained_path=str(self.path),
            preprocessor_overrides={"device_processor": {"device": device}},
            postprocessor_overrides={"device_processor": {"device": "cpu"}},
        )
        self.instruction = instruction
        self.image_keys = [k for k, f in cfg.input_features.items() if f.type.name == "VISUAL"]
        self.needs_images = bool(self.image_keys)
        self.needs_environment_state = simlib.ENV_STATE_KEY in cfg.input_features

    def image_size(self) -> tuple[int, int] | None:
        """(H, W) the policy was trained at (its first camera), or None without cameras."""
        if not self.image_keys:
            return None
        shape = self.config.input_features[self.image_keys[0]].shape  # (C, H, W)
        return int(shape[1]), int(shape[2])

    def check_features(self, provided: dict[str, tuple]) -> None:
        """Raise :class:`FeatureMismatch` naming the policy inputs ``provided`` (key -> shape) lacks."""
        wanted = {k: tuple(f.shape) for k, f in self.config.input_features.items()}
        missing = sorted(set(wanted) - set(provided))
        if missing:
            raise FeatureMismatch(
                f"policy {self.path} expects observation features {missing} that the MetaWorld env does not "
                f"provide (it gives {sorted(provided)}); train on a corpus from python -m data.demo, or set "
                "env.camera to the policy's camera name"
            )
        wrong = {k: (wanted[k], provided[k]) for k in wanted if tuple(provided[k]) != wanted[k]}
        if wrong:
            detail = "; ".join(f"{k}: policy {w}, env {p}" for k, (w, p) in wrong.items())
            raise FeatureMismatch(f"policy {self.path} and the env disagree on feature shapes: {detail}; set "
                                  "env.image_size to the policy's image size (or null to take it from the policy)")

    def reset(self) -> None:
        self.policy.reset()

    def __call__(self, raw: np.ndarray, obs: dict[str, np.ndarray]) -> np.ndarray:
        import torch
        from einops import rearrange

        batch: dict = {}
        for key, value in obs.items():
            t = torch.from_numpy(np.ascontiguousarray(value))
            if value.ndim == 3:  # H×W×C uint8 -> 1×C×H×W float in [0, 1], as lerobot's preprocess_observation
                t = rearrange(t, "h w c -> c h w").float().div_(255.0)
            batch[key] = t.float().unsqueeze(0)
        batch["task"] = [self.instruction]
        batch = self.preprocessor(batch)
        with torch.inference_mode():
            action = self.policy.select_action(batch)
        action = self.postprocessor(action)
        return action.squeeze(0).detach().cpu().numpy().astype(np.float32)


def provided_features(sim: simlib.MetaWorldSim) -> dict[str, tuple]:
    """The observation features the env gives a policy, as lerobot shapes them (images C×H×W)."""
    h, w = sim.image_size
    return {simlib.STATE_KEY: (simlib.STATE_DIM,), simlib.ENV_STATE_KEY: (simlib.ENV_STATE_DIM,),
            simlib.image_key(sim.camera): (3, h, w)}


def make_policy(cfg: DictConfig, task: str, instruction: str) -> RolloutPolicy:
    """The policy ``cfg.policy`` names: ``expert``, ``random`` or an exported lerobot policy folder."""
    name = str(cfg.policy) if cfg.policy is not None else ""
    if name == "expert":
        return ExpertPolicy(task)
    if name == "random":
        return RandomPolicy(int(cfg.seed))
    if not name:
        raise ValueError("policy= is required: an exported policy folder, or expert / random")
    return LeRobotPolicy(name, instruction, device=str(cfg.device))
