"""Freed memory is kept for reuse (mcmargin.common.allocator): the same large array twice costs one set of page faults."""

import resource
import sys

import numpy as np
import pytest

from mcmargin.common.allocator import GC_THRESHOLDS, collect_less_often, keep_freed_memory


def _faults_filling(n):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.empty(n)
    a.fill(1.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del a
    return faults


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_freed_array_is_reused_without_page_faults():
    if not keep_freed_memory():
        pytest.skip("not glibc")
    n = 3_000_000                                   # 24 MB: above glibc's default mmap threshold, so mapped and unmapped by default
    _faults_filling(n)
    first, again = _faults_filling(n), _faults_filling(n)
    assert again <= 64 and first <= 64              # reused: its 5,860 pages are not faulted in again



def test_collector_thresholds_are_raised_and_cycles_still_collected():
    import gc

    previous = collect_less_often()
    try:
        assert gc.get_threshold() == GC_THRESHOLDS
        gc.collect()
        before = gc.get_count()[0]
        for _ in range(GC_THRESHOLDS[0] // 2):    # half the threshold of container allocations: no collection yet
            cycle = []
            cycle.append(cycle)
        assert gc.get_count()[0] >= before + GC_THRESHOLDS[0] // 2 - 10
        del cycle
        assert gc.collect() >= GC_THRESHOLDS[0] // 2  # and the cycles are still found and freed
    finally:
        gc.set_threshold(*previous)


_HUGE_PAGES = """
import os, sys
from numpy._core.multiarray import _set_madvise_hugepage as switch
from mcmargin.common import allocator
from mcmargin.engine.graph import compute_tails
moved = allocator.huge_pages_for_kernels_only()
def now():
    previous = switch(True); switch(previous); return previous
seen = [moved, now()]
with allocator.huge_pages():
    seen.append(now())
seen.append(now())
inside = allocator.with_huge_pages(now)
seen.append(inside()); seen.append(now())
seen.append(compute_tails.__wrapped__.__name__)
print(seen)
"""


@pytest.mark.parametrize("env, want", [({}, "[True, False, True, False, True, False, 'compute_tails']"),
                                       ({"NUMPY_MADVISE_HUGEPAGE": "1"},
                                        "[False, True, True, True, True, True, 'compute_tails']")],
                         ids=["jobs-setting", "user-setting-kept"])
def test_numpy_asks_for_huge_pages_in_the_engine_only(env, want):
    """After huge_pages_for_kernels_only (the batch jobs), NumPy's switch is off except within huge_pages (the
    engine's compute_tails); a NUMPY_MADVISE_HUGEPAGE the user set is left alone."""
    import os
    import subprocess

    run = subprocess.run([sys.executable, "-c", _HUGE_PAGES], capture_output=True, text=True,
                         env={**{k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}, **env})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == want
