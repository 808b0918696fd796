"""What a row block keeps of its tails for attribution: tail scenarios and tail sums of factor P&L.

The Euler allocation of a pool's ES (docs/methodology.md, section 16) needs,
for every risk factor the pool's holdings touch, the sum of that factor's
P&L over the pool's m tail scenarios (m at ``margin.confidence``).  The
block's last task has both at hand: the kernel's final tail (each kept loss
with its scenario, :meth:`~.kernels.TailKernel.finish`) and every chunk's
factor P&L (alive for the block's recounts anyway; read scenario-major,
``[chunk x factors]``, so a scenario's factors share a few cache lines: the
fused kernel's ``[factors x chunk]`` chunks get such a copy once per chunk,
:func:`scenario_major`).  So the sums are taken there, scenario by
scenario in increasing index order (the same sum whatever the chunking),
and no [rows x m] index matrix ever leaves the block: a block returns
``[rows x k]`` tail scenarios and one float per (row, factor) of its pattern.

Ranks: a larger loss first, equal losses by the lower scenario index
(:func:`~.kernels.fused._ranks_below`), as the kernels keep them.
"""

from __future__ import annotations

import numba
import numpy as np

from .kernels.fused import _ranks_below, _select_top_indexed


@numba.njit(nogil=True, cache=True)
def rank_tails(values, index, rows, m, k, tail, first):
    """For each row ``rows[i]`` of a kernel's final tail (``values``, ``index`` ``[block x kept]``, any order):
    its m highest-ranked scenarios in ``tail[i]`` (any order) and its k highest in ``first[i]``, in rank order."""
    kept = values.shape[1]
    a = np.empty(kept)
    ix = np.empty(kept, dtype=np.int64)
    best = np.empty(k)
    best_ix = np.empty(k, dtype=np.int64)
    for i in range(rows.size):
        r = rows[i]
        if m < kept:
            a[:] = values[r]
            ix[:] = index[r]
            _select_top_indexed(a, ix, kept, m)
            tail[i, :] = ix[:m]
        else:
            tail[i, :] = index[r, :m]
        # The k highest-ranked of the whole kept set (it holds at least the top k), by one pass keeping a
        # sorted buffer: most losses cost one comparison with the k-th best so far.
        row, rix = values[r], index[r]
        c = 0
        for j in range(kept):
            v, x = row[j], rix[j]
            if c == k and not _ranks_below(best[k - 1], best_ix[k - 1], v, x):
                continue
            p = c - 1 if c < k else k - 2
            if c < k:
                c += 1
            while p >= 0 and _ranks_below(best[p], best_ix[p], v, x):
                best[p + 1], best_ix[p + 1] = best[p], best_ix[p]
                p -= 1
            best[p + 1], best_ix[p + 1] = v, x
        first[i, :] = best_ix[:k]


@numba.njit(nogil=True, cache=True)
def by_scenario(tail, n):
    """``(start, entry)``: the rows whose tail holds scenario s are ``entry[start[s]:start[s + 1]]`` (a counting sort).

    ``tail`` and both results are ``uint32``: unsigned indices need no
    check for a negative index (numba's wraparound), which in these loops
    of one load and one store each costs about a third of their time.
    """
    one = np.uint32(1)
    start = np.zeros(n + 1, dtype=np.uint32)
    for i in range(tail.shape[0]):
        for j in range(tail.shape[1]):
            start[tail[i, j] + one] += one
    for s in range(n):
        start[s + 1] += start[s]
    fill = start[:-1].copy()
    entry = np.empty(tail.size, dtype=np.uint32)
    for i in range(tail.shape[0]):
        for j in range(tail.shape[1]):
            s = tail[i, j]
            entry[fill[s]] = i
            fill[s] += one
    return start, entry


@numba.njit(nogil=True, cache=True)
def add_chunk(start, entry, first, pnl, indptr, indices, sums):
    """Add to ``sums`` (aligned with the pattern ``indptr``/``indices`` over factors, one pattern row per tail
    row) the factor P&L ``pnl[s - first, factor]`` of every tail scenario s in this chunk, in scenario order.

    ``pnl`` is scenario-major ``[chunk x factors]``: a scenario's factors
    share a few cache lines, which every row whose tail holds it reuses.
    ``entry``, ``indptr`` and ``indices`` are ``uint32`` (:func:`by_scenario`):
    30% faster than signed indices.
    """
    for s in range(first, first + pnl.shape[0]):
        row = pnl[s - first]
        for e in range(start[s], start[s + 1]):
            i = entry[e]
            for q in range(indptr[i], indptr[i + 1]):
                sums[q] += row[indices[q]]


def explain_block(top, scenario, rows, pattern, m, k, pnls):
    """``(first [block x k], sums [pattern.nnz])`` of one row block (the module docstring).

    Parameters
    ----------
    top, scenario : numpy.ndarray [block x kept]
        The kernel's final tail: kept losses and their scenarios, any order.
    rows : numpy.ndarray of bool [block]
        Rows to explain; the others get scenario -1 in ``first``.
    pattern : scipy.sparse.csr_matrix [block x factors]
        For each row, the factors whose P&L is summed over its tail.
    m, k : int
        Tail size at the attribution's confidence and worst scenarios reported (both <= kept).
    pnls : list of arrays
        Every chunk's factor P&L ``[chunk x factors]`` (scenario-major, any backend), in scenario order.
    """
    picked = np.flatnonzero(rows)
    first = np.full((rows.size, k), -1, dtype=np.int64)
    sums = np.zeros(pattern.nnz)
    if picked.size == 0:
        return first, sums
    n = sum(p.shape[0] for p in pnls)
    if max(n, picked.size * m) >= 2**32:
        raise ValueError("a row block's tails exceed the uint32 indices of the attribution's tail sums")
    tail = np.empty((picked.size, m), dtype=np.uint32)
    got = np.empty((picked.size, k), dtype=np.int64)
    rank_tails(np.ascontiguousarray(top), np.ascontiguousarray(scenario), picked.astype(np.int64), m, k, tail, got)
    first[picked] = got
    sub = pattern[picked]
    start, entry = by_scenario(tail, n)
    part = np.zeros(sub.nnz)
    indptr, indices = sub.indptr.astype(np.uint32), sub.indices.astype(np.uint32)
    s0 = 0
    for p in pnls:
        p = _host(p)
        add_chunk(start, entry, s0, p, indptr, indices, part)
        s0 += p.shape[0]
    # The picked rows' sums, back in the block pattern's order (rows not picked have empty pattern rows).
    at = np.repeat(np.arange(rows.size), np.diff(pattern.indptr))
    keep = rows[at]
    sums[keep] = part
    return first, sums


def scenario_major(pnl_t):
    """A ``[factors x chunk]`` P&L chunk (the fused kernel's) as a C-contiguous ``[chunk x factors]`` copy."""
    return np.ascontiguousarray(np.asarray(pnl_t).T)


def _host(p):
    """A chunk's P&L as a NumPy array (a device array is copied to the host)."""
    if isinstance(p, np.ndarray):
        return p
    from ..backend import get_backend
    from array_api_compat import is_cupy_array, is_jax_array

    name = "cupy" if is_cupy_array(p) else "jax" if is_jax_array(p) else "array_api_strict"
    return np.asarray(get_backend(name).to_numpy(p))
