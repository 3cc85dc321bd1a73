"""Helpers shared by the annotation tests (reading back what pipeline.annotate wrote)."""

from __future__ import annotations

from pathlib import Path

from configs import load_config
from data.manifest import load_manifest, shard_paths
from data.schema import decode_sample
from data.shards import iter_shard


def annotate_cfg(root: Path, out: Path, *overrides: str):
    return load_config("annotate", [f"dataset.root={root}", f"out={out}", "progress_bar=false", *overrides])


def run_annotate(root: Path, out: Path, *overrides: str):
    from pipeline.annotate import annotate

    return annotate(annotate_cfg(root, out, *overrides))


def raw_samples(out: Path) -> dict[str, dict[str, bytes]]:
    """Every sample of the shards the manifest lists: key -> {field: bytes} (``__url__`` dropped)."""
    samples = {}
    for path in shard_paths(out):
        for s in iter_shard(path):
            key = s["__key__"]
            assert key not in samples, f"sample {key} appears twice"
            samples[key] = {k: v for k, v in s.items() if k != "__url__"}
    return samples


def decoded_samples(out: Path) -> dict[str, dict]:
    return {k: decode_sample(v) for k, v in raw_samples(out).items()}


def shard_episode_counts(out: Path) -> dict[str, dict[int, int]]:
    """Per shard file: episode -> samples, read from the tar files themselves."""
    counts: dict[str, dict[int, int]] = {}
    manifest = load_manifest(out)
    for s, path in zip(manifest["shards"], shard_paths(out, manifest), strict=True):
        c: dict[int, int] = {}
        for sample in iter_shard(path):
            ep = int(sample["__key__"].split("_")[0])
            c[ep] = c.get(ep, 0) + 1
        counts[s["name"]] = c
    return counts
