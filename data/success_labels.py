"""Labels of episodes, given by a person: the one reader and writer of a labels file (for the evaluation of
recorded rollouts, the review pages, ``pipeline.report labels=FILE`` and ``train.py labels=FILE``).

A labels file says, per episode, whether it succeeded and, for demonstrations, whether it is *good* (worth
copying; a success reached by wandering, stalling or going to the wrong goal first is not):

- CSV with a header ``policy,episode_index`` and ``success`` and/or ``good``, and an optional ``note`` column (any
  order; the corpus review page writes ``good``, the rollout review page ``success``). ``policy`` may
  be left out where the file is about one dataset's episodes (``pipeline.report``): every row then belongs to
  policy ``""``;
- JSON: a list of objects with the same keys (``[{"policy": "act", "episode_index": 3, "success": true}]``),
  ``{"labels": [...]}``, or a mapping ``{episode_index: success}`` for one dataset.

``success`` reads ``1/0``, ``true/false``, ``yes/no``, ``success/failure`` (any case) or a probability in [0, 1]
(success above 0.5), and so does ``good``; an empty value is "not labelled yet", and a row with neither is skipped. Files are read as UTF-8 with or
without a byte-order mark (as spreadsheets save CSV). A file is at most :data:`MAX_FILE_BYTES` and a note at most
:data:`MAX_NOTE` characters; anything that cannot be read is a :class:`LabelsError` naming the file and the fix.
Writing is atomic (:func:`configs.outputs.atomic_write`), so a crash never leaves half a file and a reader never
sees one; :func:`set_label` holds a lock on the file while it reads, changes and writes, so two writers (two
review pages on one folder) never lose each other's labels.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from configs import UserError
from configs.outputs import atomic_write

COLUMNS = ("policy", "episode_index", "success", "note")
GOOD = "good"  # the column a corpus review writes: worth copying (1) or not (0)
TRUE = frozenset({"1", "true", "yes", "y", "success", "succeeded", "s", "pass"})
FALSE = frozenset({"0", "false", "no", "n", "failure", "failed", "fail", "f"})
MAX_NOTE = 4000  # characters of one note: a paragraph, not a document
MAX_FILE_BYTES = 16 * 1024 * 1024  # a labels file of ~100k episodes with notes; anything larger is not labels


class LabelsError(UserError, ValueError):
    """The labels file cannot be read as labels; the message names the file, the row and what to do."""


@dataclass(frozen=True)
class Label:
    success: bool | None
    note: str = ""
    good: bool | None = None  # a demonstration's judgement (None: not given)


Key = tuple[str, int]  # (policy, episode_index)


def parse_success(value, where: str) -> bool | None:
    """``value`` as a success label (None: empty, not labelled yet)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    try:
        p = float(text)
    except ValueError:
        p = float("nan")
    if 0.0 <= p <= 1.0:  # a probability (a judge's, say): success above one half
        return p > 0.5
    raise LabelsError(f"{where}: success={value!r} is not a label; write 1/0, true/false, yes/no or "
                      "success/failure (empty: not labelled)")


