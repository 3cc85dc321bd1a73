"""Speed and memory benchmarks: each prints its figures (``--json``: one JSON line), ratios measured side by side
in one run; docs/benchmarks.md records them with their commands."""


def print_report(report: dict, as_json: bool) -> dict:
    """A benchmark's figures: one JSON line with ``--json`` (what docs/benchmarks.md quotes), indented else."""
    import json

    print(json.dumps(report) if as_json else json.dumps(report, indent=1))
    return report


def dataset_arguments(ap, episodes: int, length: int, size: int) -> None:
    """The synthetic dataset's sizes (tests.fixtures.datasets.make_synthetic_dataset) an annotation benchmark
    takes, with its defaults."""
    ap.add_argument("--episodes", type=int, default=episodes)
    ap.add_argument("--length", type=int, default=length, help="frames per episode")
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--size", type=int, default=size, help="image side in pixels")


def preload_annotation() -> None:
    """One-time imports an annotation pays at start-up, kept out of the timed calls; the libraries' noise off
    (configs.commands.quiet_libraries, as every command)."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import torchmetrics.functional  # noqa: F401

    import pipeline.annotate  # noqa: F401
    import pipeline.plots  # noqa: F401
    from configs.commands import quiet_libraries

    quiet_libraries()


def synthetic_dataset(args, folder, report: dict):
    """The benchmark's synthetic LeRobot dataset (one camera, ``dataset_arguments`` sizes) under ``folder``; the
    seconds it took go into ``report``."""
    import time

    from tests.fixtures.datasets import make_synthetic_dataset

    t0 = time.perf_counter()
    root = make_synthetic_dataset(folder, episodes=args.episodes, length=args.length, fps=args.fps,
                                  image_size=(args.size, args.size), cameras=("top",), seed=0)
    report["dataset_seconds"] = round(time.perf_counter() - t0, 2)
    return root
