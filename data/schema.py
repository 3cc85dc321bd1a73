"""The shard schema: one WebDataset sample per timestep t of an episode (the single definition).

Fields of a sample (``__key__`` = ``f"{episode:06d}_{frame:06d}"``):

- ``<image feature>.<j>.jpg|png`` for j in 0..obs_steps-1: camera images of the observation window
  ``t-obs_steps+1 .. t`` (clamped at the episode start), uint8 H×W×3.
- ``<state feature>.npy``: every other ``observation.*`` feature over the same window, float32 (obs_steps, D).
- ``obs_is_pad.npy``: bool (obs_steps,), True where the window reached before the episode start.
- ``action.npy``: float32 (H, D), the action chunk ``a[t:t+H]`` (clamped at the episode end, like lerobot);
  ``action_is_pad.npy``: bool (H,), True past the episode end.
- ``progress.npy``: float32 (H+1,), the progress window ``p[t:t+H+1]`` (clamped at the episode end).
- ``meta.json``: episode_index, frame_index, index (dataset-global), task, fps, episode_length.

Feature names keep lerobot's dotted names: webdataset splits a member name at its first dot into key and
field, so ``000003_000017.observation.images.top.0.jpg`` is field ``observation.images.top.0.jpg``.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from configs import UserError

SCHEMA_VERSION = 1
IMAGE_FORMATS = ("jpg", "png")

META = "meta.json"
ACTION = "action.npy"
ACTION_IS_PAD = "action_is_pad.npy"
OBS_IS_PAD = "obs_is_pad.npy"
PROGRESS = "progress.npy"


def sample_key(episode_index: int, frame_index: int) -> str:
    return f"{episode_index:06d}_{frame_index:06d}"


def parse_key(key: str) -> tuple[int, int]:
    """Inverse of :func:`sample_key`: ``"000003_000017"`` → (3, 17)."""
    ep, _, fr = key.partition("_")
    return int(ep), int(fr)


def image_field(feature: str, j: int, fmt: str) -> str:
    return f"{feature}.{j}.{fmt}"


def array_field(feature: str) -> str:
    return f"{feature}.npy"


@dataclass(frozen=True)
class Windows:
    """Raw frame indices (clamped into the episode) and padding masks of sample t's windows."""

    obs: np.ndarray
    obs_is_pad: np.ndarray
    action: np.ndarray
    action_is_pad: np.ndarray
    progress: np.ndarray


def windows(t: int, length: int, obs_steps: int, horizon: int) -> Windows:
    """The observation window ``t-obs_steps+1..t``, action chunk ``t..t+H-1`` and progress ``t..t+H``."""
    if not 0 <= t < length:
        raise ValueError(f"frame {t} outside an episode of {length} frames")
    if obs_steps < 1 or horizon < 1:
        raise ValueError(f"window.obs_steps={obs_steps} and window.horizon={horizon} must be >= 1")
    obs = np.arange(t - obs_steps + 1, t + 1)
    act = np.arange(t, t + horizon)
    prog = np.arange(t, t + horizon + 1)
    return Windows(
        obs=np.clip(obs, 0, length - 1),
        obs_is_pad=obs < 0,
        action=np.clip(act, 0, length - 1),
        action_is_pad=act >= length,
        progress=np.clip(prog, 0, length - 1),
    )


def encode_image(img: np.ndarray, fmt: str = "jpg", quality: int = 95) -> bytes:
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format {fmt!r} is not one of {IMAGE_FORMATS}")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"images must be uint8 H×W×3, got {img.dtype} {img.shape}")
    buf = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    else:
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


_NPY_HEADER = re.compile(rb"\{'descr': '([<>|][a-z]\d+)', 'fortran_order': False, 'shape': \(([\d, ]*)\), \}")


