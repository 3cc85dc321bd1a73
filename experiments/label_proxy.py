"""Where a person's labels put the weight, without training: the share of the weight on good demonstrations.

    python -m experiments.label_proxy --corpora outputs/rabc_grid --out outputs/label_proxy
    python -m experiments.label_proxy --corpora outputs/rabc_grid --out outputs/label_proxy --validate
    python -m experiments.label_proxy --corpora outputs/rabc_grid --out outputs/label_proxy --find 10,15
    python -m experiments.label_proxy --corpora outputs/rabc_grid --out outputs/label_proxy --separation

For every task, simulator of the reward's errors and profile, the corpus (``CORPORA/TASK/corpus``, written by
``python -m benchmarks.rabc_experiment``) is annotated with that SIMULATED reward (into ``OUT``; 3 s each) and
the rule the experiment calls ``recommended`` is fitted on it. A SIMULATED person (the experiment's: good =
expert or noisy) then labels K episodes in each acquisition order, and training's weights are computed exactly
as training computes them (the rule's per-sample weights, replaced by :func:`calibrate`'s per episode, the bad
ones 0). Per cell it reports the **good share** (the fraction of the total sample weight on good episodes;
plain BC: the corpus's 50 %), the **effective sample size** (a fraction of the samples), the **effective number
of good episodes** ((Σ W)² / Σ W² over the good episodes' total weights W) and **good episodes**, the product
of the good share and that number (plain BC 12.5, good-only 25). ``--validate`` recomputes the weights of the
grid's finished runs and ranks their pooled success by each measure (docs/experiments.md: on 36 runs, Spearman
0.64 for the good share alone, 0.85 for good episodes; the weight on a handful of good episodes fails however
pure). It is a screen, not a result: docs/experiments.md says which decisions read it.

``random`` (not a product order: labels drawn at random, 20 draws, the mean) shows what representative labels
give. Writes ``OUT/label_proxy.json`` and ``OUT/label_proxy.md``. ``--find N,…`` instead counts, per cell and
order, the labels the person gives before N of them are good (``OUT/labels_to_find.json``/``.md``): the cost of
training on labelled good episodes alone. ``--separation`` instead reports how well each episode feature tells
good from bad episodes and, among the successes, good ones from detours (``OUT/separation.json``/``.md``).
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


def cell(corpus: Path, out: Path, simulator: str, profile: str, rule: list[str] | None = None) -> dict:
    """The rule's per-sample weights, the episodes' truth and the manifest of one annotated cell; ``rule``: the
    weighting's train overrides (default: the experiment's ``recommended``, today's default rule)."""
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
    cfg = train_config([f"data.shards={shards}", *policy_overrides(args),
                        *(recommended_overrides() if rule is None else rule), f"out={out / 'unused'}"])
    _, table, w = fitted_weights(cfg)
    manifest = json.loads((shards / "manifest.json").read_text())
    quality = quality_by_episode(read_quality_labels(corpus))
    return {"key": key, "episode": np.asarray(table.episode), "rule": np.asarray(w, dtype=np.float64),
            "episodes": manifest["episodes"], "good": {e: q in ("expert", "noisy") for e, q in quality.items()},
            "quality": quality,
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
    return {**shares(c, w), "labelled_good": int(sum(labels.values()))}


def shares(c: dict, w: np.ndarray) -> dict:
    """Of per-sample weights ``w``: the good share, the effective sample size (a fraction of the samples), the
    effective number of good episodes ((Σ W)² / Σ W² over the good episodes' totals W) and ``good_episodes``,
    their product with the good share: the screen's best single predictor of success (docs/experiments.md)."""
    good = np.array([c["good"][int(e)] for e in c["episode"]])
    total = w.sum()
    ids = np.unique(c["episode"])
    per = np.array([w[c["episode"] == e].sum() for e in ids])
    g = np.array([c["good"][int(e)] for e in ids])
    eff_good = float(per[g].sum() ** 2 / (per[g] ** 2).sum()) if per[g].sum() > 0 else 0.0
    share = float(w[good].sum() / total) if total > 0 else float("nan")
    return {"good_share": share, "ess": float(total ** 2 / (w ** 2).sum() / w.size) if total > 0 else 0.0,
            "effective_good": eff_good, "good_episodes": share * eff_good}


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
    return {**shares(c, w), "labelled_good": 0, "feature": "+".join(fit.features) or "none"}


def separation(c: dict) -> dict[str, dict[str, float | None]]:
    """How well each episode feature of the annotation (the calibration's, the rule's weight among them) tells
    apart, as AUROC (0.5 = chance; below 0.5 the feature ranks the other way): good from bad episodes, successes
    from failures, and, among the successes, good episodes from detours. Truth from the corpus, for analysis."""
    from pipeline.report.metrics import auroc
    from policies.weighting.calibrated import FEATURES, episode_features

    index, x, _ = episode_features(c["episodes"], c["heavy"])
    quality = np.array([c["quality"][int(e)] for e in index])
    good = np.array([c["good"][int(e)] for e in index])
    success = quality != "failure"
    return {f: {"good_vs_bad": auroc(x[:, j], good), "success_vs_failure": auroc(x[:, j], success),
                "good_vs_detour": auroc(x[success, j], good[success])} for j, f in enumerate(FEATURES)}


def rose_shares(c: dict) -> dict[str, float]:
    """Per demonstration quality, the share of its episodes that ``time_scale="rise"`` counts as having risen
    (their time to the top is read; the rest count as never reaching it, as a stall does): where direct successes
    fail to rise under a reward's errors and detours do, the time term ranks detours above them."""
    from data.metaworld.behaviours import QUALITIES
    from policies.weighting.advantage import risen
    from policies.weighting.calibrated import FEATURES, episode_features

    index, x, tasks = episode_features(c["episodes"], c["heavy"])
    rose = risen(x[:, FEATURES.index("rise")], tasks)
    quality = np.array([c["quality"][int(e)] for e in index])
    return {q: float(rose[quality == q].mean()) for q in QUALITIES if (quality == q).any()}


def rose_markdown(results: dict) -> str:
    from data.metaworld.behaviours import QUALITIES

    lines = ["Share of each quality's episodes that `time_scale=rise` counts as having risen (raw rise at least half "
             "the task's median; the others' time term reads as never reaching the top). SIMULATED reward errors; "
             "truth from the corpus.", "", "| cell | " + " | ".join(QUALITIES) + " |", "|---" * (len(QUALITIES) + 1)
             + "|"]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * r[q]:.0f}%" if q in r else "–" for q in QUALITIES) + " |")
    return "\n".join(lines) + "\n"


