"""Loading a Qwen-VL model and showing it frames at one fixed resolution (shared by TOPReward and GVL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


# set in the config of a randomly initialised model built for tests and offline demos (saved in config.json),
# so outputs scored with it say so wherever they are read, whatever the folder is called
RANDOM_TEST_MODEL = "topbc_random_test_model"


def is_random_test_model(model) -> bool:
    """Whether ``model`` (a transformers model) is a random test model (its config carries the marker)."""
    return bool(getattr(getattr(model, "config", None), RANDOM_TEST_MODEL, False))


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is not one of {sorted(DTYPES)}")
    return DTYPES[name]


def load_vlm(model_id_or_path: str | Path, *, device: str = "cpu", dtype: str = "float32",
             attn_implementation: str | None = "sdpa", revision: str | None = None):
    """``(model, processor)`` through transformers' ``from_pretrained``: a hub id or a local folder."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs = {"revision": revision} if revision else {}
    processor = AutoProcessor.from_pretrained(str(model_id_or_path), **kwargs)
    model = AutoModelForImageTextToText.from_pretrained(
        str(model_id_or_path), dtype=torch_dtype(dtype), attn_implementation=attn_implementation, **kwargs
    ).to(device)
    return model.eval(), processor


def frame_resolution(height: int, width: int, factor: int, resolution=None,
                     max_frame_pixels: int = 256 * 256) -> tuple[int, int]:
    """The (h, w), multiples of ``factor`` (patch × merge size), that every frame of an episode is shown at.

    It depends on the frame size only, never on the clip length. ``resolution``: the long side in pixels,
    an explicit ``(h, w)``, or None (native size, scaled down to at most ``max_frame_pixels``).
    """
    if isinstance(resolution, (list, tuple)):
        h, w = (int(x) for x in resolution)
    else:
        scale = 1.0
        if resolution is not None:
            scale = int(resolution) / max(height, width)
        elif height * width > max_frame_pixels:
            scale = (max_frame_pixels / (height * width)) ** 0.5
        h, w = height * scale, width * scale
    return max(factor, int(round(h / factor)) * factor), max(factor, int(round(w / factor)) * factor)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 N×H×W×3 → uint8 N×h×w×3 (bicubic, antialiased); a no-op at the same size."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return np.ascontiguousarray(frames)
    clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    clip = F.interpolate(clip, size=tuple(size), mode="bicubic", antialias=True, align_corners=False)
    return clip.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def check_frames(frames, fps, instruction, error=ValueError) -> None:
    """The input checks every reward model makes: uint8 T×H×W×3 with T ≥ 1, fps > 0, a task text."""
    if not isinstance(frames, np.ndarray):
        raise error(f"frames must be a numpy uint8 array T×H×W×3, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise error(f"frames must be T×H×W×3 (RGB), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise error(f"frames must be uint8 (0..255), got {frames.dtype}; convert with .astype(np.uint8)")
    if frames.shape[0] < 1:
        raise error("frames has 0 frames: an episode needs at least 1 frame to score")
    if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
        raise error(f"fps={fps!r} must be the clip's native frame rate, > 0")
    if not isinstance(instruction, str) or not instruction.strip():
        raise error(f"instruction={instruction!r} is empty: give the episode's task text")
