"""The shard DataModule: values, windows, past actions, splitting, shuffling, epochs and bad input."""

import io
import random
import shutil
import tarfile

import numpy as np
import pytest
import torch

from data.batches import (
    EpochLoader,
    ShardDataModule,
    ShardError,
    ShardStream,
    WindowError,
    WindowNeeds,
    episode_success,
    shuffle,
)
from data.manifest import ManifestError, load_manifest, shard_paths
from data.progress_table import fit_gain_stats
from data.shards import tar_samples
from tests.fixtures.shards import CAMERA, STATE, tiny_episode, write_tiny_shards

LENGTH = 12
FEATURES = (CAMERA, STATE)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("loader"), episodes=4, length=LENGTH, obs_steps=3, horizon=6)


def _all_examples(shards, needs, **kw):
    stream = ShardStream(shard_paths(shards), needs, batch_size=1, steps_per_epoch=1, shuffle_buffer=1,
                         success=episode_success(load_manifest(shards)), **kw)
    it = stream.samples()
    return [next(it) for _ in range(4 * LENGTH)]


def test_batch_values_match_the_episodes(shards):
    needs = WindowNeeds(obs_steps=2, future_actions=4, past_actions=1, features=FEATURES)
    seen = set()
    for ex in _all_examples(shards, needs):
        e, t = int(ex["episode_index"]), int(ex["frame_index"])
        seen.add((e, t))
        ep = tiny_episode(e, LENGTH)
        obs = np.clip(np.arange(t - 1, t + 1), 0, LENGTH - 1)
        np.testing.assert_array_equal(ex[STATE].numpy(), ep[STATE][obs])
        img = ex[CAMERA]
        assert img.shape == (2, 3, 32, 32) and img.dtype == torch.float32
        np.testing.assert_allclose(img.numpy(), ep[CAMERA][obs].transpose(0, 3, 1, 2) / 255.0, atol=1e-6)  # png
        # lerobot's window for actions [t-1, t+4): indices clamped into the episode, padding outside it
        idx = np.arange(t - 1, t + 4)
        np.testing.assert_array_equal(ex["action"].numpy(), ep["action"][np.clip(idx, 0, LENGTH - 1)])
        np.testing.assert_array_equal(ex["action_is_pad"].numpy(), (idx < 0) | (idx >= LENGTH))
        np.testing.assert_array_equal(ex["obs_is_pad"].numpy(), np.arange(t - 1, t + 1) < 0)
        np.testing.assert_array_equal(ex["progress"].numpy(), ep["progress"][np.clip(np.arange(t, t + 5), 0, LENGTH - 1)])
        assert ex["success_score"].item() == pytest.approx(float(ep["progress"][-3:].mean()))
    assert seen == {(e, t) for e in range(4) for t in range(LENGTH)}


def test_windows_longer_than_the_shards_are_refused(shards):
    with pytest.raises(WindowError, match=r"observation window.*window\.obs_steps=3"):
        ShardDataModule(shards, WindowNeeds(obs_steps=4, future_actions=2, features=FEATURES))
    with pytest.raises(WindowError, match=r"action window.*window\.horizon=6"):
        ShardDataModule(shards, WindowNeeds(obs_steps=1, future_actions=7, features=FEATURES))
    ShardDataModule(shards, WindowNeeds(obs_steps=3, future_actions=6, features=FEATURES))  # exactly enough


def test_missing_folder_or_manifest(tmp_path):
    needs = WindowNeeds(obs_steps=1, future_actions=2)
    with pytest.raises(ManifestError, match="does not exist"):
        ShardDataModule(tmp_path / "nope", needs)
    with pytest.raises(ManifestError, match="manifest.json is missing"):
        ShardDataModule(tmp_path, needs)


def test_feature_missing_from_the_manifest(shards):
    with pytest.raises(ShardError, match="observation.images.side"):
        ShardDataModule(shards, WindowNeeds(obs_steps=1, future_actions=2, features=("observation.images.side",)))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_shard_names_it(shards, tmp_path, damage):
    root = tmp_path / "copy"
    shutil.copytree(shards, root)
    bad = shard_paths(root)[2]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2 + 100] if damage == "truncate" else b"\x13" * 5000)
    dm = ShardDataModule(root, WindowNeeds(obs_steps=1, future_actions=2, features=FEATURES), batch_size=4,
                         num_workers=0, steps_per_epoch=200, shuffle_buffer=1)
    with pytest.raises(ShardError, match=str(bad)):
        for _ in dm.train_dataloader():
            pass


