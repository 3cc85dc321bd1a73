"""Annotation: a LeRobot dataset → per-prefix reward scores → per-frame progress → shards, manifest, progress file.

``python -m pipeline.annotate dataset.root=DIR out=OUT`` (see :mod:`pipeline.annotate.run`).
"""

from pipeline.annotate.run import OutputError, annotate, main

__all__ = ["OutputError", "annotate", "main"]
