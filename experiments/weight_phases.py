"""Where in an episode a weighting rule puts its weight: mean weight by frames from the first success.

    python -m benchmarks.weight_phases outputs/rabc_experiment/pick-place-v3 [--variant recommended] [--quality expert]
    python -m benchmarks.weight_phases outputs/rabc_grid/pick-place-v3/reward_qwen3vl_32b_like \
        --variant episode_quality_sharp --heaviest 10

Reads a task folder of ``benchmarks.rabc_experiment`` (its corpus labels, its annotation, its results' setup),
fits the variant's weights exactly as training fits them (``experiments.rabc.sample_weights``) and prints, for
the episodes of one quality label, the mean and median weight and the mean chunk progress gain in bins of
frames relative to the episode's first success (label read for this report only). A rule that starves a phase
of the task (e.g. the approach before a grasp, where the progress barely moves) shows it here. With
``--heaviest N``: the N episodes the variant weighs most, their labels, z_e and the time fraction its time
term read (an episode-level rule that leans on a failure shows it here).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

BINS = ((-60, -45), (-45, -30), (-30, -20), (-20, -10), (-10, 0), (0, 20), (20, 150))


def _fitted(task_dir: Path, variant: str):
    """(module, fit table, weights, corpus labels by episode) of ``variant`` on the experiment's task folder."""
    from data.quality_labels import read_quality_labels
    from experiments import rabc as exp

    results = json.loads((task_dir / "results.json").read_text())
    setup = results["setup"]
    args = argparse.Namespace(**{k: setup[k] for k in ("dim_model", "encoder_layers", "chunk", "action_steps",
                                                        "lr", "batch", "steps")})
    which = exp.variant_spec(variant)[1]
    shards = task_dir / ("annotation_all" if which == "all" else "annotation_expert")
    cfg = exp.train_config([f"data.shards={shards}", *exp.policy_overrides(args),
                            *exp.recorded_overrides(variant, task_dir),
                            f"out={task_dir / 'tmp'}"])
    module, table, w = exp.fitted_weights(cfg)
    corpus = task_dir / "corpus" if (task_dir / "corpus").is_dir() else task_dir.parent / "corpus"  # reward_X/
    labels = {int(e["episode_index"]): e for e in read_quality_labels(corpus)["episodes"]}
    return module, table, w, labels


def heaviest_table(task_dir: str | Path, variant: str, top: int = 10) -> str:
    """The ``top`` episodes ``variant`` weighs most, with their labels (read for this report only) and, for the
    episode-level estimators, z_e and the time fraction T*_e / length its time term read."""
    from policies.run_weights import heaviest_episodes
    from policies.weighting.advantage import AdvantageStats

    task_dir = Path(task_dir)
    module, table, w, labels = _fitted(task_dir, variant)
    stats = module.weighting_stats
    adv = isinstance(stats, AdvantageStats)
    lengths = {int(e): int((np.asarray(table.episode) == e).sum()) for e in np.unique(table.episode)}
    lines = [f"{task_dir.parent.name}/{task_dir.name}, `{variant}`: the {top} episodes with the most weight", "",
             "| rank | episode | label | share of Σw |" + (" z_e | T*/length |" if adv else ""),
             "|---|---|---|---|" + ("---|---|" if adv else "")]
    total = float(w.sum())
    for rank, (e, s) in enumerate(heaviest_episodes(table.episode, w, top), 1):
        lab = labels[e]
        name = lab["quality"] + (f" ({lab['kind']})" if lab.get("kind") else "")
        row = f"| {rank} | {e} | {name} | {100 * s / total:.1f}% |"
        if adv:
            row += f" {stats.quality[e]:+.2f} | {stats.time_frame[e] / lengths[e]:.2f} |"
        lines.append(row)
    return "\n".join(lines)


def phase_table(task_dir: str | Path, variant: str, quality: str = "expert") -> str:
    task_dir = Path(task_dir)
    _, table, w, labels = _fitted(task_dir, variant)
    mine = np.array([labels[int(e)]["quality"] == quality for e in table.episode])
    first = np.array([labels[int(e)].get("first_success") for e in table.episode], dtype=object)
    ok = mine & np.array([f is not None for f in first])
    rel = np.where(ok, table.frame - np.array([f if f is not None else 0 for f in first]), 10**6)
    lines = [f"{task_dir.name}, `{variant}`, {quality} episodes that succeed: mean weight {w[ok].mean():.2f} "
             f"(all samples {w.mean():.2f})", "",
             "| frames from first success | samples | mean w | median w | mean chunk gain |", "|---|---|---|---|---|"]
    for lo, hi in BINS:
        m = ok & (rel >= lo) & (rel < hi)
        if m.any():
            lines.append(f"| {lo} to {hi} | {int(m.sum())} | {w[m].mean():.2f} | {np.median(w[m]):.2f} | "
                         f"{table.gain[m].mean():.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from experiments.rabc import VARIANTS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task_dir", help="OUT/TASK of benchmarks.rabc_experiment")
    ap.add_argument("--variant", default="recommended", help=f"one of {list(VARIANTS)}")
    ap.add_argument("--quality", default="expert", help="which episodes (a quality label of the corpus)")
    ap.add_argument("--heaviest", type=int, default=0, metavar="N",
                    help="instead: the N episodes the variant weighs most, with their labels, z_e and time to the top")
    args = ap.parse_args(argv)
    if args.variant not in VARIANTS:
        print(f"error: --variant={args.variant!r}: choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if not (Path(args.task_dir) / "results.json").is_file():
        print(f"error: {args.task_dir} has no results.json; give an OUT/TASK folder of benchmarks.rabc_experiment",
              file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    if args.heaviest > 0:
        print(heaviest_table(args.task_dir, args.variant, args.heaviest))
    else:
        print(phase_table(args.task_dir, args.variant, args.quality))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
