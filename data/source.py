"""Reading a LeRobot v3 dataset an episode at a time (through ``lerobot.datasets``).

    src = open_dataset(root="data/my_ds")            # or open_dataset(repo_id="lerobot/pusht")
    for ep in src.episodes():
        frames = src.decode_frames(ep, src.camera())  # (T, H, W, 3) uint8, ONE decode call per episode
        cols = src.read_columns(ep, ["observation.state", "action"])   # {name: (T, D) float}

A whole episode is read at once: its rows come from the parquet file that holds it (no per-frame
``dataset[i]``) and its video frames from one ``decode_video_frames`` call with every timestamp. A camera is
either a video feature (dtype ``video``: frames in mp4 files) or an image feature (dtype ``image``, a dataset
made with ``use_videos=False``: one encoded image per row in the parquet file, decoded here); both read the
same way, as :attr:`SourceDataset.camera_keys`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from configs import UserError


class SourceError(UserError, ValueError):
    """The source dataset, a feature of it, or one of its episodes cannot be read; the message says why."""


@dataclass(frozen=True)
class SourceEpisode:
    """One episode of the source: where its rows and video frames are."""

    index: int
    length: int
    from_index: int  # dataset-global index of frame 0 (lerobot's ``index`` column)
    tasks: tuple[str, ...]
    data_file: str  # relative parquet path
    videos: dict[str, tuple[str, float]] = field(default_factory=dict)  # key -> (relative mp4, from_timestamp)

    @property
    def task(self) -> str | None:
        """The episode's instruction (its first task string), None when it has none."""
        for t in self.tasks:
            if isinstance(t, str) and t.strip():
                return t
        return None


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class SourceDataset:
    """A LeRobot v3 dataset opened for episode-wise reading."""

    def __init__(self, meta, video_backend: str | None = None, tolerance_s: float = 1e-4):
        self.meta = meta
        self.tolerance_s = float(tolerance_s)
        self.root = Path(meta.root)
        self.repo_id = meta.repo_id
        self.video_backend = video_backend or "pyav"
        self._table_cache: tuple[str, object] | None = None

    # ---- identity ---------------------------------------------------------------------------------
    @property
    def fps(self) -> float:
        return float(self.meta.fps)

    @property
    def features(self) -> dict:
        """lerobot's feature dict, as plain JSON-able values."""
        return _plain(dict(self.meta.features))

    @property
    def video_keys(self) -> list[str]:
        return list(self.meta.video_keys)

    @property
    def image_keys(self) -> list[str]:
        """Cameras stored as images in the parquet files (lerobot's ``use_videos=False``)."""
        return list(self.meta.image_keys)

    @property
    def camera_keys(self) -> list[str]:
        """Every camera, video or image feature, in the dataset's feature order."""
        return [k for k, f in self.meta.features.items() if f["dtype"] in ("video", "image")]

    @property
    def total_episodes(self) -> int:
        return int(self.meta.total_episodes)

    def camera(self, key: str | None = None) -> str:
        """The camera feature to use: ``key`` (checked) or the first camera (video or image feature)."""
        keys = self.camera_keys
        if not keys:
            raise SourceError(f"dataset {self.repo_id} at {self.root} has no camera (no video or image "
                              f"feature); features: {sorted(self.meta.features)}")
        if key in (None, ""):
            return keys[0]
        if key not in keys:
            short = [k for k in keys if k.rsplit(".", 1)[-1] == key]
            if len(short) == 1:
                return short[0]
            raise SourceError(f"camera {key!r} is not a camera of {self.repo_id}; cameras: {keys} "
                              f"(set dataset.camera to one of them)")
        return key

    def numeric_columns(self) -> list[str]:
        """Per-frame numeric features (state, action, rewards, ...), excluding the bookkeeping columns."""
        skip = {"timestamp", "frame_index", "episode_index", "index", "task_index"}
        return [k for k, f in self.meta.features.items()
                if f["dtype"] in ("float32", "float64", "int64", "int32", "bool") and k not in skip]

    def state_keys(self) -> list[str]:
        """Non-image ``observation.*`` features (stored in the shards beside the images)."""
        return [k for k in self.numeric_columns() if k.startswith("observation.")]

    # ---- episodes ---------------------------------------------------------------------------------
    def episodes(self, selection: list[int] | None = None) -> list[SourceEpisode]:
        """The episodes, in index order (optionally only ``selection``)."""
        if self.meta.episodes is None:
            from lerobot.datasets.io_utils import load_episodes

            self.meta.episodes = load_episodes(self.root)
        table = self.meta.episodes
        out = []
        wanted = None if selection is None else {int(i) for i in selection}
        for row in table:
            idx = int(row["episode_index"])
            if wanted is not None and idx not in wanted:
                continue
            videos = {}
            for key in self.video_keys:
                rel = self.meta.video_path.format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                  file_index=row[f"videos/{key}/file_index"])
                videos[key] = (rel, float(row[f"videos/{key}/from_timestamp"]))
            data_file = self.meta.data_path.format(chunk_index=row["data/chunk_index"],
                                                   file_index=row["data/file_index"])
            tasks = row.get("tasks")
            tasks = [] if tasks is None else list(tasks)
            out.append(SourceEpisode(index=idx, length=int(row["length"]), from_index=int(row["dataset_from_index"]),
                               tasks=tuple(str(t) for t in tasks if t is not None), data_file=data_file,
                               videos=videos))
        if wanted is not None:
            missing = sorted(wanted - {e.index for e in out})
            if missing:
                raise SourceError(f"episodes {missing} are not in {self.repo_id} "
                                  f"({self.total_episodes} episodes, 0..{self.total_episodes - 1})")
        return sorted(out, key=lambda e: e.index)

    def _table(self, rel: str):
        import pyarrow.parquet as pq

        cached = self._table_cache  # one read: another thread may replace it meanwhile
        if cached is None or cached[0] != rel:
            path = self.root / rel
            if not path.exists():
                raise SourceError(f"data file {path} is missing")
            cached = self._table_cache = (rel, pq.read_table(path))
        return cached[1]

    def _episode_rows(self, ep: SourceEpisode, names: list[str]):
        """The episode's rows of the parquet table (checked to hold ``names``) and their frame order."""
        import pyarrow.compute as pc

        table = self._table(ep.data_file)
        available = [c for c in table.column_names]
        missing = [n for n in names if n not in available]
        if missing:
            raise SourceError(f"columns {missing} are not in {self.root / ep.data_file}; "
                              f"available: {sorted(self.numeric_columns())}")
        rows = table.filter(pc.equal(table["episode_index"], ep.index))
        frame_idx = rows["frame_index"].to_numpy()
        order = np.argsort(frame_idx, kind="stable")
        if len(rows) != ep.length or not np.array_equal(frame_idx[order], np.arange(ep.length)):
            raise SourceError(f"episode {ep.index}: {len(rows)} rows in {ep.data_file} with frame indices "
                              f"not 0..{ep.length - 1} (the episode metadata says {ep.length} frames)")
        return rows, order

    def read_columns(self, ep: SourceEpisode, names: list[str]) -> dict[str, np.ndarray]:
        """The episode's rows of ``names`` as float arrays (T, D) (scalars as (T, 1)), in frame order."""
        rows, order = self._episode_rows(ep, names)
        out = {}
        for n in names + ["timestamp"]:
            col = rows[n].to_numpy(zero_copy_only=False)
            if col.dtype == object:
                col = np.stack(col)
            col = np.asarray(col, dtype=np.float64 if n == "timestamp" else np.float32)
            if col.ndim == 1:
                col = col[:, None] if n != "timestamp" else col
            out[n] = col[order]
        return out

    def video_path(self, ep: SourceEpisode, camera: str) -> Path:
        return self.root / ep.videos[camera][0]

    def decode_frames(self, ep: SourceEpisode, camera: str, timestamps: np.ndarray | None = None) -> np.ndarray:
        """All frames of the episode from ``camera`` as uint8 (T, H, W, 3), decoded in one call.

        ``timestamps`` are the episode-relative timestamps (the ``timestamp`` column); default ``j / fps``.
        An image feature has one stored image per frame, so ``timestamps`` play no part there.
        """
        from einops import rearrange
        from lerobot.datasets.video_utils import decode_video_frames

        if camera in self.image_keys:
            return self._decode_images(ep, camera)
        if camera not in ep.videos:
            raise SourceError(f"episode {ep.index} has no video {camera!r}; available: {sorted(ep.videos)}")
        rel, from_ts = ep.videos[camera]
        path = self.root / rel
        if not path.is_file():
            raise SourceError(f"video file {path} of episode {ep.index} ({camera}) is missing")
        ts = np.arange(ep.length) / self.fps if timestamps is None else np.asarray(timestamps, dtype=np.float64)
        try:
            frames = decode_video_frames(path, [from_ts + float(t) for t in ts], self.tolerance_s,
                                         backend=self.video_backend, return_uint8=True)
        except Exception as exc:  # noqa: BLE001 - decoders raise many types; report which file failed
            raise SourceError(f"cannot decode {path} for episode {ep.index} ({camera}): "
                              f"{type(exc).__name__}: {exc}") from exc
        frames = rearrange(frames, "t c h w -> t h w c").contiguous().numpy()
        if frames.shape[0] != ep.length:
            raise SourceError(f"episode {ep.index}: decoded {frames.shape[0]} frames from {path}, expected "
                              f"{ep.length}")
        return frames

    def _decode_images(self, ep: SourceEpisode, camera: str) -> np.ndarray:
        """The episode's frames of an image feature: each row holds ``{"bytes", "path"}`` (the Hugging Face
        ``Image`` struct lerobot writes), decoded to RGB; a row without bytes names a file under the root."""
        import io

        from PIL import Image

        rows, order = self._episode_rows(ep, [camera])
        cells = rows[camera].to_pylist()
        where = f"{self.root / ep.data_file} ({camera}, episode {ep.index})"
        frames = []
        for t, j in enumerate(order):
            cell = cells[j]
            try:
                if isinstance(cell, dict) and cell.get("bytes"):
                    source = io.BytesIO(cell["bytes"])
                elif isinstance(cell, dict) and cell.get("path"):
                    source = self.root / cell["path"]
                else:
                    raise ValueError(f"no image bytes or path in {type(cell).__name__} {str(cell)[:60]}")
                with Image.open(source) as im:
                    frames.append(np.asarray(im.convert("RGB")))
            except Exception as exc:  # noqa: BLE001 - PIL raises many types; report which frame failed
                raise SourceError(f"cannot decode the image of frame {t} in {where}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise SourceError(f"the images of {where} differ in size: {sorted(shapes)}")
        return np.stack(frames)


INFO_REQUIRED = ("codebase_version", "fps", "features")  # the fields lerobot's DatasetInfo cannot default


def check_info(root: Path) -> None:
    """Check ``root/meta/info.json`` before lerobot reads it, so a damaged file is named with what to do
    (lerobot raises a bare JSONDecodeError or TypeError)."""
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise SourceError(f"dataset.root={root} is not a LeRobot v3 dataset (no {path})")
    fix = ("restore it from the dataset's source (copy or download the dataset again), or point "
           "dataset.root at an intact copy")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path} is not valid JSON ({exc}): the file is truncated or corrupt; {fix}") from exc
    if not isinstance(info, dict):
        raise SourceError(f"{path} holds a {type(info).__name__}, not lerobot's info mapping; {fix}")
    missing = [k for k in INFO_REQUIRED if k not in info]
    if missing:
        raise SourceError(f"{path} lacks {missing} (a LeRobot v3 info.json has {list(INFO_REQUIRED)} and more); "
                          f"{fix}")


