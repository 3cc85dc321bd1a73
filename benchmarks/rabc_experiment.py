"""``python -m benchmarks.rabc_experiment``: the reward-aligned BC experiment, kept under its documented name (the command lives in :mod:`experiments.rabc`)."""

from experiments.rabc import main

if __name__ == "__main__":
    raise SystemExit(main())
