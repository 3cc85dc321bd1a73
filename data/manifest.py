"""``manifest.json`` beside the shards: what the trainer and the reports read (the single definition).

Layout (keys the code relies on)::

    {
      "schema_version": 1,
      "source": {"repo_id", "root", "fps", "features": {lerobot feature dict}, "total_episodes", "episodes": [...]},
      "reward": {"type", "model", "revision", "prompt", "sample_fps", "resolution", "package_version", ...},
      "window": {"obs_steps", "horizon"},
      "image": {"format", "quality"},
      "camera": "observation.images.<name>",
      "features": {name: {"dtype", "shape", "names"}}   # the features stored in the shards
      "stats": {name: {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}},
      "episodes": [{"episode_index", "length", "task", "index_offset", "success_score", "voc",
                    "final_progress", "raw_scores", "prefix_ends", "shard", ...}],
      "shards": [{"name": "shards/xxx.tar", "count", "sha256", "episodes": [...]}],
      "failures": [{"episode_index", "reason"}],
    }

Per shard, ``count`` is its number of samples and ``sha256`` the hex sha256 of the tar file's bytes, taken
when the shard was written (``data.shards``); ``pipeline.annotate`` checks the shards against them whenever
it runs on an existing output and rewrites a shard that does not match (manifests written before checksums
have no ``sha256``: their shards are checked by count).

Also written (informative): ``cameras`` (every camera stored in the shards), ``ground_truth`` (the per-frame
column used for ``voc_ground_truth``, or null), ``totals`` (episodes_ok, episodes_failed, samples, world_size),
per episode ``count`` (samples); by ``pipeline.annotate`` also ``config`` (the resolved annotate config), per
episode ``voc_ground_truth``, ``missing_prefixes`` and reward extras (TOPReward: ``logp_false``,
``resolution``, ``tokens``, ``sampled_indices``), in ``reward`` ``resolutions_used`` and ``lerobot_version``.

With an instruction map (``instructions`` in configs/annotate.yaml): per episode ``instruction`` (the text
the reward model was shown, beside the dataset's ``task``), in ``reward`` ``instructions`` (the map) and
``instructions_unused`` (map keys no annotated episode's task matched, when there are any). With the
static-video control (``control.static=true``): top-level ``control`` = {``static``, ``debias``,
``progress_from``}; per episode ``control_raw_scores`` (the control's raw score of each prefix, NaN = no
score), ``control_prefix_ends`` (equal to ``prefix_ends``: the identical prefix schedule) and
``progress_from``: ``"raw"`` (progress is the min-max of ``raw_scores``) or ``"raw-control"`` (of
``raw_scores`` minus ``control_raw_scores``; ``success_score`` stays the real video's); ``reward=column``
records ``reward.control_column``. Without these options none of these keys is written;
:meth:`pipeline.progress.PrefixScores.from_manifest_episode` gives the progress the shards hold either way.

Stats fields are lerobot's ``meta/stats.json`` fields (lists of floats per dimension; images per channel
with shape (3, 1, 1)), so :func:`lerobot_stats` hands them straight to ``make_pre_post_processors``.

:func:`build_manifest` builds the dict from the shard writer's journal records (``data.shards``) and
:func:`compute_stats` the stats (arrays exactly, images from per-episode value histograms); both
``pipeline.annotate`` and the test fixtures write their manifests through them.

Where an output is read from (the trainer's ``data.shards``, ``pipeline.report``'s argument): a file ``NAME``
of the output (``manifest.json``, ``shards/r000-000000.tar``) is at :func:`locate` ``(ROOT, NAME)``, where ROOT
is

- a local folder: ``ROOT/NAME``, as written by ``pipeline.annotate``;
- a URL prefix ``http://…``, ``https://…`` or ``file://…`` (read with urllib), or any other ``SCHEME://…``
  (``s3://``, ``gs://``, ...) read through fsspec where fsspec and the scheme's backend (s3fs, gcsfs, ...) are
  installed: ``ROOT/NAME``. A URL ending in ``/manifest.json`` names the same ROOT;
- a template holding ``{name}``, in particular a ``pipe:`` command that writes the file to its stdout:
  ``pipe:aws s3 cp s3://bucket/ann/{name} -`` reads ``aws s3 cp s3://bucket/ann/manifest.json -`` and so on
  (``{name}`` is replaced, every other character is passed to the shell as it is). A ``pipe:`` root without
  ``{name}`` is refused.

A shard list may also be given directly, as local paths, URLs or ``pipe:CMD`` commands (one per shard), to
:func:`data.shards.tar_samples` and :class:`data.batches.ShardStream`.

:func:`open_location` opens any of these as one sequential binary stream (never seeked), so the one tar
reader (:func:`data.shards.read_members`) and its checks serve them all. (``webdataset.gopen`` is not used for
this: it reports a failing ``pipe:`` command or HTTP URL without the command's stderr or the HTTP status, and
has no fsspec schemes; docs/benchmarks.md, "Training and loading".)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from configs import UserError
from data.schema import SCHEMA_VERSION

MANIFEST = "manifest.json"
PROGRESS_PARQUET = "progress.parquet"
SHARDS_DIR = "shards"
PLOTS_DIR = "plots"
STATS_FIELDS = ("min", "max", "mean", "std", "q01", "q10", "q50", "q90", "q99")
QUANTILES = {f: int(f[1:]) / 100 for f in STATS_FIELDS if f.startswith("q")}  # q01 -> 0.01, ...
SOURCE_KEYS = ("repo_id", "root", "fps", "features", "total_episodes", "episodes")
# per-episode image value histograms: journaled with each episode for the stats, left out of the manifest
IMAGE_HIST = "image_hist"


class ManifestError(UserError, FileNotFoundError):
    """The annotation output folder or its manifest is missing or unreadable."""


class StorageError(OSError):
    """A file of an output cannot be opened or streamed (a URL that fails, a ``pipe:`` command that fails)."""


NAME_FIELD = "{name}"  # where a template root takes each file's name
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
URLLIB_SCHEMES = ("http", "https", "file")  # read with the standard library; other schemes through fsspec
HTTP_TIMEOUT_S = 60.0
PIPE = "pipe:"


def is_remote(root: str | Path) -> bool:
    """Whether ``root`` is a URL, a ``pipe:`` command or a ``{name}`` template rather than a local folder."""
    if isinstance(root, Path):
        return False
    return root.startswith(PIPE) or NAME_FIELD in root or URL_SCHEME.match(root) is not None


def as_location(location: str | Path) -> Path | str:
    """A file or folder as the readers take it: a Path when it is local, the string when it is remote."""
    return location if isinstance(location, str) and is_remote(location) else Path(location)


def as_root(root: str | Path) -> Path | str:
    """An output root as the readers take it (:func:`as_location`; a URL naming the manifest itself,
    ``ROOT/manifest.json``, is taken as ROOT)."""
    root = as_location(root)
    if isinstance(root, Path):
        return root
    if NAME_FIELD not in root and not root.startswith(PIPE) and root.endswith("/" + MANIFEST):
        return root[: -len(MANIFEST) - 1]
    return root


def locate(root: str | Path, name: str) -> Path | str:
    """Where the output file ``name`` (``manifest.json``, ``shards/…``) of ``root`` is (module docstring)."""
    root = as_root(root)
    if isinstance(root, Path):
        return root / name
    if NAME_FIELD in root:
        return root.replace(NAME_FIELD, name)
    if root.startswith(PIPE):
        raise ManifestError(f"the annotation output {root!r} is a pipe: command without {NAME_FIELD}: write "
                            f"{NAME_FIELD} where each file's name goes, e.g. 'pipe:aws s3 cp s3://bucket/ann/"
                            f"{NAME_FIELD} -'")
    return root.rstrip("/") + "/" + name


class HTTPStream:
    """An HTTP response read in full blocks: a connection that closes early reads as a short file (as a
    truncated local file does), not as http.client's IncompleteRead."""

    def __init__(self, response):
        self.response = response

    def read(self, n: int = -1) -> bytes:
        import http.client

        try:
            return self.response.read(None if n < 0 else n)
        except http.client.IncompleteRead as exc:
            return exc.partial


