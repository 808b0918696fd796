"""What every job shares: one exit-status convention and no tracebacks for user errors.

Exit status of every job:

- 0: done;
- 2: bad input or config (a file, row and column, or a config key, is named;
  an unknown or badly typed override, reported by Hydra, counts too);
- 3: the run's figures failed the final check (a non-finite figure), so
  nothing was written;
- 1: a bug: Hydra prints the error (``HYDRA_FULL_ERROR=1`` for the trace).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading

from mcmargin.errors import McMarginError, ResultError

#: Exit status of a user error (bad input, bad config) and of a failed final check.
EXIT_USER_ERROR, EXIT_RESULT_CHECK = 2, 3

_entered = False
#: Set by :func:`launch` for a batch job (``keep_memory``).
_batch = False


@contextlib.contextmanager
def user_errors(cfg=None):
    """Inside a job's task function: a :class:`McMarginError` is printed on one line and exits 2 (or 3).

    With the job's ``cfg``, its ``logging.format`` (``human`` or ``json``,
    :mod:`mcmargin.common.logs`) is applied first.  Every job builds xarray
    datasets: xarray is told to test for dask arrays without importing
    ``dask.array`` (:func:`mcmargin.common.lazy_dask.check_dask_arrays_lazily`, 0.23 s a run).  A batch
    job (:func:`launch`) has NumPy ask for huge pages in the engine only from here on
    (:func:`mcmargin.common.allocator.huge_pages_for_kernels_only`).
    """
    global _entered
    _entered = True
    try:
        from mcmargin.common.lazy_dask import check_dask_arrays_lazily

        check_dask_arrays_lazily()
        if _batch:
            from mcmargin.common.allocator import huge_pages_for_kernels_only

            huge_pages_for_kernels_only()
        if cfg is not None:
            from mcmargin.common.logs import set_log_format

            set_log_format(str((cfg.get("logging") or {}).get("format", "human")))
        yield
    except McMarginError as exc:
        print(f"mcmargin: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_RESULT_CHECK if isinstance(exc, ResultError) else EXIT_USER_ERROR)


def output_paths(cfg):
    """``(dataset path, report path or None)`` of a job writing ``output.path``, both checked before any work.

    The path is checked as given and where the job writes it (inside a
    sweep's job directory); the report beside it unless ``output.report=false``.
    """
    from mcmargin.output.store import check_output_path
    from mcmargin.pipeline.runtime import job_output_path

    check_output_path(cfg.output.path)  # before any work: never compute what cannot be written
    path = check_output_path(job_output_path(cfg.output.path))
    if not cfg.output.get("report", True):
        return path, None
    from mcmargin.report import report_path_for
    from mcmargin.report.page import check_report_path

    return path, check_report_path(report_path_for(path), key="output.report")


def run_and_write(cfg, run, write) -> tuple:
    """The body of a job that writes one dataset: check its output and report paths, hold the run lock on
    the output path (``output.lock_wait``), ``ds = run(cfg)``, ``write(ds, path)`` (a list of the paths it
    wrote) as the ``write`` stage, then the report.  Returns ``(ds, paths written)``."""
    from mcmargin.common.logs import stage
    from mcmargin.common.settings import real_number
    from mcmargin.output.store import run_lock

    path, report = output_paths(cfg)
    wait = real_number(cfg.output.get("lock_wait", 0), "output.lock_wait", 0.0)
    with run_lock(path, wait):  # one run per output path at a time (mcmargin/output/store.py)
        ds = run(cfg)
        with stage("write", path=str(path)):
            written = write(ds, path)
        if report is not None:
            written.append(write_report_stage(ds, report))
    return ds, written


def write_report_stage(ds, report, **options) -> str:
    """Write the dataset's HTML report to ``report`` as the job's ``report`` stage; returns its path."""
    from mcmargin.common.logs import stage
    from mcmargin.report import write_report

    with stage("report", path=str(report)):
        return str(write_report(ds, report, **options))


def launch(main, keep_memory: bool = True) -> None:
    """Run a ``hydra.main`` entry point; a config Hydra refuses before the job starts exits 2, not 1.

    Hydra exits 1 both for a config it cannot compose (an unknown key or
    option, a bad override: user errors) and for an exception in the job
    (a bug).  The job marks its start (:func:`user_errors`), so a 1 before
    it can only be the config's.  With ``keep_memory`` (a batch job, not a
    server) freed memory is kept for reuse, which spares large runs their
    page faults (:func:`mcmargin.common.allocator.keep_freed_memory`), and
    the garbage collector runs less often (:func:`~mcmargin.common.allocator.collect_less_often`),
    NumPy asks for huge pages in the engine only
    (:func:`~mcmargin.common.allocator.huge_pages_for_kernels_only`), and a
    job that ends well leaves without tearing the interpreter down
    (:func:`exit_without_teardown`).
    """
    global _batch
    if keep_memory:
        from mcmargin.common.allocator import collect_less_often, keep_freed_memory

        keep_freed_memory()
        collect_less_often()
        _batch = True       # huge pages are set when the job starts (user_errors): --help needs no NumPy
    sys.stdout = ReaderMayLeave(sys.stdout)
    try:
        main()
    except SystemExit as exc:
        if exc.code == 1 and not _entered:
            sys.exit(EXIT_USER_ERROR)
        raise
    if keep_memory and _entered:     # a job ran (not --help or --cfg): its many objects need no teardown
        exit_without_teardown()


class ReaderMayLeave:
    """A job's stdout that drops what is left once its reader has gone (``python -m jobs.stress ... | head``).

    The summary comes after everything is written; a reader that stops
    early (a closed pipe) is no failure of the job, so instead of a
    ``BrokenPipeError`` traceback and status 1 the rest of the summary is
    dropped (stdout then points at ``/dev/null``, so no later flush can
    fail either) and the job's own status stands.
    """

    def __init__(self, stream):
        self._stream = stream
        self._gone = False

    def write(self, text):
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self):
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self):
        self._gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def exit_without_teardown() -> None:
    """Exit 0 as the interpreter would, less the teardown of every module and object.

    Once a batch job has written everything, freeing its objects one by one
    is all that is left: 0.45 s of a 100,000-account run (benchmarks/RESULTS.md).
    What an exit must still do is done first: non-daemon threads are joined
    and the ``threading`` exit hooks run (``threading._shutdown``, as at a
    normal exit), then every ``atexit`` function (among them
    ``logging.shutdown``, which flushes and closes log files), then stdout
    and stderr are flushed; a flush that fails exits 120, as Python does.
    Under a profiler, tracer or debugger (``sys.getprofile``, ``sys.gettrace``)
    the exit is the normal one, so that they can report after the job.
    """
    shutdown = getattr(threading, "_shutdown", None)
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_exit_functions is None or sys.getprofile() or sys.gettrace():
        return                                                # not CPython, or watched: the normal exit
    shutdown()
    run_exit_functions()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        os._exit(120)
    os._exit(0)