def open_dataset(root: str | Path | None = None, repo_id: str | None = None,
                 video_backend: str | None = None) -> SourceDataset:
    """Open a LeRobot v3 dataset by local ``root`` (read offline) or hub ``repo_id`` (or both)."""
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

    if not root and not repo_id:
        raise SourceError("no dataset given: set dataset.root=DIR (a local LeRobot dataset) or dataset.repo_id=ID")
    if root:
        root = Path(root)
        check_info(root)
    what = " and ".join([*([f"dataset.root={root}"] if root else []), *([f"dataset.repo_id={repo_id}"]
                                                                        if repo_id else [])])
    try:
        if root:
            meta = LeRobotDatasetMetadata(repo_id or f"local/{Path(root).name}", root=root)
        else:
            # a hub dataset: LeRobotDataset fetches meta, data and videos into lerobot's cache
            from lerobot.datasets.lerobot_dataset import LeRobotDataset

            meta = LeRobotDataset(repo_id, download_videos=True, video_backend=video_backend).meta
    except Exception as exc:  # noqa: BLE001 - hub, parquet and json errors alike: say what was opened
        raise SourceError(f"cannot open the dataset {what}: {type(exc).__name__}: {exc}") from exc
    version = str(meta.info.codebase_version or "")
    if version and not version.startswith("v3"):
        raise SourceError(f"dataset at {meta.root} is LeRobot {version}; convert it to v3.0 first "
                          f"(lerobot's convert_dataset_v21_to_v30)")
    return SourceDataset(meta, video_backend=video_backend)
