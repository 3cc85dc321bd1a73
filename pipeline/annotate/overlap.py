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
  writer after the episode it is on. Nothing is left running when :func:`run_stages` returns or raises
  (short of a third Ctrl-C, which stops waiting for the reader's decode in progress).

Memory: at most ``prefetch`` episodes decoded (or being decoded) that the model has not taken, one being
scored (or handed over), ``prefetch`` scored ones waiting for the writer and one being finished:
``2 * prefetch + 2`` episodes' frames.

Threads suffice for decoding, JPEG encoding and shard writing, whose heavy parts run outside the GIL. Work
that holds the GIL for long (matplotlib drawing a plot: about 0.1 s of pure Python per episode) delays every
wake-up of the model's thread; :class:`SideProcess` runs such calls in a worker process instead.
"""

from __future__ import annotations

import os
import pickle
import queue
import select
import signal
import subprocess
import sys
import threading
import traceback
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
            reader.join()  # at most one decode away (a Ctrl-C meanwhile leaves it to end with the process)

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


# ------------------------------------------------------------------------------------------------ side process
class SideProcessError(RuntimeError):
    """A call run by a :class:`SideProcess` failed (the message holds its traceback), or the process died."""


class SideProcess:
    """Calls run one after the other in a worker process: ``python -c`` with this process's ``sys.path``, so it
    needs no ``if __name__ == "__main__"`` guard from the caller's script (as multiprocessing's spawn would)
    and inherits no threads, locks or accelerator state. It runs in its own process group, so a Ctrl-C at the
    terminal reaches this process only (which decides what stops), and it ends when its input closes (this
    process ending, killed or not, closes it). Calls and their arguments are pickled (functions by name).

    :meth:`submit` hands a call over, first waiting for the oldest one once ``max_pending`` are unfinished; it
    raises :class:`SideProcessError` for a finished call that failed. :meth:`close` waits for every call and
    raises the first failure; :meth:`abort` lets the worker end after the calls handed over (killed after
    ``timeout`` seconds). Use from one thread at a time.
    """

    def __init__(self, max_pending: int = 2, initializer: Callable[[], None] | None = None,
                 name: str = "worker process") -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending={max_pending} must be >= 1")
        self.max_pending, self.name, self.pending = max_pending, name, 0
        replies, reply_end = os.pipe()
        code = (f"import sys; sys.path[:0] = {list(sys.path)!r}; "
                f"from pipeline.annotate.overlap import _serve; _serve({reply_end})")
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, pass_fds=(reply_end,),
                                         process_group=0)
        except BaseException:
            os.close(replies)
            raise
        finally:
            os.close(reply_end)
        self.replies = replies
        if initializer is not None:
            self.submit(initializer)

    def submit(self, fn: Callable, *args, **kwargs) -> None:
        while self.pending >= self.max_pending:
            self._reap_one()
        while self.pending and select.select([self.replies], [], [], 0)[0]:
            self._reap_one()
        data = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(len(data).to_bytes(8, "little") + data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self._died() from None
        self.pending += 1

    def _reap_one(self) -> None:
        header = _read_exact(self.replies, 8)
        if len(header) < 8:
            raise self._died()
        reply = pickle.loads(_read_exact(self.replies, int.from_bytes(header, "little")))
        self.pending -= 1
        if reply is not None:
            raise SideProcessError(f"a call in the {self.name} failed:\n{reply}")

    def _died(self) -> SideProcessError:
        return SideProcessError(f"the {self.name} (pid {self.proc.pid}) ended early, status {self.proc.wait()}")

    def close(self) -> None:
        try:
            while self.pending:
                self._reap_one()
        finally:
            self.abort()

    def abort(self, timeout: float = 10.0) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.replies >= 0:
            os.close(self.replies)
            self.replies = -1
        self.pending = 0


def _read_exact(fd: int, n: int) -> bytes:
    """``n`` bytes from ``fd``, fewer only at its end."""
    data = b""
    while len(data) < n:
        more = os.read(fd, n - len(data))
        if not more:
            break
        data += more
    return data


def _serve(reply_fd: int) -> None:
    """The worker process of :class:`SideProcess`: run each pickled call from stdin, reply None or the
    traceback of its failure; end when stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    jobs = sys.stdin.buffer
    while len(header := jobs.read(8)) == 8:
        fn, args, kwargs = pickle.loads(jobs.read(int.from_bytes(header, "little")))
        try:
            fn(*args, **kwargs)
            reply = None
        except BaseException as exc:  # noqa: BLE001 - reported to the caller with its traceback
            reply = "".join(traceback.format_exception(exc))
        data = pickle.dumps(reply)
        view = memoryview(len(data).to_bytes(8, "little") + data)
        while view:
            view = view[os.write(reply_fd, view):]
