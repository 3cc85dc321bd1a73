"""``python -m pipeline.annotate``: annotate a LeRobot dataset with per-frame progress and write shards (the command lives in :mod:`pipeline.annotate.run`)."""

from pipeline.annotate.run import main

if __name__ == "__main__":
    raise SystemExit(main())