def decode_array(data: bytes) -> np.ndarray:
    """The array of one ``.npy`` member (as :func:`encode_sample` writes them)."""
    # fast path for the plain v1.0 headers np.save writes (np.load parses them with ast, a third of the
    # loader's decode time); anything else goes through np.load
    if data[:8] == b"\x93NUMPY\x01\x00":
        n = int.from_bytes(data[8:10], "little")
        m = _NPY_HEADER.match(data, 10, 10 + n)
        if m:
            shape = tuple(int(x) for x in m.group(2).split(b",") if x.strip())
            return np.frombuffer(data, dtype=np.dtype(m.group(1).decode()), offset=10 + n).reshape(shape).copy()
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_sample(
    *,
    meta: dict,
    images: dict[str, np.ndarray],
    arrays: dict[str, np.ndarray],
    action: np.ndarray,
    win: Windows,
    progress: np.ndarray,
    image_format: str = "jpg",
    quality: int = 95,
) -> dict[str, bytes | str]:
    """One sample, as webdataset's writer takes it.

    ``images[feature]`` is (obs_steps, H, W, 3) uint8 (or a list of already encoded images, as
    :func:`episode_samples` passes them) and ``arrays[feature]`` (obs_steps, D) — already taken at
    ``win.obs``; ``action`` is (H, D) taken at ``win.action``; ``progress`` is (H+1,) taken at ``win.progress``.
    """
    sample: dict[str, bytes | str] = {"__key__": sample_key(meta["episode_index"], meta["frame_index"])}
    for feature, frames in images.items():
        for j, img in enumerate(frames):
            data = img if isinstance(img, bytes) else encode_image(img, image_format, quality)
            sample[image_field(feature, j, image_format)] = data
    for feature, values in arrays.items():
        sample[array_field(feature)] = _npy(np.asarray(values, dtype=np.float32))
    sample[ACTION] = _npy(np.asarray(action, dtype=np.float32))
    sample[ACTION_IS_PAD] = _npy(np.asarray(win.action_is_pad, dtype=bool))
    sample[OBS_IS_PAD] = _npy(np.asarray(win.obs_is_pad, dtype=bool))
    sample[PROGRESS] = _npy(np.asarray(progress, dtype=np.float32))
    sample[META] = json.dumps(meta).encode()
    return sample


REQUIRED_FIELDS = (META, ACTION, ACTION_IS_PAD, OBS_IS_PAD, PROGRESS)


class SampleError(KeyError):
    """A shard sample lacks a field the reader needs."""


class WindowError(UserError, ValueError):
    """The shards' windows are shorter than the policy needs."""


def decode_sample(sample: dict[str, bytes]) -> dict:
    """Inverse of :func:`encode_sample`: raw bytes → numpy arrays (images stacked (obs_steps, H, W, 3) uint8).

    Returns ``{"__key__", "meta", "action", "action_is_pad", "obs_is_pad", "progress", <feature>: array}``.
    """
    key = sample.get("__key__", "?")
    src = sample.get("__url__", "?")
    missing = [f for f in REQUIRED_FIELDS if f not in sample]
    if missing:
        raise SampleError(f"sample {key} in {src} lacks {missing}; fields present: {sorted(sample)}")
    out: dict = {"__key__": key, "meta": json.loads(sample[META])}
    out["action"] = decode_array(sample[ACTION])
    out["action_is_pad"] = decode_array(sample[ACTION_IS_PAD])
    out["obs_is_pad"] = decode_array(sample[OBS_IS_PAD])
    out["progress"] = decode_array(sample[PROGRESS])
    frames: dict[str, dict[int, np.ndarray]] = {}
    for name, data in sample.items():
        if name.startswith("__") or name in REQUIRED_FIELDS:
            continue
        stem, _, ext = name.rpartition(".")
        if ext in IMAGE_FORMATS:
            feature, _, j = stem.rpartition(".")
            frames.setdefault(feature, {})[int(j)] = decode_image(data)
        elif ext == "npy":
            out[stem] = decode_array(data)
    for feature, by_j in frames.items():
        out[feature] = np.stack([by_j[j] for j in sorted(by_j)])
    return out


def episode_samples(
    *,
    episode_index: int,
    index_offset: int,
    task: str,
    fps: float,
    images: dict[str, np.ndarray],
    arrays: dict[str, np.ndarray],
    action: np.ndarray,
    progress: np.ndarray,
    obs_steps: int,
    horizon: int,
    image_format: str = "jpg",
    quality: int = 95,
    extra_meta: dict | None = None,
):
    """Yield the encoded samples of one whole episode, t = 0..T-1.

    ``images[f]`` is (T, H, W, 3) uint8, ``arrays[f]`` (T, D), ``action`` (T, D), ``progress`` (T,);
    ``index_offset`` is the dataset-global index of frame 0 (lerobot's ``index`` column).
    """
    length = len(action)
    for name, a in [*images.items(), *arrays.items(), ("progress", progress)]:
        if len(a) != length:
            raise ValueError(f"episode {episode_index}: {name} has {len(a)} frames but action has {length}")
    # every frame is encoded once, however many observation windows it appears in
    encoded = {f: [encode_image(img, image_format, quality) for img in v] for f, v in images.items()}
    for t in range(length):
        win = windows(t, length, obs_steps, horizon)
        meta = {
            "episode_index": int(episode_index),
            "frame_index": t,
            "index": int(index_offset + t),
            "task": task,
            "fps": float(fps),
            "episode_length": int(length),
            **(extra_meta or {}),
        }
        yield encode_sample(
            meta=meta,
            images={f: [v[i] for i in win.obs] for f, v in encoded.items()},
            arrays={f: v[win.obs] for f, v in arrays.items()},
            action=action[win.action],
            win=win,
            progress=progress[win.progress],
            image_format=image_format,
            quality=quality,
        )
