"""The statistics and the report of an evaluation of recorded rollouts (:mod:`policies.evaluation.recorded`).

Per policy: successes over the labelled episodes with a 95% Wilson interval, counts per label source, the
unlabelled, time to success (from the success column). Per pair of policies: the difference of success rates
with Newcombe's hybrid score interval, and the two-sided p-value of Fisher's exact test
(:mod:`policies.evaluation.stats` says why each); when the test does not separate them, how many trials per
policy would (80% power at the 5% level, for the rates observed). The judge's agreement with a person's
labels where both exist. Written as ``report.json``, ``report.md`` and ``figures/*.png``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from configs import ConfigError
from configs.outputs import atomic_write
from policies.evaluation.judging import SOURCES, UNLABELLED, Judge, agreement
from policies.evaluation.stats import (
    A_BETTER,
    B_BETTER,
    BUDGET_SPENT,
    CONTINUE,
    NO_DIFFERENCE,
    SEQUENTIAL_TEST_NAME,
    discordant_alternative,
    fisher_exact,
    mcnemar_exact,
    mean_difference_interval,
    more_pairs_needed,
    newcombe_interval,
    sequential_path,
    trials_to_separate,
    wilson_interval,
)

TEST_NAME = "Fisher's exact test (two-sided)"
PAIRED_TEST_NAME = "exact McNemar test (two-sided binomial test of the discordant pairs at 1/2)"
# the analyses' settings when episodes.json has none (an evaluation made before they existed)
DEFAULT_ANALYSIS = {"pairs": "unpaired", "match_by": "seed", "partial_credit": "final",
                    "sequential": {"enabled": True, "alpha": 0.05, "beta": 0.2, "min_difference": 0.3,
                                   "max_trials": 100}}
INTERVAL_NAME = "Newcombe hybrid score interval (95%)"
ALPHA = 0.05
POWER = 0.8
ROWS_PER_FIGURE = 12  # episode rows per figure page
CURVE_POINTS = 50  # the mean progress curve's points over normalised time


def _policy_stats(eps: list[dict]) -> dict:
    labelled = [e for e in eps if e["label"] is not None]
    k, n = sum(bool(e["label"]) for e in labelled), len(labelled)
    row = {"successes": k, "episodes": n, "unlabelled": len(eps) - n, "recorded": len(eps),
           "sources": {s: sum(e["source"] == s for e in eps) for s in (*SOURCES, UNLABELLED)}}
    if n:
        lo, hi = wilson_interval(k, n)
        row |= {"success_rate": k / n, "ci_low": lo, "ci_high": hi}
    else:
        row |= {"success_rate": None, "ci_low": None, "ci_high": None}
    row["by_source"] = {s: {"successes": sum(bool(e["label"]) for e in eps if e["source"] == s),
                            "episodes": sum(e["source"] == s for e in eps)} for s in SOURCES}
    times = [e["time_to_success_s"] for e in eps if e.get("time_to_success_s") is not None and e["label"]]
    row["time_to_success_s"] = ({"mean": float(np.mean(times)), "median": float(np.median(times)),
                                 "episodes": len(times)} if times else None)
    return row


def _pair(a: str, b: str, ra: dict, rb: dict) -> dict:
    k1, n1, k2, n2 = ra["successes"], ra["episodes"], rb["successes"], rb["episodes"]
    row = {"a": a, "b": b, "test": TEST_NAME, "interval": INTERVAL_NAME}
    if not n1 or not n2:
        return row | {"difference": None, "ci_low": None, "ci_high": None, "p_value": None,
                      "note": "a policy has no labelled episodes: nothing to compare"}
    lo, hi = newcombe_interval(k1, n1, k2, n2)
    p = fisher_exact(k1, n1, k2, n2)
    row |= {"difference": k1 / n1 - k2 / n2, "ci_low": lo, "ci_high": hi, "p_value": p}
    if p >= ALPHA:
        need = trials_to_separate(k1 / n1, k2 / n2, ALPHA, POWER)
        if need is None:
            row["note"] = ("underpowered: equal observed rates; no number of trials separates them — if they "
                           "differ, the difference is smaller than these trials can show")
        else:
            more = max(0, need - min(n1, n2))
            row["trials_needed_per_policy"] = need
            row["note"] = (f"underpowered: about {need} trials per policy (≈{more} more) would separate "
                           f"{k1 / n1:.0%} from {k2 / n2:.0%} with {POWER:.0%} power at the {ALPHA:.0%} level")
    return row


def statistics(episodes: list[dict], judge: Judge, human: list, state: dict) -> dict:
    """report.json's content (without warnings) from the labelled ``episodes``."""
    order = list(dict.fromkeys(e["policy"] for e in episodes))
    policies = {p: _policy_stats([e for e in episodes if e["policy"] == p]) for p in order}
    analysis = state.get("analysis") or DEFAULT_ANALYSIS
    pairs = [_pair(a, b, policies[a], policies[b]) for a, b in itertools.combinations(order, 2)]
    for row in pairs:
        ea = [e for e in episodes if e["policy"] == row["a"]]
        eb = [e for e in episodes if e["policy"] == row["b"]]
        compare_more(row, ea, eb, analysis)
    calls = [e["judge"]["call"] for e in episodes]
    scores = [e["judge"]["score"] for e in episodes]
    agree = agreement(calls, scores, human)
    judge_row = {"reward": state["judge"].get("reward"), "threshold": judge.threshold,
                 "fitted_on": judge.fitted_on, "fitted_episodes": judge.fitted_episodes,
                 "cv_accuracy": judge.cv_accuracy, "cv": "leave-one-out" if judge.cv_accuracy is not None else None,
                 "agreement_with_human": agree,
                 "agreement_note": ("in-sample: the threshold was fitted on these labels; cv_accuracy is the "
                                    "held-out figure") if agree and "human" in judge.fitted_on else None}
    return {"policies": policies, "pairs": pairs, "judge": judge_row, "episodes": len(episodes),
            "recordings": state.get("recordings", []), "confidence": 0.95, "analysis": analysis,
            "plan": state.get("plan")}


