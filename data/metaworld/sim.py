"""The MetaWorld simulator as the demo corpus and the evaluator see it.

One :class:`MetaWorldSim` per task. It follows lerobot's own MetaWorld env (``lerobot/envs/metaworld.py``, what
``lerobot-eval --env.type=metaworld`` runs) wherever a policy could tell the difference:

- the camera is ``corner2`` moved to lerobot's position, its image flipped on both axes;
- ``observation.state`` is the first 4 dims of MetaWorld's observation (hand xyz, gripper opening);
- actions are 4-d in [-1, 1]; the instruction is lerobot's ``TASK_DESCRIPTIONS[task]``;
- the task setup (object and goal positions) is drawn from ``seed`` exactly as lerobot's env draws it, so
  seed ``s`` here is the setup of seed ``s`` there. MT1's own ``reset(seed=...)`` ignores the seed and cycles
  through 50 fixed setups; the seeded draw uses private attributes of ``metaworld`` 3.1 (pinned, and the
  tests check that setups vary with the seed).

Steps run at 80 Hz (MetaWorld's ``frame_skip`` 5 × 2.5 ms, lerobot's ``fps``). MT1 never ends an episode on
success and refuses to step past 500 steps, so episode lengths are capped at :data:`MAX_STEPS`.
Rendering is the slow part on CPU (Mesa): render only the frames that are stored or shown. ``shadows=False``
turns the one shadow-casting light off, about 3-4× faster rendering at 96×96 on CPU, at the price of images a
little different from lerobot's env (which keeps shadows).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import numpy as np

from configs import UserError

# MuJoCo picks its OpenGL backend when it is first imported; headless CPU machines need EGL (or OSMesa).
os.environ.setdefault("MUJOCO_GL", "egl")

CAMERA = "corner2"
CAMERA_POS = (0.75, 0.075, 0.7)  # lerobot's corner2 position
FPS = 80
MAX_STEPS = 500
STATE_DIM = 4
ACTION_DIM = 4
SETUP_SEED = 42  # lerobot builds MT1(task, seed=42) before reseeding each setup
STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"  # MetaWorld's full observation (not in lerobot's MetaWorld env)
ENV_STATE_DIM = 39
REWARD_SCALE = 10.0  # MetaWorld's dense reward lies in [0, 10]

INSTALL_HINT = (
    "MuJoCo renders offscreen through EGL on machines without a display: run with MUJOCO_GL=egl and install "
    "the Mesa EGL libraries (Debian/Ubuntu: apt-get install libegl1 libopengl0 libegl-mesa0 libgl1-mesa-dri; "
    "scripts/bootstrap.sh does this when they are missing). Without EGL, MUJOCO_GL=osmesa works with "
    "apt-get install libosmesa6 (slower)."
)


class RenderingUnavailable(UserError, RuntimeError):
    """MuJoCo could not create an offscreen OpenGL context; the message says what to install."""


def image_key(camera: str = CAMERA) -> str:
    return f"observation.images.{camera}"


@cache
def task_descriptions() -> dict[str, str]:
    """Task name → natural-language instruction, lerobot's table (``metaworld_config.json``)."""
    import json
    from importlib.resources import files

    return dict(json.loads(files("lerobot.envs").joinpath("metaworld_config.json").read_text())["TASK_DESCRIPTIONS"])


def task_names() -> list[str]:
    import_mujoco_checked()  # importing metaworld imports mujoco, which loads the OpenGL libraries
    import metaworld

    return sorted(set(metaworld.MT1.ENV_NAMES) & set(task_descriptions()))


def check_task(task: str) -> str:
    """``task`` (``metaworld-`` prefix allowed) as MetaWorld names it; a ValueError listing valid names otherwise."""
    name = str(task).removeprefix("metaworld-")
    valid = task_names()
    if name not in valid:
        import difflib

        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown MetaWorld task {task!r}.{hint} Valid tasks: {', '.join(valid)}")
    return name


