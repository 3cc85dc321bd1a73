"""Write a randomised, balanced run order for A/B trials on a robot.

    python -m policies.plan policies=[A,B] trials=N seed=S [out=plan.csv]

Every policy gets ``trials`` trials, in blocks of one trial each in a random order drawn from ``seed``
(:mod:`policies.evaluation.plan`). Run and record the trials in the file's order (each policy's trials into its
own dataset, its ``trial``-th trial as its ``trial``-th episode), then evaluate with
``python -m policies.evaluate recordings=[...] plan=FILE``, which refuses recordings that did not follow it.
The keys are in ``configs/plan.yaml``.
"""

from __future__ import annotations

CONFIG_NAME = "plan"


def _main(argv: list[str]) -> int:
    from configs import parse_cli
    from configs.types import check_types
    from policies.evaluation.plan import PlanError, make_plan, plan_policies, write_plan

    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
    cfg = parse_cli(CONFIG_NAME, argv)
    check_types(cfg, CONFIG_NAME)
    if not cfg.policies or isinstance(cfg.policies, str):
        raise PlanError(f"policies={cfg.policies!r}: give the policies' names as a list, e.g. policies=[A,B]")
    rows = make_plan(list(cfg.policies), cfg.trials, cfg.seed)
    path = write_plan(str(cfg.out), rows, bool(cfg.overwrite))
    each = ", ".join(f"{p} {n}" for p, n in plan_policies(rows).items())
    print(f"wrote {path}: {len(rows)} runs ({each} trials) in {cfg.trials} blocks, seed {cfg.seed}; record in "
          f"this order, then: python -m policies.evaluate recordings=[...] plan={path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from configs.commands import run_command

    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
