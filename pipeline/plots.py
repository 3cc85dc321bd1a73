"""Progress plots of annotated episodes: one PNG per episode and an overview page (matplotlib, Agg)."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np


def figure(width: float, height: float, dpi: int = 80):
    """A matplotlib figure on the Agg canvas (no pyplot: no global state, safe in worker processes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def episode_png_name(episode_index: int) -> str:
    return f"episode_{episode_index:06d}.png"


def plot_episode(path: str | Path, *, episode_index: int, fps: float, progress: np.ndarray,
                 prefix_ends: np.ndarray, raw: np.ndarray, ground_truth: np.ndarray | None = None,
                 ground_truth_name: str = "ground truth", task: str = "", voc: float = float("nan"),
                 success_score: float = float("nan")) -> Path:
    """Progress (per frame) and raw score (per prefix) against time; ground truth (min-max) when given."""
    t = np.arange(len(progress)) / fps
    fig = figure(6, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(t, progress, color="tab:blue", label="progress")
    if ground_truth is not None:
        gt = np.asarray(ground_truth, dtype=np.float64).reshape(len(progress), -1)[:, 0]
        span = np.ptp(gt)
        ax.plot(t, (gt - gt.min()) / span if span > 0 else np.ones_like(gt), color="tab:green", ls="--",
                label=f"{ground_truth_name} (min-max)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("time [s]")
    ax.set_ylabel("progress")
    ax2 = ax.twinx()
    ax2.plot((np.asarray(prefix_ends) - 1) / fps, raw, "o", ms=3, color="tab:orange", label="raw score")
    ax2.set_ylabel("raw score", color="tab:orange")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=7)
    ax.set_title(f"episode {episode_index}  VOC {voc:.3f}  success {success_score:.3f}\n{task[:80]}", fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.88, bottom=0.15, top=0.85)  # fixed margins: tight_layout costs 2x
    path = Path(path)
    fig.savefig(path)
    return path


def write_overview(plots_dir: str | Path, episodes: list[dict], failures: list[dict], fps: float) -> Path:
    """``plots/index.html`` (a table of the episodes with VOC and success score, linking each PNG) and
    ``plots/overview.png`` (every progress curve on normalised time)."""
    from pipeline.progress import PrefixScores

    plots = Path(plots_dir)
    plots.mkdir(parents=True, exist_ok=True)
    fig = figure(6, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    for ep in episodes:
        p = PrefixScores.from_manifest_episode(ep).frame_progress()
        ax.plot(np.linspace(0, 1, len(p)), p, lw=0.8, alpha=0.7)
    ax.set_xlabel("normalised time")
    ax.set_ylabel("progress")
    ax.set_title(f"{len(episodes)} episodes", fontsize=9)
    fig.tight_layout()
    fig.savefig(plots / "overview.png")

    def fmt(x):
        return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

    rows = "\n".join(
        f"<tr><td>{e['episode_index']}</td><td>{e['length']}</td><td>{html.escape(str(e.get('task')))}</td>"
        f"<td>{fmt(e.get('voc'))}</td><td>{fmt(e.get('voc_ground_truth'))}</td><td>{fmt(e.get('success_score'))}</td>"
        f"<td><a href='{episode_png_name(e['episode_index'])}'><img src='{episode_png_name(e['episode_index'])}' "
        f"height=120></a></td></tr>"
        for e in episodes
    )
    fail_rows = "\n".join(f"<li>episode {f['episode_index']}: {html.escape(f['reason'])}</li>" for f in failures)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>progress annotations</title></head><body>"
        f"<h1>Progress annotations</h1><p>{len(episodes)} episodes ok, {len(failures)} failed, fps {fps:g}</p>"
        "<img src='overview.png'>"
        "<table border=1 cellpadding=3><tr><th>episode</th><th>frames</th><th>task</th><th>VOC (time)</th>"
        f"<th>VOC (ground truth)</th><th>success score</th><th>plot</th></tr>\n{rows}\n</table>"
        + (f"<h2>Failures</h2><ul>{fail_rows}</ul>" if failures else "")
        + "</body></html>"
    )
    index = plots / "index.html"
    index.write_text(page)
    return index
