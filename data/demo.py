"""``python -m data.demo``: generate the simulated mixed-quality MetaWorld corpus (the command lives in :mod:`data.metaworld.corpus`)."""

from data.metaworld.corpus import main

if __name__ == "__main__":
    raise SystemExit(main())
