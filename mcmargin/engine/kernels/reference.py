"""The reference fold: array-API code for every backend (the definition the fused kernel must equal).

Each chunk's losses of a block of rows are materialised, ``-(H @ pnl.T)``,
appended to the kept tail and cut back to the top m with the backend's
top-k primitive.  The top m of a union is the top m of the union of top
m's, so the result is exact whatever the chunking.

With their scenario indices (:func:`fold_chunk_indexed`, what the kernel
folds), the tail is kept in rank order instead: a stable sort of the kept
tail followed by the chunk, by loss descending, ranks equal losses by the
lower scenario index first (the kept tail holds only earlier scenarios
and is itself in that order), the definition the fused kernel must equal.
"""

from __future__ import annotations

import numpy as np

from ...backend import get_backend
from .base import TailState


def fold_chunk(backend, tail, holdings, pnl, m: int):
    """Fold one scenario chunk into the tails of a block of rows.

    Parameters
    ----------
    backend : Backend
    tail : array [rows x k] or None
        Current worst losses per row (k <= m, any order); None before the first chunk.
    holdings : sparse or dense matrix [rows x columns] on the backend
    pnl : array [scenarios x columns]
        P&L per unit of each column.
    m : int
        Tail size to keep.

    Returns
    -------
    array [rows x min(m, scenarios seen)]
    """
    xp = backend.xp
    loss = -(holdings @ pnl.T)
    if tail is not None:
        loss = xp.concat([tail, loss], axis=1)
    return backend.top_k(loss, min(m, loss.shape[1]))


def fold_chunk_indexed(backend, tail, holdings, pnl, m: int, offset: int):
    """:func:`fold_chunk` keeping each loss's scenario: ``(values, index)`` [rows x min(m, seen)], in rank order.

    ``tail`` is the previous ``(values, index)`` (or None before the first
    chunk); the chunk's first scenario has index ``offset``.  Rank order:
    losses descending, equal losses by the lower scenario first.
    """
    xp = backend.xp
    loss = -(holdings @ pnl.T)
    index = xp.broadcast_to(xp.arange(offset, offset + loss.shape[1], dtype=xp.int64)[None, :], loss.shape)
    if tail is not None:
        loss = xp.concat([tail[0], loss], axis=1)
        index = xp.concat([tail[1], index], axis=1)
    order = xp.argsort(-loss, axis=1, stable=True)[:, :min(m, loss.shape[1])]
    return xp.take_along_axis(loss, order, axis=1), xp.take_along_axis(index, order, axis=1)


def count_exceedances(backend, holdings, pnl, limits):
    """``(hits, excess)`` [rows x K] of one chunk: losses above each limit (NaN: never), summed excess."""
    xp = backend.xp
    loss = -(holdings @ pnl.T)
    hits, excess = [], []
    for k in range(limits.shape[1]):
        t = limits[:, k:k + 1]
        over = loss > t
        hits.append(xp.sum(xp.astype(over, xp.float64), axis=1))
        excess.append(xp.sum(xp.where(over, loss - t, 0.0), axis=1))
    return (np.stack([np.asarray(backend.to_numpy(h), dtype=float) for h in hits], axis=1),
            np.stack([np.asarray(backend.to_numpy(e), dtype=float) for e in excess], axis=1))


class ReferenceKernel:
    """:class:`~.base.TailKernel` over :func:`fold_chunk`, on the backend named ``backend_name``."""

    label = "array-api reference"
    transposed = False

    def __init__(self, backend_name: str = "numpy"):
        self.backend_name = backend_name

    def plan(self, m, n_scenarios, chunk, holdings):
        return None

    @staticmethod
    def row_bytes(m, chunk):
        """About 2m kept losses and a chunk of losses [rows x chunk] per row, float64."""
        return 8 * (2 * m + chunk)

    def prepare(self, holdings):
        """The block's holdings as a sparse (dense for array-api-strict) matrix of the backend, moved once."""
        b = get_backend(self.backend_name)
        if b.name == "numpy":
            return holdings
        if b.name == "cupy":
            import cupyx.scipy.sparse as csp
            return csp.csr_matrix(holdings)
        if b.name == "jax":
            from jax.experimental import sparse as jsp
            return jsp.BCSR.from_scipy_sparse(holdings)
        return b.asarray(holdings.toarray())

    def start(self, holdings, first_pnl, m, plan, limits=None):
        return None          # limits are counted at the end (:meth:`count`)

    def fold(self, state, holdings, pnl, m):
        tail, offset = (None, 0) if state is None else ((state.values, state.index), state.offset)
        values, index = fold_chunk_indexed(get_backend(self.backend_name), tail, holdings, pnl, m, offset)
        return TailState(values, None, None, m, index=index, offset=offset + pnl.shape[0])

    def finish(self, state, holdings, pnls, m):
        b = get_backend(self.backend_name)
        top = np.asarray(b.to_numpy(state.values), dtype=np.float64)
        return top, np.asarray(b.to_numpy(state.index), dtype=np.int64), 0

    @staticmethod
    def sort_rows(tails):
        """NumPy's sort of each row (the definition the fused kernel's radix sort matches)."""
        return np.sort(tails, axis=1)

    def count(self, holdings, rows, pnls, limits):
        """Counted over the whole block (the reference keeps no row subsets on the device), then cut to ``rows``."""
        b = get_backend(self.backend_name)
        full = np.full((holdings.shape[0], limits.shape[1]), np.nan)
        full[rows] = limits
        device_limits = b.asarray(full)
        hits, excess = np.zeros(full.shape), np.zeros(full.shape)
        for p in pnls:
            h, e = count_exceedances(b, holdings, p, device_limits)
            hits += h
            excess += e
        return hits[rows], excess[rows]
