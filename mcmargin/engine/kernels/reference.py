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

    def start(self, holdings, first_pnl, m, plan):
        return None

    def fold(self, state, holdings, pnl, m):
        values = fold_chunk(get_backend(self.backend_name), None if state is None else state.values, holdings, pnl, m)
        return TailState(values, None, None, m)

    def finish(self, state, holdings, pnls, m):
        top = np.asarray(get_backend(self.backend_name).to_numpy(state.values), dtype=np.float64)
        return top, 0
