"""A randomised, balanced run order for real-robot A/B trials, and the check that recordings followed it.

    rows = make_plan(["weighted", "plain"], trials=20, seed=7)   # write_plan(path, rows) → plan.csv
    check_counts(read_plan(path), {"weighted": 12, "plain": 11}, path)   # PlanError when they did not

The order is in permuted blocks: block ``b`` holds trial ``b`` of every policy, in an order drawn at random from
the seed. So every policy gets the same number of trials, each policy's ``trial``-th trial is its
``trial``-th recorded episode, and any slow drift of the robot or the scene (battery, lighting, wear) falls on
the policies alike instead of on whichever ran last; trials of one block run under the nearest conditions, which
is what pairs them (``pairs=matched match_by=episode_index``) when the operator also resets the scene alike
within a block. A plan file is a CSV with the columns :data:`COLUMNS`; the same policies, trials and seed give
the same file.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import numpy as np

from configs import ConfigError
from configs.outputs import atomic_write

COLUMNS = ("run", "block", "policy", "trial", "plan_seed")


class PlanError(ConfigError):
    """A run plan cannot be made or read, or the recordings did not follow it; the message says which."""


def make_plan(policies: list[str], trials: int, seed: int) -> list[dict]:
    """The run order: ``trials`` blocks, each one trial of every policy in a random order (``seed``)."""
    names = [str(p) for p in policies]
    if len(names) < 2:
        raise PlanError(f"policies={names}: an A/B plan needs at least two policies, e.g. policies=[A,B]")
    twice = sorted({p for p in names if names.count(p) > 1})
    if twice:
        raise PlanError(f"policies={names} names {twice} more than once; name each policy once")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise PlanError(f"trials={trials!r} must be a positive integer: the trials of each policy")
    rng = np.random.default_rng(int(seed))
    rows = []
    for block in range(trials):
        for name in (names[i] for i in rng.permutation(len(names))):
            rows.append({"run": len(rows), "block": block, "policy": name, "trial": block, "plan_seed": int(seed)})
    return rows


def plan_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_plan(path: str | Path, rows: list[dict], overwrite: bool = False) -> Path:
    """Write the plan to ``path``. An existing file is replaced only when it is a plan and ``overwrite`` (a
    plan being followed must not change under the operator); anything else there is left alone."""
    path = Path(path)
    text = plan_text(rows)
    if path.exists():
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return path  # the same plan again
        try:
            read_plan(path)
            is_plan = True
        except PlanError:
            is_plan = False
        if not is_plan:
            raise PlanError(f"out={path} exists and is not a run plan; choose another out=FILE")
        if not overwrite:
            raise PlanError(f"out={path} holds another run plan; recordings may be following it. Choose another "
                            "out=FILE, or overwrite=true to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, text)


def read_plan(path: str | Path) -> list[dict]:
    """The rows of a plan file, checked: the columns :data:`COLUMNS`, runs 0..n−1 in order, every policy with
    trials 0..k−1 in order."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"plan={path} does not exist; write one with python -m policies.plan policies=[A,B] "
                        f"trials=N seed=S out={path}")
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise PlanError(f"plan={path} has columns {reader.fieldnames}, not {list(COLUMNS)}; give a file written "
                        "by python -m policies.plan")
    rows, seen = [], Counter()
    for i, raw in enumerate(reader):
        try:
            row = {"run": int(raw["run"]), "block": int(raw["block"]), "policy": str(raw["policy"]),
                   "trial": int(raw["trial"]), "plan_seed": int(raw["plan_seed"])}
        except (TypeError, ValueError):
            raise PlanError(f"plan={path}, line {i + 2}: {dict(raw)} is not a plan row") from None
        if row["run"] != i or row["trial"] != seen[row["policy"]]:
            raise PlanError(f"plan={path}, line {i + 2}: run {row['run']}, trial {row['trial']} of "
                            f"{row['policy']!r} is out of order; the file was edited, write it again")
        seen[row["policy"]] += 1
        rows.append(row)
    if not rows:
        raise PlanError(f"plan={path} lists no runs")
    return rows


def plan_policies(rows: list[dict]) -> dict[str, int]:
    """Trials per policy, in the order the policies first appear."""
    return dict(Counter(r["policy"] for r in rows))


def check_counts(rows: list[dict], counts: dict[str, int], where: str | Path) -> None:
    """Refuse recordings that did not follow the plan: a policy the plan does not have (or lacks), more trials
    than it plans, or counts that no point of its run order gives (runs skipped or taken out of order)."""
    planned = plan_policies(rows)
    extra = sorted(set(counts) - set(planned))
    missing = sorted(set(planned) - set(counts))
    if extra or missing:
        raise PlanError(f"the recordings' policies {sorted(counts)} are not plan={where}'s {list(planned)}"
                        + (f" (not planned: {extra})" if extra else "")
                        + (f" (no recording: {missing})" if missing else "")
                        + "; name the recordings as the plan does (names=[...])")
    for p, n in counts.items():
        if n > planned[p]:
            raise PlanError(f"recording of {p!r} holds {n} trials; plan={where} plans {planned[p]}")
    done = Counter()
    prefixes = [dict(done)]
    for r in rows:
        done[r["policy"]] += 1
        prefixes.append(dict(done))
    want = {p: counts.get(p, 0) for p in planned}
    if not any(all(pre.get(p, 0) == want[p] for p in planned) for pre in prefixes):
        runs = sum(want.values())
        expect = prefixes[min(runs, len(rows))]
        shown = ", ".join(f"{p} {want[p]}" for p in planned)
        told = ", ".join(f"{p} {expect.get(p, 0)}" for p in planned)
        raise PlanError(f"the recordings hold {shown} trials, which plan={where}'s run order never gives (after "
                        f"{runs} runs it has {told}); record in the plan's order, one run after another")
