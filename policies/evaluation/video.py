"""Recorded rollouts as files: MP4 (H.264 through PyAV) or animated GIF (Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# GIF delays are in 10 ms units and viewers slow anything under 20 ms down: such GIFs play at most at 50 fps
GIF_MIN_DELAY_MS = 20

def write_video(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    """MP4 (H.264 through PyAV) for ``.mp4``, animated GIF (Pillow) for ``.gif``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=max(GIF_MIN_DELAY_MS, round(1000 / fps)), loop=0)
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
