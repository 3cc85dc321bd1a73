"""How every command (``python -m ...``, ``train.py``) ends: one mapping of failures to messages and exit codes.

    def main(argv=None) -> int:
        return run_command(_main, argv, interrupted=RESUME_HINT)

- a known error (:class:`configs.UserError`, the base of every stage's bad-input errors, and the ``errors`` a
  command names: bad input whose message already says what is wrong and what to do) prints ``error: MESSAGE``
  on one line and exits 2;
- a full disk (``OSError`` ENOSPC) prints one line naming the file, that what was finished is kept, and how to
  continue (the ``interrupted`` line), and exits 2;
- Ctrl-C (KeyboardInterrupt) prints the command's ``interrupted`` line (how to resume) and exits 130, the
  shell's code for SIGINT;
- ``--debug`` anywhere on the command line also prints the traceback of either; it is removed from the
  arguments before the command sees them. Any other exception is a bug: its traceback is always shown.

It lives in ``configs`` (the lowest layer) so that every stage's command can import it.
"""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Callable, Sequence

from configs import UserError

DEBUG_FLAG = "--debug"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
INTERRUPTED = "interrupted"


# loggers whose INFO lines are advertising or per-run boilerplate, not news (warnings still show)
QUIET_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                 "lightning_fabric.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def quiet_libraries() -> None:
    """One progress bar per stage and no noise: Lightning's tips and device lines, the ``datasets`` "Map" bars
    lerobot's writer opens per episode and the video encoder's per-file INFO lines are silenced; warnings stay."""
    import logging

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # only the corpus writer needs it
        pass
    import warnings

    # Lightning's own deprecation of its internals, and its caution about __len__ with workers, which our
    # loader answers itself (each worker reads its own shards; the length is the step count)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    try:  # transformers' "Loading weights" bar per model load
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # only the VLM rewards need it
        pass
    # lerobot logs torchcodec's whole traceback at import where FFmpeg's shared libraries are missing; our
    # commands read video through PyAV (data.source's default backend), so there it is noise
    logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)
    try:  # libav's INFO lines ("Starting second pass: moving the moov atom ...") per encoded episode
        import av.logging

        av.logging.set_level(av.logging.WARNING)
        av.logging.set_libav_level(av.logging.WARNING)  # lerobot's writer restores libav's own printer
    except ImportError:  # only video encoding needs it
        pass


def error_message(exc: BaseException) -> str:
    """The message of ``exc`` a user reads: a known error raised in a DataLoader worker reaches the main process
    with the worker's whole traceback in its message (torch's ``ExceptionWrapper``); keep its own last line
    (``--debug`` still prints everything)."""
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name = type(exc).__name__
        for prefix in (f"{type(exc).__module__}.{name}: ", f"{name}: "):
            last = last.removeprefix(prefix)
        worker = text.splitlines()[0].removeprefix("Caught ").rstrip(".")
        return f"{last} ({worker.split(' in ', 1)[-1]})"
    return text


def run_command(fn: Callable[[list[str]], int], argv: Sequence[str] | None = None, *,
                errors: tuple[type[BaseException], ...] = (), interrupted: str = INTERRUPTED) -> int:
    """Run ``fn(argv)`` (``argv`` defaults to ``sys.argv[1:]``, without ``--debug``) and return its exit code,
    or the code of a known error (2) or of an interrupt (130) after one line on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    quiet_libraries()
    try:
        return fn(argv)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UserError, *errors) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {error_message(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        if debug:
            traceback.print_exc()
        print(disk_full_message(exc, interrupted), file=sys.stderr)
        return EXIT_ERROR


def disk_full_message(exc: OSError, interrupted: str = INTERRUPTED) -> str:
    """One line for a full disk: the file being written, that finished work is kept, and the command's way to
    continue (its ``interrupted`` line without the word "interrupted")."""
    where = f" writing {exc.filename}" if exc.filename else ""
    how = interrupted.removeprefix(INTERRUPTED).lstrip(";: ") or "re-run the same command to continue"
    return (f"error: no space left on the device{where}; what was finished before is kept. Free some space, then {how}")
