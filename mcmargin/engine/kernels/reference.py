"""The reference fold: array-API code for every backend (the definition the fused kernel must equal).

Each chunk's losses of a block of rows are materialised, ``-(H @ pnl.T)``,
appended to the kept tail and cut back to the top m with the backend's
top-k primitive.  The top m of a union is the top m of the union of top
m's, so the result is exact whatever the chunking.
"""

from __future__ import annotations

import numpy as np

from ...backend import get_backend
from .base import TailState


def fold_chunk(backend, tail, holdings, pnl, m: int, limits=None, hits=None, excess=None):
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
    limits, hits, excess : arrays [rows x K] of the backend, optional
        Loss limits (NaN: not counted); their exceedance counts and excess
        sums so far, returned updated (new arrays: JAX arrays are immutable).

    Returns
    -------
    array [rows x min(m, scenarios seen)], or with limits
    (tail, hits, excess)
    """
    xp = backend.xp
    loss = -(holdings @ pnl.T)
    if limits is not None and limits.shape[1]:
        for k in range(limits.shape[1]):
            t = limits[:, k:k + 1]
            over = loss > t                     # a NaN limit is never exceeded
            hits = _set_column(xp, hits, k, hits[:, k] + xp.sum(xp.astype(over, xp.float64), axis=1))
            excess = _set_column(xp, excess, k, excess[:, k] + xp.sum(xp.where(over, loss - t, 0.0), axis=1))
    if tail is not None:
        loss = xp.concat([tail, loss], axis=1)
    top = backend.top_k(loss, min(m, loss.shape[1]))
    return top if limits is None else (top, hits, excess)


def _set_column(xp, a, k, column):
    """``a`` with column k replaced (a new array: JAX arrays are immutable)."""
    return xp.concat([a[:, :k], column[:, None], a[:, k + 1:]], axis=1)


class ReferenceKernel:
    """:class:`~.base.TailKernel` over :func:`fold_chunk`, on the backend named ``backend_name``."""

    label = "array-api reference"
    transposed = False

    def __init__(self, backend_name: str = "numpy"):
        self.backend_name = backend_name

    def plan(self, m, n_scenarios, chunk):
        return None

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
        b = get_backend(self.backend_name)
        state = TailState(None, None, None, m).with_limits(limits, holdings.shape[0])
        state.limits, state.hits, state.excess = (b.asarray(a) for a in (state.limits, state.hits, state.excess))
        return state

    def fold(self, state, holdings, pnl, m):
        b = get_backend(self.backend_name)
        state.values, state.hits, state.excess = fold_chunk(b, state.values, holdings, pnl, m, state.limits,
                                                            state.hits, state.excess)
        return state

    def finish(self, state, holdings, pnls, m):
        b = get_backend(self.backend_name)
        top = np.asarray(b.to_numpy(state.values), dtype=np.float64)
        state.hits, state.excess = (np.asarray(b.to_numpy(a), dtype=np.float64) for a in (state.hits, state.excess))
        return top, 0