def separation_markdown(results: dict) -> str:
    feats = list(next(iter(results.values())))

    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}"

    lines = ["AUROC of each episode feature (0.5 = chance; below 0.5 it ranks the other way): good vs bad / success "
             "vs failure / good vs detour among the successes. SIMULATED reward errors; truth from the corpus.", "",
             "| cell | " + " | ".join(feats) + " |", "|---" * (len(feats) + 1) + "|"]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(
            " / ".join(fmt(r[f][k]) for k in ("good_vs_bad", "success_vs_failure", "good_vs_detour")) for f in feats)
            + " |")
    return "\n".join(lines) + "\n"


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
                rows[f"K = {k}, random"] = {m: float(np.mean([d[m] for d in draws]))
                                            for m in ("good_share", "ess", "effective_good", "good_episodes")}
            else:
                labels = simulated_person(order, k, c["heavy"], c["episodes"], c["good"])
                rows[f"K = {k}, {order}"] = measures(c, labels)
                if order in ("heaviest", "spread"):
                    rows[f"K = {k}, {order}, calibrate=false"] = measures(c, labels, calibrated=False)
    return rows


def labels_to_find(c: dict, ns: list[int], orders=("heaviest", "spread", "random")) -> dict[str, dict[int, float]]:
    """Per order, for each N of ``ns``: how many labels the SIMULATED person gives before N of them are good (the
    whole corpus where it has fewer good ones: NaN); ``random``: the mean over RANDOM_DRAWS draws."""
    from experiments.rabc import simulated_person

    def needed(sequence: list[int]) -> dict[int, float]:
        found = np.cumsum([c["good"][e] for e in sequence])
        return {n: float(np.argmax(found >= n) + 1) if found[-1] >= n else float("nan") for n in ns}

    everything = len(c["heavy"])
    rows = {}
    rng = np.random.default_rng(0)
    for order in orders:
        if order == "random":
            draws = [needed([int(e) for e in rng.permutation(sorted(c["heavy"]))]) for _ in range(RANDOM_DRAWS)]
            rows[order] = {n: float(np.mean([d[n] for d in draws])) for n in ns}
        else:
            rows[order] = needed(list(simulated_person(order, everything, c["heavy"], c["episodes"], c["good"])))
    return rows