@contextmanager
def open_location(location: str | Path) -> Iterator[BinaryIO]:
    """A binary stream of the file at ``location`` (a local path, a URL or a ``pipe:`` command), read
    sequentially. Opening fails with StorageError naming the location; a ``pipe:`` command that exits with
    an error raises StorageError with its status and the end of its stderr once its stream is done."""
    if isinstance(location, Path) or not is_remote(location):
        with open(location, "rb") as fh:
            yield fh
        return
    if location.startswith(PIPE):
        with pipe_stream(location[len(PIPE):]) as fh:
            yield fh
        return
    scheme = location.split("://", 1)[0].lower()
    if scheme in URLLIB_SCHEMES:
        import urllib.request

        try:
            response = urllib.request.urlopen(location, timeout=HTTP_TIMEOUT_S)  # noqa: S310 - the user's URL
        except (OSError, ValueError) as exc:
            raise StorageError(f"{location} cannot be read ({type(exc).__name__}: {exc})") from exc
        with response:
            yield HTTPStream(response)
        return
    try:
        import fsspec
    except ImportError as exc:
        raise StorageError(f"{location}: reading {scheme}:// needs fsspec and its {scheme} backend (pip "
                           f"install fsspec and e.g. s3fs or gcsfs), or give the files as 'pipe:CMD "
                           f"{NAME_FIELD}'") from exc
    try:
        fh = fsspec.open(location, "rb").open()
    except (ImportError, ValueError) as exc:  # fsspec names the backend package a scheme needs
        raise StorageError(f"{location}: fsspec cannot read {scheme}:// ({exc})") from exc
    except OSError as exc:
        raise StorageError(f"{location} cannot be read ({type(exc).__name__}: {exc})") from exc
    with fh:
        yield fh