# ------------------------------------------------------------------- matched pairs, sequential, partial credit


def trial_pairs(ea: list[dict], eb: list[dict], analysis: dict) -> tuple[list[tuple[dict, dict]], str]:
    """The trials of A and B taken as pairs, in the order they were run, and how they were paired. Matched
    (``pairs=matched``): the trials with the same ``match_by`` value (the recordings' per-episode seed, or the
    episode index); unpaired: A's i-th trial beside B's i-th (by episode index), which is how the sequential test
    takes independent trials. A pair counts once both trials are labelled."""
    if analysis["pairs"] == "matched":
        by = analysis["match_by"]
        missing = [f"{e['policy']}/{e['episode_index']}" for e in (*ea, *eb) if e.get(by) is None]
        if missing:
            raise ConfigError(f"pairs=matched match_by={by}: trials {', '.join(missing[:5])} have no {by} (only "
                             "recordings made by policies.evaluate record=true carry seeds); set "
                             "match_by=episode_index, or pairs=unpaired")
        b_of = {e[by]: e for e in eb}
        pairs = [(e, b_of[e[by]]) for e in sorted(ea, key=lambda e: e["episode_index"]) if e[by] in b_of]
        how = f"matched by {by}"
    else:
        sa, sb = (sorted(x, key=lambda e: e["episode_index"]) for x in (ea, eb))
        pairs = list(zip(sa, sb, strict=False))
        how = "A's i-th trial beside B's i-th"
    return [(a, b) for a, b in pairs if a["label"] is not None and b["label"] is not None], how


def credit(e: dict, measure: str) -> float | None:
    """A trial's partial credit: 1.0 for a success, else its progress curve's final (or max) value in [0, 1];
    None when unlabelled, or a failure without a progress curve."""
    if e["label"] is None:
        return None
    if e["label"]:
        return 1.0
    curve = [v for v in e.get("progress") or [] if v is not None]
    if not curve:
        return None
    return float(np.clip(curve[-1] if measure == "final" else max(curve), 0.0, 1.0))


