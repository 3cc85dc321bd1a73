"""Speed and memory benchmarks: each prints its figures (``--json``: one JSON line), ratios measured side by side
in one run; docs/benchmarks.md records them with their commands."""


def print_report(report: dict, as_json: bool) -> dict:
    """A benchmark's figures: one JSON line with ``--json`` (what docs/benchmarks.md quotes), indented else."""
    import json

    print(json.dumps(report) if as_json else json.dumps(report, indent=1))
    return report
