"""``python -m benchmarks.weight_phases``: mean weight by frames from first success, kept under its documented name (the command lives in :mod:`experiments.weight_phases`)."""

from experiments.weight_phases import main

if __name__ == "__main__":
    raise SystemExit(main())
