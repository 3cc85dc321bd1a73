"""python -m policies.evaluate policy=EXPORT_DIR env.task=push-v3 episodes=N seed=S out=DIR: simulator rollouts.

Rolls a policy out in MetaWorld (:mod:`data.sim`, the observations of the demo corpus and of lerobot's env) and
writes ``DIR/eval.json``: success rate with a 95% Wilson interval, mean return (sum of the per-step reward
scaled to [0, 1], as ``next.reward`` in the corpus), episode lengths, per-episode results; plus the first
``videos`` rollouts as MP4 (or GIF) in ``DIR/videos/``.

``policy`` is an exported folder (lerobot ``save_pretrained`` of the policy and of its pre/post processors; the
policy runs through its saved preprocessor, ``select_action`` and postprocessor, as under ``lerobot-eval``), or
``expert`` / ``random``: MetaWorld's scripted expert and uniform random actions, the references a trained
policy sits between. All three go through the same rollout and counting code (:func:`rollout`).

Episode ``i`` uses the task setup of seed ``seed + i`` (lerobot-eval's convention); an episode ends at its first
success (as in lerobot's env) or after ``max_steps`` steps. Corpus episodes use seeds from the corpus's ``seed``
upwards (0 by default), so evaluation seeds from 1000 are setups the policy has not seen.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from omegaconf import DictConfig

from data.metaworld import sim as simlib

CONFIG_NAME = "evaluate"
SCRIPTED = ("expert", "random")


class FeatureMismatch(ValueError):
    """An exported policy expects observation features the simulator does not provide."""


# --------------------------------------------------------------------------------------------------------------
# the policy interface of a rollout


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

        batch: dict = {}
        for key, value in obs.items():
            t = torch.from_numpy(np.ascontiguousarray(value))
            if value.ndim == 3:  # H×W×C uint8 -> 1×C×H×W float in [0, 1], as lerobot's preprocess_observation
                t = t.permute(2, 0, 1).float().div_(255.0)
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


# --------------------------------------------------------------------------------------------------------------
# rollouts and counting


@dataclass
class Episode:
    seed: int
    success: bool
    first_success: int | None  # step index (0-based) of the first success
    length: int  # steps taken
    ret: float  # sum of per-step rewards in [0, 1]


def rollout(sim: simlib.MetaWorldSim, policy: RolloutPolicy, seed: int, max_steps: int,
            stop_on_success: bool = True, record: bool = False) -> tuple[Episode, list[np.ndarray]]:
    """One episode from the setup of ``seed``; also the rendered frames when ``record``."""
    if not 1 <= max_steps <= sim.max_steps:
        raise ValueError(f"max_steps={max_steps}: MetaWorld episodes have 1..{sim.max_steps} steps")
    policy.reset()
    raw = sim.reset(seed)
    frames: list[np.ndarray] = []
    ret, first = 0.0, None
    steps = 0
    for t in range(max_steps):
        image = sim.render() if (policy.needs_images or record) else None
        if record:
            frames.append(image)
        obs = sim.observation(raw, image if policy.needs_images else None,
                              environment_state=getattr(policy, "needs_environment_state", False))
        action = np.asarray(policy(raw, obs))
        if action.shape != (simlib.ACTION_DIM,) or not np.isfinite(action).all():
            raise ValueError(f"policy returned action {action!r} at step {t} of seed {seed}; "
                             f"expected {simlib.ACTION_DIM} finite values")
        step = sim.step(action)
        raw, steps = step.raw, t + 1
        ret += step.reward
        if step.success and first is None:
            first = t
            if stop_on_success:
                break
    if record:
        frames.append(sim.render())
    return Episode(int(seed), first is not None, first, steps, round(ret, 6)), frames


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (``z`` for other levels)."""
    if n <= 0:
        raise ValueError(f"n={n}: an interval needs at least one episode")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside 0..{n}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(episodes: list[Episode]) -> dict:
    """Success rate, its 95% Wilson interval, mean return and lengths of a list of episodes."""
    n = len(episodes)
    k = sum(e.success for e in episodes)
    lo, hi = wilson_interval(k, n)
    lengths = [e.length for e in episodes]
    return {
        "episodes": n, "successes": k, "success_rate": k / n, "ci_low": lo, "ci_high": hi, "confidence": 0.95,
        "mean_return": float(np.mean([e.ret for e in episodes])),
        "mean_length": float(np.mean(lengths)), "lengths": lengths,
    }


