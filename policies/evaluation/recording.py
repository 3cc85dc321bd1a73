"""Policy rollouts recorded as a LeRobot v3 dataset, the shape lerobot's recording tools give a real robot's.

    recorder = RolloutRecorder.start(out / RECORDING_DIR, sim, info, overwrite=False)
    evaluate_policy(sim, policy, ..., on_step=recorder.step, on_episode=recorder.end_episode)
    recorder.finish()
    recording_info(out / RECORDING_DIR)["policy"]     # the recorded policy's name

One episode per rollout, one row per step: the camera image the policy saw before acting (a video feature
under the corpus's key, ``observation.images.<camera>``), ``observation.state`` (hand xyz + gripper),
``action`` (the action the policy returned; the simulator clips it to [-1, 1]), ``next.reward`` (the step's
reward / 10, as in the corpus), ``next.success`` (true from the episode's first success on) and the
instruction as the task; fps is the simulator's. The features are the corpus's
(:func:`data.metaworld.corpus.demo_features`) without its ``quality`` column, which a robot recording does
not have. The policy's name and the recording's provenance go to ``meta/topbc_recording.json``
(:data:`RECORDING_INFO`; read it with :func:`recording_info`).

The recording folder is claimed as every command claims its output (:func:`configs.outputs.claim_output`,
kind ``recording``, the provenance as identity): a folder holding another configuration's recording is
refused unless ``overwrite``. Episodes are written as they end (frames staged on disk by lerobot, one video
encoded per episode), into ``.partial/`` inside the folder; the finished dataset replaces the folder's
previous one only once it is complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from configs.outputs import claim_output
from data.metaworld import sim as simlib
from data.metaworld.corpus import demo_features
from policies.evaluation.policies import SCRIPTED

RECORDING_DIR = "recording"  # the recording's folder inside the evaluation's out
RECORDING_INFO = "meta/topbc_recording.json"
SOURCE = "simulator (MetaWorld)"
KIND = "recording"
PARTIAL = ".partial"
# the entries of a recording folder that are ours to replace (besides configs.outputs' run.json)
OURS = ("meta", "data", "videos", "images", PARTIAL)
ROBOT_TYPE = "sawyer"


def default_name(policy: str) -> str:
    """The name a recording of ``policy`` gets when none is given: ``expert`` / ``random``, or the export
    folder's name (the run folder's name for a training run's ``RUN_DIR/export``)."""
    path = Path(str(policy))
    if path.name == "export" and path.parent.name not in ("", "."):
        return path.parent.name
    return path.name or str(policy)


def recording_provenance(cfg: DictConfig, sim: simlib.MetaWorldSim) -> dict:
    """What a recording of this evaluation stores in ``meta/topbc_recording.json``; also what a re-run into the
    same folder must match to replace it."""
    policy = str(cfg.policy)
    name = cfg.get("record_name")
    plan = {}
    if cfg.get("plan"):  # the run plan followed (policies.evaluation.plan), checked when evaluated
        from policies.evaluation.plan import read_plan

        plan = {"plan": {"file": Path(str(cfg.plan)).name, "seed": read_plan(str(cfg.plan))[0]["plan_seed"]}}
    return plan | {
        "policy": str(name) if name not in (None, "") else default_name(policy),
        "policy_path": policy if policy in SCRIPTED else str(Path(policy).resolve()),
        "task": sim.task, "instruction": sim.instruction,
        "seeds": [int(cfg.seed) + i for i in range(int(cfg.episodes))],
        "source": SOURCE, "max_steps": int(cfg.max_steps),
        "stop_on_success": bool(cfg.stop_on_success), "fps": simlib.FPS, "camera": sim.camera,
        "image_size": list(sim.image_size), "shadows": bool(cfg.env.shadows), "device": str(cfg.device),
    }


def recording_features(image_size: tuple[int, int], camera: str) -> dict:
    """The recording's lerobot features: the corpus's, without the ``quality`` column."""
    return demo_features(image_size, camera, quality=False)


def recording_info(root: str | Path) -> dict | None:
    """The provenance of the recording at ``root`` (``policy``: the recorded policy's name, ``policy_path``,
    ``task``, ``instruction``, ``seeds``, ``source``, ``max_steps``, ``stop_on_success``, ...), or None when
    ``root`` holds no recording written here (a robot's own recording, a corpus)."""
    path = Path(root) / RECORDING_INFO
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); record the rollouts again "
                         "(python -m policies.evaluate ... record=true)") from None
    if not isinstance(info, dict) or "policy" not in info:
        raise ValueError(f"{path} holds no recording provenance (no 'policy'); record the rollouts again")
    return info


class RolloutRecorder:
    """Writes rollouts, one episode each, into a LeRobot v3 dataset; see the module docstring."""

    def __init__(self, root: Path, sim: simlib.MetaWorldSim, info: dict):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self.root = Path(root)
        self.partial = self.root / PARTIAL
        if self.partial.exists():  # an interrupted recording of this same configuration
            shutil.rmtree(self.partial)
        self.info = dict(info)
        self.key = simlib.image_key(sim.camera)
        self.instruction = sim.instruction
        self.dataset = LeRobotDataset.create(
            f"local/{self.root.name}", fps=simlib.FPS, features=recording_features(sim.image_size, sim.camera),
            root=self.partial, robot_type=ROBOT_TYPE, use_videos=True)
        self.episodes = 0
        self.frames = 0
        self._succeeded = False

    @classmethod
    def start(cls, root: str | Path, sim: simlib.MetaWorldSim, info: dict, overwrite: bool = False
              ) -> RolloutRecorder:
        """Claim ``root`` for the recording ``info`` describes (refused, naming what differs, when it holds
        another configuration's recording and not ``overwrite``) and open the dataset to write into."""
        claim_output(root, info, overwrite, kind=KIND, ours=OURS)
        return cls(Path(root), sim, info)

    def step(self, image: np.ndarray, raw: np.ndarray, action: np.ndarray, step: simlib.Step) -> None:
        """One row: the image and state the policy acted on, its action, and what the step returned."""
        if image is None:
            raise ValueError("a recorded rollout needs the camera image of every step")
        self._succeeded = self._succeeded or bool(step.success)
        self.dataset.add_frame({
            self.key: image,
            simlib.STATE_KEY: np.asarray(raw[: simlib.STATE_DIM], dtype=np.float32),
            "action": np.asarray(action, dtype=np.float32),
            "next.reward": np.array([step.reward], dtype=np.float32),
            "next.success": np.array([self._succeeded]),
            "task": self.instruction,
        })
        self.frames += 1

    def end_episode(self, result=None) -> None:
        """Write the episode's rows and encode its video (called as each rollout ends)."""
        self.dataset.save_episode(parallel_encoding=False)
        self.episodes += 1
        self._succeeded = False

    def finish(self) -> Path:
        """Finalize the dataset, write its provenance, and put it in place of the folder's previous one."""
        self.dataset.finalize()
        images = self.partial / "images"  # lerobot's frame staging folder, empty once videos are encoded
        if images.is_dir() and not any(p.is_file() for p in images.rglob("*")):
            shutil.rmtree(images)
        (self.partial / RECORDING_INFO).write_text(json.dumps({**self.info, "episodes": self.episodes}, indent=1))
        for name in OURS:
            old = self.root / name
            if name != PARTIAL and old.exists():
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        for entry in sorted(self.partial.iterdir()):
            entry.rename(self.root / entry.name)
        self.partial.rmdir()
        return self.root

    def discard(self) -> None:
        """Drop an unfinished recording (the folder's previous recording, if any, stays)."""
        shutil.rmtree(self.partial, ignore_errors=True)
