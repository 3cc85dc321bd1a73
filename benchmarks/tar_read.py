"""Reading the shards: the project's tar reader against webdataset's, on the same shards, in one process.

    python -m benchmarks.tar_read --json

Writes a small annotation output (``tests.fixtures.shards.write_tiny_shards``: 8 episodes × 100 frames, JPEG
96×96, ``window.obs_steps=2``, ``window.horizon=16``; 8 members per sample, 2 episodes per shard) and reads
every sample of every shard, as raw bytes (no decoding), from three kinds of location:

- a local path, a ``pipe:cat PATH`` command and an ``http://127.0.0.1`` URL (``python -m http.server`` in its
  own process);
- ours: :func:`data.shards.tar_samples` (:func:`data.manifest.open_location`, :func:`data.shards.read_members`,
  :func:`data.shards.group_samples`), with and without the manifest's sha256 check, and once more on streams
  opened by ``webdataset.gopen``;
- webdataset: ``webdataset.tariterators.tarfile_samples`` (``webdataset.gopen`` to open, ``tarfile`` in stream
  mode to read, its key grouping), the stages ``webdataset.WebDataset`` chains.

After one untimed pass of each, the readers are alternated ``--repeats`` times; samples/s and µs per member
are the medians. One JSON line with ``--json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

MEMBERS_PER_SAMPLE = 8  # 2 JPEG steps, state, action, action_is_pad, obs_is_pad, progress, meta


def ours(locations: list[str], hashes: dict[str, str] | None = None) -> Iterator[dict]:
    from data.shards import tar_samples

    return tar_samples(locations, hashes=dict(hashes) if hashes else None)


def ours_over_gopen(locations: list[str]) -> Iterator[dict]:
    """Our tar reader on streams opened by ``webdataset.gopen`` (what opening by gopen alone would cost)."""
    from webdataset.gopen import gopen

    from data.shards import group_samples, read_members

    for loc in locations:
        fh = gopen(loc, "rb")
        try:
            yield from group_samples(read_members(fh), loc)
        finally:
            fh.close()


def webdataset_samples(locations: list[str]) -> Iterator[dict]:
    from webdataset.tariterators import tarfile_samples

    return tarfile_samples(iter([{"url": loc} for loc in locations]))


def timed(read: Callable[[], Iterator[dict]]) -> tuple[float, int, int]:
    """(seconds, samples, bytes of member data) to read every sample."""
    t0 = time.perf_counter()
    n = size = 0
    for sample in read():
        n += 1
        size += sum(len(v) for k, v in sample.items() if not k.startswith("__"))
    return time.perf_counter() - t0, n, size


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    """``python -m http.server`` over ``folder`` on a free port of 127.0.0.1: (its process, its base URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the HTTP server did not start")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--length", type=int, default=100)
    ap.add_argument("--image", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from data.manifest import load_manifest, shard_hashes, shard_paths
    from tests.fixtures.shards import write_tiny_shards

    with tempfile.TemporaryDirectory() as work:
        root = write_tiny_shards(Path(work) / "ann", episodes=args.episodes, length=args.length, obs_steps=2,
                                 horizon=16, image_size=(args.image, args.image), episodes_per_shard=2,
                                 image_format="jpg")
        paths = [str(p) for p in shard_paths(root)]
        server, base = serve(root)
        try:
            where = {"file": paths, "pipe": [f"pipe:cat {p}" for p in paths],
                     "http": [f"{base}/{Path(p).relative_to(root).as_posix()}" for p in paths]}
            hashes = shard_hashes(root, load_manifest(root))
            cases = {}
            for kind, locs in where.items():
                cases[f"{kind}/ours"] = functools.partial(ours, locs)
                if kind == "file":
                    cases[f"{kind}/ours_sha256"] = functools.partial(ours, locs, hashes)
                cases[f"{kind}/ours_over_gopen"] = functools.partial(ours_over_gopen, locs)
                cases[f"{kind}/webdataset"] = functools.partial(webdataset_samples, locs)
            for read in cases.values():  # warm-up: page cache, imports, the server's first connections
                timed(read)
            runs: dict[str, list[tuple[float, int, int]]] = {}
            for _ in range(args.repeats):
                for key, read in cases.items():
                    runs.setdefault(key, []).append(timed(read))
        finally:
            server.kill()
            server.wait()

    counts = {k: {n for _, n, _ in v} for k, v in runs.items()}
    if len(set().union(*counts.values())) != 1:
        raise RuntimeError(f"the readers read different sample counts: {counts}")
    samples = runs["file/ours"][0][1]
    mb = runs["file/ours"][0][2] / 1e6
    result: dict = {"shards": len(paths), "samples": samples, "members": samples * MEMBERS_PER_SAMPLE,
                    "member_data_mb": round(mb, 2), "repeats": args.repeats}
    for key, values in runs.items():
        s = statistics.median(t for t, _, _ in values)
        result[f"{key}_samples_per_s"] = round(samples / s)
        result[f"{key}_us_per_member"] = round(s / (samples * MEMBERS_PER_SAMPLE) * 1e6, 1)
    for kind in where:
        result[f"{kind}_ours_over_webdataset"] = round(
            result[f"{kind}/ours_samples_per_s"] / result[f"{kind}/webdataset_samples_per_s"], 2)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:40s} {v}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