def evaluate_policy(sim: simlib.MetaWorldSim, policy: RolloutPolicy, episodes: int, seed: int, max_steps: int,
                    stop_on_success: bool = True, videos: int = 0, progress: bool = False
                    ) -> tuple[dict, list[list[np.ndarray]]]:
    """Roll out ``episodes`` episodes from seeds ``seed, seed+1, ...``; the summary and the recorded videos."""
    from tqdm import tqdm

    if episodes < 1:
        raise ValueError(f"episodes={episodes}: need at least 1")
    results, clips = [], []
    bar = tqdm(range(episodes), desc=f"eval {sim.task}", unit="ep", disable=not progress)
    for i in bar:
        ep, frames = rollout(sim, policy, seed + i, max_steps, stop_on_success, record=i < videos)
        results.append(ep)
        if frames:
            clips.append(frames)
        bar.set_postfix(success=f"{sum(e.success for e in results)}/{len(results)}")
    summary = summarise(results)
    summary["per_episode"] = [asdict(e) for e in results]
    return summary, clips


# --------------------------------------------------------------------------------------------------------------
# videos


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    """MP4 (H.264 through PyAV) for ``.mp4``, animated GIF (Pillow) for ``.gif``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        # GIF delays are in 10 ms units and viewers slow anything under 20 ms: cap at 50 fps
        images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)), loop=0)
        return path
    import av
    import av.logging

    h, w = frames[0].shape[:2]
    pad_h, pad_w = h % 2, w % 2  # yuv420p needs even sizes
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # the encoder's statistics at close are noise here
    try:
        _encode_mp4(frames, path, fps, pad_h, pad_w)
    finally:
        av.logging.set_level(level)
    return path


def _encode_mp4(frames: list[np.ndarray], path: Path, fps: int, pad_h: int, pad_w: int) -> None:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = w + pad_w, h + pad_h, "yuv420p"
        for f in frames:
            if pad_h or pad_w:
                f = np.pad(f, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# --------------------------------------------------------------------------------------------------------------
# the command


def make_policy(cfg: DictConfig, task: str, instruction: str) -> RolloutPolicy:
    name = str(cfg.policy) if cfg.policy is not None else ""
    if name == "expert":
        return ExpertPolicy(task)
    if name == "random":
        return RandomPolicy(int(cfg.seed))
    if not name:
        raise ValueError("policy= is required: an exported policy folder, or expert / random")
    return LeRobotPolicy(name, instruction, device=str(cfg.device))


def run(cfg: DictConfig, progress: bool = True) -> dict:
    """Evaluate ``cfg.policy`` as configured; writes ``cfg.out``/eval.json and videos; returns the report."""
    task = simlib.check_task(cfg.env.task)
    instruction = simlib.task_descriptions()[task]
    t0 = time.perf_counter()
    policy = make_policy(cfg, task, instruction)
    size = cfg.env.image_size
    if size is None:
        size = (policy.image_size() if isinstance(policy, LeRobotPolicy) else None) or (96, 96)
    if len(size) != 2:
        raise ValueError(f"env.image_size={list(size)}: give [height, width] or null")
    sim = simlib.MetaWorldSim(task, image_size=(int(size[0]), int(size[1])), camera=str(cfg.env.camera),
                              shadows=bool(cfg.env.shadows))
    try:
        if isinstance(policy, LeRobotPolicy):
            policy.check_features(provided_features(sim))
        summary, clips = evaluate_policy(sim, policy, int(cfg.episodes), int(cfg.seed), int(cfg.max_steps),
                                         bool(cfg.stop_on_success), int(cfg.videos), progress=progress)
    finally:
        sim.close()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    videos = []
    for i, frames in enumerate(clips):
        ep = summary["per_episode"][i]
        name = f"episode_{i:03d}_seed{ep['seed']}_{'success' if ep['success'] else 'fail'}.{cfg.video_format}"
        videos.append(str(write_video(frames, out / "videos" / name, int(cfg.video_fps)).relative_to(out)))
    seconds = time.perf_counter() - t0
    report = {
        "policy": str(cfg.policy), "task": task, "instruction": instruction, **summary,
        "seed": int(cfg.seed), "seeds": [int(cfg.seed) + i for i in range(int(cfg.episodes))],
        "max_steps": int(cfg.max_steps), "stop_on_success": bool(cfg.stop_on_success),
        "image_size": list(sim.image_size), "camera": sim.camera, "shadows": bool(cfg.env.shadows),
        "videos": videos, "seconds": round(seconds, 2),
        "steps_per_second": round(sum(summary["lengths"]) / max(seconds, 1e-9), 1),
    }
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    from configs import ConfigError, parse_cli, save_config

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = parse_cli(CONFIG_NAME, argv)
        if cfg.video_format not in ("mp4", "gif"):
            raise ConfigError(f"video_format={cfg.video_format!r}: choose mp4 or gif")
        report = run(cfg)
    except (ConfigError, ValueError, FileNotFoundError, simlib.RenderingUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_config(cfg, cfg.out)
    print(f"{report['policy']} on {report['task']}: success {report['successes']}/{report['episodes']} = "
          f"{report['success_rate']:.1%} (95% CI {report['ci_low']:.1%}-{report['ci_high']:.1%}), "
          f"mean return {report['mean_return']:.2f}, mean length {report['mean_length']:.1f}")
    print(f"wrote {Path(cfg.out) / 'eval.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

