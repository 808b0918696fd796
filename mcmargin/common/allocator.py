"""Keep freed memory in the process: fresh pages are what large runs pay most for outside the kernels.

Also (:func:`collect_less_often`) the batch jobs' setting of the cyclic garbage collector, and
(:func:`huge_pages_for_kernels_only`, :func:`huge_pages`) where NumPy asks for huge pages.

A stress run allocates and frees the same large arrays over and over (each
row block's tail state, each chunk's P&L, the blocks' results).  By default
glibc's ``malloc`` hands arrays above a threshold to ``mmap`` and gives them
back to the kernel when freed, trims freed memory at the top of its heaps,
and gives each worker thread a heap of its own that it creates and deletes
as it fills and empties, so the next array of the same size is fresh memory
again: every page costs a fault and a zeroing in the kernel.  On this
project's 2-core virtual machine, 100,000 accounts x 100,000 scenarios took
460,000 such faults, 2.6 s of system time (benchmarks/RESULTS.md).

:func:`keep_freed_memory` keeps every array on one heap that is never
trimmed, so freed arrays go back to ``malloc``'s free lists and are reused.
The price: the process keeps its peak memory until it exits, so the batch
jobs call it at start (:func:`jobs._cli.launch`) and the long-lived server
does not; from Python, call it yourself if you want the same.  It changes
no figure.  It does nothing where the C library is not glibc, and leaves a
setting alone that the user set through glibc's own environment variables
(``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_MAX_``, ``MALLOC_ARENA_MAX``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os

#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
#: Freed memory at the top of a heap is returned only beyond this (the largest value mallopt takes).
TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse; True when the settings took effect.

    Changes no figure, only where arrays' memory comes from.
    """
    name = ctypes.util.find_library("c")
    if not name or os.uname().sysname != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):     # not glibc (musl has no mallopt)
        return False
    done = True
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        done &= mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if "MALLOC_MMAP_MAX_" not in os.environ:      # no array of its own mapping, returned to the kernel when freed
        done &= mallopt(_M_MMAP_MAX, 0) == 1
    if "MALLOC_ARENA_MAX" not in os.environ:      # one heap: what one worker thread frees, the next reuses
        done &= mallopt(_M_ARENA_MAX, 1) == 1
    return bool(done)


#: Allocations of container objects between two collections of the youngest generation (CPython's default
#: is 700), and collections of each generation between two of the next (CPython's 10 and 10, kept: with
#: 50 and 100 a million-account run held its cyclic garbage, arrays included, long enough to cost 2 s
#: more of fresh pages).
GC_THRESHOLDS = (100_000, 10, 10)


def collect_less_often() -> tuple:
    """Raise the cyclic garbage collector's thresholds (:data:`GC_THRESHOLDS`); return the previous ones.

    A run imports numba, xarray, pandas and dask and builds task graphs and
    datasets: millions of container objects, which the collector's default
    thresholds make it walk again and again (about 2% of a 100,000 x 100,000
    run's CPU time, ``perf``: ``gc_collect_main``, ``visit_decref``).
    Reference cycles are still collected, only less often.  Changes no
    figure.
    """
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    return previous


#: Whether the batch jobs moved NumPy's huge pages to the kernels (:func:`huge_pages_for_kernels_only`).
_KERNELS_ONLY = False


def _numpy_huge_pages(enabled: bool) -> bool | None:
    """NumPy's switch for asking the kernel for transparent huge pages (madvise) on every array of 4 MiB or
    more; the previous setting, or None where this NumPy has no such switch (private, stable since 1.20)."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:          # pragma: no cover - another NumPy
        return None
    return bool(_set_madvise_hugepage(enabled))


def huge_pages_for_kernels_only() -> bool:
    """Stop NumPy asking for huge pages, except inside :func:`huge_pages` (the engine); True if it took effect.

    On a kernel that compacts memory to find a huge page when asked (the
    default ``defrag`` setting, ``madvise``), each huge page costs a stall
    at its first touch.  The engine's random reads of its P&L and
    exposures gain more than that from fewer TLB misses; building the book,
    the margin figures and the dataset touch their arrays once and only pay:
    a million-account run's system time went from 7.8 s to 3.5 s and its
    wall time down by about 3 s with huge pages in the engine only
    (benchmarks/RESULTS.md), while NumPy's default everywhere and no huge
    pages at all were both slower.  Leaves ``NUMPY_MADVISE_HUGEPAGE``, when the
    user set it, alone.  Changes no figure.
    """
    global _KERNELS_ONLY
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ or _numpy_huge_pages(False) is None:
        return False
    _KERNELS_ONLY = True
    return True


@contextlib.contextmanager
def huge_pages():
    """Within: NumPy's huge pages for new large arrays, as by default (after :func:`huge_pages_for_kernels_only`)."""
    if not _KERNELS_ONLY:
        yield
        return
    previous = _numpy_huge_pages(True)
    try:
        yield
    finally:
        _numpy_huge_pages(previous)


def with_huge_pages(function):
    """Decorator: ``function`` runs within :func:`huge_pages` (the engine's entry point)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with huge_pages():
            return function(*args, **kwargs)
    return wrapper
