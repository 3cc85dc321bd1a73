"""The report's files: ``report.md``, ``report.json`` of one annotation output; ``compare.md`` of several."""

from __future__ import annotations

import json
from pathlib import Path

from configs import ConfigError
from data.manifest import as_root, load_manifest
from pipeline.progress import PROGRESS_FROM_DEBIASED
from pipeline.report.figures import compare_curves, report_plots
from pipeline.report.metrics import analyse, fmt, worst_first

REPORT_DIR = "report"
COMPARE_DIR = "report_compare"


def model_line(reward: dict) -> str:
    """Which reward model produced an annotation, in words."""
    kind = reward.get("type", "?")
    if kind == "column":
        control = reward.get("control_column")
        control = f" (static-video control: `{control}`)" if control else ""
        return f"`column` reward: the dataset's own `{reward.get('column')}` column{control}"
    return f"`{kind}` reward, model `{reward.get('model')}` ({reward.get('model_class', '?')})"


def report_dir(ann: str | Path, out: str | Path | None, default: str) -> Path:
    """Where the report's files go: ``out``, else ``default`` inside the (local) annotation output ``ann``."""
    if out:
        return Path(out)
    ann = as_root(ann)
    if isinstance(ann, str):
        raise ConfigError(f"{ann} is not a local folder, so the report cannot go inside it: give out=DIR, a "
                          "local folder for the report's files")
    return ann / default


def write_report(ann_dir: str | Path, labels="auto", ground_truth="auto", worst: int = 6,
                 out: str | Path | None = None) -> dict:
    """Write ``report.md``, ``report.json`` and the plots; returns the numbers."""
    ann = as_root(ann_dir)
    out = report_dir(ann, out, REPORT_DIR)
    result = analyse(ann, labels=labels, ground_truth=ground_truth)
    out.mkdir(parents=True, exist_ok=True)
    files = report_plots(result, load_manifest(ann), out, worst)
    result["plots"] = files
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    (out / "report.json").write_text(json.dumps(public, indent=1))
    (out / "report.md").write_text(report_markdown(public, files))
    return public


def report_markdown(r: dict, files: dict) -> str:
    """``report.md`` of the numbers ``r`` (:func:`pipeline.report.metrics.analyse`) and the plot files."""
    v = r["voc"]
    lines = [f"# Reward quality: {r['annotation']}", "",
             f"Produced by the {model_line(r['reward'])}.", ""]
    if r["reward"].get("random_test_model"):  # recorded by the scorer from the model's config
        lines += ["**These numbers come from a tiny random test model and carry no meaning.**", ""]
    lines += ["| metric | value |", "|---|---|",
              f"| episodes | {r['episodes']} (failed: {r['failed_episodes']}) |",
              f"| VOC vs time: mean / median | {fmt(v['mean'])} / {fmt(v['median'])} ({v['defined']} episodes) |",
              f"| VOC undefined (constant curve or < 2 points) | {v['undefined']} |"]
    if r["voc_ground_truth"]:
        g = r["voc_ground_truth"]
        lines.append(f"| VOC vs {r['ground_truth']}: mean / median | {fmt(g['mean'])} / {fmt(g['median'])} "
                     f"({g['defined']} defined, {g['undefined']} undefined) |")
    det = r["success_detection"]
    if det:
        if det.get("auroc") is not None:
            lines.append(f"| success detection AUROC | {fmt(det['auroc'])} ({det['positives']} successes, "
                         f"{det['negatives']} failures; labels: {det['labels_from']}) |")
            lines.append(f"| best threshold (balanced accuracy) | {det['threshold']:.4f} "
                         f"({fmt(det['balanced_accuracy'])}) |")
        else:
            lines.append(f"| success detection AUROC | undefined: {det['reason']} |")
    else:
        lines.append("| success detection AUROC | no success labels (give labels=COLUMN or a file) |")
    lines += ["", "The success score is the mean raw score of the last 3 prefixes.", ""]
    if len(r["tasks"]) > 1:
        lines += ["## Per task", "", "| task | episodes | VOC mean | undefined | AUROC |", "|---|---|---|---|---|"]
        for task, t in r["tasks"].items():
            lines.append(f"| {task} | {t['episodes']} | {fmt(t['voc']['mean'])} | {t['voc']['undefined']} | "
                         f"{fmt(t.get('auroc'))} |")
        lines.append("")
    if r.get("control"):
        lines += control_markdown(r["control"], files)
    for name, title in [("voc_hist", "VOC distribution"), ("roc", "ROC"), ("worst_episodes", "Worst episodes")]:
        if name in files:
            lines += [f"## {title}", "", f"![{title}]({files[name]})", ""]
    # worst by how far progress disagrees with the dataset's ground truth where there is one, else with time;
    # the column sorted on comes first, so the order is visible
    key, other = ("voc_ground_truth", "voc") if r["ground_truth"] else ("voc", "voc_ground_truth")
    names = {"voc": "VOC vs time", "voc_ground_truth": "VOC vs ground truth"}
    lines += [f"## Episodes, worst first (by {names[key]})", "",
              f"| episode | task | {names[key]} | {names[other]} | success score | success |", "|---|---|---|---|---|---|"]
    for e in worst_first(r["per_episode"], key):
        lines.append(f"| {e['episode_index']} | {e['task']} | {fmt(e[key])} | {fmt(e[other])} | "
                     f"{fmt(e['success_score'], 4)} | {e.get('success_label', '—')} |")
    return "\n".join(lines) + "\n"


