"""``python -m pipeline.report``: judge a reward model from annotation outputs (the command lives in :mod:`pipeline.report.run`)."""

from pipeline.report.run import main

if __name__ == "__main__":
    raise SystemExit(main())
