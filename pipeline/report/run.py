"""Reward quality report of an annotation output: VOC, success detection, per task, worst episodes.

    python -m pipeline.report OUT_DIR [labels=auto|COLUMN|FILE|none] [ground_truth=auto|COLUMN|none]
    python -m pipeline.report OUT_A OUT_B [...] [out=DIR]        # compare reward models on one dataset

Writes ``OUT_DIR/report/`` (``report.md``, ``report.json`` with every number, PNG plots); with several
annotation outputs, one comparison table and overlaid curves (in ``out``, default ``OUT_A/report_compare``).

- VOC (value-order correlation): Spearman rank correlation of each episode's per-frame progress against time,
  and against the dataset's ground-truth progress column where it has one. Undefined VOCs (a constant curve,
  fewer than 2 points) are counted separately and never averaged in.
- Success detection: ROC-AUC of the success score (mean raw score of the last 3 prefixes) against episode
  success labels (a per-frame column such as ``next.success``: an episode succeeds if any frame does; or a
  labels file), the ROC curve, and the threshold that maximises balanced accuracy.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from configs import ConfigError, load_config
from data.manifest import load_manifest
from pipeline.progress import PrefixScores, voc

REPORT_DIR = "report"


# ------------------------------------------------------------------------------------------------ metrics
def _finite(values) -> np.ndarray:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return v[np.isfinite(v)]


def voc_summary(vocs: list[float | None]) -> dict:
    """Mean, median and distribution of the defined VOCs; the undefined ones counted apart."""
    defined = _finite(vocs)
    n_undefined = len([v for v in vocs if v is None or not np.isfinite(v)])
    return {
        "mean": float(defined.mean()) if defined.size else None,
        "median": float(np.median(defined)) if defined.size else None,
        "std": float(defined.std()) if defined.size else None,
        "min": float(defined.min()) if defined.size else None,
        "max": float(defined.max()) if defined.size else None,
        "defined": int(defined.size),
        "undefined": int(n_undefined),
    }


def success_detection(scores: np.ndarray, labels: np.ndarray) -> dict:
    """ROC-AUC, ROC curve and the balanced-accuracy-optimal threshold of ``scores`` for binary ``labels``.

    Undefined (``auroc`` None) unless both classes are present.
    """
    import torch
    from torchmetrics.functional.classification import binary_auroc, binary_roc

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.isfinite(scores)
    scores, labels = scores[keep], labels[keep]
    out = {"n": int(len(labels)), "positives": int(labels.sum()), "negatives": int((1 - labels).sum())}
    if out["positives"] == 0 or out["negatives"] == 0:
        return {**out, "auroc": None, "reason": "needs both successful and failed episodes"}
    # torchmetrics squashes scores outside [0, 1] with a sigmoid; pass ranks in [0, 1] instead (a monotone
    # map: the AUROC and the ROC points are unchanged, and log-probs far below 0 don't saturate).
    uniq = np.unique(scores)
    ranks = np.searchsorted(uniq, scores) / max(len(uniq) - 1, 1)
    preds, target = torch.from_numpy(ranks), torch.from_numpy(labels)
    auroc = float(binary_auroc(preds, target))
    fpr, tpr, _ = binary_roc(preds, target)
    best = max(((float(np.mean(scores[labels == 1] >= c)) + float(np.mean(scores[labels == 0] < c))) / 2, c)
               for c in uniq)
    return {**out, "auroc": auroc, "fpr": fpr.tolist(), "tpr": tpr.tolist(),
            "threshold": float(best[1]), "balanced_accuracy": float(best[0])}


# ------------------------------------------------------------------------------------------------ inputs
def _open_source(manifest: dict):
    from data.source import SourceError, open_dataset

    src = manifest.get("source", {})
    try:
        return open_dataset(root=src.get("root"), repo_id=src.get("repo_id"))
    except SourceError:
        return None


def _column_per_episode(source, episodes: list[int], column: str) -> dict[int, np.ndarray]:
    eps = {e.index: e for e in source.episodes(episodes)}
    return {i: source.read_columns(eps[i], [column])[column][:, 0] for i in episodes}


def read_labels(spec, manifest: dict, source) -> tuple[dict[int, int] | None, str | None]:
    """Episode success labels and where they came from (``None`` when there are none)."""
    if spec in (None, "none", False):
        return None, None
    episodes = [e["episode_index"] for e in manifest["episodes"]]
    spec = str(spec)
    path = Path(spec)
    if path.suffix in (".json", ".csv"):
        if not path.exists():
            raise ConfigError(f"labels={spec}: no such file (a JSON {{episode_index: 0|1}} or a CSV "
                              f"episode_index,success)")
        if path.suffix == ".json":
            raw = json.loads(path.read_text())
            items = raw.items() if isinstance(raw, dict) else ((r["episode_index"], r["success"]) for r in raw)
        else:
            with path.open() as f:
                items = [(r["episode_index"], r["success"]) for r in csv.DictReader(f)]
        labels = {int(k): int(float(v) > 0.5) for k, v in items}
        return {e: labels[e] for e in episodes if e in labels}, str(path)
    if spec == "auto":
        if source is None or "next.success" not in source.numeric_columns():
            return None, None
        spec = "next.success"
    if source is None:
        raise ConfigError(f"labels={spec}: the source dataset of this annotation cannot be opened to read it")
    if spec not in source.numeric_columns():
        raise ConfigError(f"labels={spec!r} is not a column of the source dataset; available: "
                          f"{source.numeric_columns()} (or give a labels .json/.csv file, or labels=none)")
    cols = _column_per_episode(source, episodes, spec)
    return {e: int((v > 0.5).any()) for e, v in cols.items()}, f"column {spec} (an episode succeeds if any frame does)"


def episode_table(manifest: dict, ground_truth: dict[int, np.ndarray] | None) -> list[dict]:
    rows = []
    for e in manifest["episodes"]:
        scores = PrefixScores(e["prefix_ends"], e["raw_scores"], e["length"])
        progress = scores.frame_progress()
        gt = None if ground_truth is None else ground_truth.get(e["episode_index"])
        rows.append({
            "episode_index": e["episode_index"], "task": e.get("task"), "length": e["length"],
            "prefixes": len(e["raw_scores"]), "missing_scores": scores.missing,
            "voc": voc(progress), "voc_ground_truth": voc(progress, gt) if gt is not None else e.get("voc_ground_truth"),
            "success_score": scores.success_score, "final_progress": float(progress[-1]),
        })
    return rows


# ------------------------------------------------------------------------------------------------ report
def _nan_to_none(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def analyse(ann_dir: str | Path, labels="auto", ground_truth="auto") -> dict:
    """Every number of the report for one annotation output."""
    ann = Path(ann_dir)
    manifest = load_manifest(ann)
    if not manifest.get("episodes"):
        raise ConfigError(f"{ann} has no annotated episodes to report on (failures: {len(manifest.get('failures', []))})")
    source = _open_source(manifest)
    gt_name = manifest.get("ground_truth") if ground_truth == "auto" else (None if ground_truth in (None, "none") else ground_truth)
    gt = None
    if gt_name and source is not None:
        if gt_name not in source.numeric_columns():
            raise ConfigError(f"ground_truth={gt_name!r} is not a column of the source dataset; available: "
                              f"{source.numeric_columns()}")
        gt = _column_per_episode(source, [e["episode_index"] for e in manifest["episodes"]], gt_name)
    rows = episode_table(manifest, gt)
    label_map, label_source = read_labels(labels, manifest, source)
    detection = None
    if label_map:
        for r in rows:
            r["success_label"] = label_map.get(r["episode_index"])
        have = [r for r in rows if r.get("success_label") is not None]
        detection = success_detection(np.array([r["success_score"] for r in have]),
                                      np.array([r["success_label"] for r in have]))
        detection["labels_from"] = label_source
    tasks = {}
    for task in sorted({r["task"] for r in rows}, key=str):
        sub = [r for r in rows if r["task"] == task]
        t = {"episodes": len(sub), "voc": voc_summary([r["voc"] for r in sub]),
             "voc_ground_truth": voc_summary([r["voc_ground_truth"] for r in sub]) if gt_name else None}
        if label_map:
            lab = [r for r in sub if r.get("success_label") is not None]
            t["auroc"] = success_detection(np.array([r["success_score"] for r in lab]),
                                           np.array([r["success_label"] for r in lab])).get("auroc")
        tasks[str(task)] = t
    v, vg = voc_summary([r["voc"] for r in rows]), voc_summary([r["voc_ground_truth"] for r in rows])
    return _nan_to_none({
        "annotation": str(ann), "reward": manifest.get("reward", {}), "dataset": manifest.get("source", {}).get("repo_id"),
        "episodes": len(rows), "failed_episodes": len(manifest.get("failures", [])),
        "ground_truth": gt_name,
        "voc_mean": v["mean"], "voc_median": v["median"], "voc_undefined": v["undefined"], "voc": v,
        "voc_ground_truth_mean": vg["mean"] if gt_name else None, "voc_ground_truth": vg if gt_name else None,
        "auroc": detection["auroc"] if detection else None, "success_detection": detection,
        "tasks": tasks, "per_episode": rows,
        "_ground_truth_values": {k: v.tolist() for k, v in (gt or {}).items()},
    })


def fmt(x, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _model_line(reward: dict) -> str:
    kind = reward.get("type", "?")
    if kind == "column":
        return f"`column` reward: the dataset's own `{reward.get('column')}` column"
    return f"`{kind}` reward, model `{reward.get('model')}` ({reward.get('model_class', '?')})"


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def _plots(result: dict, manifest: dict, out: Path, worst: int) -> dict[str, str]:
    files = {}
    rows = result["per_episode"]
    key = "voc_ground_truth" if result["ground_truth"] else "voc"
    fig = _figure(6, 3)
    ax = fig.add_subplot(1, 1, 1)
    for k, label in [("voc", "vs time"), ("voc_ground_truth", f"vs {result['ground_truth']}")]:
        vals = _finite([r[k] for r in rows])
        if vals.size:
            ax.hist(vals, bins=np.linspace(-1, 1, 21), alpha=0.6, label=f"VOC {label}")
    ax.set_xlabel("VOC (Spearman)")
    ax.set_ylabel("episodes")
    ax.set_title(f"{result['episodes']} episodes, {result['voc_undefined']} with undefined VOC (not shown)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "voc_hist.png")
    files["voc_hist"] = "voc_hist.png"
    det = result["success_detection"]
    if det and det.get("auroc") is not None:
        fig = _figure(3.6, 3.4)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(det["fpr"], det["tpr"], label=f"AUROC {det['auroc']:.3f}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "roc.png")
        files["roc"] = "roc.png"
    ranked = sorted(rows, key=lambda r: (r[key] is not None, r[key] if r[key] is not None else 0))[:worst]
    if ranked:
        fps = float(manifest["source"].get("fps") or 1.0)
        by_ep = {e["episode_index"]: e for e in manifest["episodes"]}
        cols = min(3, len(ranked))
        nrows = math.ceil(len(ranked) / cols)
        fig = _figure(3.2 * cols, 2.4 * nrows)
        for i, r in enumerate(ranked):
            e = by_ep[r["episode_index"]]
            ax = fig.add_subplot(nrows, cols, i + 1)
            p = PrefixScores(e["prefix_ends"], e["raw_scores"], e["length"]).frame_progress()
            t = np.arange(len(p)) / fps
            ax.plot(t, p, label="progress")
            g = result["_ground_truth_values"].get(r["episode_index"]) or result["_ground_truth_values"].get(str(r["episode_index"]))
            if g is not None:
                g = np.asarray(g)
                ax.plot(t, (g - g.min()) / np.ptp(g) if np.ptp(g) > 0 else np.ones_like(g), "--", label="ground truth")
            ax.set_title(f"ep {r['episode_index']}  VOC {fmt(r[key], 2)}", fontsize=8)
            ax.set_ylim(-0.05, 1.05)
            ax.tick_params(labelsize=7)
        fig.axes[0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "worst_episodes.png")
        files["worst_episodes"] = "worst_episodes.png"
    return files


def write_report(ann_dir: str | Path, labels="auto", ground_truth="auto", worst: int = 6,
                 out: str | Path | None = None) -> dict:
    """Write ``report.md``, ``report.json`` and the plots; returns the numbers."""
    ann = Path(ann_dir)
    result = analyse(ann, labels=labels, ground_truth=ground_truth)
    out = Path(out) if out else ann / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    files = _plots(result, load_manifest(ann), out, worst)
    result["plots"] = files
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    (out / "report.json").write_text(json.dumps(public, indent=1))
    (out / "report.md").write_text(_markdown(public, files))
    return public


def _markdown(r: dict, files: dict) -> str:
    v = r["voc"]
    lines = [f"# Reward quality: {r['annotation']}", "",
             f"Produced by the {_model_line(r['reward'])}.", ""]
    if r["reward"].get("type") != "column" and "tiny" in str(r["reward"].get("model", "")).lower():
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
    for name, title in [("voc_hist", "VOC distribution"), ("roc", "ROC"), ("worst_episodes", "Worst episodes")]:
        if name in files:
            lines += [f"## {title}", "", f"![{title}]({files[name]})", ""]
    key = "voc_ground_truth" if r["ground_truth"] else "voc"
    lines += ["## Episodes, worst first", "", "| episode | task | VOC vs time | VOC vs ground truth | success score |"
              " success |", "|---|---|---|---|---|---|"]
    for e in sorted(r["per_episode"], key=lambda e: (e[key] is not None, e[key] if e[key] is not None else 0)):
        lines.append(f"| {e['episode_index']} | {e['task']} | {fmt(e['voc'])} | {fmt(e['voc_ground_truth'])} | "
                     f"{fmt(e['success_score'], 4)} | {e.get('success_label', '—')} |")
    return "\n".join(lines) + "\n"


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
    shown = common[:curves]
    fig = _figure(3.4 * len(shown), 2.6)
    for i, ep in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        for r, m in zip(results, manifests, strict=True):
            e = next(x for x in m["episodes"] if x["episode_index"] == ep)
            p = PrefixScores(e["prefix_ends"], e["raw_scores"], e["length"]).frame_progress()
            ax.plot(np.linspace(0, 1, len(p)), p, label=r["reward"].get("type"))
        ax.set_title(f"episode {ep}", fontsize=8)
        ax.set_ylim(-0.05, 1.05)
        ax.tick_params(labelsize=7)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "compare_curves.png")
    lines += ["", "![overlaid progress](compare_curves.png)", ""]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    (out / "compare.json").write_text(json.dumps(public, indent=1))
    return {"results": public, "common_episodes": common}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    dirs = [a for a in argv if "=" not in a and not a.startswith("-")]
    if not dirs or any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0 if dirs or "--help" in argv or "-h" in argv else 2
    cfg = load_config("report", [a for a in argv if "=" in a])
    try:
        if len(dirs) == 1:
            r = write_report(dirs[0], labels=cfg.labels, ground_truth=cfg.ground_truth, worst=cfg.worst, out=cfg.out)
            where = Path(cfg.out) if cfg.out else Path(dirs[0]) / REPORT_DIR
            print(f"VOC mean {fmt(r['voc_mean'])} (undefined {r['voc_undefined']}), AUROC {fmt(r['auroc'])} — "
                  f"{where / 'report.md'}")
        else:
            out = Path(cfg.out) if cfg.out else Path(dirs[0]) / "report_compare"
            compare(dirs, out, labels=cfg.labels, ground_truth=cfg.ground_truth, curves=cfg.curves)
            print(f"comparison of {len(dirs)} annotation outputs: {out / 'compare.md'}")
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
