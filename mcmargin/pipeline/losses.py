"""The binned loss distribution of a few pools over every scenario of a run (for the report).

The engine keeps only each row's m worst losses; a picture of the whole
distribution needs every loss of the rows drawn.  For the few largest pools
it costs little: their rows hold few risk factors, so only those factors are
revalued (the linear ones and the options the pools hold), block by block,
with the same draws (keyed by scenario index), revaluation and holdings
product ``loss = -(E @ pnl.T)`` as the engine.  Only the histogram is kept.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from ..backend import get_backend
from ..instruments import revaluation

#: Scenarios drawn and revalued at once (bounds the memory: pools x block losses).
BLOCK = 8192


def pool_losses(compiled, scenarios, pools: np.ndarray, n: int | None = None, block: int = BLOCK) -> np.ndarray:
    """``[pool x scenario]`` losses (USD, positive = loss) of the pools at indices ``pools`` of ``compiled.groups``,
    in the scenarios ``0 .. n - 1`` (default every scenario)."""
    n = scenarios.n if n is None else min(int(n), scenarios.n)
    nb = get_backend("numpy")
    exposures = compiled.exposures[compiled.group_row[pools]].tocsr()
    used = np.unique(exposures.indices)
    n_assets = compiled.assets.size
    held = used[used >= n_assets] - n_assets
    opt = compiled.options
    sub = dataclasses.replace(opt, **{f: np.asarray(getattr(opt, f))[held] for f in
                                      ("asset", "spot", "strike", "expiry", "expiry_after", "vol", "is_call",
                                       "size", "value")})
    priced = revaluation.BackendBook(options=sub.on(nb))
    linear = used[used < n_assets]
    # Columns of the revalued block [assets..., held options...] in the order of ``used``.
    columns = np.concatenate([linear, n_assets + np.arange(held.size)])
    e = exposures[:, used]
    out = np.empty((len(pools), n))
    for start in range(0, n, block):
        stop = min(start + block, n)
        shock, vol_shock = scenarios.draw(start, stop, nb)
        pnl = np.asarray(revaluation.revalue(nb, priced, np.asarray(shock), np.asarray(vol_shock)))
        out[:, start:stop] = -np.asarray(e @ pnl[:, columns].T)
    return out + 0.0


def loss_distribution_variables(compiled, scenarios, group_im: np.ndarray, n_pools: int, bins: int,
                                max_scenarios: int = 0) -> dict:
    """``pool_loss_count(loss_pool, loss_bin)`` and ``pool_loss_edge(loss_pool, loss_bin_edge)`` of the
    ``n_pools`` pools with the largest ``group_im`` (largest first; ties by pool order).

    The bins are ``bins`` equal widths from the pool's smallest to its largest
    loss; the last bin holds its right edge (NumPy's histogram), so the counts
    of a pool sum to the number of scenarios binned: every scenario, or the
    first ``max_scenarios`` by index when it is positive and smaller (a
    picture of the shape needs no more; the pool's VaR and ES are the
    engine's, over every scenario).
    """
    order = np.argsort(-np.asarray(group_im, dtype=float), kind="stable")[:n_pools]
    losses = pool_losses(compiled, scenarios, order, n=max_scenarios or None)
    counts = np.zeros((order.size, bins), dtype=np.int64)
    edges = np.zeros((order.size, bins + 1))
    for k, x in enumerate(losses):
        lo, hi = float(x.min()), float(x.max())
        edges[k] = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        counts[k] = np.histogram(x, edges[k])[0]
    pools = np.asarray(compiled.groups)[order]
    return {
        "pool_loss_count": xr.DataArray(counts, dims=("loss_pool", "loss_bin"), coords={"loss_pool": pools}, attrs={
            "long_name": "scenarios whose pool loss falls in the bin (the pools with the largest group_im of the "
                         "primary model)", "units": "1"}),
        "pool_loss_edge": xr.DataArray(edges, dims=("loss_pool", "loss_bin_edge"), coords={"loss_pool": pools},
                                       attrs={"long_name": "edges of the loss bins: equal widths from the pool's "
                                                           "smallest to its largest loss", "units": "USD"}),
    }
