"""Running the three stages of annotation over a rank's episodes, the model's stage never waiting on the others.

    run_stages(episodes, decode=..., score=..., finish=..., prefetch=2, overlap=True)

Per episode, in order: ``decode(ep)`` (read the columns, decode the videos), ``score(ep, decoded)`` (the reward
model) and ``finish(ep, scored, error)`` (encode the samples, write the shards, plot, record). With ``overlap``
each stage has its own thread: a reader thread decodes up to ``prefetch`` episodes ahead of the model, the
calling thread scores (so the model, and Ctrl-C, stay on the main thread), and a writer thread finishes the
scored episodes in their order, with at most ``prefetch`` of them waiting. PyAV's decoding, JPEG encoding and
an accelerator's kernels release the GIL, so the wall time approaches the model's time once the model is the
slowest stage. Without ``overlap`` the same calls run one after the other in the calling thread.

What an episode's failure does is the same in both modes, and so is the output (the writer is the only thread
that writes, in episode order):

- ``expected`` exceptions (:class:`~pipeline.annotate.episode.EpisodeError`) of ``decode`` or ``score`` are the
  episode's own: ``finish`` gets them (``scored`` None) and records them; the run goes on.
- Any other exception of ``decode`` (a bug) is raised in the calling thread when that episode's turn comes, as
  the serial loop would raise it; one of ``score`` is raised where it happens. ``finish`` records its own
  episode errors; anything it raises stops the run (raised in the calling thread as soon as it is seen).
- On an exception in the calling thread (Ctrl-C included) the episodes already scored are finished first,
  as the serial loop had finished them, then it is raised; a second Ctrl-C while they are finished stops the
  writer after the episode it is on. Nothing is left running when :func:`run_stages` returns or raises.

Memory: at most ``prefetch`` episodes decoded (or being decoded) that the model has not taken, one being
scored, ``prefetch`` scored ones waiting for the writer and one being finished: ``2 * prefetch + 2``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

POLL_S = 0.1  # how often a waiting thread looks whether the run stopped
_END = object()


class _Failed:
    """An exception of the reader thread that is not the episode's own: raised in the calling thread."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def run_stages(items: Iterable[Any], *, decode: Callable[[Any], Any], score: Callable[[Any, Any], Any],
               finish: Callable[[Any, Any, BaseException | None], None], prefetch: int = 2,
               overlap: bool = True, expected: tuple[type[BaseException], ...] = (Exception,)) -> None:
    """Decode, score and finish every item, in order (see the module's docstring)."""
    if not overlap:
        for item in items:
            try:
                scored, error = score(item, decode(item)), None
            except expected as exc:
                scored, error = None, exc
            finish(item, scored, error)
        return
    if not isinstance(prefetch, int) or prefetch < 1:
        raise ValueError(f"prefetch={prefetch!r} must be an integer >= 1")
    _Overlapped(decode, score, finish, prefetch, expected).run(list(items))


class _Overlapped:
    def __init__(self, decode, score, finish, prefetch: int, expected) -> None:
        self.decode, self.score, self.finish, self.expected = decode, score, finish, expected
        self.ahead = threading.Semaphore(prefetch)  # decoded (or being decoded) and not taken by the model
        self.decoded: queue.Queue = queue.Queue()  # bounded by ``ahead``
        self.scored: queue.Queue = queue.Queue(maxsize=prefetch)
        self.stop = threading.Event()  # the reader decodes no further
        self.abort = threading.Event()  # the writer finishes no further
        self.writer_error: BaseException | None = None

    # ---- the threads --------------------------------------------------------------------------------
    def _read(self, items: list) -> None:
        try:
            for item in items:
                while not self.ahead.acquire(timeout=POLL_S):
                    if self.stop.is_set():
                        return
                if self.stop.is_set():
                    return
                try:
                    self.decoded.put((item, self.decode(item), None))
                except self.expected as exc:
                    self.decoded.put((item, None, exc))
            self.decoded.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, raised there
            self.decoded.put(_Failed(exc))

    def _write(self) -> None:
        try:
            while True:
                entry = self.scored.get()
                if entry is _END or self.abort.is_set():
                    return
                self.finish(*entry)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, raised there
            self.writer_error = exc
            self.stop.set()

    # ---- the calling thread -------------------------------------------------------------------------
    def _check_writer(self) -> None:
        if self.writer_error is not None:
            raise self.writer_error

    def _next_decoded(self):
        while True:
            self._check_writer()
            try:
                return self.decoded.get(timeout=POLL_S)
            except queue.Empty:
                continue

    def _hand_on(self, entry) -> None:
        while True:
            self._check_writer()
            try:
                self.scored.put(entry, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def run(self, items: list) -> None:
        reader = threading.Thread(target=self._read, args=(items,), name="annotate-decode", daemon=True)
        writer = threading.Thread(target=self._write, name="annotate-write", daemon=True)
        reader.start()
        writer.start()
        try:
            while (entry := self._next_decoded()) is not _END:
                if isinstance(entry, _Failed):
                    raise entry.exc
                self.ahead.release()
                item, decoded, error = entry
                entry = None
                scored = None
                if error is None:
                    try:
                        scored = self.score(item, decoded)
                    except self.expected as exc:
                        error = exc
                decoded = None
                self._hand_on((item, scored, error))
            self._hand_on(_END)
            writer.join()
            self._check_writer()
        except BaseException:
            self.stop.set()
            self._wind_down(writer)
            raise
        finally:
            self.stop.set()
            _join(reader)

    def _wind_down(self, writer: threading.Thread) -> None:
        """After an exception here: let the writer finish what was scored (the serial loop had), then stop it;
        a Ctrl-C meanwhile stops it after the episode it is on."""
        if self.writer_error is None:
            try:
                while writer.is_alive():
                    try:
                        self.scored.put(_END, timeout=POLL_S)
                        break
                    except queue.Full:
                        continue
                while writer.is_alive():
                    writer.join(timeout=POLL_S)
                return
            except KeyboardInterrupt:
                pass
        self.abort.set()
        while writer.is_alive():
            try:  # wake a writer waiting for work
                self.scored.put_nowait(_END)
            except queue.Full:
                pass
            writer.join(timeout=POLL_S)


def _join(thread: threading.Thread) -> None:
    """Wait for ``thread``; a Ctrl-C meanwhile is kept for after the wait (the thread is at most one stage
    call away from seeing the stop)."""
    interrupted = None
    while thread.is_alive():
        try:
            thread.join(timeout=POLL_S)
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted
