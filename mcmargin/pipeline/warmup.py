"""Compile the numba kernels ahead of the first run: ``python -m mcmargin.pipeline.warmup``.

The fused kernels (:mod:`mcmargin.engine.kernels.fused`) and the NumPy threefry draws
(:mod:`mcmargin.scenarios.threefry`) are compiled by numba with
``cache=True``: the machine code is kept on disk (``__pycache__`` beside the
sources, or ``NUMBA_CACHE_DIR``) and later processes load it in a fraction
of a second.  Without a warm-up the first run after installation compiles
them itself (15-25 s on a 2-core machine).  ``make install`` (and so
``make run`` and ``make test``) runs this once; it runs a tiny stress job
whose shapes take every compiled path: a pilot threshold, several scenario
chunks and a recompute-free fold.
"""

from __future__ import annotations

import time


def warm_up(verbose: bool = True) -> float:
    """Run a tiny stress job on the NumPy backend so every kernel is compiled and cached; seconds taken."""
    import datetime as dt

    from ..engine.graph import Chunking
    from ..margin import MarginParams
    from ..scenarios import build_scenarios
    from .stress import run_stress
    from ..inputs.synthetic import synthetic_book

    t0 = time.perf_counter()
    book = synthetic_book(n_accounts=200, valuation_date=dt.date(2026, 11, 25))
    cfg = {"model": "gaussian", "n": 4096, "seed": 1, "horizon_days": 2,
           "default_factor": {"vol": None, "vol_of_vol": 1.0, "spot_vol_corr": -0.3}}
    scen = build_scenarios(cfg, book.assets, book.market["vol"].to_numpy())
    # Chunks of 1,024 of 4,096 scenarios: the pilot, the thresholded fold and the final cut all run.
    run_stress(book, scen, margin=MarginParams(confidence=0.99), confidences=(0.99, 0.995), backend="numpy",
               fast_path=True, chunking=Chunking(scenarios=1024), scheduler="sync")
    warm_up_backtest()
    _warm_whatif()
    _warm_writer()
    seconds = time.perf_counter() - t0
    if verbose:
        print(f"mcmargin: compiled kernels cached in {seconds:.1f} s")
    return seconds


def warm_up_backtest() -> None:
    """A tiny backtest taking every compiled path of :mod:`mcmargin.backtest.kernels` (h = 1, h = 3, historical)."""
    import numpy as np
    import pandas as pd

    from ..backtest.run import BacktestSettings, run_backtest
    from ..inputs.history import validate_history
    from ..inputs.portfolios import Portfolios

    g = np.random.default_rng(0)
    idx = pd.bdate_range("2020-01-01", periods=120, name="date")
    px = pd.DataFrame(100 * np.exp(np.cumsum(g.normal(0, 0.01, (120, 2)), axis=0)), index=idx, columns=["A", "B"])
    hist = validate_history(px.reset_index(), file="warm-up")
    pf = Portfolios(("p",), ("A", "B"), np.array([[1.0, -1.0]]), "warm-up", "")
    for kw in (dict(horizon=1), dict(horizon=3), dict(model="historical", horizon=2)):
        run_backtest(hist, pf, BacktestSettings(n=4096, lookback=60, **kw), scheduler="sync")
    from ..scenarios.copula import tabulated_lower_quantiles

    tabulated_lower_quantiles(np.array([0.5, -2.0]), 6.0, 5.0)     # the t copula's compiled interpolation


def _warm_whatif() -> None:
    """The what-if service's kernels (:mod:`mcmargin.whatif.calculator`), on the types it calls them with."""
    import numpy as np

    from ..whatif.calculator import _losses_above, _losses_at, _pair_above

    loss, pnl_t = np.zeros(4), np.zeros((2, 4))
    factors, weights = np.zeros(1, np.int64), np.ones(1)
    _losses_above(loss, pnl_t, factors, weights, 0.0)
    _losses_at(loss, pnl_t, factors, weights, np.arange(2, dtype=np.int64))
    _pair_above(loss, loss, pnl_t, factors, weights, 0.0, 0.0)


def _warm_writer() -> None:
    """The writer's compiled pass for long string variables (:mod:`mcmargin.output._vlen`)."""
    import numpy as np

    from ..output.zarr_strings import run_coded, vlen_utf8

    vlen_utf8(np.array(["A000001", ""]))
    vlen_utf8(run_coded(np.array(["A000001", "", "A000001"], dtype=object)))


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.ERROR)
    warm_up()