def expert_policy(task: str):
    """MetaWorld's scripted expert for ``task`` (``get_action(obs39) -> action4``)."""
    import warnings

    import metaworld.policies as mw_policies
    from metaworld.policies import ENV_POLICY_MAP  # noqa: F401  (present in metaworld 3.x)

    name = check_task(task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mw_policies.ENV_POLICY_MAP[name]()


@dataclass
class Step:
    """What one step returns: MetaWorld's full observation, the scaled reward and success."""

    raw: np.ndarray  # MetaWorld's 39-d observation after the step
    reward: float  # dense shaped reward / 10, in [0, 1]
    success: bool


class MetaWorldSim:
    """One MetaWorld task: seeded setups, steps, and lerobot-style observations and images."""

    def __init__(self, task: str, image_size: tuple[int, int] = (96, 96), camera: str = CAMERA,
                 shadows: bool = True):
        import_mujoco_checked()
        import metaworld

        self.task = check_task(task)
        self.instruction = task_descriptions()[self.task]
        self.camera = camera
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if min(self.image_size) < 8:
            raise ValueError(f"image_size={image_size}: images need at least 8×8 pixels")
        mt1 = metaworld.MT1(self.task, seed=SETUP_SEED)
        h, w = self.image_size
        env = mt1.train_classes[self.task](render_mode="rgb_array", camera_name=camera, width=w, height=h)
        env.set_task(mt1.train_tasks[0])
        if camera == "corner2":
            env.model.cam_pos[2] = CAMERA_POS
        if not shadows:
            env.model.light_castshadow[:] = 0
        env.reset()
        # the seeded setup draw of lerobot's env (see the module docstring)
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        self.env = env
        self.steps = 0
        self.seed: int | None = None

    @property
    def max_steps(self) -> int:
        return int(self.env.max_path_length)

    def reset(self, seed: int) -> np.ndarray:
        """Start the setup of ``seed``; returns MetaWorld's 39-d observation."""
        self.seed = int(seed)
        self.env.seed(self.seed)
        raw, _ = self.env.reset(seed=self.seed)
        self.steps = 0
        return raw

    def setup(self) -> np.ndarray:
        """The current setup's random vector (object and goal positions)."""
        return np.asarray(self.env._last_rand_vec, dtype=np.float64).copy()

    def step(self, action: np.ndarray) -> Step:
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action of shape {action.shape}; MetaWorld takes {ACTION_DIM} values")
        if self.steps >= self.max_steps:
            raise ValueError(f"MetaWorld stops at {self.max_steps} steps; reset before stepping again")
        raw, reward, _, _, info = self.env.step(np.clip(action, -1.0, 1.0))
        self.steps += 1
        return Step(raw=raw, reward=float(reward) / REWARD_SCALE, success=bool(info.get("success", 0)))

    def render(self) -> np.ndarray:
        """The camera image, uint8 H×W×3, oriented as lerobot's env shows it."""
        try:
            image = self.env.render()
        except Exception as exc:  # MuJoCo/PyOpenGL raise many types when no GL context can be made
            raise RenderingUnavailable(
                f"could not render MetaWorld (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}): "
                f"{type(exc).__name__}: {exc}. {INSTALL_HINT}"
            ) from exc
        if image is None:
            raise RenderingUnavailable(f"MetaWorld returned no image. {INSTALL_HINT}")
        if self.camera == "corner2":
            image = np.flip(image, (0, 1))
        return np.ascontiguousarray(image, dtype=np.uint8)

    def observation(self, raw: np.ndarray, image: np.ndarray | None = None,
                    environment_state: bool = False) -> dict[str, np.ndarray]:
        """The policy features of one step: ``observation.state``, when asked ``observation.environment_state``
        (the full 39-d observation, as ``python -m data.demo environment_state=true`` stores it) and, when
        given, the camera image."""
        obs = {STATE_KEY: np.asarray(raw[:STATE_DIM], dtype=np.float32)}
        if environment_state:
            obs[ENV_STATE_KEY] = np.asarray(raw, dtype=np.float32)
        if image is not None:
            obs[image_key(self.camera)] = image
        return obs

    def close(self) -> None:
        env, self.env = getattr(self, "env", None), None
        if env is not None:
            env.close()

    def __enter__(self) -> MetaWorldSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def import_mujoco_checked():
    """Import MuJoCo's renderer backend, turning a missing OpenGL library into :class:`RenderingUnavailable`."""
    try:
        import mujoco  # noqa: F401
        from gymnasium.envs.mujoco import mujoco_rendering  # noqa: F401
    except Exception as exc:
        raise RenderingUnavailable(
            f"MuJoCo could not load its OpenGL backend (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}): "
            f"{type(exc).__name__}: {exc}. {INSTALL_HINT}"
        ) from exc


def check_rendering(image_size: tuple[int, int] = (16, 16)) -> None:
    """Render one frame of a small scene; raise :class:`RenderingUnavailable` saying what to install."""
    import_mujoco_checked()
    sim = MetaWorldSim("reach-v3", image_size=image_size, shadows=False)
    try:
        sim.reset(0)
        sim.render()
    finally:
        sim.close()