# the grid's variants whose weights the screen recomputes: (variant, labels K, through the calibration)
CHECKED = (("recommended", 0, False), ("episode_quality_time_dataset", 0, False),
           ("labels2_k10_heaviest", 10, True), ("labels_zero_k10", 10, False), ("labels_zero_k20", 20, False))


def validate(corpora: Path, out: Path, tasks: list[str], cells: list[tuple[str, str]]) -> dict:
    """How well each screen measure ranks the policies' pooled success: per task, the references (plain BC 0.5
    and 25 good episodes alike; expert-only 1.0 and 20; good-only 1.0 and 25) and every checked variant that ran
    in ``corpora``'s results, its weights recomputed here; Spearman's rho of success on each measure."""
    from scipy.stats import spearmanr

    from experiments.rabc import reward_key, simulated_person

    points = []
    for task in tasks:
        ref = json.loads((corpora / task / "results.json").read_text())["variants"]
        for name, share, eff in (("none", 0.5, 25.0), ("expert_only", 1.0, 20.0), ("good_only", 1.0, 25.0)):
            if ref.get(name, {}).get("runs"):
                points.append({"task": task, "reward": "-", "variant": name, "good_share": share,
                               "effective_good": eff, "good_episodes": share * eff,
                               "success": _success(ref[name]["runs"])})
        for sim, profile in cells:
            path = corpora / task / f"reward_{reward_key(profile, sim)}" / "results.json"
            if not path.is_file():
                continue
            res = json.loads(path.read_text())["variants"]
            for name, k, calibrated in CHECKED:
                if not res.get(name, {}).get("runs"):
                    continue
                # the rule as the runs trained with it (their recorded overrides, less the labels)
                rule = [o for o in res[name]["overrides"] if not o.startswith(("labels=", "calibrate="))]
                c = cell(corpora / task / "corpus", out / task, sim, profile, rule)
                labels = simulated_person("heaviest", k, c["heavy"], c["episodes"], c["good"]) if k else {}
                m = {k: v for k, v in measures(c, labels, calibrated).items() if k != "labelled_good"}
                points.append({"task": task, "reward": c["key"], "variant": name, **m,
                               "success": _success(res[name]["runs"])})
    success = [p["success"] for p in points]
    rho = {m: float(spearmanr([p[m] for p in points], success)[0])
           for m in ("good_share", "effective_good", "good_episodes")}
    return {"points": points, "spearman": rho}


def _success(runs: list[dict]) -> float:
    return sum(r["eval"]["successes"] for r in runs) / sum(r["eval"]["episodes"] for r in runs)


