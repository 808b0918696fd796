"""Acceptance on two decades of real daily prices (S&P 500 and Nasdaq Composite, 1999-2018, bundled by ``arch``).

FHS at 99%, 1-day horizon, 2,000 scenarios, no buffer: every kind of book
passes Kupiec (one-sided) and Christoffersen with no red window, at an
average margin no more than 10% above plain EWMA-filtered historical
simulation (lambda 0.94, 500-day window), recomputed here independently.
"""

import math

import numpy as np
import pandas as pd
from mcmargin.backtest.run import BacktestSettings, run_backtest
from mcmargin.inputs.history import validate_history
from mcmargin.inputs.portfolios import Portfolios


def real_history():
    from arch.data import nasdaq, sp500

    px = pd.DataFrame({"SPX": sp500.load()["Adj Close"], "NDX": nasdaq.load()["Adj Close"]}).dropna()
    return validate_history(px.rename_axis("date").reset_index(), file="arch.data sp500+nasdaq")


def real_books(hist):
    p0 = hist.iloc[0]
    ratio = p0["NDX"] / p0["SPX"]
    q = np.array([[10.0, 5.0],                        # long only
                  [10.0, -5.0],                       # long-short
                  [10.0, 0.0],                        # single name
                  [-1.2 * ratio * 5.0, 5.0],          # long Nasdaq hedged by 1.2 x its value of S&P (beta)
                  [-3.0, 0.0]])                       # short single name
    return Portfolios(("long_only", "long_short", "single_name", "hedged", "short"), ("SPX", "NDX"), q,
                      "books", "")


def filtered_hs_margin(hist, q, dates, lam=0.94, window=500, confidence=0.99):
    """Plain EWMA-filtered historical simulation, every residual of the window once (loops, no mcmargin)."""
    px = hist[["SPX", "NDX"]].to_numpy()
    r = np.vstack([np.full(2, np.nan), np.diff(np.log(px), axis=0)])
    s2 = np.full_like(r, np.nan)
    cur = np.mean(r[1:21] ** 2, axis=0)
    for t in range(1, len(r)):
        s2[t] = cur
        cur = lam * cur + (1 - lam) * r[t] ** 2
    nxt = np.vstack([s2[1:], cur])                   # forecast made at the close of t
    z = r / np.sqrt(s2)
    pos = hist.index.get_indexer(dates)
    m = math.ceil(window * (1 - confidence) - 1e-9)
    out = np.empty((len(pos), len(q)))
    for i, t in enumerate(pos):
        zz = z[t - window + 1:t + 1]
        shocks = np.expm1(zz * np.sqrt(nxt[t]))
        losses = -(shocks * px[t]) @ q.T               # [window, portfolios]
        out[i] = np.maximum(0, np.sort(losses, axis=0)[-m:].mean(axis=0))
    return out


def test_fhs_passes_on_two_decades_of_real_prices():
    hist = real_history()
    pf = real_books(hist)
    st = BacktestSettings(model="fhs", n=2000, seed=20261125, horizon=1, lookback=500, confidence=0.99, buffer=0.0)
    ds = run_backtest(hist, pf, st)
    assert ds.sizes["date"] > 4000
    assert (ds["kupiec_pvalue"].values[ds["n_exceedances"].values > ds["n_days"].values * 0.01] >= 0.05).all()
    assert (ds["christoffersen_pvalue"].values >= 0.05).all(), ds["christoffersen_pvalue"].values
    assert (ds["red_windows"].values == 0).all()
    assert ds["passed"].values.all()
    ref = filtered_hs_margin(hist, pf.quantity, pd.DatetimeIndex(ds["date"].values))
    ratio = ds["im"].values.mean(axis=0) / ref.mean(axis=0)
    assert (ratio <= 1.10).all(), ratio
    print("\n" + "\n".join(f"{p}: exceedances {int(n)}/{int(d)}, kupiec {k:.3f}, indep {c:.3f}, mean im / "
                           f"filtered HS {x:.3f}" for p, n, d, k, c, x in
                           zip(ds["portfolio"].values, ds["n_exceedances"].values, ds["n_days"].values,
                               ds["kupiec_pvalue"].values, ds["christoffersen_pvalue"].values, ratio)))
