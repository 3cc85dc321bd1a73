"""The shard tar files: the one writer (atomic shards, episode-boundary roll-over, a journal for resuming)
and the one reader (:func:`tar_samples`, :func:`iter_shard`).

Each process (rank) writes its own shards ``shards/r{rank:03d}-{seq:06d}.tar``. A shard is written as
``shards/.r000-000003.tar.tmp`` and renamed to its final name only once it is complete, so a reader never sees
a partial shard under a final name. A shard closes after the episode that makes it reach ``max_count``
samples or ``max_bytes`` bytes (never inside an episode), and at the end of the run.

When a shard is renamed, one JSON line naming it, its sample count, the sha256 of its bytes and the
summaries of its episodes is appended (and fsynced) to ``journal/rank{rank:03d}.jsonl``: an episode is done
once that line exists. A resumed run reads the journal, removes its rank's shards and temporary files that
the journal does not list (a kill between rename and journal line leaves such a shard; it is rewritten
identically), and continues at the next sequence number. Because roll-over depends only on the shard's own
content and samples are deterministic, the resumed output equals an uninterrupted one.

A resumed run also verifies every journaled shard of its rank against its journal line (the sha256, or for
a journal written before checksums the sample count): a shard that is missing, truncated or altered is
listed in :attr:`ShardWriter.damaged` (and deleted) and its episodes are not done; the caller writes them
again with :meth:`ShardWriter.rewrite_shard`, under the same name and journal line, so the repaired output
equals the original.

Shards are written by webdataset's ``TarWriter``, one member per call so that members keep the order of the
sample's fields, as ustar members with fixed metadata (mtime 0, mode 0644, no owner): equal samples give equal
bytes (tests/test_shards.py pins the sha256 of a small shard).

Reading: :func:`read_members` walks a tar stream's headers directly, strictly forward (checking every header
checksum and member length), :func:`group_samples` groups members into webdataset samples, and
:func:`tar_samples` chains them over shards (local paths, URLs or ``pipe:`` commands, opened by
:func:`data.manifest.open_location`), turning any damage into a :class:`ShardError` that names the shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from configs import UserError
from data.manifest import SHARDS_DIR, StorageError, open_location

if TYPE_CHECKING:
    from webdataset.writer import TarWriter

JOURNAL_DIR = "journal"
TAR_BLOCK = 512  # tar headers and member data come in 512-byte blocks
# the POSIX ustar header fields read here (byte ranges): the checksum is the byte sum of the header with its
# own field counted as 8 spaces (8 × 32 = 256)
TAR_NAME, TAR_SIZE, TAR_CHKSUM, TAR_TYPE = slice(0, 100), slice(124, 136), slice(148, 156), slice(156, 157)
TAR_MAGIC, TAR_PREFIX = slice(257, 262), slice(345, 500)
CHKSUM_SPACES = 8 * ord(" ")

Handler = Callable[[Exception], bool]


class ShardError(UserError, RuntimeError):
    """A shard cannot be read (corrupt or truncated tar) or a sample lacks what the policy needs."""


def reraise(exc: Exception) -> bool:
    """The default error handler: stop at the first error."""
    raise exc


def shard_name(rank: int, seq: int) -> str:
    return f"{SHARDS_DIR}/r{rank:03d}-{seq:06d}.tar"


def shard_seq(name: str) -> int:
    """The sequence number in a shard name (``shards/r000-000003.tar`` -> 3)."""
    return int(Path(name).stem.rsplit("-", 1)[1])


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_shard(path: Path, record: dict) -> str | None:
    """Why the shard at ``path`` does not match its journal ``record``, or None when it does.

    With the record's ``sha256`` the bytes must hash to it; a record without one (a journal written before
    checksums) is checked by reading the tar and counting its samples against ``count``.
    """
    if not path.is_file():
        return "missing"
    expected = record.get("sha256")
    if expected is not None and file_sha256(path) == expected:
        return None
    n = 0
    try:
        with open(path, "rb") as fh:
            for _ in group_samples(read_members(fh), str(path)):
                n += 1
    except (ValueError, EOFError) as exc:
        return f"unreadable after {n} samples ({exc})"
    if n != record["count"]:
        return f"holds {n} samples, the journal lists {record['count']}"
    return None if expected is None else "its sha256 differs from the journal's"


def journal_path(out_dir: str | Path, rank: int) -> Path:
    return Path(out_dir) / JOURNAL_DIR / f"rank{rank:03d}.jsonl"


def read_journal(out_dir: str | Path, rank: int) -> list[dict]:
    """The committed shard records of ``rank`` (a torn last line from a kill is ignored)."""
    path = journal_path(out_dir, rank)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the process died while appending this line; the shard is rewritten on resume
    return records


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class _OpenShard:
    seq: int
    tmp: Path
    tar: TarWriter
    fileobj: object
    count: int = 0
    bytes: int = 0
    episodes: list[dict] = field(default_factory=list)


class ShardWriter:
    """Atomic, journaled, per-rank shard writer. Use :meth:`write_episode` then :meth:`close`."""

    def __init__(self, out_dir: str | Path, rank: int = 0, max_count: int = 10000, max_bytes: int = 10**9):
        if max_count < 1 or max_bytes < 1:
            raise ValueError(f"shards.max_count={max_count} and shards.max_bytes={max_bytes} must be >= 1")
        self.out = Path(out_dir)
        self.rank = int(rank)
        self.max_count = int(max_count)
        self.max_bytes = int(max_bytes)
        (self.out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        (self.out / JOURNAL_DIR).mkdir(parents=True, exist_ok=True)
        self.committed = read_journal(self.out, self.rank)
        self._repair_journal()
        self._clean_uncommitted()
        self.damaged = self._verify_committed()
        self._open: _OpenShard | None = None

    # ---- resume -----------------------------------------------------------------------------------
    def _repair_journal(self) -> None:
        """Rewrite the journal without a torn last line, so later appends start on a fresh line."""
        path = journal_path(self.out, self.rank)
        if path.exists() and path.read_text() != "".join(json.dumps(r) + "\n" for r in self.committed):
            self._write_journal()

    def _clean_uncommitted(self) -> None:
        listed = {r["name"] for r in self.committed}
        prefix = f"r{self.rank:03d}-"
        for p in (self.out / SHARDS_DIR).iterdir():
            name = f"{SHARDS_DIR}/{p.name}"
            if p.name.startswith("." + prefix) and p.name.endswith(".tmp"):
                p.unlink()
            elif p.name.startswith(prefix) and p.name.endswith(".tar") and name not in listed:
                p.unlink()

    def _verify_committed(self) -> list[dict]:
        """The journaled shards that do not match their journal line (``{"name", "reason", "record"}``),
        deleted so that no reader takes them for whole; their journal lines stay until they are rewritten, so
        a run killed while repairing finds them damaged again."""
        damaged = []
        for record in self.committed:
            path = self.out / record["name"]
            reason = check_shard(path, record)
            if reason is not None:
                path.unlink(missing_ok=True)
                damaged.append({"name": record["name"], "reason": reason, "record": record})
        return damaged

    @property
    def done_episodes(self) -> set[int]:
        """Episodes in a committed shard that is whole (a damaged shard's episodes are not done)."""
        bad = {d["name"] for d in self.damaged}
        return {e["episode_index"] for r in self.committed if r["name"] not in bad for e in r["episodes"]}

    @property
    def next_seq(self) -> int:
        return 1 + max((shard_seq(r["name"]) for r in self.committed), default=-1)

    # ---- writing ----------------------------------------------------------------------------------
    def _start(self, seq: int | None = None) -> _OpenShard:
        seq = self.next_seq if seq is None else seq
        # imported here, not at the top: webdataset loads torch, which the readers of shards do not need
        from webdataset.writer import TarWriter

        final = self.out / shard_name(self.rank, seq)
        tmp = final.with_name("." + final.name + ".tmp")
        fileobj = open(tmp, "wb")  # noqa: SIM115 - closed in _commit
        # bytes are written as given (no encoder); fields starting with one "_" are fields too (keep_meta)
        tar = TarWriter(fileobj, user="", group="", mode=0o644, mtime=0, encoder=False, keep_meta=True)
        # webdataset 1.0 does not hand its format= to tarfile (whose default is pax); the shards are ustar
        tar.tarstream.format = tarfile.USTAR_FORMAT
        return _OpenShard(seq=seq, tmp=tmp, tar=tar, fileobj=fileobj)

    def _add(self, shard: _OpenShard, key: str, fname: str, data: bytes) -> None:
        """One member ``key.fname`` (TarWriter sorts the fields of a sample it is given whole; one field per
        call keeps the sample's order)."""
        shard.tar.write({"__key__": key, fname: data})
        shard.bytes += TAR_BLOCK + (len(data) + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK

    def write_episode(self, samples, summary: dict) -> int:
        """Append every sample of one episode (an iterable of webdataset sample dicts); returns the count.

        ``summary`` (JSON-able, with ``episode_index``) is journaled with the shard that holds the episode.
        """
        if self._open is None:
            self._open = self._start()
        n = self._append(self._open, samples, summary)
        if self._open.count >= self.max_count or self._open.bytes >= self.max_bytes:
            self._commit()
        return n

    def rewrite_shard(self, damaged: dict, episodes: Iterable[tuple[Iterable[dict], dict]]) -> dict | None:
        """Write a damaged shard (an entry of :attr:`damaged`) again: ``episodes`` yields (samples, summary)
        of its episodes in their journaled order. The shard keeps its name and its place in the journal, so
        with the same samples it is byte for byte the original. Returns the new journal record (None when no
        episode could be written: the journal line is then dropped)."""
        if self._open is not None:
            raise RuntimeError("rewrite_shard() needs no shard open: repair damaged shards before writing new ones")
        shard = self._start(shard_seq(damaged["name"]))
        for samples, summary in episodes:
            self._append(shard, samples, summary)
        self.damaged = [d for d in self.damaged if d["name"] != damaged["name"]]
        self._open = shard
        if shard.count == 0:
            self._discard_open()
            self.committed = [r for r in self.committed if r["name"] != damaged["name"]]
            self._write_journal()
            return None
        return self._commit(replace=damaged["name"])

    def _append(self, shard: _OpenShard, samples, summary: dict) -> int:
        n = 0
        for sample in samples:
            key = sample["__key__"]
            for fname, value in sample.items():
                if fname.startswith("__"):
                    continue
                data = value.encode() if isinstance(value, str) else bytes(value)
                self._add(shard, key, fname, data)
            n += 1
        shard.count += n
        shard.episodes.append({**summary, "count": n, "shard": shard_name(self.rank, shard.seq)})
        return n

    def _write_journal(self) -> None:
        """Replace the journal by :attr:`committed` (atomically: a reader sees the old one or the new one)."""
        path = journal_path(self.out, self.rank)
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in self.committed))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _commit(self, replace: str | None = None) -> dict | None:
        """Close the open shard, rename it to its final name and journal it (appended, or in place of the
        line of shard ``replace``)."""
        shard, self._open = self._open, None
        if shard is None:
            return None
        shard.tar.close()
        shard.fileobj.flush()
        os.fsync(shard.fileobj.fileno())
        shard.fileobj.close()
        name = shard_name(self.rank, shard.seq)
        os.replace(shard.tmp, self.out / name)
        _fsync_dir(self.out / SHARDS_DIR)
        record = {"name": name, "count": shard.count, "sha256": file_sha256(self.out / name),
                  "episodes": shard.episodes}
        if replace is not None:
            self.committed = [record if r["name"] == replace else r for r in self.committed]
            self._write_journal()
            return record
        with open(journal_path(self.out, self.rank), "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.committed.append(record)
        return record

    def _discard_open(self) -> None:
        """Drop the open shard's temporary file (nothing of it was committed)."""
        if self._open is not None:
            self._open.tar.close()
            self._open.fileobj.close()
            self._open.tmp.unlink(missing_ok=True)
            self._open = None

    def close(self) -> None:
        """Commit the open shard (if any samples were written)."""
        if self._open is not None and self._open.count == 0:
            self._discard_open()
        self._commit()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # leave nothing half-written behind on an error
            self._discard_open()


# ---- reading ----------------------------------------------------------------------------------------


def _pax_records(data: bytes) -> dict[str, str]:
    out, i = {}, 0
    while i < len(data):
        sp = data.index(b" ", i)
        n = int(data[i:sp])
        key, _, value = data[sp + 1:i + n - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        i += n
    return out


def read_full(fh: BinaryIO, n: int) -> bytes:
    """``n`` bytes of the stream, fewer only at its end (a socket or pipe may return less per read)."""
    data = fh.read(n)
    while len(data) < n:
        more = fh.read(n - len(data))
        if not more:
            break
        data += more
    return data


def read_members(fh: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the regular files of the tar stream ``fh`` (ustar, pax or GNU long names).

    The stream is read strictly forward (no seek, no tell), so a local file, an HTTP response and a ``pipe:``
    command's stdout (:func:`data.manifest.open_location`) go through the same reader and the same checks.
    Python's ``tarfile`` spent about half of the loader's CPU time parsing the headers of our many small
    members; this reads them directly, verifying every header checksum and every member's length. A damaged
    tar raises ValueError or EOFError (:func:`tar_samples` turns them into a ShardError naming the shard).
    """
    pending: dict[str, str] = {}
    at = 0  # the byte offset of the next header
    while True:
        header = read_full(fh, TAR_BLOCK)
        if len(header) < TAR_BLOCK:
            raise EOFError(f"unexpected end of file at byte {at} (no end-of-archive marker)")
        if header.count(0) == TAR_BLOCK:
            return  # end-of-archive marker
        try:
            stored = int(header[TAR_CHKSUM].replace(b"\0", b" ").strip() or b"0", 8)
            size = int(header[TAR_SIZE].replace(b"\0", b" ").strip() or b"0", 8)
        except ValueError as exc:
            raise ValueError(f"bad tar header at byte {at}") from exc
        if stored != sum(header[:TAR_CHKSUM.start]) + CHKSUM_SPACES + sum(header[TAR_CHKSUM.stop:]):
            raise ValueError(f"tar header checksum mismatch at byte {at}")
        typeflag = header[TAR_TYPE]
        data_size = int(pending["size"]) if "size" in pending and typeflag not in (b"x", b"g", b"L") else size
        data = read_full(fh, data_size)
        if len(data) < data_size:
            raise EOFError(f"member at byte {at} is cut short ({len(data)} of {data_size} bytes)")
        padding = (-data_size) % TAR_BLOCK
        if padding:
            read_full(fh, padding)  # a short read here shows as the end of file at the next header
        at += TAR_BLOCK + data_size + padding
        if typeflag == b"x":
            pending.update(_pax_records(data))
        elif typeflag == b"L":
            pending["path"] = data.rstrip(bytes(1)).decode()
        elif typeflag in (b"0", b"\0"):
            name = pending.get("path")
            if name is None:
                name = header[TAR_NAME].rstrip(bytes(1)).decode()
                prefix = header[TAR_PREFIX].rstrip(bytes(1)).decode() if header[TAR_MAGIC] == b"ustar" else ""
                name = f"{prefix}/{name}" if prefix else name
            pending = {}
            yield name, data
        else:  # directories, links, global pax headers: nothing to read
            pending = {} if typeflag != b"g" else pending


def group_samples(members: Iterable[tuple[str, bytes]], url: str) -> Iterator[dict]:
    """webdataset's grouping: key = the name up to the first dot of its base name, field = the rest."""
    current: dict | None = None
    for name, data in members:
        slash = name.rfind("/")
        dot = name.find(".", slash + 1)
        if dot < 0:
            continue
        key, fname = name[:dot], name[dot + 1:].lower()
        if current is None or key != current["__key__"]:
            if current is not None:
                yield current
            current = {"__key__": key, "__url__": url}
        if fname in current:
            raise ValueError(f"{name}: duplicate member in the tar")
        current[fname] = data
    if current is not None:
        yield current


class HashingReader:
    """A forward-only stream that hashes every byte read through it (sha256)."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.digest = fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.digest.update(data)
        return data

    def finish(self) -> str:
        """Read what is left (a tar's zero padding after its end marker) and return the whole stream's hash."""
        while self.read(1 << 20):
            pass
        return self.digest.hexdigest()


class NotTheManifests(Exception):
    """A shard whose bytes are not those the manifest lists (replaced or changed after annotation)."""


def tar_samples(paths: Iterable[Path | str], handler: Handler = reraise,
                counts: dict[str, int] | None = None, hashes: dict[str, str] | None = None) -> Iterator[dict]:
    """Raw webdataset samples (``{"__key__", "__url__", field: bytes}``) of each shard in turn.

    ``paths``: local paths, URLs or ``pipe:`` commands (:func:`data.manifest.open_location`), each read as one
    stream. A tar that cannot be read, or (with ``counts``: shard location → the manifest's sample count) one
    that ends early, raises ShardError naming it (passed to ``handler``: True skips the rest of that shard,
    False stops). With ``hashes`` (shard location → the manifest's sha256) every byte read is hashed on the way
    and a shard read to its end whose hash differs raises ShardError too: it is not the shard the manifest
    describes (a shard read only in part, at the end of a run, is not checked). A shard that matched is removed
    from ``hashes``, so a reader that passes the same dict again (the training stream, every epoch) hashes each
    shard once.
    """
    for path in paths:
        n = 0
        try:
            with open_location(path) as fh:
                expected_hash = (hashes or {}).get(str(path))
                stream = HashingReader(fh) if expected_hash else fh
                for sample in group_samples(read_members(stream), str(path)):
                    n += 1
                    yield sample
                if expected_hash:
                    if stream.finish() != expected_hash:
                        raise NotTheManifests(str(path))
                    hashes.pop(str(path), None)  # checked once per reader: its later passes read it unhashed
            expected = (counts or {}).get(str(path))
            if expected is not None and n != expected:
                raise EOFError(f"it holds {n} samples but the manifest lists {expected}")
        except NotTheManifests:
            err = ShardError(f"shard {path} is not the shard the manifest lists (its sha256 differs: it was "
                             "replaced or changed after annotation); point data.shards at the annotation it came "
                             "from, or re-run pipeline.annotate to rewrite it")
            if handler(err):
                continue
            return
        except StorageError as exc:  # the URL or command fails: nothing to do with the shard's bytes
            err = ShardError(f"shard {path} cannot be read ({exc}); check that the location is reachable "
                             "from here, or re-run pipeline.annotate if the shard is missing")
            err.__cause__ = exc
            if handler(err):
                continue
            return
        except Exception as exc:  # bad headers, EOFError, duplicate members ...
            err = ShardError(f"shard {path} is corrupt or truncated ({type(exc).__name__}: "
                             f"{exc.args[0] if exc.args else exc}); re-run pipeline.annotate to rewrite it")
            err.__cause__ = exc
            if handler(err):
                continue
            return


def iter_shard(path: str | Path) -> Iterator[dict]:
    """Samples of one shard as webdataset-style dicts ``{"__key__", "__url__", field: bytes}`` (in order).

    A corrupt or truncated shard raises ShardError.
    """
    yield from tar_samples([path])
