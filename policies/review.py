"""Label recorded rollouts in a local page: watch each video beside its progress curve and the judge's call,
and mark it a success or a failure.

    python -m policies.review DIR [labels=FILE] [port=8765] [host=127.0.0.1] [open_browser=true] [blind=true]

``DIR`` is the output folder of ``python -m policies.evaluate recordings=[...] out=DIR`` (its
``episodes.json``). Labels are written to the labels file at once (``labels=``; by default the one
``episodes.json`` names, else ``DIR/labels.csv``); the page's "Re-make report" button recomputes the success
rates from them. ``blind=true`` hides the policies' names and shuffles the trials across policies with a recorded
seed (:mod:`policies.evaluation.blind`); the labels still go to the file under the real names. The server is :mod:`policies.evaluation.review`; the keys are in ``configs/review.yaml``.
"""

from __future__ import annotations

CONFIG_NAME = "review"


def _main(argv: list[str]) -> int:
    from configs import ConfigError, parse_cli
    from configs.types import check_types
    from policies.evaluation.review import serve

    dirs = [a for a in argv if "=" not in a and not a.startswith("-")]
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        parse_cli(CONFIG_NAME, [a for a in argv if "=" in a or a in ("-h", "--help")])
    if len(dirs) != 1:
        raise ConfigError(f"give one evaluation folder, not {len(dirs)} ({' '.join(dirs) or 'none'}): "
                          "python -m policies.review DIR [labels=FILE] [port=N] [host=H] [open_browser=true]")
    cfg = parse_cli(CONFIG_NAME, [a for a in argv if "=" in a])
    check_types(cfg, CONFIG_NAME)
    blind = handler = None
    if cfg.blind:
        from policies.evaluation.blind import BlindMap, BlindReviewHandler, blind_seed
        from policies.evaluation.review import load_episodes

        episodes = load_episodes(dirs[0])["episodes"]
        blind, handler = BlindMap(episodes, blind_seed(dirs[0], cfg.blind_seed)), BlindReviewHandler
    return serve(dirs[0], labels=cfg.labels, host=str(cfg.host), port=cfg.port, open_browser=cfg.open_browser,
                 blind=blind, handler=handler)


def main(argv: list[str] | None = None) -> int:
    from configs.commands import run_command

    return run_command(_main, argv,
                       interrupted="stopped; every label given was already written")


if __name__ == "__main__":
    raise SystemExit(main())
