"""Training batches from the annotation shards: a Lightning DataModule over WebDataset tars.

    needs = WindowNeeds(obs_steps=1, future_actions=10)            # what the policy trains on
    dm = ShardDataModule("outputs/shards", needs, batch_size=64, num_workers=2, steps_per_epoch=200)

The stream of one data-loader worker is a chain of small generator stages:

    shards (split by rank × worker, reshuffled every pass, endless)
      → raw samples (data.shards.tar_samples; a corrupt/truncated tar raises ShardError naming it)
      → past actions (only for policies whose action window starts before t, e.g. Diffusion)
      → split by sample key (only when there are fewer shards than rank × worker readers)
      → shuffle buffer (webdataset's) → decode (data.schema.decode_sample; JPEG/PNG in the worker) → cut to the policy's
        windows, images as float C×H×W in [0, 1] → batches

Every rank yields exactly ``steps_per_epoch`` batches per epoch (the stream is resampled endlessly), so DDP
ranks never wait on one another, and the order is a function of (seed, epoch, rank, worker) only: a checkpoint
keeps the loader position per worker (:func:`loader_position`), so resuming from any step replays the same
batches in the same order, with any number of workers.

A batch (B = batch size, S = policy obs steps, P past + F future actions):
``<image feature>`` float (B, S, 3, H, W); ``<state feature>`` (B, S, D); ``obs_is_pad`` (B, S);
``action`` (B, P+F, A); ``action_is_pad`` (B, P+F); ``progress`` (B, F+1) = p[t : t+F+1];
``episode_index``, ``frame_index``, ``index`` (B,) int64; ``success_score`` (B,) float (NaN when unknown).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from einops import rearrange
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import shuffle as wds_shuffle

from data.manifest import (
    MANIFEST,
    ManifestError,
    as_location,
    as_root,
    load_manifest,
    locate,
    shard_counts,
    shard_hashes,
    shard_paths,
)
from data.schema import (
    ACTION,
    IMAGE_FORMATS,
    SampleError,
    WindowError,
    decode_array,
    decode_sample,
    parse_key,
)
from data.shards import Handler, ShardError, reraise, tar_samples


@dataclass(frozen=True)
class WindowNeeds:
    """What a policy trains on, counted from the sample's frame t.

    ``obs_steps``: observation history t-obs_steps+1..t; ``future_actions``: actions t..t+F-1 (the progress
    window p[t..t+F] is cut to the same length); ``past_actions``: actions t-P..t-1 before them (Diffusion's
    action window starts at t-n_obs_steps+1); ``features``: observation features the batch must carry.
    """

    obs_steps: int
    future_actions: int
    past_actions: int = 0
    features: tuple[str, ...] = ()


def check_windows(manifest: dict, needs: WindowNeeds, where: str = "manifest.json") -> None:
    """Refuse shards whose windows are shorter than the policy needs, naming the short window."""
    win = manifest.get("window") or {}
    if "obs_steps" not in win or "horizon" not in win:
        raise WindowError(f"{where} has no window {{obs_steps, horizon}}; re-run pipeline.annotate to rewrite it")
    problems = []
    if needs.obs_steps > int(win["obs_steps"]):
        problems.append(f"observation window: the policy needs {needs.obs_steps} steps (n_obs_steps) but the "
                        f"shards hold window.obs_steps={win['obs_steps']}")
    if needs.future_actions > int(win["horizon"]):
        problems.append(f"action window: the policy needs {needs.future_actions} actions from t (chunk) but the "
                        f"shards hold window.horizon={win['horizon']}")
    if problems:
        raise WindowError(f"shards in {where} are too short for this policy: " + "; ".join(problems)
                          + ". Re-annotate with larger window.obs_steps/window.horizon, or shorten the policy's.")
    missing = [f for f in needs.features if f not in manifest.get("features", {})]
    if missing:
        raise ShardError(f"the policy needs features {missing} but {where} stores only "
                         f"{sorted(manifest.get('features', {}))}")


# ---------------------------------------------------------------- stages


def with_past_actions(samples: Iterator[dict], past: int, handler: Handler = reraise) -> Iterator[dict]:
    """Attach actions t-past..t-1 (``__past_action``, ``__past_is_pad``), as lerobot's delta_timestamps do.

    Shards hold a[t:t+H] only; a shard stores an episode's frames in order, so the previous frames' first
    actions are remembered while reading. Before the episode start lerobot repeats a[0] and marks it padding;
    the same is done here. A frame whose predecessor is not in this shard (an episode split across shards)
    repeats a[t], marked padding.
    """
    recent: dict[tuple[int, int], np.ndarray] = {}
    for sample in samples:
        try:
            ep, t = parse_key(sample["__key__"])
            a_t = decode_array(sample[ACTION])[0]
            recent[(ep, t)] = a_t
            acts, pads = [], []
            for k in range(past, 0, -1):
                f = max(t - k, 0)
                acts.append(recent.get((ep, f), a_t))
                pads.append(t - k < 0 or (ep, f) not in recent)
            sample["__past_action"] = np.stack(acts).astype(np.float32) if past else np.zeros((0, a_t.shape[-1]), np.float32)
            sample["__past_is_pad"] = np.asarray(pads, dtype=bool)
            for key in [k for k in recent if k[0] != ep or k[1] < t - past]:
                del recent[key]
            yield sample
        except Exception as exc:
            if handler(exc):
                continue
            raise


def split_by_key(samples: Iterator[dict], index: int, count: int) -> Iterator[dict]:
    """Keep the samples whose key hashes to this reader (disjoint across readers, deterministic)."""
    for sample in samples:
        if zlib.crc32(sample["__key__"].encode()) % count == index:
            yield sample


def keep_random(seed: int, epoch: int, reader: int) -> random.Random:
    """The draws that keep or drop a resampled reader's samples in one pass: a function of (seed, epoch, reader)
    alone, the same in every process. Seeded by a string, which ``random`` hashes with SHA-512; Python's own
    ``hash`` of a string changes with each process (PYTHONHASHSEED), so a seed built from it made resampled runs of
    one seed differ between processes, and a resume differ from the run it continued."""
    return random.Random(f"keep/{seed}/{epoch}/{reader}")


def shuffle(samples: Iterator[dict], bufsize: int, rng: random.Random) -> Iterator[dict]:
    """webdataset's buffer shuffle (``webdataset.filters.shuffle``) of ``bufsize`` samples with ``initial=bufsize``,
    drawing from ``rng`` (``bufsize <= 1``: the stream as it comes, and ``rng`` is not drawn from).

    Each step takes one sample, plus one more while the buffer is not full (filling it twice as fast); once the
    buffer holds ``bufsize`` samples, every step picks a random one (``rng.randint``), moves the last into its
    place and yields it; at the end the rest are picked the same way. The reader's shard order is drawn from
    the same ``rng`` (:meth:`ShardStream.samples`), so the draws of both make the order of a reader's stream.
    """
    if bufsize <= 1:
        yield from samples
        return
    yield from wds_shuffle(bufsize, initial=bufsize, rng=rng)(iter(samples))


class SampleDecoder:
    """Raw sample → one training example cut to the policy's windows (runs in the loader workers)."""

    def __init__(self, needs: WindowNeeds, success: dict[int, float] | None = None):
        self.needs = needs
        self.success = success or {}

    def _needed(self, raw: dict) -> dict:
        """The raw sample without the images of window steps older than the policy looks at (not decoded)."""
        steps: dict[str, list[tuple[int, str]]] = {}
        for name in raw:
            stem, _, ext = name.rpartition(".")
            if ext in IMAGE_FORMATS:
                feature, _, j = stem.rpartition(".")
                steps.setdefault(feature, []).append((int(j), name))
        drop = set()
        for items in steps.values():
            items.sort()
            drop.update(name for _, name in items[: max(0, len(items) - self.needs.obs_steps)])
        return {k: v for k, v in raw.items() if k not in drop} if drop else raw

    def __call__(self, raw: dict) -> dict:
        n = self.needs
        src = raw.get("__url__", "?")
        try:
            s = decode_sample(self._needed(raw))
        except SampleError as exc:
            raise ShardError(f"{exc.args[0]} (the shard may be truncated or written by another schema version; "
                             "re-run pipeline.annotate)") from exc
        missing = [f for f in n.features if f not in s]
        if missing:
            raise ShardError(f"sample {s['__key__']} in {src} lacks {missing} that the policy needs; "
                             f"it has {sorted(k for k in s if not k.startswith('__'))}")
        out: dict = {}
        for f in n.features:
            v = s[f]
            if v.ndim == 4 and v.shape[-1] == 3 and v.dtype == np.uint8:  # images (S, H, W, 3)
                t = rearrange(torch.from_numpy(np.ascontiguousarray(v[-n.obs_steps:])), "s h w c -> s c h w")
                out[f] = t.float().div_(255.0)
            else:
                out[f] = torch.from_numpy(np.asarray(v[-n.obs_steps:], dtype=np.float32))
        out["obs_is_pad"] = torch.from_numpy(np.asarray(s["obs_is_pad"][-n.obs_steps:], dtype=bool))
        act = np.asarray(s["action"][: n.future_actions], dtype=np.float32)
        pad = np.asarray(s["action_is_pad"][: n.future_actions], dtype=bool)
        if n.past_actions:
            act = np.concatenate([raw["__past_action"], act])
            pad = np.concatenate([raw["__past_is_pad"], pad])
        out["action"] = torch.from_numpy(act)
        out["action_is_pad"] = torch.from_numpy(pad)
        out["progress"] = torch.from_numpy(np.asarray(s["progress"][: n.future_actions + 1], dtype=np.float32))
        meta = s["meta"]
        out["episode_index"] = torch.tensor(int(meta["episode_index"]))
        out["frame_index"] = torch.tensor(int(meta["frame_index"]))
        out["index"] = torch.tensor(int(meta.get("index", -1)))
        out["success_score"] = torch.tensor(float(self.success.get(int(meta["episode_index"]), float("nan"))))
        return out


