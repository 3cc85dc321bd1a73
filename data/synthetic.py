"""Small synthetic LeRobot v3 datasets, built offline (tests, benchmarks, examples).

    from data.synthetic import make_synthetic_dataset
    root = make_synthetic_dataset(tmp_path / "ds", episodes=4, length=30, fps=10, image_size=(64, 64))

Each episode shows a bright square moving across a coloured background (the background colour depends on the
camera, the episode and time, so every frame differs). ``observation.state`` is the square's position and a
few derived values, ``action`` the position one step ahead (so actions are known exactly), and
``next.reward`` a per-frame progress-like column: ``t / (T-1)`` shaped by a per-episode quality in (0.2, 1]
(a poor demonstration stalls or briefly moves backwards). Everything is a function of ``seed``: the same arguments give the same data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

STATE_DIM = 6
ACTION_DIM = 4
TASKS = ("push the red block to the goal", "pick up the cube and place it in the bowl")


def camera_key(name: str) -> str:
    return f"observation.images.{name}"


def synthetic_features(image_size: tuple[int, int], cameras: Sequence[str]) -> dict:
    h, w = image_size
    features = {
        camera_key(c): {"dtype": "video", "shape": (h, w, 3), "names": ["height", "width", "channels"]}
        for c in cameras
    }
    features["observation.state"] = {"dtype": "float32", "shape": (STATE_DIM,), "names": None}
    features["action"] = {"dtype": "float32", "shape": (ACTION_DIM,), "names": None}
    features["next.reward"] = {"dtype": "float32", "shape": (1,), "names": None}
    return features


def synthetic_episode(episode: int, length: int, image_size: tuple[int, int], cameras: Sequence[str],
                      seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of one synthetic episode (what :func:`make_synthetic_dataset` writes), deterministic."""
    if length < 1:
        raise ValueError(f"length={length}: an episode needs at least 1 frame")
    h, w = image_size
    rng = np.random.default_rng([seed, episode])
    quality = float(rng.uniform(0.2, 1.0))
    start = rng.uniform(0.1, 0.3, size=2)
    goal = rng.uniform(0.7, 0.9, size=2)
    s = np.linspace(0.0, 1.0, length + 1)
    # progress along the path: a low-quality demonstration stalls, even regresses, in the middle
    prog = np.clip(s + (1 - quality) * np.sin(2 * np.pi * s) * 0.3, 0, 1)
    pos = start[None] + prog[:, None] * (goal - start)[None] + rng.normal(0, 0.005, size=(length + 1, 2))
    state = np.concatenate(
        [pos[:-1], np.diff(pos, axis=0), np.linalg.norm(goal - pos[:-1], axis=1, keepdims=True),
         np.full((length, 1), quality)], axis=1,
    ).astype(np.float32)
    action = np.concatenate([pos[1:], np.diff(pos, axis=0) * 10], axis=1).astype(np.float32)
    reward = (prog[:length] * quality).astype(np.float32)[:, None]
    out: dict[str, np.ndarray] = {"observation.state": state, "action": action, "next.reward": reward}
    yy, xx = np.mgrid[0:h, 0:w]
    side = max(4, min(h, w) // 6)
    for ci, cam in enumerate(cameras):
        base = np.array([40 + 60 * ci, 90 + 11 * (episode % 7), 160 - 50 * ci], dtype=np.float32)
        frames = np.empty((length, h, w, 3), dtype=np.uint8)
        for t in range(length):
            img = base[None, None, :] + 40.0 * np.sin(2 * np.pi * (xx / w + t / max(length, 2)))[..., None]
            img = img + np.array([0.0, 30.0 * yy.mean() / h, 0.0]) * (t / max(length - 1, 1))
            px, py = pos[t] if ci == 0 else pos[t][::-1]
            x0, y0 = int(px * (w - side)), int(py * (h - side))
            img[y0:y0 + side, x0:x0 + side] = (250, 240, 60)
            frames[t] = np.clip(img, 0, 255).astype(np.uint8)
        out[camera_key(cam)] = frames
    return out


def make_synthetic_dataset(
    root: str | Path,
    episodes: int = 4,
    length: int | Sequence[int] = 30,
    fps: int = 10,
    image_size: tuple[int, int] = (64, 64),
    cameras: Sequence[str] = ("top",),
    seed: int = 0,
    repo_id: str = "local/synthetic",
    tasks: Sequence[str] = TASKS,
) -> Path:
    """Write a LeRobot v3 dataset (videos, state, action, ``next.reward``, tasks) to ``root``; return it.

    ``length`` is one length for all episodes or one per episode. ``root`` must not exist yet (lerobot
    refuses to write into an existing folder).
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} already exists; give make_synthetic_dataset a new folder")
    lengths = [int(length)] * episodes if np.isscalar(length) else [int(n) for n in length]
    if len(lengths) != episodes:
        raise ValueError(f"{len(lengths)} lengths given for {episodes} episodes")
    if not cameras:
        raise ValueError("at least one camera is needed")
    image_size = (int(image_size[0]), int(image_size[1]))
    ds = LeRobotDataset.create(repo_id, fps=int(fps), features=synthetic_features(image_size, cameras),
                               root=root, use_videos=True)
    for ep, n in enumerate(lengths):
        data = synthetic_episode(ep, n, image_size, cameras, seed=seed)
        task = tasks[ep % len(tasks)]
        for t in range(n):
            ds.add_frame({k: v[t] for k, v in data.items()} | {"task": task})
        ds.save_episode(parallel_encoding=False)
    ds.finalize()
    return root
