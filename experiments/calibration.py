"""Calibration of the simulated reward-error profiles against their published targets (docs/reward_errors.md).

    python -m experiments.calibration [--task push-v3] [--episodes 60] [--profiles a,b] [--simulator rank]
                                      [--corpus-overlay rabc_corpus] [--json]

Generates (or reuses) a state-only MetaWorld corpus under ``outputs/calibration/`` (data.metaworld.corpus with
``configs/experiment/calibration_corpus.yaml``, or ``--corpus-overlay rabc_corpus``: the corpus
``python -m benchmarks.rabc_experiment`` trains on; successes and failures), then for every profile of
``reward=vlm_errors`` with simulator ``--simulator`` (``additive``, the default, or ``rank``: the second
simulator, :mod:`pipeline.rewards.vlm_errors_rank`, calibrated to the same targets): annotates it through :func:`pipeline.annotate.annotate`, scores every episode's static
control (``model.score_static``), runs :func:`pipeline.report.write_report` with the corpus's ``next.success``
as labels, and prints target vs measured with pass/fail per target:

- real VOC: mean VOC vs time (the report's, per frame) over the successful episodes;
- static VOC: mean VOC vs time of the static controls over all episodes (a flat curve has no order: 0);
- success AUROC: the report's (mean raw score of the last 3 prefixes vs ``next.success``);
- static gap: mean over successful episodes of the real minus the static success score (nats).

A target ``ground_truth`` is the same figure computed from the ground-truth column itself (its VOC vs time,
its last-3-prefix AUROC on the profile's schedule). The targets and tolerances are in the profile files, fixed
before their parameters were fitted; the parameters were fitted to these targets only. The scores are a
simulated stand-in, not a VLM.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

METRICS = ("real_voc", "static_voc", "auroc", "static_gap")
LABEL_COLUMN = "next.success"
DEFAULT_OVERLAY = "calibration_corpus"


def corpus(task: str, episodes: int, out: Path, overlay: str = DEFAULT_OVERLAY) -> Path:
    from configs import load_config
    from data.metaworld.corpus import generate

    name = f"{task}-{episodes}x150" + ("" if overlay == DEFAULT_OVERLAY else f"-{overlay}")
    cfg = load_config("corpus", [f"experiment={overlay}", f"task={task}", f"episodes={episodes}",
                                 f"out={out / 'corpus' / name}"])
    return generate(cfg, progress=False)


def episode_inputs(root: Path, model) -> list[tuple]:
    """(EpisodeInput, success label, ground truth per frame) of every episode, read as annotate reads them."""
    from data.source import open_dataset
    from pipeline.rewards.registry import EpisodeInput

    src = open_dataset(root=root)
    available = src.numeric_columns()
    sim = model.simulator
    cols = [c for c in dict.fromkeys([sim.column, sim.displacement_column, LABEL_COLUMN]) if c in available]
    out = []
    for ep in src.episodes():
        c = src.read_columns(ep, cols)
        inp = EpisodeInput(fps=src.fps, instruction=ep.task, num_frames=ep.length, episode_index=ep.index,
                           columns={k: v for k, v in c.items() if k != LABEL_COLUMN})
        out.append((inp, int((np.asarray(c[LABEL_COLUMN]) > 0.5).any()), sim.ground_truth(inp)))
    return out


def nan0(x: float) -> float:
    """An undefined VOC (a constant curve) counts as no order."""
    return 0.0 if x is None or not np.isfinite(x) else float(x)


def ground_truth_figures(episodes: list[tuple], model) -> dict:
    """The figures the ground-truth column itself gives: VOC vs time on successes, success AUROC."""
    from pipeline.progress import success_score, voc
    from pipeline.report.metrics import success_detection

    vocs, scores, labels = [], [], []
    for inp, label, gt in episodes:
        ends = model.simulator.simulate(inp).prefix_ends
        scores.append(success_score(gt[ends - 1]))
        labels.append(label)
        if label:
            vocs.append(nan0(voc(gt)))
    return {"real_voc": float(np.mean(vocs)),
            "auroc": success_detection(np.array(scores), np.array(labels)).get("auroc")}


def check(target: dict, measured: float | None, truth: dict, metric: str) -> dict:
    """Target interval of one metric and whether ``measured`` lies in it (None: not a target)."""
    value = target.get("value")
    if value is None:
        return {"target": None, "low": None, "high": None, "pass": None}
    if value == "ground_truth":
        value = truth[metric]
        low, high = value - target["tolerance"], value + target["tolerance"]
    else:
        low, high = target["low"], target["high"]
    ok = measured is not None and low <= measured <= high
    return {"target": value, "low": low, "high": high, "pass": bool(ok)}


def calibrate(profile: str, root: Path, out: Path, simulator: str = "additive") -> dict:
    """Annotate ``root`` with one profile of ``simulator``, score the static controls, report; figures and
    pass/fail."""
    from configs import DEFAULT_SIMULATOR, load_config, simulator_profile
    from pipeline.annotate import annotate
    from pipeline.progress import voc
    from pipeline.report import write_report
    from pipeline.rewards.registry import build_reward

    ann = out / (f"annotation_{profile}" if simulator == DEFAULT_SIMULATOR else f"annotation_{simulator}_{profile}")
    cfg = load_config("annotate", [f"dataset.root={root}", "reward=vlm_errors", f"reward.profile={profile}",
                                   f"reward.simulator={simulator}", "dataset.cameras=[]", "plots=false", "progress_bar=false", f"out={ann}",
                                   "overwrite=true"])  # a resumed run would keep scores of an edited profile
    result = annotate(cfg)
    if not result.ok:
        raise RuntimeError(f"annotation with profile {profile} failed: {result.failures[0]['reason']}")
    report = write_report(ann, labels=LABEL_COLUMN)
    model = build_reward(cfg.reward)
    episodes = episode_inputs(root, model)
    static = {inp.episode_index: model.score_static(inp) for inp, _, _ in episodes}
    rows = report["per_episode"]
    wins = [r for r in rows if r.get("success_label") == 1]
    measured = {
        "real_voc": float(np.mean([nan0(r["voc"]) for r in wins])),
        "static_voc": float(np.mean([nan0(voc(s.frame_progress())) for s in static.values()])),
        "auroc": report["auroc"],
        "static_gap": float(np.mean([r["success_score"] - static[r["episode_index"]].success_score for r in wins])),
    }
    truth = ground_truth_figures(episodes, model)
    targets = simulator_profile(profile, simulator)["targets"]
    checks = {m: {**check(targets[m], measured[m], truth, m), "measured": measured[m],
                  "source": targets[m].get("source")} for m in METRICS}
    return {"profile": profile, "simulator": simulator, "episodes": len(rows), "successes": len(wins), "checks": checks,
            "ground_truth": truth, "annotation": str(ann)}


def fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def table(results: list[dict]) -> str:
    lines = ["| profile | metric | target | pass interval | measured | pass |", "|---|---|---:|---|---:|---|"]
    for r in results:
        for m in METRICS:
            c = r["checks"][m]
            interval = "not a target" if c["pass"] is None else f"[{c['low']:.3f}, {c['high']:.3f}]"
            verdict = "–" if c["pass"] is None else ("pass" if c["pass"] else "**FAIL**")
            lines.append(f"| {r['profile']} | {m} | {fmt(c['target'])} | {interval} | {fmt(c['measured'])} | "
                         f"{verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from configs import DEFAULT_SIMULATOR, SIMULATOR_PROFILE_DIRS, reward_profiles

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="push-v3")
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--simulator", default=DEFAULT_SIMULATOR, choices=list(SIMULATOR_PROFILE_DIRS),
                    help="which simulator of VLM reward errors (reward.simulator)")
    ap.add_argument("--corpus-overlay", default=DEFAULT_OVERLAY, choices=[DEFAULT_OVERLAY, "rabc_corpus"],
                    help="the corpus's sizes and mix: configs/experiment/<overlay>.yaml (rabc_corpus: the experiment's)")
    ap.add_argument("--profiles", default=None, help="comma-separated profile names (default: all of the simulator's)")
    ap.add_argument("--out", default="outputs/calibration")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = Path(args.out)
    t0 = time.perf_counter()
    profiles = args.profiles.split(",") if args.profiles else reward_profiles(SIMULATOR_PROFILE_DIRS[args.simulator])
    root = corpus(args.task, args.episodes, out, args.corpus_overlay)
    runs = out / (f"{args.task}-{args.episodes}"
                  + ("" if args.corpus_overlay == DEFAULT_OVERLAY else f"-{args.corpus_overlay}"))
    results = [calibrate(p, root, runs, args.simulator) for p in profiles]
    if args.json:
        print(json.dumps({"task": args.task, "corpus": str(root), "simulator": args.simulator, "results": results},
                         indent=1))
    else:
        print(f"corpus {root}: {results[0]['episodes']} episodes, {results[0]['successes']} successful "
              f"({time.perf_counter() - t0:.0f} s); SIMULATED reward errors ({args.simulator} simulator), not a VLM")
        print(table(results))
    failed = [f"{r['profile']}.{m}" for r in results for m in METRICS if r["checks"][m]["pass"] is False]
    if failed:
        print(f"targets missed: {', '.join(failed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