def collate(examples: list[dict]) -> dict:
    return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}


class ShardStream(IterableDataset):
    """The endless, rank- and worker-split sample stream; each worker yields its share of one epoch's batches."""

    def __init__(self, paths: list[Path | str], needs: WindowNeeds, batch_size: int, steps_per_epoch: int,
                 shuffle_buffer: int = 1000, seed: int = 0, rank: int = 0, world_size: int = 1,
                 success: dict[int, float] | None = None, handler: Handler = reraise,
                 counts: dict[str, int] | None = None, hashes: dict[str, str] | None = None,
                 skip_episodes: list[int] | None = None, keep: dict[tuple[int, int], float] | None = None):
        if batch_size < 1 or steps_per_epoch < 1:
            raise ValueError(f"batch_size={batch_size} and steps_per_epoch={steps_per_epoch} must be >= 1")
        self.paths = [as_location(p) for p in paths]  # local paths as Paths; URLs and pipe: commands as given
        self.needs, self.batch_size, self.steps_per_epoch = needs, batch_size, steps_per_epoch
        self.shuffle_buffer, self.seed, self.rank, self.world_size = shuffle_buffer, seed, rank, world_size
        self.decoder = SampleDecoder(needs, success)
        self.handler = handler
        self.counts = counts
        self.hashes = dict(hashes) if hashes else None  # emptied as each shard is verified (data.shards.tar_samples)
        self.skip = frozenset(int(e) for e in skip_episodes or [])  # episodes not read (labels left them out)
        self.keep = keep  # (episode, frame) -> probability of keeping the sample once read (weighted resampling)
        self.epoch = 0
        self.start_batch = 0
        self.first_worker: int | None = None  # None: the worker that owns batch start_batch (see worker)

    def worker(self) -> tuple[int, int]:
        """(logical worker, workers): loader worker ``i`` plays logical worker ``(first_worker + i) % workers``.

        The loader interleaves its workers round-robin starting from worker 0, so a resume whose next batch
        belongs to logical worker ``k`` hands that role to worker 0; the stream of a logical worker is the same
        whichever process serves it."""
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        first = self.start_batch % nw if self.first_worker is None else self.first_worker
        return (first + wid) % nw, nw

    def _reader(self) -> tuple[int, int, int]:
        logical, nw = self.worker()
        return self.rank * nw + logical, self.world_size * nw, nw

    def samples(self, epoch: int | None = None) -> Iterator[dict]:
        """Endless decoded examples of this reader (before batching)."""
        reader, readers, _ = self._reader()
        epoch = self.epoch if epoch is None else epoch
        rng = random.Random(hash((self.seed, epoch, reader)) & 0xFFFFFFFF)
        keep_rng = keep_random(self.seed, epoch, reader)
        by_shard = len(self.paths) >= readers
        mine = self.paths[reader::readers] if by_shard else list(self.paths)

        def endless() -> Iterator[dict]:
            while True:
                order = list(mine)
                rng.shuffle(order)
                stream = tar_samples(order, self.handler, self.counts, self.hashes)
                if self.needs.past_actions:
                    stream = with_past_actions(stream, self.needs.past_actions, self.handler)
                if not by_shard:
                    stream = split_by_key(stream, reader, readers)
                keepable = False  # a sample this reader may keep: a pass that keeps none by chance is read again
                for s in stream:
                    if self.skip or self.keep is not None:
                        key = parse_key(s["__key__"])
                        if key[0] in self.skip:
                            continue
                        prob = 1.0 if self.keep is None else self.keep.get(key, 1.0)
                        keepable = keepable or prob > 0
                        if prob < 1.0 and keep_rng.random() >= prob:
                            continue
                    keepable = True
                    yield s
                if not keepable:
                    left = (f" outside the {len(self.skip)} episodes left out" if self.skip else "") + \
                        (" with a weight above 0" if self.keep is not None else "")
                    raise ShardError(f"reader {reader} of {readers} got no samples{left} from shards "
                                     f"{[str(p) for p in mine][:4]}")

        for raw in shuffle(endless(), self.shuffle_buffer, rng):
            try:
                yield self.decoder(raw)
            except Exception as exc:
                if self.handler(exc):
                    continue
                raise

    def __iter__(self) -> Iterator[dict]:
        logical, nw = self.worker()
        n_batches = self.steps_per_epoch // nw + (logical < self.steps_per_epoch % nw)
        # logical worker w makes the epoch's batches w, w+nw, ...; those before start_batch were served already
        done = len(range(logical, self.start_batch, nw))
        it = self.samples()
        for b in range(n_batches):
            batch = [next(it) for _ in range(self.batch_size)]
            if b >= done:
                yield collate(batch)

    def restore(self, position: dict) -> None:
        """Continue from :meth:`position`'s record: the epoch, the batches each worker served, who serves next."""
        self.epoch = int(position["epoch"])
        self.start_batch = int(sum(position["served"]))
        self.first_worker = int(position["next_worker"])


