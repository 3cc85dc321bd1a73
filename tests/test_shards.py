"""data.shards: atomic shards, roll-over at episode boundaries, journal-based resume after a crash, reading back."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from data.schema import episode_samples
from data.shards import (
    ShardError,
    ShardWriter,
    file_sha256,
    iter_shard,
    journal_path,
    read_journal,
    tar_samples,
)


def _episode(ep: int, length: int = 5):
    rng = np.random.default_rng(ep)
    return list(episode_samples(
        episode_index=ep, index_offset=100 * ep, task="t", fps=10.0,
        images={"observation.images.top": rng.integers(0, 255, (length, 8, 8, 3), dtype=np.uint8)},
        arrays={"observation.state": rng.normal(size=(length, 2))}, action=rng.normal(size=(length, 3)),
        progress=np.linspace(0, 1, length), obs_steps=1, horizon=2, image_format="png"))


def _write(out, episodes, max_count=8, stop_after=None):
    w = ShardWriter(out, rank=0, max_count=max_count)
    for i, ep in enumerate(episodes):
        if ep in w.done_episodes:
            continue
        w.write_episode(_episode(ep), {"episode_index": ep})
        if stop_after is not None and i == stop_after:
            return w  # "killed": the open shard is never committed, nothing is cleaned up
    w.close()
    return w


def _files(out):
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


def test_rollover_at_episode_boundaries_and_bytes_are_deterministic(tmp_path):
    w = _write(tmp_path / "a", range(5))
    assert [r["count"] for r in w.committed] == [10, 10, 5]  # 5-sample episodes, max_count=8: whole episodes
    assert [[e["episode_index"] for e in r["episodes"]] for r in w.committed] == [[0, 1], [2, 3], [4]]
    keys = [s["__key__"] for s in iter_shard(tmp_path / "a" / w.committed[1]["name"])]
    assert keys == [f"{e:06d}_{t:06d}" for e in (2, 3) for t in range(5)]
    _write(tmp_path / "b", range(5))
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_crash_leaves_no_visible_partial_shard_and_resume_is_identical(tmp_path):
    ref = tmp_path / "ref"
    _write(ref, range(5))
    out = tmp_path / "out"
    _write(out, range(5), stop_after=2)  # episodes 0,1 committed; 2 in an open temporary shard
    names = sorted(p.name for p in (out / "shards").iterdir())
    assert names == [".r000-000001.tar.tmp", "r000-000000.tar"]
    # torn journal line (killed while appending) is ignored
    with open(journal_path(out, 0), "a") as f:
        f.write('{"name": "shards/r000-0000')
    assert len(read_journal(out, 0)) == 1
    # a shard renamed but not journaled (killed between the two) is rewritten
    (out / "shards" / "r000-000001.tar").write_bytes(b"stale")
    w = _write(out, range(5))
    assert _files(out) == _files(ref)
    assert read_journal(out, 0) == read_journal(ref, 0)
    assert w.done_episodes == set(range(5))
    # negative control: a different episode order gives different shards
    _write(tmp_path / "other", [1, 0, 2, 3, 4])
    assert _files(tmp_path / "other") != _files(ref)


def test_reader_returns_what_the_writer_wrote(tmp_path):
    w = _write(tmp_path, range(3))
    written = [s for ep in range(3) for s in _episode(ep)]
    read = [(tmp_path / r["name"], s) for r in w.committed for s in iter_shard(tmp_path / r["name"])]
    assert len(read) == len(written) == 15
    for (path, got), ref in zip(read, written, strict=True):
        assert got.pop("__url__") == str(path)
        assert got == ref  # key, then every field's bytes
    # the fixed member metadata that makes equal samples give equal bytes
    with tarfile.open(tmp_path / w.committed[0]["name"]) as tf:
        assert {(m.mtime, m.mode, m.uname, m.gname) for m in tf.getmembers()} == {(0, 0o644, "", "")}


@pytest.mark.parametrize("cut", ["end_marker", "mid_member", "header"])
def test_damaged_shard_raises_a_shard_error_naming_it(tmp_path, cut):
    w = _write(tmp_path, range(2), max_count=100)
    path = tmp_path / w.committed[0]["name"]
    data = path.read_bytes()
    assert len(list(iter_shard(path))) == 10  # negative control: the intact shard reads
    if cut == "end_marker":  # every member whole, only the end-of-archive blocks missing
        end = len(data.rstrip(b"\0"))
        data = data[: end + (-end) % 512]
    elif cut == "mid_member":
        data = data[: len(data) // 2 + 100]
    else:  # a flipped byte in the first header fails its checksum
        data = data[:10] + bytes([data[10] ^ 1]) + data[11:]
    path.write_bytes(data)
    with pytest.raises(ShardError, match=f"shard {path} is corrupt or truncated"):
        list(iter_shard(path))
    # a handler that skips a bad shard goes on with the next one
    good = _write(tmp_path / "good", range(1))
    keys = [s["__key__"] for s in tar_samples([path, tmp_path / "good" / good.committed[0]["name"]],
                                              handler=lambda exc: True)]
    assert keys[-5:] == [f"000000_{t:06d}" for t in range(5)]


def test_sample_count_differing_from_the_manifest_is_an_error(tmp_path):
    w = _write(tmp_path, range(2), max_count=100)
    path = tmp_path / w.committed[0]["name"]
    assert len(list(tar_samples([path], counts={str(path): 10}))) == 10
    with pytest.raises(ShardError, match="holds 10 samples but the manifest lists 12"):
        list(tar_samples([path], counts={str(path): 12}))


def _fixed_samples(ep: int, fields=None):
    """Three samples of fixed bytes: fields not in sorted order, a str value, an empty member, one of 512 bytes."""
    for t in range(3):
        sample = {"__key__": f"{ep:06d}_{t:06d}", "observation.images.top.0.jpg": bytes(range(256)) * (t + 1),
                  "observation.state.npy": bytes([ep, t]) * 256, "action.npy": b"", "meta.json": f'{{"t": {t}}}'}
        yield sample if fields is None else {"__key__": sample["__key__"], **{f: sample[f] for f in fields}}


# the sha256 of the shard of _fixed_samples(0), _fixed_samples(1), as the shard writer has written it since
# shards carry checksums: a resumed run repairs a damaged shard by writing it again, so its bytes must not move
PINNED_SHARD_SHA256 = "b056ce4b815f2239e72216dc45735afff67aea1f3261120154fa9347fbdea705"


def test_shard_bytes_are_pinned(tmp_path):
    def write(out, fields=None):
        w = ShardWriter(out, rank=0, max_count=100)
        for ep in range(2):
            w.write_episode(_fixed_samples(ep, fields), {"episode_index": ep})
        w.close()
        (record,) = w.committed
        assert record["sha256"] == file_sha256(out / record["name"])
        return out / record["name"], record["sha256"]

    path, sha = write(tmp_path / "a")
    assert sha == PINNED_SHARD_SHA256
    assert path.stat().st_size == 30720  # 24 members with their headers, the end marker, padded to 10240-byte records
    # members in the order of the sample's fields, not sorted
    with tarfile.open(path) as tf:
        assert [m.name for m in tf.getmembers()][:5] == [
            "000000_000000.observation.images.top.0.jpg", "000000_000000.observation.state.npy",
            "000000_000000.action.npy", "000000_000000.meta.json", "000000_000001.observation.images.top.0.jpg"]
    # negative control: the same fields in sorted order are other bytes
    _, other = write(tmp_path / "b", fields=sorted(next(_fixed_samples(0)).keys() - {"__key__"}))
    assert other != PINNED_SHARD_SHA256
    # ustar, as the writer has always written: a member name past ustar's 100 characters (no "/" to split it
    # at) is refused, where pax (tarfile's default) would add an extended header
    with pytest.raises(ValueError, match="name is too long"), ShardWriter(tmp_path / "c") as w:
        w.write_episode([{"__key__": "000000_000000", "x" * 100 + ".npy": b""}], {"episode_index": 0})
    assert not list((tmp_path / "c" / "shards").iterdir())  # nothing half-written is left