def _sequential(pairs: list[tuple[dict, dict]], a: str, b: str, cfg: dict, paired: bool) -> dict:
    alpha, beta, d, budget = cfg["alpha"], cfg["beta"], cfg["min_difference"], int(cfg["max_trials"])
    used = pairs[:budget]
    outcomes = [(bool(x["label"]), bool(y["label"])) for x, y in used]
    where = [i for i, (x, y) in enumerate(outcomes) if x != y]  # the pair index of each discordant pair
    path = sequential_path([outcomes[i][0] for i in where], alpha, beta, d, paired)
    n_pairs = where[path["at"] - 1] + 1 if path["decision"] != CONTINUE else len(used)
    row = {"test": SEQUENTIAL_TEST_NAME, "alpha": alpha, "beta": beta, "min_difference": d, "max_trials": budget,
           "theta1": discordant_alternative(d, paired), "pairs": len(used), "discordant": len(where),
           "decision": path["decision"], "decided_at_pair": n_pairs if path["decision"] != CONTINUE else None,
           "log_lr_a": path["log_lr_a"], "log_lr_b": path["log_lr_b"],
           "guarantee": (f"P(a 'better' verdict | equal success rates) <= {alpha:g}, P('{a} better' | {a} no "
                         f"better) <= {alpha / 2:g}; P('no difference' | the rates differ by >= {d:.0%}) <= "
                         f"{beta:g}; exact at any count and however often the report is re-made (Ville's "
                         "inequality)")}
    if path["decision"] == A_BETTER:
        row["verdict"] = f"stop: {a} better (decided at pair {n_pairs})"
    elif path["decision"] == B_BETTER:
        row["verdict"] = f"stop: {b} better (decided at pair {n_pairs})"
    elif path["decision"] == NO_DIFFERENCE:
        row["verdict"] = f"stop: no difference of {d:.0%} or more (decided at pair {n_pairs})"
    elif len(used) >= budget:
        row["decision"] = BUDGET_SPENT
        row["verdict"] = (f"stop: the budget of {budget} trials per policy is spent without a verdict; the "
                          "fixed-sample comparison is the answer")
    else:
        table = (sum(x and y for x, y in outcomes), sum(x and not y for x, y in outcomes),
                 sum(y and not x for x, y in outcomes), sum(not x and not y for x, y in outcomes))
        more = more_pairs_needed(table, (path["log_lr_a"], path["log_lr_b"]), alpha, beta, d, paired,
                                 budget - len(used))
        row["more_trials_per_policy"] = more["median"]
        row["more_budget_spent"] = more["budget_spent"]
        row["verdict"] = (f"continue: about {more['median']} more trials of each policy (median of simulated "
                          f"continuations; {more['budget_spent']:.0%} of them reach the budget of {budget})")
    return row


