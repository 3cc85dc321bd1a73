"""The report's PNGs: VOC histogram, ROC curve, the worst episodes' curves; a comparison's overlaid curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.plots import figure
from pipeline.progress import PrefixScores, minmax
from pipeline.report.metrics import finite_values, fmt, worst_first

DPI = 90  # the report's figures are viewed in a markdown page, a little larger than the per-episode plots
# points of the common time axis (fraction of the episode) the real and static curves are averaged on
CURVE_POINTS = 50


def report_plots(result: dict, manifest: dict, out: Path, worst: int) -> dict[str, str]:
    """Write ``voc_hist.png``, ``roc.png`` (with success labels) and ``worst_episodes.png`` into ``out``;
    returns plot name -> file name of those written."""
    files = {}
    rows = result["per_episode"]
    key = "voc_ground_truth" if result["ground_truth"] else "voc"
    fig = figure(6, 3, dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    for k, label in [("voc", "vs time"), ("voc_ground_truth", f"vs {result['ground_truth']}")]:
        vals = finite_values([r[k] for r in rows])
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
        fig = figure(3.6, 3.4, dpi=DPI)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(det["fpr"], det["tpr"], label=f"AUROC {det['auroc']:.3f}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "roc.png")
        files["roc"] = "roc.png"
    ranked = worst_first(rows, key)[:worst]
    if ranked:
        fps = float(manifest["source"].get("fps") or 1.0)
        by_ep = {e["episode_index"]: e for e in manifest["episodes"]}
        cols = min(3, len(ranked))
        nrows = math.ceil(len(ranked) / cols)
        fig = figure(3.2 * cols, 2.4 * nrows, dpi=DPI)
        for i, r in enumerate(ranked):
            e = by_ep[r["episode_index"]]
            ax = fig.add_subplot(nrows, cols, i + 1)
            p = PrefixScores.from_manifest_episode(e).frame_progress()
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
    if result.get("control"):
        files["control_curves"] = control_curves(manifest, out / "control_curves.png").name
    return files


def control_curves(manifest: dict, path: Path) -> Path:
    """Real vs static-video mean curves over the episodes, on the fraction of the episode elapsed: the raw
    level (left) and the per-episode min-max shape (right), where a length bias shows as two similar ramps."""
    u = np.linspace(0, 1, CURVE_POINTS)
    curves = {"real": ([], []), "static": ([], [])}
    for e in manifest["episodes"]:
        if e.get("control_raw_scores") is None:
            continue
        x = np.asarray(e["prefix_ends"], dtype=np.float64) / e["length"]
        for name, key in [("real", "raw_scores"), ("static", "control_raw_scores")]:
            y = np.asarray(e[key], dtype=np.float64)
            ok = np.isfinite(y)
            if not ok.any():
                continue
            level = np.interp(u, x[ok], y[ok])
            curves[name][0].append(level)
            curves[name][1].append(minmax(level))
    fig = figure(8, 3, dpi=DPI)
    for i, title in enumerate(["raw score (mean over episodes)", "per-episode min-max (mean)"]):
        ax = fig.add_subplot(1, 2, i + 1)
        for name, style in [("real", "-"), ("static", "--")]:
            if curves[name][i]:
                ax.plot(u, np.mean(curves[name][i], axis=0), style, label=f"{name} video")
        ax.set_xlabel("fraction of the episode")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def compare_curves(results: list[dict], manifests: list[dict], episodes: list[int], path: Path) -> Path:
    """The progress curves of ``episodes``, one panel each, every annotation output overlaid."""
    fig = figure(3.4 * len(episodes), 2.6, dpi=DPI)
    for i, ep in enumerate(episodes):
        ax = fig.add_subplot(1, len(episodes), i + 1)
        for r, m in zip(results, manifests, strict=True):
            e = next(x for x in m["episodes"] if x["episode_index"] == ep)
            p = PrefixScores.from_manifest_episode(e).frame_progress()
            ax.plot(np.linspace(0, 1, len(p)), p, label=r["reward"].get("type"))
        ax.set_title(f"episode {ep}", fontsize=8)
        ax.set_ylim(-0.05, 1.05)
        ax.tick_params(labelsize=7)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path