def test_sample_missing_a_key_names_it(shards, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(shards, root)
    path = shard_paths(root)[0]
    with tarfile.open(path) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    with tarfile.open(path, "w") as dst:
        for m, data in members:
            if m.name == f"000000_000003.{STATE}.npy":
                continue
            dst.addfile(m, io.BytesIO(data))
    needs = WindowNeeds(obs_steps=1, future_actions=2, features=FEATURES)
    with pytest.raises(ShardError, match=r"000000_000003.*lacks \['observation.state'\]"):
        _all_examples(root, needs)


def test_ranks_and_workers_see_disjoint_samples(shards):
    needs = WindowNeeds(obs_steps=1, future_actions=2, features=FEATURES)
    paths = shard_paths(shards)
    for world, use in [(2, paths), (2, paths[:1]), (4, paths[:3])]:  # by shard, and by key when shards < readers
        keys = []
        for rank in range(world):
            s = ShardStream(use, needs, batch_size=1, steps_per_epoch=1, shuffle_buffer=1, rank=rank, world_size=world)
            it = s.samples()
            n = len(use) * LENGTH
            keys.append({(int(x["episode_index"]), int(x["frame_index"])) for x in (next(it) for _ in range(2 * n))})
        for a in range(world):
            for b in range(a + 1, world):
                assert not keys[a] & keys[b]
        assert len(set().union(*keys)) == len(use) * LENGTH  # together they cover the data


def _keys(loader):
    return [tuple(zip(b["episode_index"].tolist(), b["frame_index"].tolist(), strict=True)) for b in loader]


def test_epochs_have_fixed_length_and_are_reproducible(shards):
    needs = WindowNeeds(obs_steps=1, future_actions=2, features=FEATURES)
    dm = ShardDataModule(shards, needs, batch_size=4, num_workers=2, steps_per_epoch=5, shuffle_buffer=16, seed=3)
    loader = dm.train_dataloader()
    e0, e1 = _keys(loader), _keys(loader)
    assert len(e0) == len(e1) == 5
    assert e0 != e1  # the next epoch is another order
    again = EpochLoader(dm.stream(), start_epoch=1, num_workers=2)
    assert _keys(again) == e1  # a loader that starts at epoch 1 (resume) replays epoch 1 exactly


def test_fit_gain_stats_reads_every_window(shards):
    gains = fit_gain_stats(shards, 4)
    expected = []
    for e in range(4):
        p = tiny_episode(e, LENGTH)["progress"]
        expected += [p[min(t + 4, LENGTH - 1)] - p[t] for t in range(LENGTH)]
    np.testing.assert_allclose(np.sort(gains), np.sort(expected), atol=1e-6)
    with pytest.raises(WindowError):
        fit_gain_stats(shards, 7)
    assert load_manifest(shards)["window"]["horizon"] == 6


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_reader_agrees_with_webdataset(shards, tmp_path, fmt):
    from webdataset.tariterators import tarfile_samples

    path = tmp_path / "t.tar"
    long_feature = "observation.images." + "x" * 60  # member names beyond ustar's 100 characters
    with tarfile.open(path, "w", format=fmt) as tf:
        for k in range(3):
            for field, data in [("meta.json", b"{}"), (f"{long_feature}.0.jpg", bytes([k]) * (700 + k)),
                                ("action.npy", b"a" * 512)]:
                name = f"{k:06d}_{k:06d}.{field}"
                if fmt == tarfile.USTAR_FORMAT and len(name) > 100:
                    name = f"sub/{k:06d}_{k:06d}.{field}"[:100]
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    for p in [path, *shard_paths(shards)]:
        ours = list(tar_samples([p]))
        ref = list(tarfile_samples(iter([{"url": str(p)}])))
        assert ours == ref and len(ours) >= 3


# the orders the shuffle buffer has given since the loader's first release (20 samples), for (seed, bufsize)
SHUFFLED = {(0, 3): [1, 2, 0, 3, 6, 5, 7, 8, 9, 10, 12, 4, 14, 13, 11, 15, 17, 19, 16, 18],
            (1, 16): [4, 2, 8, 3, 19, 12, 7, 13, 10, 6, 18, 1, 14, 0, 9, 5, 11, 16, 17, 15],
            (2, 100): [1, 2, 18, 11, 5, 16, 12, 10, 4, 14, 9, 3, 0, 13, 15, 19, 8, 17, 6, 7]}


@pytest.mark.parametrize(("seed", "bufsize"), SHUFFLED)
def test_shuffle_buffer_order_is_unchanged(seed, bufsize):
    """webdataset's buffer shuffle, drawing from the reader's rng, gives the order the batches have always had."""
    ours = [s["i"] for s in shuffle(iter([{"i": i} for i in range(20)]), bufsize, random.Random(seed))]
    assert ours == SHUFFLED[(seed, bufsize)]
    # negative control: another seed is another order
    assert [s["i"] for s in shuffle(iter([{"i": i} for i in range(20)]), bufsize, random.Random(seed + 7))] != ours


def test_no_shuffle_buffer_leaves_the_stream_and_the_rng_alone():
    """bufsize <= 1: the stream as it comes, and no draw from the rng (the reader's next shard order is drawn from
    it)."""
    for bufsize, drawn in [(0, False), (1, False), (2, True)]:
        rng = random.Random(5)
        out = [s["i"] for s in shuffle(iter([{"i": i} for i in range(20)]), bufsize, rng)]
        assert sorted(out) == list(range(20))
        assert (out == list(range(20))) == (not drawn)
        assert (rng.random() != random.Random(5).random()) == drawn  # bufsize 2 is the negative control