def compare_more(row: dict, ea: list[dict], eb: list[dict], analysis: dict) -> None:
    """Add to a pair's ``row`` what applies besides the fixed-sample comparison: the matched-pairs test, the
    sequential decision and the partial-credit comparison."""
    pairs, how = trial_pairs(ea, eb, analysis)
    paired = analysis["pairs"] == "matched"
    row["analysis"] = f"matched pairs ({how}): {PAIRED_TEST_NAME}" if paired else \
        f"unpaired: {TEST_NAME} and {INTERVAL_NAME}"
    if paired:
        x = [(bool(p["label"]), bool(q["label"])) for p, q in pairs]
        a_only, b_only = sum(u and not v for u, v in x), sum(v and not u for u, v in x)
        row["paired"] = {"test": PAIRED_TEST_NAME, "match_by": analysis["match_by"], "pairs": len(x),
                         "both": sum(u and v for u, v in x), "a_only": a_only, "b_only": b_only,
                         "neither": sum(not u and not v for u, v in x),
                         "difference": (a_only - b_only) / len(x) if x else None,
                         "p_value": mcnemar_exact(a_only, b_only) if x else None,
                         "unmatched": sum(e["label"] is not None for e in (*ea, *eb)) - 2 * len(x)}
    seq = analysis.get("sequential") or {}
    if seq.get("enabled"):
        row["sequential"] = _sequential(pairs, row["a"], row["b"], seq, paired)
    measure = analysis.get("partial_credit")
    if measure:
        if paired:
            cp = [(credit(p, measure), credit(q, measure)) for p, q in pairs]
            cp = [(u, v) for u, v in cp if u is not None and v is not None]
            ca, cb = [u for u, _ in cp], [v for _, v in cp]
        else:
            ca = [c for e in ea if (c := credit(e, measure)) is not None]
            cb = [c for e in eb if (c := credit(e, measure)) is not None]
        lacking = sum(e["label"] is False and credit(e, measure) is None for e in (*ea, *eb))
        ci = mean_difference_interval(ca, cb, paired=paired)
        row["partial_credit"] = {
            "measure": f"{measure} progress of a failed trial, 1.0 for a success", "trials_a": len(ca),
            "trials_b": len(cb), "mean_a": float(np.mean(ca)) if ca else None,
            "mean_b": float(np.mean(cb)) if cb else None, **(ci or {"difference": None, "ci_low": None,
                                                                     "ci_high": None, "p_value": None}),
            "note": (f"{lacking} failed trial(s) have no progress curve (judge disabled?) and are left out"
                     if lacking else "") + ("" if ci else " no interval: too few trials or no spread")}


# ------------------------------------------------------------------------------------------------ writing


def _pct(x) -> str:
    return "—" if x is None else f"{x:.0%}"


def _markdown(report: dict) -> str:
    lines = ["# Recorded rollouts: success per policy", ""]
    for w in report["warnings"]:
        lines += [f"> **warning:** {w}", ""]
    lines += ["| policy | success | 95% CI (Wilson) | labelled / recorded | by a person | by the column | "
              "by the judge | unlabelled | time to success (s, median) |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]

    def part(r, s):
        b = r["by_source"][s]
        return f"{b['successes']}/{b['episodes']}" if b["episodes"] else "—"

    for p, r in report["policies"].items():
        t = r["time_to_success_s"]
        lines.append(f"| {p} | {r['successes']}/{r['episodes']} = {_pct(r['success_rate'])} | "
                     f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}] | {r['episodes']} / {r['recorded']} | "
                     f"{part(r, 'human')} | {part(r, 'column')} | {part(r, 'judge')} | "
                     f"{r['unlabelled']} | {'—' if t is None else f'{t['median']:.2f}'} |")
    lines += ["", "(successes / episodes of each label source)"]
    if report["pairs"]:
        lines += ["", f"## Pairs ({INTERVAL_NAME}; {TEST_NAME}: exact at any count, so valid at the few dozen "
                  "trials a robot gives, where a χ² or z test's normal approximation is not)", "",
                  "| a − b | difference | 95% CI | p-value | note |", "|---|---:|---|---:|---|"]
        for r in report["pairs"]:
            d = r["difference"]
            lines.append(f"| {r['a']} − {r['b']} | {'—' if d is None else f'{d:+.0%}'} | "
                         f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}] | "
                         f"{'—' if r['p_value'] is None else f'{r['p_value']:.3g}'} | {r.get('note', '')} |")
    lines += _more_markdown(report)
    j = report["judge"]
    lines += ["", "## The judge (the reward model's success detection)", ""]
    reward = j.get("reward") or {}
    if reward.get("simulated"):
        lines += [f"**SIMULATED judge**: {reward.get('model')}. Its calls are a stand-in's, not a VLM's.", ""]
    if j["threshold"] is None:
        lines.append("No threshold (none given, and no episode labelled by a person or the column to fit one): "
                     "the judge labelled nothing.")
    else:
        how = "given" if j["fitted_on"] == "given" else f"fitted on {j['fitted_episodes']} episodes labelled by {j['fitted_on']}"
        cv = "" if j["cv_accuracy"] is None else f"; leave-one-out accuracy {j['cv_accuracy']:.0%}"
        lines.append(f"Success when the success score > {j['threshold']:.4g} ({how}{cv}).")
    a = j["agreement_with_human"]
    if a:
        c = a["confusion"]
        auc = "—" if a["auroc"] is None else f"{a['auroc']:.3f}"
        lines += ["", f"Against a person's labels ({a['episodes']} episodes): accuracy {a['accuracy']:.0%}, "
                      f"AUROC {auc}" + (f" ({j['agreement_note']})" if j["agreement_note"] else "") + ".", "",
                  "| person \\ judge | success | failure |", "|---|---:|---:|",
                  f"| success | {c['success_called_success']} | {c['success_called_failure']} |",
                  f"| failure | {c['failure_called_success']} | {c['failure_called_failure']} |"]
    lines += ["", "![success per policy](figures/success_rates.png)", "",
              "![mean progress per policy](figures/progress_by_policy.png)", ""]
    for name in report.get("figures", {}).get("episodes", []):
        lines.append(f"![episodes]({name})")
    return "\n".join(lines) + "\n"


