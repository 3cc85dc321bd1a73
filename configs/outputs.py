"""Claiming an output folder, one way for every command that writes one.

    state = claim_output(out, {"config": resolved_config}, overwrite=False, kind="train",
                         ours=("checkpoints", "logs", "export", "config.yaml"))

A folder belongs to a run when it holds ``run.json`` (written first, before anything else) with the run's
``kind`` and ``identity`` (what must match for a re-run to continue it) and a fingerprint of the identity. A
folder that is missing or empty is claimed; one whose ``run.json`` has the same kind and fingerprint is the
same run (the caller decides whether it may continue); one of the same kind with another identity is refused
with the keys that differ, unless ``overwrite``, which deletes the run's own entries (``ours``) and leaves
foreign files alone. A folder that is not empty and has no ``run.json`` was not made by a topbc command: it is
always refused, ``overwrite`` or not, and nothing in it is touched.

A claimed folder is locked (``.topbc.lock``, an advisory ``flock`` held until the process ends), so a second
process writing the same folder is refused at once instead of racing the first for its files.
It lives in ``configs`` (the first stage) so that every command can import it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from configs import ConfigError

RUN_FILE = "run.json"
LOCK_FILE = ".topbc.lock"
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once, at import (reading it means setting it)


class OutputError(ConfigError):
    """The output folder holds something this run must not mix with."""


def atomic_write(path: str | Path, text: str | bytes) -> Path:
    """Write ``path`` through a temporary file of its own in the same folder and ``os.replace``, so a kill never
    leaves it half-written, a reader never sees half of it, and two writers never share a temporary file."""
    path = Path(path)
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would make it, not mkstemp's private 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_LOCKS: dict[Path, int] = {}  # folder -> the open descriptor whose flock this process holds


def lock_folder(out: str | Path, what: str = "output folder") -> None:
    """Hold an exclusive advisory lock on ``out`` (its ``.topbc.lock``) until this process ends; another process
    holding it is refused with :class:`OutputError`. Taking it again in the same process is a no-op."""
    out = Path(out).resolve()
    if out in _LOCKS:
        return
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise OutputError(f"{what} {out} is in use by another topbc process (pid {holder}); wait for it to "
                          "finish, or choose another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS[out] = fd


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
    """The ``run.json`` of a folder, or None when it has none (or an unreadable one)."""
    try:
        run = json.loads((Path(out) / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return run if isinstance(run, dict) else None


SHOWN_CHANGES = 5  # changed keys named in a refusal; the rest are counted


def check_output(out: str | Path, identity: dict, overwrite: bool, kind: str) -> str:
    """What :func:`claim_output` would find in ``out``, without writing anything: ``"new"`` (missing or empty,
    or ``overwrite``) or ``"same"`` (this run); raises :class:`OutputError` naming what differs otherwise. Every
    process of a multi-process run may call it; one then claims."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"out={out} is a file, not a folder; choose a folder")
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []
    if not entries:
        return "new"
    previous = read_run(out)
    if previous is None:
        raise OutputError(f"out={out} is not empty ({', '.join(entries[:5])}) and was not written by a topbc "
                          f"command (it has no {RUN_FILE}); choose another folder (overwrite=true only replaces "
                          "a folder a topbc command created, and never this one)")
    if previous.get("kind") != kind:
        raise OutputError(f"out={out} holds {previous.get('kind') or 'another command'}'s output, not a {kind} run; "
                          f"choose another folder (overwrite=true only replaces a {kind} run)")
    if overwrite:
        return "new"
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
    """Claim ``out`` for a run of ``kind`` with ``identity`` and lock it (:func:`lock_folder`); returns ``"new"``
    or ``"same"`` (the folder already holds this run). Raises :class:`OutputError` naming what differs, unless
    ``overwrite``, which deletes the run's own entries (``ours``) first, in a folder of a run of this kind only."""
    out = Path(out)
    check_output(out, identity, overwrite, kind)  # refuse before creating or locking anything
    lock_folder(out)
    state = check_output(out, identity, overwrite, kind)  # again under the lock: another process may have won
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
    atomic_write(out / RUN_FILE, json.dumps(run, indent=1, default=str))  # first, and whole
    return "new"
