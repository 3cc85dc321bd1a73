"""Judging a reward model from one or more annotation outputs: VOC, success detection, worst episodes.

``python -m pipeline.report ANN_DIR [ANN_DIR ...]`` (see :mod:`pipeline.report.run`).
"""

from pipeline.report.run import compare, fmt, main, success_detection, voc_summary, write_report

__all__ = ["compare", "fmt", "main", "success_detection", "voc_summary", "write_report"]