def _signed(x) -> str:
    return "—" if x is None else f"{x:+.0%}"


def _more_markdown(report: dict) -> list[str]:
    """The sequential decision, the matched-pairs test and the partial-credit comparison of each pair."""
    lines = []
    seq = [r for r in report["pairs"] if r.get("sequential")]
    if seq:
        s0 = seq[0]["sequential"]
        lines += ["", f"## Sequential decision ({s0['test']})", "",
                  f"Re-make the report after each batch of labelled trials and follow its verdict. Error rates: "
                  f"{s0['guarantee']}. Trials are taken in pairs in the order they were run; only pairs where "
                  f"one policy succeeded and the other failed move the test.", "",
                  "| a − b | verdict | pairs (discordant) | log LR a / b |", "|---|---|---:|---|"]
        for r in seq:
            s = r["sequential"]
            lines.append(f"| {r['a']} − {r['b']} | **{s['verdict']}** | {s['pairs']} ({s['discordant']}) | "
                         f"{s['log_lr_a']:+.2f} / {s['log_lr_b']:+.2f} |")
    paired = [r for r in report["pairs"] if r.get("paired")]
    lines += ["", "Analysis applied: " + "; ".join(f"{r['a']} − {r['b']}: {r['analysis']}"
                                                    for r in report["pairs"] if r.get("analysis"))]
    if paired:
        lines += ["", f"## Matched pairs ({PAIRED_TEST_NAME})", "",
                  "| a − b | pairs | both | a only | b only | neither | difference | p-value | unmatched trials |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in paired:
            q = r["paired"]
            pv = "—" if q["p_value"] is None else f"{q['p_value']:.3g}"
            lines.append(f"| {r['a']} − {r['b']} | {q['pairs']} | {q['both']} | {q['a_only']} | {q['b_only']} | "
                         f"{q['neither']} | {_signed(q['difference'])} | {pv} | {q['unmatched']} |")
    credit_rows = [r for r in report["pairs"] if r.get("partial_credit")]
    if credit_rows:
        m = credit_rows[0]["partial_credit"]["measure"]
        lines += ["", f"## Partial credit ({m}; beside the success rates, never instead of them)", "",
                  "| a − b | mean a | mean b | difference | 95% CI | test | note |", "|---|---:|---:|---:|---|---|---|"]
        def mean(v):
            return "—" if v is None else f"{v:.2f}"

        for r in credit_rows:
            c = r["partial_credit"]
            ci = "—" if c["ci_low"] is None else f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"
            diff = "—" if c["difference"] is None else f"{c['difference']:+.2f}"
            lines.append(f"| {r['a']} − {r['b']} | {mean(c['mean_a'])} ({c['trials_a']}) | {mean(c['mean_b'])} "
                         f"({c['trials_b']}) | {diff} | {ci} | {c.get('test', '—')} | {c['note'].strip()} |")
    return lines


def _success_figure(report: dict, path: Path) -> None:
    from pipeline.plots import figure

    names = list(report["policies"])
    fig = figure(max(4.0, 1.2 * len(names) + 2), 3.2)
    ax = fig.add_subplot()
    for i, p in enumerate(names):
        r = report["policies"][p]
        if r["success_rate"] is None:
            continue
        ax.bar(i, r["success_rate"], color="#4c78a8")
        ax.errorbar(i, r["success_rate"], yerr=[[r["success_rate"] - r["ci_low"]], [r["ci_high"] - r["success_rate"]]],
                    color="black", capsize=5)
        ax.text(i, min(1.02, r["ci_high"] + 0.02), f"{r['successes']}/{r['episodes']}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("success rate (95% Wilson CI)")
    fig.tight_layout()
    fig.savefig(path)


def _progress_figure(report: dict, episodes: list[dict], path: Path) -> None:
    from pipeline.plots import figure

    fig = figure(6.0, 3.2)
    ax = fig.add_subplot()
    grid = np.linspace(0, 1, CURVE_POINTS)
    for p in report["policies"]:
        curves = [np.interp(grid, np.linspace(0, 1, len(e["progress"])), e["progress"])
                  for e in episodes if e["policy"] == p and len(e["progress"]) > 1]
        if not curves:
            continue
        c = np.stack(curves)
        m, s = c.mean(0), c.std(0)
        line, = ax.plot(grid, m, label=f"{p} ({len(curves)} episodes)")
        ax.fill_between(grid, np.clip(m - s, 0, 1), np.clip(m + s, 0, 1), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("episode time (fraction)")
    ax.set_ylabel("progress (mean ± std)")
    ax.set_ylim(-0.02, 1.02)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def _episode_figures(out: Path, episodes: list[dict]) -> list[str]:
    """Pages of per-episode rows: thumbnail strip, progress curve, label and its source."""
    from PIL import Image

    from pipeline.plots import figure

    names = []
    for page in range(0, len(episodes), ROWS_PER_FIGURE):
        rows = episodes[page:page + ROWS_PER_FIGURE]
        fig = figure(9.0, 1.3 * len(rows))
        grid = fig.add_gridspec(len(rows), 2, width_ratios=[3, 1.4])
        for i, e in enumerate(rows):
            a0, a1 = fig.add_subplot(grid[i, 0]), fig.add_subplot(grid[i, 1])
            thumb = out / e["thumbnails"] if e.get("thumbnails") else None
            if thumb is not None and thumb.is_file():
                a0.imshow(np.asarray(Image.open(thumb)))
            a0.axis("off")
            label = {True: "success", False: "failure", None: "unlabelled"}[e["label"]]
            a0.set_title(f"{e['policy']} episode {e['episode_index']}: {label} ({e['source']})", fontsize=8,
                         loc="left", color={True: "#2a7", False: "#c33", None: "#888"}[e["label"]])
            if e["progress"]:
                a1.plot(np.arange(len(e["progress"])) / e["fps"], e["progress"], lw=1)
            a1.set_ylim(-0.05, 1.05)
            a1.tick_params(labelsize=6)
        fig.tight_layout()
        name = f"figures/episodes_{page // ROWS_PER_FIGURE:03d}.png"
        fig.savefig(out / name)
        names.append(name)
    return names


def write_report(out: Path, report: dict, episodes: list[dict]) -> None:
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for old in (out / "figures").glob("episodes_*.png"):
        old.unlink()
    _success_figure(report, out / "figures" / "success_rates.png")
    _progress_figure(report, episodes, out / "figures" / "progress_by_policy.png")
    report["figures"] = {"success_rates": "figures/success_rates.png",
                         "progress_by_policy": "figures/progress_by_policy.png",
                         "episodes": _episode_figures(out, episodes)}
    atomic_write(out / "report.json", json.dumps(report, indent=1))
    atomic_write(out / "report.md", _markdown(report))