@contextmanager
def pipe_stream(command: str) -> Iterator[BinaryIO]:
    """The stdout of the shell command ``command``. A reader that stops early ends the command; otherwise the
    command is waited for, and one that exits with an error raises StorageError (also when the reader failed
    first, e.g. on the empty stream of a command that found no file: the command's error says more)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=err)  # noqa: S602
        failed: BaseException | None = None
        stopped = False
        try:
            yield proc.stdout
            while proc.stdout.read(1 << 16):  # the rest (the tar's end blocks), so that the command ends
                pass
        except GeneratorExit:  # the reader stopped early: nothing more of the command is needed
            stopped = True
            proc.kill()
            proc.wait()
            raise
        except BaseException as exc:
            failed = exc
            raise
        finally:
            if proc.returncode is None:
                proc.stdout.close()  # a command still writing gets SIGPIPE
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            # a signal after the reader failed is the closed pipe; a status > 0 is the command's own failure
            if not stopped and (proc.returncode > 0 or (proc.returncode < 0 and failed is None)):
                err.seek(0)
                tail = err.read()[-500:].decode(errors="replace").strip()
                raise StorageError(f"'{PIPE}{command}' exited with status {proc.returncode}"
                                   + (f": {tail}" if tail else "")) from failed


def read_location(location: str | Path) -> bytes:
    """The whole file at ``location`` (:func:`open_location`)."""
    with open_location(location) as fh:
        return fh.read()


def load_manifest(out_dir: str | Path) -> dict:
    """The manifest of the output at ``out_dir`` (a local folder or a remote root, module docstring)."""
    root = as_root(out_dir)
    if isinstance(root, str):
        where = locate(root, MANIFEST)
        try:
            text = read_location(where)
        except StorageError as exc:
            raise ManifestError(f"the manifest of {root} cannot be read: {exc}. Check that {root} names the "
                                f"output pipeline.annotate wrote ({MANIFEST} and {SHARDS_DIR}/) and is "
                                "reachable from here") from exc
        try:
            return json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{where} is not valid JSON ({exc}); is it the manifest of a finished "
                                f"pipeline.annotate output?") from exc
    out = root
    if not out.is_dir():
        raise ManifestError(f"shards folder {out} does not exist; run `python -m pipeline.annotate ... out={out}` first")
    path = out / MANIFEST
    if not path.exists():
        raise ManifestError(
            f"{path} is missing: {out} is not a finished annotation output (re-run pipeline.annotate to finish it)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); re-run pipeline.annotate to rewrite it") from exc


def shard_paths(out_dir: str | Path, manifest: dict | None = None) -> list[Path | str]:
    """Where the shards the manifest lists are: absolute paths, each checked to exist, for a local folder;
    their URLs or commands for a remote root (opening one that is missing raises ShardError naming it)."""
    root = as_root(out_dir)
    manifest = manifest if manifest is not None else load_manifest(root)
    if isinstance(root, str):
        return [locate(root, s["name"]) for s in manifest["shards"]]
    out = root
    paths = [out / s["name"] for s in manifest["shards"]]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ManifestError(f"shards listed in {out / MANIFEST} are missing: {missing[:5]}")
    return paths


def shard_counts(root: str | Path, manifest: dict) -> dict[str, int]:
    """Shard location (as :func:`shard_paths` gives it, as a string) → the sample count the manifest lists for
    it (to detect truncated tars)."""
    return {str(locate(root, s["name"])): int(s["count"]) for s in manifest["shards"] if "count" in s}


def shard_hashes(root: str | Path, manifest: dict) -> dict[str, str]:
    """Shard location (as :func:`shard_paths` gives it) → the sha256 the manifest lists for it (to detect a
    shard replaced after annotation)."""
    return {str(locate(root, s["name"])): str(s["sha256"]) for s in manifest["shards"] if s.get("sha256")}


def stats_arrays(stats: dict) -> dict[str, dict[str, np.ndarray]]:
    """A manifest's ``stats`` section as lerobot's ``dataset_stats`` (float32 numpy arrays per field)."""
    return {
        feature: {k: np.asarray(v, dtype=np.float32) for k, v in fields.items() if k in (*STATS_FIELDS, "count")}
        for feature, fields in stats.items()
    }


def lerobot_stats(manifest: dict) -> dict[str, dict[str, np.ndarray]]:
    """Manifest stats as lerobot's ``dataset_stats`` (numpy arrays per field)."""
    return stats_arrays(manifest["stats"])


