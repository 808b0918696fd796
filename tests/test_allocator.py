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