def _rows(path: Path) -> list[dict]:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise LabelsError(f"labels file {path} is {size / 2**20:.1f} MiB, more than a labels file holds "
                          f"({MAX_FILE_BYTES // 2**20} MiB at most); give the right file, or split it")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a spreadsheet's CSV starts with a byte-order mark
    except UnicodeDecodeError as exc:
        raise LabelsError(f"labels file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV "
                          "or JSON") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as exc:
            raise LabelsError(f"labels file {path} is not valid JSON ({exc}); fix it or write it as CSV "
                              f"with columns {','.join(COLUMNS)}") from exc
        if isinstance(data, dict) and "labels" not in data:  # {episode_index: success} of one dataset
            data = [{"episode_index": k, "success": v} for k, v in data.items()]
        elif isinstance(data, dict):
            data = data.get("labels")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise LabelsError(f"labels file {path}: expected a list of objects with keys {list(COLUMNS[:3])} "
                              "(optionally 'note'), or {\"labels\": [...]}")
        return data
    csv.field_size_limit(MAX_FILE_BYTES)  # a note may be long; the file's size is bounded above
    reader = csv.DictReader(io.StringIO(text))
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS[1:3] if c not in header]
        if missing and not (COLUMNS[1] in header and GOOD in header):
            raise LabelsError(f"labels file {path} has columns {header}, lacks {missing}; the header must name "
                              f"{','.join(COLUMNS[:3])} (and optionally note, good), or episode_index,good")
        return [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except csv.Error as exc:
        raise LabelsError(f"labels file {path}, line {reader.line_num}: not readable as CSV ({exc}); fix that "
                          "line (a quote left open?) or remove it") from None


def read_labels(path: str | Path, need: str = "success") -> dict[Key, Label]:
    """The labels in ``path`` by (policy, episode_index); a missing file has none. ``need="success"``: only the
    rows with a success label (what the evaluation of rollouts reads); ``"any"``: also those with only ``good``.
    Raises :class:`LabelsError` on a malformed file or row, and on one episode labelled twice with different
    calls."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[Key, Label] = {}
    for i, row in enumerate(_rows(path), start=2 if path.suffix.lower() != ".json" else 0):
        where = f"labels file {path}, {'line' if path.suffix.lower() != '.json' else 'entry'} {i}"
        policy = str(row.get("policy") or "").strip()  # "" where the file is about one dataset
        try:
            episode = int(str(row.get("episode_index")).strip())
        except ValueError:
            raise LabelsError(f"{where}: episode_index={row.get('episode_index')!r} is not an integer") from None
        success = parse_success(row.get("success"), where)
        good = parse_success(row.get(GOOD), where.replace("success=", "good="))
        if success is None and (need == "success" or good is None):
            continue
        label = Label(success, str(row.get("note") or "").strip(), good)
        old = out.get((policy, episode))
        if old is not None and (old.success, old.good) != (label.success, label.good):
            raise LabelsError(f"{where}: episode {episode} of policy {policy!r} is labelled twice, differently "
                              "(both success and failure, or good and bad); keep one row")
        out[(policy, episode)] = label
    return out


def episode_labels(path: str | Path) -> dict[int, bool]:
    """The labels of a file about ONE dataset's episodes, by episode index (``pipeline.report labels=FILE``); a
    file naming several policies is refused (its episode indices would collide)."""
    labels = read_labels(path)
    policies = sorted({p for p, _ in labels})
    if len(policies) > 1:
        raise LabelsError(f"labels file {path} labels the episodes of several policies ({policies}); give a file "
                          "for this dataset's episodes only")
    return {e: lab.success for (_, e), lab in labels.items()}


def write_labels(path: str | Path, labels: dict[Key, Label]) -> Path:
    """Write ``labels`` to ``path`` atomically (CSV, or JSON for a ``.json`` path), sorted by policy and episode;
    the ``good`` column only where some label has one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with_good = any(lab.good is not None for lab in labels.values())
    rows = [{"policy": p, "episode_index": e, "success": lab.success, "note": lab.note,
             **({GOOD: lab.good} if with_good else {})} for (p, e), lab in sorted(labels.items())]
    if path.suffix.lower() == ".json":
        text = json.dumps(rows, indent=1) + "\n"
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[*COLUMNS, *([GOOD] if with_good else [])], lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r | {k: ("" if r[k] is None else int(r[k])) for k in ("success", GOOD) if k in r})
        text = buf.getvalue()
    return atomic_write(path, text)


def check_note(note: str) -> str:
    """``note`` if it fits a labels file (at most :data:`MAX_NOTE` characters), else :class:`LabelsError`."""
    if len(note) > MAX_NOTE:
        raise LabelsError(f"a note of {len(note)} characters is longer than {MAX_NOTE}; shorten it (nothing was "
                          "written)")
    return note


@contextmanager
def locked(path: Path):
    """An exclusive lock (``flock`` on ``.NAME.lock`` beside the file) for one read-change-write of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name("." + path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


KEEP = "keep"  # set_label: leave this part of the label as the file has it


def set_label(path: str | Path, policy: str, episode_index: int, success: bool | None | str = KEEP,
              note: str | None = "", good: bool | None | str = KEEP) -> dict:
    """Set (None: clear) one episode's ``success`` and/or ``good`` in the file at ``path``, keeping the other
    episodes and, for :data:`KEEP`, the part the file has; ``note=None`` keeps the file's note. An episode left
    with neither is removed. Returns the file's labels afterwards (every row, :func:`read_labels` ``need="any"``)."""
    path = Path(path)
    key = (str(policy), int(episode_index))
    with locked(path):
        labels = read_labels(path, need="any")
        old = labels.get(key) or Label(None)
        if note is None:
            note = old.note
        note = check_note(note.strip())
        success = old.success if success == KEEP else (None if success is None else bool(success))
        good = old.good if good == KEEP else (None if good is None else bool(good))
        if success is None and good is None:
            labels.pop(key, None)
        else:
            labels[key] = Label(success, note, good)
        write_labels(path, labels)
    return labels


def episode_judgements(path: str | Path) -> dict[int, bool]:
    """Episode → good (worth copying) of a file about ONE dataset's demonstrations (``train.py labels=FILE``):
    the ``good`` label where given, else the success label (a failure is never good; a success without a
    judgement is taken as good)."""
    labels = read_labels(path, need="any")
    policies = sorted({p for p, _ in labels})
    if len(policies) > 1:
        raise LabelsError(f"labels file {path} labels the episodes of several policies ({policies}); give a file "
                          "for this dataset's episodes only")
    return {e: (lab.good if lab.good is not None else bool(lab.success)) for (_, e), lab in labels.items()}