def control_markdown(c: dict, files: dict) -> list[str]:
    """The static-video control's section of ``report.md``."""
    s, g, m = c["static_voc"], c["gap_final"], c["gap_mean"]
    debiased = c.get("progress_from") == PROGRESS_FROM_DEBIASED
    bands = c["thresholds"]
    shards = "debiased: raw - control, then min-max" if debiased else "raw, min-max"
    lines = ["## Static-video control", "", f"**Verdict: {c['verdict']}.**", "",
             "The control is each episode's first frame held for its length, scored on the same prefixes. "
             "Verdict bands on the median static VOC (a flat control counts as 0): "
             f">= {bands['elapsed_time']} mostly elapsed time, >= {bands['partly']} partly; see "
             "`pipeline/report/metrics.py`.",
             "", "| metric | value |", "|---|---|",
             f"| static VOC (Spearman vs prefix index): mean / median | {fmt(s['mean'])} / "
             f"{fmt(s['median'])} ({s['defined']} episodes; {c['static_flat']} flat) |",
             f"| real VOC (raw scores, same prefixes): mean / median | {fmt(c['real_voc']['mean'])} / "
             f"{fmt(c['real_voc']['median'])} |",
             f"| static monotonicity (fraction of rising steps), mean | {fmt(c['static_rising_mean'])} |",
             f"| real - static at the last prefix: mean / median | {fmt(g['mean'])} / {fmt(g['median'])} |",
             f"| real - static over all prefixes: mean / median | {fmt(m['mean'])} / {fmt(m['median'])} |",
             f"| progress in the shards | {shards} |",
             ""]
    if "control_curves" in files:
        lines += [f"![real vs static]({files['control_curves']})", ""]
    lines += ["| episode | task | static VOC | real VOC | rising steps | gap at the end | mean gap |",
              "|---|---|---|---|---|---|---|"]
    for e in c["per_episode"]:
        lines.append(f"| {e['episode_index']} | {e['task']} | {fmt(e['static_voc'])} | "
                     f"{fmt(e['real_voc'])} | {fmt(e['static_rising'])} | {fmt(e['gap_final'])} | "
                     f"{fmt(e['gap_mean'])} |")
    return [*lines, ""]


def compare(dirs: list[str | Path], out: str | Path, labels="auto", ground_truth="auto", curves: int = 4) -> dict:
    """Several annotation outputs of one dataset side by side: a table and overlaid progress curves."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = [analyse(d, labels=labels, ground_truth=ground_truth) for d in dirs]
    manifests = [load_manifest(d) for d in dirs]
    common = sorted(set.intersection(*[{e["episode_index"] for e in m["episodes"]} for m in manifests]))
    if not common:
        raise ConfigError(f"the annotation outputs {[str(d) for d in dirs]} share no episode: are they of one dataset?")
    lines = ["# Reward comparison", "", "| reward | model | episodes | VOC mean | VOC median | undefined | "
             "VOC vs ground truth | AUROC |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        rw = r["reward"]
        lines.append(f"| {rw.get('type')} | {rw.get('model') or rw.get('column') or '—'} | {r['episodes']} | "
                     f"{fmt(r['voc_mean'])} | {fmt(r['voc_median'])} | {r['voc_undefined']} | "
                     f"{fmt(r['voc_ground_truth_mean'])} | {fmt(r['auroc'])} |")
    compare_curves(results, manifests, common[:curves], out / "compare_curves.png")
    lines += ["", "![overlaid progress](compare_curves.png)", ""]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    (out / "compare.json").write_text(json.dumps(public, indent=1))
    return {"results": public, "common_episodes": common}
