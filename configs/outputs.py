"""Claiming an output folder, one way for every command that writes one.

    state = claim_output(out, {"config": resolved_config}, overwrite=False, kind="train",
                         ours=("checkpoints", "logs", "export", "config.yaml"))

A folder belongs to a run when it holds ``run.json`` (written first, before anything else) with the run's
``kind`` and ``identity`` (what must match for a re-run to continue it) and a fingerprint of the identity. A
folder that is missing or empty is claimed; one whose ``run.json`` has the same kind and fingerprint is the
same run (the caller decides whether it may continue); anything else is refused with the keys that differ,
unless ``overwrite``, which deletes the run's own entries (``ours``) and leaves foreign files alone.
It lives in ``configs`` (the first stage) so that every command can import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from configs import ConfigError

RUN_FILE = "run.json"


def atomic_write(path: str | Path, text: str | bytes) -> Path:
    """Write ``path`` through a temporary file in the same folder and ``os.replace``, so a kill never leaves it
    half-written and a reader never sees half of it."""
    path = Path(path)
    tmp = path.with_name("." + path.name + ".tmp")
    if isinstance(text, bytes):
        tmp.write_bytes(text)
    else:
        tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


class OutputError(ConfigError):
    """The output folder holds something this run must not mix with."""


def config_identity(cfg, dropped: tuple[str, ...] = ()) -> dict:
    """``cfg`` resolved to plain data, without the dotted keys ``dropped`` (those that change nothing in a run's
    output, so a re-run may differ in them and still continue); a section left empty by them goes too, so outputs
    made before the section existed keep their identity."""
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in dropped:
        *parents, leaf = key.split(".")
        nodes = [resolved]
        for p in parents:
            nodes.append(nodes[-1].get(p) if isinstance(nodes[-1], dict) else None)
        if isinstance(nodes[-1], dict) and leaf in nodes[-1]:
            nodes[-1].pop(leaf)
            if parents and not nodes[-1] and isinstance(nodes[-2], dict):
                nodes[-2].pop(parents[-1])  # a section of such keys only: not part of the identity either
    return resolved


def fingerprint(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(a, b, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf where two nested dicts differ (dotted keys); a config group's choice
    (``name``, e.g. ``reward.name``) comes first at every level: it explains the keys that follow from it."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=lambda k: (k != "name", k)):
            out += differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [f"{prefix[:-1] or 'value'}: {a!r} -> {b!r}"] if a != b else []


def read_run(out: Path) -> dict | None:
    """The ``run.json`` of a folder, or None when it has none (or an unreadable one). A run.json written before
    runs had a ``kind`` (annotate's: the identity's keys at the top level) reads as an ``annotate`` run with the
    same fingerprint, so such a folder still resumes."""
    try:
        run = json.loads((Path(out) / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(run, dict) and "kind" not in run and "fingerprint" in run and "config" in run:
        run = {"kind": "annotate", "fingerprint": run["fingerprint"],
               "identity": {k: v for k, v in run.items() if k != "fingerprint"}}
    return run if isinstance(run, dict) else None


SHOWN_CHANGES = 5  # changed keys named in a refusal; the rest are counted


def check_output(out: str | Path, identity: dict, overwrite: bool, kind: str) -> str:
    """What :func:`claim_output` would find in ``out``, without writing anything: ``"new"`` (missing or empty,
    or ``overwrite``) or ``"same"`` (this run); raises :class:`OutputError` naming what differs otherwise. Every
    process of a multi-process run may call it; one then claims."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"out={out} is a file, not a folder; choose a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return "new"
    previous = read_run(out)
    if overwrite:
        if previous is not None and previous.get("kind") != kind:
            raise OutputError(f"out={out} holds {previous.get('kind') or 'another command'}'s output; overwrite=true only replaces a "
                              f"{kind} run: choose another folder")
        return "new"
    if previous is None:
        raise OutputError(f"out={out} is not empty ({', '.join(entries[:5])}) and holds no {kind} run "
                          f"({RUN_FILE}); choose another folder, or set overwrite=true to write there anyway")
    if previous.get("kind") != kind:
        raise OutputError(f"out={out} holds {previous.get('kind') or 'another command'}'s output, not a {kind} run; "
                          "choose another folder")
    if previous.get("fingerprint") != fingerprint(identity):
        # the config's keys as the user types them (reward.name, not config.reward.name)
        diff = [d.removeprefix("config.") for d in differences(previous.get("identity", {}), identity)]
        if not diff:  # no setting differs: a key left out of the identity since (at the value it had) is no change
            return "same"
        more = f"; and {len(diff) - SHOWN_CHANGES} more" if len(diff) > SHOWN_CHANGES else ""
        raise OutputError(f"out={out} holds the output of a different run "
                          f"({'; '.join(diff[:SHOWN_CHANGES]) or 'different settings'}{more}); choose another "
                          f"folder, or set overwrite=true to delete that {kind} run and start over")
    return "same"


def claim_output(out: str | Path, identity: dict, overwrite: bool, kind: str, ours: tuple[str, ...]) -> str:
    """Claim ``out`` for a run of ``kind`` with ``identity``; returns ``"new"`` or ``"same"`` (the folder already
    holds this run). Raises :class:`OutputError` naming what differs, unless ``overwrite``, which deletes the
    run's own entries (``ours``) first."""
    out = Path(out)
    state = check_output(out, identity, overwrite, kind)
    if state == "same":
        return "same"
    if overwrite and out.is_dir():
        for name in (*ours, RUN_FILE):
            p = out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    run = {"kind": kind, "fingerprint": fingerprint(identity), "identity": identity}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(run, indent=1, default=str))
    os.replace(tmp, out / RUN_FILE)  # first, and whole: a folder of ours is never without it
    return "new"
