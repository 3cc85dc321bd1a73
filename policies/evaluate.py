"""``python -m policies.evaluate``: roll out a policy export in the simulator (the command lives in :mod:`policies.evaluation.run`)."""

from policies.evaluation.run import main

if __name__ == "__main__":
    raise SystemExit(main())