# ------------------------------------------------------------------------------------------------ building
def array_stats(values: np.ndarray) -> dict[str, list]:
    """lerobot's stats fields of an (N, D) array, per dimension."""
    v = np.asarray(values, dtype=np.float64)
    stats = {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0),
             **{k: np.quantile(v, q, axis=0) for k, q in QUANTILES.items()}}
    out = {k: np.asarray(s).tolist() for k, s in stats.items()}
    out["count"] = [int(len(v))]
    return out


def image_histogram(frames: np.ndarray) -> list[list[int]]:
    """Per-channel value histograms (3, 256) of uint8 (..., 3) images: what the image stats are made from.

    Summed over episodes they give the exact dataset stats without holding every frame.
    """
    # one pass over contiguous memory: channel c's value v counts in bin 256*c + v
    codes = frames.reshape(-1, 3).astype(np.uint16) + np.array([0, 256, 512], dtype=np.uint16)
    return np.bincount(codes.ravel(), minlength=768).reshape(3, 256).tolist()


def histogram_stats(hists: np.ndarray) -> dict[str, list]:
    """Per-channel image stats from (3, 256) uint8 value histograms, in lerobot's [0, 1] scale, shape (3,1,1)."""
    h = np.asarray(hists, dtype=np.float64)
    levels = np.arange(256) / 255.0
    count = h.sum(1)
    mean = (h * levels).sum(1) / count
    std = np.sqrt(np.maximum((h * levels**2).sum(1) / count - mean**2, 0))
    nz = h > 0
    mins = np.array([levels[np.flatnonzero(r)[0]] for r in nz])
    maxs = np.array([levels[np.flatnonzero(r)[-1]] for r in nz])
    cdf = np.cumsum(h, 1) / count[:, None]
    stats = {"min": mins, "max": maxs, "mean": mean, "std": std,
             **{k: np.array([levels[np.searchsorted(c, q)] for c in cdf]) for k, q in QUANTILES.items()}}
    out = {k: v.reshape(3, 1, 1).tolist() for k, v in stats.items()}
    out["count"] = [int(count[0])]
    return out