def loader_position(step: int, steps_per_epoch: int, workers: int) -> dict:
    """Where the loader stands after ``step`` training steps, per logical worker (what a checkpoint keeps).

    ``served[w]``: the batches of the current epoch logical worker ``w`` has served (it owns batches w, w+W,
    ...); ``next_worker``: the worker that owns the next batch. A resume hands that worker the loader's first
    turn, so the batches come in the uninterrupted run's order with any number of workers."""
    workers = max(1, int(workers))
    epoch, batch = divmod(int(step), int(steps_per_epoch))
    return {"epoch": epoch, "step": int(step), "workers": workers,
            "served": [len(range(w, batch, workers)) for w in range(workers)], "next_worker": batch % workers}


class EpochLoader(DataLoader):
    """A DataLoader that tells its stream which epoch (and, on a resume, which batch) to serve.

    With ``position`` (a callable returning the global training step) the epoch is ``step // steps_per_epoch``
    and the first batch ``step % steps_per_epoch``, whatever the caller's own epoch count: the data of step k is
    the same in a run and in its resumption, with any number of workers (the worker owning the next batch gets
    the loader's first turn, :meth:`ShardStream.worker`). ``restored`` (a callable returning a
    :func:`loader_position` read from a checkpoint, or None) overrides the first epoch after a resume. Workers
    are re-created each epoch, so the stream's settings reach them.
    """

    def __init__(self, dataset: ShardStream, start_epoch: int = 0, position: Callable[[], int] | None = None,
                 restored: Callable[[], dict | None] | None = None, **kw):
        super().__init__(dataset, batch_size=None, **kw)
        self._next_epoch = start_epoch
        self._position = position
        self._restored = restored

    def __iter__(self):
        saved = self._restored() if self._restored is not None else None
        if saved is not None:
            self.dataset.restore(saved)
        elif self._position is not None:
            epoch, skip = divmod(int(self._position()), self.dataset.steps_per_epoch)
            self.dataset.epoch, self.dataset.start_batch, self.dataset.first_worker = epoch, skip, None
        else:
            self.dataset.epoch, self.dataset.start_batch, self.dataset.first_worker = self._next_epoch, 0, None
        self._next_epoch = self.dataset.epoch + 1
        return super().__iter__()

    def __len__(self) -> int:
        return self.dataset.steps_per_epoch


