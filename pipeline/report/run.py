"""Reward quality report of an annotation output: VOC, success detection, per task, worst episodes.

    python -m pipeline.report OUT_DIR [labels=auto|COLUMN|FILE|none] [ground_truth=auto|COLUMN|none]
    python -m pipeline.report OUT_A OUT_B [...] [out=DIR]        # compare reward models on one dataset
    python -m pipeline.report https://host/ann out=DIR            # an output read by URL (data.manifest)

Writes ``OUT_DIR/report/`` (``report.md``, ``report.json`` with every number, PNG plots); with several
annotation outputs, one comparison table and overlaid curves (in ``out``, default ``OUT_A/report_compare``).

- VOC (value-order correlation): Spearman rank correlation of each episode's per-frame progress against time,
  and against the dataset's ground-truth progress column where it has one. Undefined VOCs (a constant curve,
  fewer than 2 points) are counted separately and never averaged in.
- Static-video control (when the annotation scored it, ``control.static=true``): static VOC (Spearman of the
  control's prefix scores vs prefix index), static monotonicity, the real-minus-static gap, per episode and
  overall, and a verdict on whether progress is mostly elapsed time.
- Success detection: ROC-AUC of the success score (mean raw score of the last 3 prefixes) against episode
  success labels (a per-frame column such as ``next.success``: an episode succeeds if any frame does; or a
  labels file), the ROC curve, and the threshold that maximises balanced accuracy.
"""

from __future__ import annotations

import sys

from configs import load_config
from configs.commands import run_command
from configs.types import check_types
from pipeline.report.metrics import fmt
from pipeline.report.write import COMPARE_DIR, REPORT_DIR, compare, report_dir, write_report


def detection_text(r: dict) -> str:
    """The success-detection part of the one-line summary: the AUROC, why it is undefined, or that there are
    no labels (never a bare dash)."""
    if r.get("auroc") is not None:
        return f"AUROC {fmt(r['auroc'])}"
    det = r.get("success_detection")
    if det:
        return f"AUROC undefined ({det.get('reason', 'no usable labels')})"
    return "no success labels (give labels=COLUMN or a labels file for the AUROC)"


def _main(argv: list[str]) -> int:
    dirs = [a for a in argv if "=" not in a and not a.startswith("-")]
    if not dirs or any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0 if dirs or "--help" in argv or "-h" in argv else 2
    cfg = load_config("report", [a for a in argv if "=" in a])
    check_types(cfg, "report")  # typed values, the one check every command shares
    if len(dirs) == 1:
        r = write_report(dirs[0], labels=cfg.labels, ground_truth=cfg.ground_truth, worst=cfg.worst, out=cfg.out)
        where = report_dir(dirs[0], cfg.out, REPORT_DIR)
        print(f"VOC mean {fmt(r['voc_mean'])} (undefined {r['voc_undefined']}), {detection_text(r)}; "
              f"report: {where / 'report.md'}")
        if r.get("control"):
            print(f"static-video control: {r['control']['verdict']}")
    else:
        out = report_dir(dirs[0], cfg.out, COMPARE_DIR)
        compare(dirs, out, labels=cfg.labels, ground_truth=cfg.ground_truth, curves=cfg.curves)
        print(f"comparison of {len(dirs)} annotation outputs: {out / 'compare.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.report``; errors and Ctrl-C end as every command's do (:mod:`configs.commands`)."""
    return run_command(_main, argv, errors=(FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
