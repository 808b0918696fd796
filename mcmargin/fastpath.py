"""Compiled CPU fast path: fused aggregation and tail selection (Numba).

The reference path (:func:`mcmargin.tails.fold_chunk`) materialises the
losses of a block of rows for a whole chunk, then selects.  Here each row's
losses for a tile of scenarios are accumulated in a small buffer that stays
in L1 cache and are compared at once with the row's running threshold (the
smallest of its current m worst losses), so the loss matrix never travels
through main memory and, once the threshold is set, a loss costs one
comparison.  Candidates above the threshold are staged; when m have
accumulated the row's 2m values are partitioned back to the top m.

Exactness: every loss is formed by the same sum, in the order of the
row's holdings, as the reference; the kept set is the exact top m.

State per row block (:class:`FastTail`): ``values[rows, 2m]`` (top-m set
in the first m slots, staged candidates after), ``count[rows]`` (values
held), ``threshold[rows]``.
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np

TILE = 512  # scenarios per buffer: 4 KiB of float64, resident in L1


@dataclasses.dataclass
class FastTail:
    values: np.ndarray
    count: np.ndarray
    threshold: np.ndarray
    m: int

    @classmethod
    def empty(cls, rows: int, m: int) -> "FastTail":
        return cls(np.empty((rows, 2 * m)), np.zeros(rows, dtype=np.int64), np.full(rows, -np.inf), m)

    def top(self) -> np.ndarray:
        """The kept worst losses per row, ``[rows x min(m, seen)]`` in any order."""
        _compact(self.values, self.count, self.threshold, self.m)
        k = int(self.count.min()) if self.count.size else 0
        return self.values[:, :k]


@numba.njit(nogil=True, cache=True)
def _compact_row(vals, n, m):
    """Keep the m largest of vals[:n] in vals[:m]; return the new count and threshold."""
    if n <= m:
        thr = -np.inf
        if n == m:
            thr = vals[:m].min()
        return n, thr
    part = np.partition(vals[:n], n - m)
    vals[:m] = part[n - m:]
    return m, vals[:m].min()


@numba.njit(nogil=True, cache=True)
def _compact(values, count, threshold, m):
    for r in range(values.shape[0]):
        count[r], threshold[r] = _compact_row(values[r], count[r], m)


@numba.njit(nogil=True, cache=True)
def fold_chunk_fused(indptr, indices, data, pnl_t, values, count, threshold, m, tile):
    """Fold the losses ``-(H @ pnl_t)`` of one chunk into the row tails, in place.

    ``pnl_t`` is ``[columns x scenarios]``, C-contiguous, so each holding adds
    a contiguous row slice to the buffer (vectorised by LLVM).
    """
    n_rows = indptr.size - 1
    n = pnl_t.shape[1]
    buf = np.empty(tile)
    cap = 2 * m
    for s0 in range(0, n, tile):
        w = min(tile, n - s0)
        for r in range(n_rows):
            for s in range(w):
                buf[s] = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                q = data[p]
                col = pnl_t[indices[p]]
                for s in range(w):
                    buf[s] += q * col[s0 + s]
            c = count[r]
            thr = threshold[r]
            row = values[r]
            for s in range(w):
                x = -buf[s]
                if c < m or x > thr:
                    row[c] = x
                    c += 1
                    if c == cap or (c == m and thr == -np.inf):
                        c, thr = _compact_row(row, c, m)
            count[r] = c
            threshold[r] = thr