def episode_success(manifest: dict) -> dict[int, float]:
    return {int(e["episode_index"]): float(e["success_score"]) for e in manifest.get("episodes", [])
            if e.get("success_score") is not None}


class ShardDataModule(pl.LightningDataModule):
    """Lightning DataModule over ``root/manifest.json`` + ``root/shards/*.tar`` (see the module docstring).

    ``root``: the annotation output, a local folder or a URL / ``pipe:`` template (:mod:`data.manifest`)."""

    def __init__(self, root: str | Path, needs: WindowNeeds, batch_size: int = 32, num_workers: int = 2,
                 shuffle_buffer: int = 1000, steps_per_epoch: int = 200, seed: int = 0, verify: bool = True,
                 skip_episodes: list[int] | None = None, keep: dict[tuple[int, int], float] | None = None):
        super().__init__()
        self.skip_episodes = list(skip_episodes or [])
        self.keep = keep
        self.verify = verify  # hash every shard as it is read against the manifest's sha256
        self.root = as_root(root)
        self.needs = needs
        self.batch_size, self.num_workers = batch_size, num_workers
        self.shuffle_buffer, self.steps_per_epoch, self.seed = shuffle_buffer, steps_per_epoch, seed
        self._restored_position: dict | None = None  # a checkpoint's loader position, until the loader takes it
        self.manifest = load_manifest(self.root)
        where = str(locate(self.root, MANIFEST))
        check_windows(self.manifest, needs, where)
        self.paths = shard_paths(self.root, self.manifest)
        if not self.paths:
            raise ManifestError(f"{where} lists no shards; nothing to train on")
        fmt = (self.manifest.get("image") or {}).get("format", "jpg")
        if fmt not in IMAGE_FORMATS:
            raise ShardError(f"manifest image.format={fmt!r} is not one of {IMAGE_FORMATS}")

    def stream(self, rank: int = 0, world_size: int = 1) -> ShardStream:
        return ShardStream(self.paths, self.needs, self.batch_size, self.steps_per_epoch, self.shuffle_buffer,
                           self.seed, rank, world_size, episode_success(self.manifest),
                           counts=shard_counts(self.root, self.manifest),
                           hashes=shard_hashes(self.root, self.manifest) if self.verify else None,
                           skip_episodes=self.skip_episodes, keep=self.keep)

    def train_dataloader(self) -> EpochLoader:
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        position = (lambda: trainer.global_step) if trainer is not None else None
        return EpochLoader(self.stream(rank, world), position=position, restored=self.take_restored,
                           num_workers=self.num_workers, persistent_workers=False,
                           prefetch_factor=2 if self.num_workers else None)

    # -- the loader position travels in checkpoints (Lightning saves a DataModule's state_dict)
    def state_dict(self) -> dict:
        trainer = getattr(self, "trainer", None)
        step = int(trainer.global_step) if trainer is not None else 0
        return {"loader": loader_position(step, self.steps_per_epoch, self.num_workers)}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("loader")
        if saved is None:
            return
        if int(saved["workers"]) != max(1, self.num_workers):
            import warnings

            # each worker reads its own share of the shards: another count is another order, not an error
            warnings.warn(f"the checkpoint's loader ran {saved['workers']} workers, this run data.num_workers="
                          f"{self.num_workers}: training continues from the same step with another data order "
                          "(not bit-identical to an uninterrupted run)", stacklevel=2)
            return
        self._restored_position = saved

    def take_restored(self) -> dict | None:
        """The loader position read from a checkpoint, once (the epochs after it follow the step count)."""
        saved, self._restored_position = self._restored_position, None
        return saved
