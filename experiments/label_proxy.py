"""Where a person's labels put the weight, without training: the share of the weight on good demonstrations.

    python -m experiments.label_proxy --corpora outputs/rabc_grid --out outputs/label_proxy

For every task, simulator of the reward's errors and profile, the corpus (``CORPORA/TASK/corpus``, written by
``python -m benchmarks.rabc_experiment``) is annotated with that SIMULATED reward (into ``OUT``; 3 s each) and
the rule the experiment calls ``recommended`` is fitted on it. A SIMULATED person (the experiment's: good =
expert or noisy) then labels K episodes in each acquisition order, and training's weights are computed exactly
as training computes them (the rule's per-sample weights, replaced by :func:`calibrate`'s per episode, the bad
ones 0). Per cell it reports the **good share** (the fraction of the total sample weight on good episodes;
plain BC: the corpus's 50 %) and the **effective sample size** (a fraction of the samples). Across the policy
runs of the grid the good share ranks pooled success with Spearman 0.83 (push-v3) and 0.69 (pick-place-v3); it
fails where the weight sits on a handful of episodes (effective sample size ~0.1). It is a screen, not a result:
docs/experiments.md says which decisions read it.

``random`` (not a product order: labels drawn at random, 20 draws, the mean) shows what representative labels
give. Writes ``OUT/label_proxy.json`` and ``OUT/label_proxy.md``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

PROFILES = ("oracle", "qwen3vl_32b_like", "qwen3vl_8b_like", "weak")
ORDERS_RUN = ("heaviest", "uncertain", "spread", "random")
RANDOM_DRAWS = 20


def cell(corpus: Path, out: Path, simulator: str, profile: str) -> dict:
    """The rule's per-sample weights, the episodes' truth and the manifest of one annotated cell."""
    from data.quality_labels import quality_by_episode, read_quality_labels
    from experiments.rabc import (
        annotate,
        annotation_window,
        fitted_weights,
        policy_overrides,
        recommended_overrides,
        reward_key,
        reward_overrides,
        train_config,
    )
    from policies.run_weights import heaviest_episodes

    args = SimpleNamespace()
    obs_steps, horizon = annotation_window(train_config(policy_overrides(args)))
    key = reward_key(profile, simulator)
    shards = annotate(corpus, out / f"reward_{key}" / "annotation_all", None, horizon,
                      [*reward_overrides(key, "next.reward"), f"window.obs_steps={obs_steps}"])
    cfg = train_config([f"data.shards={shards}", *policy_overrides(args), *recommended_overrides(),
                        f"out={out / 'unused'}"])
    _, table, w = fitted_weights(cfg)
    manifest = json.loads((shards / "manifest.json").read_text())
    quality = quality_by_episode(read_quality_labels(corpus))
    return {"key": key, "episode": np.asarray(table.episode), "rule": np.asarray(w, dtype=np.float64),
            "episodes": manifest["episodes"], "good": {e: q in ("expert", "noisy") for e, q in quality.items()},
            "heavy": dict(heaviest_episodes(table.episode, w))}


def measures(c: dict, labels: dict[int, bool], calibrated: bool = True) -> dict:
    """Good share and effective sample size of training's weights with ``labels`` (calibrated unless
    ``calibrated`` is false, as ``calibrate=false``; the bad left out)."""
    from policies.weighting.calibrated import calibrate

    w = c["rule"].copy()
    if labels and calibrated:
        cal = calibrate(c["episodes"], labels, c["heavy"])
        for e, v in cal.weights.items():
            w[c["episode"] == e] = v
    for e, ok in labels.items():
        if not ok:
            w[c["episode"] == e] = 0.0
    good = np.array([c["good"][int(e)] for e in c["episode"]])
    total = w.sum()
    return {"good_share": float(w[good].sum() / total) if total > 0 else float("nan"),
            "ess": float(total ** 2 / (w ** 2).sum() / w.size) if total > 0 else 0.0,
            "labelled_good": int(sum(labels.values()))}


def features_best(c: dict) -> dict:
    """What the annotation's features can say at best: the calibration's model (one feature, the rule's weight
    among them, chosen by leave-one-out) fitted on *every* episode's truth, its P(good) weighing every episode
    (in-sample, so optimistic): a bound on what a fit on K labels gives the unlabelled episodes."""
    from policies.weighting.calibrated import episode_features, fit_task

    index, x, _ = episode_features(c["episodes"], c["heavy"])
    y = np.array([float(c["good"][int(e)]) for e in index])
    fit = fit_task("all", x, y)
    p = dict(zip(index.tolist(), fit.predict(x).tolist(), strict=True))
    w = np.array([p[int(e)] for e in c["episode"]])
    good = np.array([c["good"][int(e)] for e in c["episode"]])
    return {"good_share": float(w[good].sum() / w.sum()), "ess": float(w.sum() ** 2 / (w ** 2).sum() / w.size),
            "labelled_good": 0, "feature": "+".join(fit.features) or "none"}


def run_cell(c: dict, ks: list[int]) -> dict:
    from experiments.rabc import simulated_person

    rows = {"rule (K = 0)": measures(c, {}), "features' best": features_best(c)}
    rng = np.random.default_rng(0)
    for k in ks:
        for order in ORDERS_RUN:
            if order == "random":
                draws = [measures(c, {int(e): c["good"][int(e)] for e in
                                      rng.choice(sorted(c["heavy"]), size=k, replace=False)})
                         for _ in range(RANDOM_DRAWS)]
                rows[f"K = {k}, random"] = {m: float(np.mean([d[m] for d in draws])) for m in ("good_share", "ess")}
            else:
                labels = simulated_person(order, k, c["heavy"], c["episodes"], c["good"])
                rows[f"K = {k}, {order}"] = measures(c, labels)
                if order in ("heaviest", "spread"):
                    rows[f"K = {k}, {order}, calibrate=false"] = measures(c, labels, calibrated=False)
    return rows


def markdown(results: dict) -> str:
    cells = list(results)
    names = list(next(iter(results.values())))
    lines = ["Good share (fraction of the sample weight on expert and noisy episodes; plain BC 0.50) and effective "
             "sample size, SIMULATED reward errors, SIMULATED person.", "",
             "| weights | " + " | ".join(cells) + " | mean |", "|---" * (len(cells) + 2) + "|"]
    for n in names:
        vals = [results[c][n] for c in cells]
        lines.append(f"| {n} | " + " | ".join(f"{v['good_share']:.2f} ({v['ess']:.2f})" for v in vals)
                     + f" | {np.mean([v['good_share'] for v in vals]):.2f} ({np.mean([v['ess'] for v in vals]):.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", default="outputs/rabc_grid", help="the experiment's --out (its TASK/corpus)")
    ap.add_argument("--out", default="outputs/label_proxy")
    ap.add_argument("--tasks", default="push-v3,pick-place-v3")
    ap.add_argument("--simulators", default="additive,rank")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--k", default="5,10", help="label budgets")
    args = ap.parse_args(argv)
    import logging
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lerobot").setLevel(logging.ERROR)
    ks = [int(k) for k in args.k.split(",")]
    out = Path(args.out)
    results = {}
    for task in args.tasks.split(","):
        for sim in args.simulators.split(","):
            for profile in args.profiles.split(","):
                c = cell(Path(args.corpora) / task / "corpus", out / task, sim, profile)
                name = f"{task} {c['key']}"
                results[name] = run_cell(c, ks)
                print(name, {k: round(v["good_share"], 2) for k, v in results[name].items()}, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_proxy.json").write_text(json.dumps(results, indent=1))
    (out / "label_proxy.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
