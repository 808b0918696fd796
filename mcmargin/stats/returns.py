"""Look-back windows and log returns of a price history (docs/methodology-history.md, section H.1).

A history is the frame :func:`mcmargin.inputs.history.load_history` returns:
indexed by date, one price column per asset, missing prices NaN.  Missing
prices are never filled; horizons are counted in rows (trading days).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..common.dates import iso as _iso
from ..errors import InputError
from ..inputs.history import GAP_POLICIES, history_file

log = logging.getLogger(__name__)


def as_of(history: pd.DataFrame, valuation_date=None) -> pd.DataFrame:
    """Rows on or before ``valuation_date`` (default: ``attrs["valuation_date"]``, else every row).

    The look-back of every history-based estimate ends at the last row on or
    before the valuation date; later rows would be look-ahead.
    """
    vd = valuation_date if valuation_date is not None else history.attrs.get("valuation_date")
    if vd is None:
        return history
    vd = pd.Timestamp(vd)
    if vd.tzinfo is not None:
        vd = vd.tz_convert("UTC").tz_localize(None)
    # A date-only valuation date includes that whole day.
    end = vd + pd.Timedelta(days=1) - pd.Timedelta(1, "ns") if vd == vd.normalize() else vd
    out = history.loc[history.index <= end]
    if len(out) == 0:
        raise InputError(history_file(history), f"history starts {_iso(history.index[0])}, after the valuation "
                                                f"date {_iso(vd)}: no rows to calibrate on", column="date")
    later = len(history) - len(out)
    if later:
        log.info("history %s: %d row(s) after the valuation date %s are not used", history_file(history),
                 later, _iso(vd))
    stale = (vd.normalize() - out.index[-1].normalize()).days
    if stale > 7:
        log.warning("history %s ends %s, %d days before the valuation date %s", history_file(history),
                    _iso(out.index[-1]), stale, _iso(vd))
    return out


def horizon_returns(prices: pd.DataFrame, horizon_rows: int = 1, gaps: str = "span") -> pd.DataFrame:
    """Log returns over ``horizon_rows`` rows: ``log P[t] - log P[t - h]``.

    Row t holds the return that *ends* on row t.  Missing prices are never
    filled: a row without a price has no return (NaN).  With ``gaps="span"``
    the base is the last price on or before row ``t - h``, so the move across
    a gap counts once, when trading resumes; with ``gaps="drop"`` the base
    must be exactly row ``t - h``.  Before an asset's first price there is no
    return.  A constant price gives zero returns.
    """
    h = int(horizon_rows)
    if h != horizon_rows or h < 1:
        raise ValueError(f"horizon_rows must be a positive integer, got {horizon_rows}")
    if gaps not in GAP_POLICIES:
        raise ValueError(f"gaps must be one of {GAP_POLICIES}, got {gaps!r}")
    logp = np.log(prices.astype(np.float64))
    base = logp.ffill().shift(h) if gaps == "span" else logp.shift(h)
    out = logp - base
    out.attrs = {}
    return out


def daily_returns(prices: pd.DataFrame, gaps: str = "span") -> pd.DataFrame:
    """One-row log returns (:func:`horizon_returns` with h = 1)."""
    return horizon_returns(prices, 1, gaps)


def spanning_returns(prices: pd.DataFrame) -> pd.Series:
    """Per asset, how many one-row returns span a gap (they cover more than one row)."""
    ok = prices.notna()
    prev_missing = ~ok.shift(1, fill_value=True)
    started = ok.cumsum() > 1
    return (ok & prev_missing & started).sum()


def infer_periods_per_year(index: pd.DatetimeIndex) -> float:
    """Rows per year of a history's calendar: 365 (7-day), 252 (business days), or 365.25 / spacing."""
    if len(index) < 3:
        return 252.0
    days = index.normalize().to_numpy().astype("datetime64[D]")
    step = float(np.median(np.diff(days).astype(np.int64)))
    if step >= 5:
        return round(365.25 / step, 2)
    weekend = np.mean(np.isin(pd.DatetimeIndex(days).day_of_week, (5, 6)))
    return 365.0 if weekend > 0.05 else 252.0


