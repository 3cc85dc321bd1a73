"""Small annotated shard folders built in memory (tests and benchmarks; the one place that builds them).

    out = write_tiny_shards(tmp_path / "shards", episodes=4, length=24, obs_steps=2, horizon=16)

Writes ``out/shards/*.tar`` with :func:`data.schema.episode_samples` through webdataset's ``TarWriter`` and an
``out/manifest.json`` laid out as :mod:`data.manifest` defines it (lerobot feature dicts, lerobot-style stats).
The episodes are a point moving towards a goal: state = position and goal, action = the next position, the
image shows the point; progress rises linearly for "good" episodes and stalls/regresses for "bad" ones (every
other episode), so the weighting rules have something to separate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data.manifest import MANIFEST, SHARDS_DIR
from data.schema import SCHEMA_VERSION, episode_samples

CAMERA = "observation.images.top"
STATE = "observation.state"
ENV_STATE = "observation.environment_state"


def tiny_episode(episode: int, length: int, image_size: tuple[int, int] = (32, 32), state_dim: int = 4,
                 action_dim: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays of one tiny episode: images (T,H,W,3) uint8, state (T,S), action (T,A), progress (T,)."""
    rng = np.random.default_rng([seed, episode])
    h, w = image_size
    good = episode % 2 == 0
    s = np.linspace(0.0, 1.0, length)
    prog = s if good else np.clip(0.6 * np.sin(np.pi * s) + 0.1 * s, 0, 1)
    start, goal = rng.uniform(0.1, 0.3, 2), rng.uniform(0.7, 0.9, 2)
    pos = start[None] + prog[:, None] * (goal - start)[None]
    if state_dim < 4 or action_dim < 2:
        raise ValueError(f"state_dim={state_dim} must be >= 4 and action_dim={action_dim} >= 2")
    state = np.zeros((length, state_dim), np.float32)
    state[:, :2] = pos
    state[:, 2:4] = goal[None]
    if state_dim > 4:
        state[:, 4:] = rng.normal(0, 0.1, (length, state_dim - 4))
    nxt = np.concatenate([pos[1:], pos[-1:]], axis=0)
    action = np.zeros((length, action_dim), np.float32)
    action[:, :2] = nxt
    if action_dim > 2:
        action[:, 2:] = rng.normal(0, 0.1, (length, action_dim - 2))
    images = np.empty((length, h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for t in range(length):
        img = np.stack([40 + 30 * xx / w, 60 + 20 * (episode % 5) + 0 * yy, 90 + 50 * t / length + 0 * xx], -1)
        cx, cy = int(pos[t, 0] * (w - 4)), int(pos[t, 1] * (h - 4))
        img[cy:cy + 4, cx:cx + 4] = (250, 240, 60)
        images[t] = img.astype(np.uint8)
    env = np.concatenate([pos, np.repeat(goal[None], length, 0)], axis=1).astype(np.float32)
    return {CAMERA: images, STATE: state, ENV_STATE: env, "action": action, "progress": prog.astype(np.float32)}


def _stats(array: np.ndarray, image: bool) -> dict[str, list]:
    from lerobot.datasets.compute_stats import get_feature_stats

    if image:  # lerobot's image stats: float in [0, 1], per channel, shape (3, 1, 1)
        x = array.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        st = get_feature_stats(x, axis=(0, 2, 3), keepdims=True)
        st = {k: (v[0] if k != "count" else v) for k, v in st.items()}
    else:
        st = get_feature_stats(array.astype(np.float32), axis=0, keepdims=False)
    return {k: np.asarray(v).tolist() for k, v in st.items()}


def write_tiny_shards(out: str | Path, episodes: int = 4, length: int = 24, obs_steps: int = 2, horizon: int = 16,
                      image_size: tuple[int, int] = (32, 32), state_dim: int = 4, action_dim: int = 2,
                      episodes_per_shard: int = 1, image_format: str = "png", seed: int = 0,
                      fps: float = 10.0, images: bool = True) -> Path:
    """Write a finished annotation output folder (shards + manifest) and return its path.

    ``images=False`` stores ``observation.environment_state`` (position and goal) instead of camera images:
    state-only policies train an order of magnitude faster on CPU.
    """
    import webdataset as wds

    out = Path(out)
    (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    eps = [tiny_episode(e, length, image_size, state_dim, action_dim, seed) for e in range(episodes)]
    shards, summaries = [], []
    offset = 0
    for first in range(0, episodes, episodes_per_shard):
        name = f"{SHARDS_DIR}/shard-{len(shards):05d}.tar"
        members = list(range(first, min(first + episodes_per_shard, episodes)))
        count = 0
        with wds.TarWriter(str(out / name)) as sink:
            for e in members:
                ep = eps[e]
                for sample in episode_samples(
                    episode_index=e, index_offset=offset, task="reach the goal", fps=fps,
                    images={CAMERA: ep[CAMERA]} if images else {},
                    arrays={STATE: ep[STATE]} if images else {STATE: ep[STATE], ENV_STATE: ep[ENV_STATE]},
                    action=ep["action"],
                    progress=ep["progress"], obs_steps=obs_steps, horizon=horizon, image_format=image_format,
                ):
                    sink.write(sample)
                    count += 1
                summaries.append({
                    "episode_index": e, "length": length, "task": "reach the goal", "index_offset": offset,
                    "success_score": float(ep["progress"][-3:].mean()), "final_progress": float(ep["progress"][-1]),
                    "shard": name,
                })
                offset += length
        shards.append({"name": name, "count": count, "episodes": members})
    features = {
        STATE: {"dtype": "float32", "shape": [state_dim], "names": None},
        "action": {"dtype": "float32", "shape": [action_dim], "names": None},
    }
    stats = {
        STATE: _stats(np.concatenate([e[STATE] for e in eps]), image=False),
        "action": _stats(np.concatenate([e["action"] for e in eps]), image=False),
    }
    if images:
        features[CAMERA] = {"dtype": "video", "shape": [*image_size, 3], "names": ["height", "width", "channels"]}
        stats[CAMERA] = _stats(np.concatenate([e[CAMERA] for e in eps]), image=True)
    else:
        features[ENV_STATE] = {"dtype": "float32", "shape": [4], "names": None}
        stats[ENV_STATE] = _stats(np.concatenate([e[ENV_STATE] for e in eps]), image=False)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "source": {"repo_id": "tiny/fixture", "root": None, "fps": fps, "features": features,
                   "total_episodes": episodes, "episodes": list(range(episodes))},
        "reward": {"type": "fixture"},
        "window": {"obs_steps": obs_steps, "horizon": horizon},
        "image": {"format": image_format, "quality": 95},
        "camera": CAMERA,
        "features": features,
        "stats": stats,
        "episodes": summaries,
        "shards": shards,
        "failures": [],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out
