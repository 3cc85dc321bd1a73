"""Judging a reward model from one or more annotation outputs: VOC, success detection, worst episodes.

``python -m pipeline.report ANN_DIR [ANN_DIR ...]`` (the command: :mod:`pipeline.report.run`). The stages:
:mod:`~pipeline.report.inputs` (source columns, success labels) → :mod:`~pipeline.report.metrics` (every
number) → :mod:`~pipeline.report.figures` (PNGs) → :mod:`~pipeline.report.write` (``report.md``, ``.json``,
comparisons).
"""

from pipeline.report.inputs import read_success_labels
from pipeline.report.metrics import analyse, episode_table, fmt, success_detection, voc_summary
from pipeline.report.run import main
from pipeline.report.write import REPORT_DIR, compare, write_report

__all__ = ["REPORT_DIR", "analyse", "compare", "episode_table", "fmt", "main", "read_success_labels",
           "success_detection", "voc_summary", "write_report"]