def markdown(results: dict) -> str:
    cells = list(results)
    names = list(next(iter(results.values())))
    lines = ["Good share (fraction of the sample weight on expert and noisy episodes; plain BC 0.50), effective "
             "sample size, and good episodes (good share × the effective number of good episodes; plain BC 12.5, "
             "good-only 25), SIMULATED reward errors, SIMULATED person.", "",
             "| weights | " + " | ".join(cells) + " | mean |", "|---" * (len(cells) + 2) + "|"]
    for n in names:
        vals = [results[c][n] for c in cells]
        lines.append(f"| {n} | " + " | ".join(f"{v['good_share']:.2f} ({v['ess']:.2f}; {v['good_episodes']:.1f})"
                                              for v in vals)
                     + f" | {np.mean([v['good_share'] for v in vals]):.2f} ({np.mean([v['ess'] for v in vals]):.2f}; "
                     f"{np.mean([v['good_episodes'] for v in vals]):.1f}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", default="outputs/rabc_grid", help="the experiment's --out (its TASK/corpus)")
    ap.add_argument("--out", default="outputs/label_proxy")
    ap.add_argument("--tasks", default="push-v3,pick-place-v3")
    ap.add_argument("--simulators", default="additive,rank")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--k", default="5,10", help="label budgets")
    ap.add_argument("--set", dest="rule_set", action="append", default=[], metavar="KEY=VALUE",
                    help="a further override of the rule the labels act on (e.g. weighting.time_scale=dataset)")
    ap.add_argument("--find", metavar="N,…", help="instead: the labels it takes to find N good episodes")
    ap.add_argument("--separation", action="store_true",
                    help="instead: how well each episode feature tells good from bad, and good from detours")
    ap.add_argument("--validate", action="store_true",
                    help="instead: how well each measure ranks the pooled success of the grid's finished runs")
    args = ap.parse_args(argv)
    import logging
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lerobot").setLevel(logging.ERROR)
    ks = [int(k) for k in args.k.split(",")]
    out = Path(args.out)
    if args.validate:
        cells = [(sim, p) for sim in args.simulators.split(",") for p in args.profiles.split(",")
                 if not (sim == "rank" and p == "oracle")]  # the oracle annotation is the same on both
        v = validate(Path(args.corpora), out, args.tasks.split(","), cells)
        out.mkdir(parents=True, exist_ok=True)
        (out / "validate.json").write_text(json.dumps(v, indent=1))
        for p in v["points"]:
            print(f"{p['task']} {p['reward']} {p['variant']}: good share {p['good_share']:.2f}, effective good "
                  f"{p['effective_good']:.1f}, good episodes {p['good_episodes']:.1f}, success {p['success']:.2f}")
        print(f"{len(v['points'])} runs' pooled success; Spearman rho: "
              + ", ".join(f"{m} {r:.2f}" for m, r in v["spearman"].items()))
        return 0
    if args.separation:
        sep, rose = {}, {}
        for task in args.tasks.split(","):
            for sim in args.simulators.split(","):
                for profile in args.profiles.split(","):
                    if sim == "rank" and profile == "oracle":
                        continue  # the oracle annotation is the same on both simulators
                    c = cell(Path(args.corpora) / task / "corpus", out / task, sim, profile)
                    sep[f"{task} {c['key']}"] = separation(c)
                    rose[f"{task} {c['key']}"] = rose_shares(c)
        out.mkdir(parents=True, exist_ok=True)
        (out / "separation.json").write_text(json.dumps(sep, indent=1))
        (out / "separation.md").write_text(separation_markdown(sep))
        (out / "rose.json").write_text(json.dumps(rose, indent=1))
        (out / "rose.md").write_text(rose_markdown(rose))
        print(separation_markdown(sep))
        print(rose_markdown(rose))
        return 0
    if args.find:
        ns = [int(n) for n in args.find.split(",")]
        found = {}
        for task in args.tasks.split(","):
            for sim in args.simulators.split(","):
                for profile in args.profiles.split(","):
                    c = cell(Path(args.corpora) / task / "corpus", out / task, sim, profile)
                    found[f"{task} {c['key']}"] = labels_to_find(c, ns)
                    print(f"{task} {c['key']}", found[f"{task} {c['key']}"], flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "labels_to_find.json").write_text(json.dumps(found, indent=1))
        head = ["Labels a SIMULATED person gives, in each order, before N of them are good (SIMULATED reward errors; "
                "the rule: today's recommended)", "", "| cell | " + " | ".join(
                    f"{o}, N = {n}" for o in ("heaviest", "spread", "random") for n in ns) + " |",
                "|---" * (1 + 3 * len(ns)) + "|"]
        rows = [f"| {k} | " + " | ".join(f"{v[o][n]:.0f}" if o != "random" else f"{v[o][n]:.1f}"
                                         for o in ("heaviest", "spread", "random") for n in ns) + " |"
                for k, v in found.items()]
        (out / "labels_to_find.md").write_text("\n".join(head + rows) + "\n")
        print("\n".join(head + rows))
        return 0
    results = {}
    for task in args.tasks.split(","):
        for sim in args.simulators.split(","):
            for profile in args.profiles.split(","):
                rule = None
                if args.rule_set:
                    from experiments.rabc import recommended_overrides

                    rule = [*recommended_overrides(), *args.rule_set]
                c = cell(Path(args.corpora) / task / "corpus", out / task, sim, profile, rule)
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
