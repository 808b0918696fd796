"""Progress of a long run, on stderr: a bar on a terminal, a few lines in a log.

A nightly job redirected to a file must not fill it with carriage-return
frames, and the summary on stdout must stay clean, whatever the scheduler.
:class:`Progress` draws a bar (redrawn at most once a second) only when its
stream is a terminal; otherwise it writes one plain line at each quarter of
the work.  Nothing is written before the run has taken ``minimum`` seconds,
so short runs stay silent.
"""

from __future__ import annotations

import sys
import threading
import time

#: Milestones written when the stream is not a terminal (fractions of the work).
LOG_MILESTONES = (0.25, 0.5, 0.75, 1.0)


class Progress:
    """Report ``done`` of ``total`` units of work to ``out`` (default stderr).

    Parameters
    ----------
    total : int
    minimum : float
        Seconds before anything is shown.
    out : text stream, optional
        Default ``sys.stderr`` (read when the run starts, so tests can capture it).
    label : str
    """

    def __init__(self, total: int, minimum: float = 5.0, out=None, label: str = "stress run"):
        self.total = max(int(total), 1)
        self.minimum = float(minimum)
        self.out = out if out is not None else sys.stderr
        self.label = label
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.done = 0
        self._drawn_at = 0.0
        self._next_milestone = 0
        self._lock = threading.Lock()
        self._shown = False

    def update(self, done: int) -> None:
        """Record ``done`` units finished (thread-safe; cheap when nothing is due)."""
        with self._lock:
            self.done = min(int(done), self.total)
            elapsed = time.perf_counter() - self.start
            if elapsed < self.minimum:
                return
            frac = self.done / self.total
            if self.tty:
                if elapsed - self._drawn_at >= 1.0 or self.done == self.total:
                    self._drawn_at = elapsed
                    bar = "#" * int(40 * frac)
                    self.out.write(f"\r[{bar:<40}] {100 * frac:3.0f}% {self.label} | {elapsed:6.1f} s")
                    self.out.flush()
                    self._shown = True
                return
            while self._next_milestone < len(LOG_MILESTONES) and frac >= LOG_MILESTONES[self._next_milestone]:
                self._next_milestone += 1
                self.out.write(f"[progress] {self.label}: {100 * frac:.0f}% done after {elapsed:.1f} s\n")
                self.out.flush()

    def close(self) -> None:
        """End the bar's line (a terminal) so later output starts on a fresh line."""
        with self._lock:
            if self.tty and self._shown:
                self.out.write("\n")
                self.out.flush()


def dask_callback(progress: Progress):
    """A dask local-scheduler callback that reports finished tasks to ``progress``."""
    from dask.callbacks import Callback

    class _Tasks(Callback):
        def _start_state(self, dsk, state):
            self._total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
            progress.total = max(self._total, 1)

        def _posttask(self, key, result, dsk, state, worker_id):
            progress.update(len(state["finished"]))

        def _finish(self, dsk, state, errored):
            if not errored:
                progress.update(progress.total)

    return _Tasks()


def wait_for_futures(futures, progress: Progress, poll: float = 1.0) -> None:
    """Block until every ``distributed`` future is done, reporting the share finished."""
    from distributed import wait

    while True:
        try:
            wait(futures, timeout=poll)
            break
        except TimeoutError:
            progress.update(sum(f.done() for f in futures))
    progress.update(progress.total)
