"""Label recorded rollouts in a local page: watch each video beside its progress curve and the judge's call,
and mark it a success or a failure; or label a corpus's demonstrations good or bad where the weights lean.

    python -m policies.review DIR [labels=FILE] [port=8765] [host=127.0.0.1] [open_browser=true] [blind=true]
    python -m policies.review ANNOTATION_DIR weighting=NAME [weighting.KEY=V ...] [policy=act] [labels=FILE]
        [order=heaviest|uncertain|mix|spread] [camera=NAME] [next=N]

``DIR`` is the output folder of ``python -m policies.evaluate recordings=[...] out=DIR`` (its
``episodes.json``). Labels are written to the labels file at once (``labels=``; by default the one
``episodes.json`` names, else ``DIR/labels.csv``); the page's "Re-make report" button recomputes the success
rates from them. ``blind=true`` hides the policies' names and shuffles the trials across policies with a recorded
seed (:mod:`policies.evaluation.blind`); the labels still go to the file under the real names. The server is :mod:`policies.evaluation.review`; the keys are in ``configs/review.yaml``.

An ``ANNOTATION_DIR`` (the output of ``python -m pipeline.annotate``, its ``manifest.json``) opens the corpus page
(:mod:`policies.evaluation.corpus`): the demonstrations most worth labelling first, each with its video, its
raw-score curve and static control, its weight under ``weighting=`` and its rank; labels go to the ``good`` column
of ``labels=`` (default ``DIR/labels.csv``), which ``train.py ... labels=FILE`` reads. ``next=N`` prints the next N
episode indices to label and serves nothing.
"""

from __future__ import annotations

CONFIG_NAME = "review"
CORPUS_KEYS = ("order", "camera", "next")  # keys of configs/review.yaml that only a corpus review reads


def _main(argv: list[str]) -> int:
    from configs import ConfigError, parse_cli
    from configs.types import check_types
    from policies.evaluation.corpus import is_corpus, is_train_key
    from policies.evaluation.review import serve

    dirs = [a for a in argv if "=" not in a and not a.startswith("-")]
    overrides = [a for a in argv if "=" in a]
    passed = [a for a in overrides if is_train_key(a.split("=", 1)[0])]  # the train config's, for a corpus
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        parse_cli(CONFIG_NAME, [a for a in argv if (a in overrides and a not in passed) or a in ("-h", "--help")])
    if len(dirs) != 1:
        raise ConfigError(f"give one evaluation or annotation folder, not {len(dirs)} ({' '.join(dirs) or 'none'}): "
                          "python -m policies.review DIR [labels=FILE] [port=N] [host=H] [open_browser=true]")
    cfg = parse_cli(CONFIG_NAME, [a for a in overrides if a not in passed])
    check_types(cfg, CONFIG_NAME)
    if is_corpus(dirs[0]):
        return _corpus(dirs[0], cfg, passed)
    corpus_only = [a for a in overrides if a in passed or a.split("=", 1)[0] in CORPUS_KEYS]
    if corpus_only:
        raise ConfigError(f"{corpus_only[0]} is for a corpus review (a folder with manifest.json, the output of "
                          f"pipeline.annotate); {dirs[0]} has none: review it without "
                          f"{', '.join(a.split('=', 1)[0] + '=' for a in corpus_only)}")
    blind = handler = None
    if cfg.blind:
        from policies.evaluation.blind import BlindMap, BlindReviewHandler, blind_seed
        from policies.evaluation.review import load_episodes

        episodes = load_episodes(dirs[0])["episodes"]
        blind, handler = BlindMap(episodes, blind_seed(dirs[0], cfg.blind_seed)), BlindReviewHandler
    return serve(dirs[0], labels=cfg.labels, host=str(cfg.host), port=cfg.port, open_browser=cfg.open_browser,
                 blind=blind, handler=handler)


def _corpus(folder: str, cfg, overrides: list[str]) -> int:
    from configs import ConfigError
    from policies.evaluation.corpus import Corpus, next_to_label, serve_corpus

    if cfg.blind:
        raise ConfigError(f"blind=true hides policies' names; {folder} is a corpus of demonstrations (no policies): "
                          "review it without blind=")
    corpus = Corpus(folder, overrides, labels=cfg.labels, order=str(cfg.order), camera=cfg.camera)
    if cfg.next is not None:
        for episode in next_to_label(corpus, int(cfg.next)):
            print(episode)
        return 0
    return serve_corpus(corpus, host=str(cfg.host), port=cfg.port, open_browser=cfg.open_browser)


def main(argv: list[str] | None = None) -> int:
    from configs.commands import run_command

    return run_command(_main, argv,
                       interrupted="stopped; every label given was already written")


if __name__ == "__main__":
    raise SystemExit(main())