def compute_stats(arrays: dict[str, list[np.ndarray]], image_hists: dict[str, np.ndarray]) -> dict:
    """The manifest's ``stats``: per-episode (T, D) arrays of each array feature, summed (3, 256) value
    histograms of each camera (:func:`image_histogram`). Features without data are left out."""
    stats = {k: array_stats(np.concatenate(v)) for k, v in arrays.items() if v}
    stats.update({cam: histogram_stats(h) for cam, h in image_hists.items() if np.sum(h) > 0})
    return stats


def journal_episodes(records: list[dict]) -> list[dict]:
    """The episode summaries of the shard writer's journal records, by episode index."""
    return sorted((e for r in records for e in r["episodes"]), key=lambda e: e["episode_index"])


def build_manifest(*, source: dict, reward: dict, obs_steps: int, horizon: int, image_format: str,
                   image_quality: int, camera: str | None, cameras: list[str], ground_truth: str | None,
                   features: dict, stats: dict, records: list[dict], failures: list[dict], world_size: int = 1,
                   config: dict | None = None) -> dict:
    """The manifest dict (see the module docstring) of a finished output.

    ``source``: the keys of :data:`SOURCE_KEYS`; ``records``: the journal records of every rank
    (``data.shards.read_journal``: name, count, episodes with their summaries); ``failures``: the episodes that
    could not be annotated, ``{"episode_index", "reason"}``; ``config``: the resolved config, when there is one.
    """
    missing = [k for k in SOURCE_KEYS if k not in source]
    if missing:
        raise ValueError(f"the manifest's source lacks {missing}; pass all of {SOURCE_KEYS}")
    episodes = journal_episodes(records)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "source": {k: source[k] for k in SOURCE_KEYS},
        "reward": reward,
        "window": {"obs_steps": int(obs_steps), "horizon": int(horizon)},
        "image": {"format": image_format, "quality": int(image_quality)},
        "camera": camera,
        "cameras": cameras,
        "ground_truth": ground_truth,
        "features": features,
        "stats": stats,
        "episodes": [{k: v for k, v in e.items() if k != IMAGE_HIST} for e in episodes],
        "shards": sorted(({"name": r["name"], "count": r["count"],
                           **({"sha256": r["sha256"]} if "sha256" in r else {}),
                           "episodes": [e["episode_index"] for e in r["episodes"]]} for r in records),
                         key=lambda s: s["name"]),
        "failures": sorted(failures, key=lambda f: f["episode_index"]),
        "totals": {"episodes_ok": len(episodes), "episodes_failed": len(failures),
                   "samples": int(sum(r["count"] for r in records)), "world_size": world_size},
    }
    if config is not None:
        manifest["config"] = config
    return manifest


def write_manifest(out_dir: str | Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically (a reader sees the old file or the new one, never a partial one)."""
    path = Path(out_dir) / MANIFEST
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=_json_default))
    os.replace(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
