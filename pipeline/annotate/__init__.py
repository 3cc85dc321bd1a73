"""Annotation: a LeRobot dataset → per-prefix reward scores → per-frame progress → shards, manifest, progress file.

``python -m pipeline.annotate dataset.root=DIR out=OUT`` (see :mod:`pipeline.annotate.run`). The stages:
``output`` (claiming the output folder, resuming), ``episode`` (one episode read, scored, encoded), ``finish``
(manifest, progress parquet, overview), ``run`` (the orchestration and the command).
"""

from configs.outputs import OutputError
from pipeline.annotate.run import annotate, main

__all__ = ["OutputError", "annotate", "main"]
