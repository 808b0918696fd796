"""The two references the engine is measured against, and its revaluation alone.

(a) :func:`analyst_tails` -- what a risk analyst would write: the P&L matrix
    per unit of every column is computed once (``mcmargin.instruments.revaluation.revalue``
    on the NumPy backend); then, for each account, ``quantity x`` the per-unit
    P&L vector of each of its positions and collateral assets is added up
    with NumPy, and the tail is taken with ``np.partition``.  The P&L vectors
    are stored one per column, contiguous (``[columns x scenarios]``), which
    is the analyst's most favourable layout.  The loop covers the account
    rows only (the engine also computes margin groups and a long and a short
    unit of every instrument).

(b) :func:`quantlib_revaluation` -- QuantLib's ``AnalyticEuropeanEngine``
    repricing every option of the book, one at a time, in each scenario
    (spot and vol quotes set, then ``NPV()``; the option objects are built
    once, which is QuantLib's fastest way to reprice).

:func:`time_revalue` times ``mcmargin.instruments.revaluation.revalue`` alone over every
scenario chunk (draws excluded), sequentially on one core and on a thread
pool with one thread per core.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import math
import time

import numpy as np


# ============================================================================ revaluation
def draw_chunks(scenarios, chunk: int):
    from mcmargin import get_backend

    b = get_backend("numpy")
    return [scenarios.draw(s, min(s + chunk, scenarios.n), b) for s in range(0, scenarios.n, chunk)]


def time_revalue(compiled, chunks, threads: int):
    """Revalue every chunk; return (pnl [scenarios x columns], sequential s, parallel s)."""
    from mcmargin import get_backend
    from mcmargin.instruments.revaluation import revalue, to_backend

    b = get_backend("numpy")
    bb = to_backend(compiled, b)
    revalue(b, bb, *chunks[0])  # warm-up
    t = time.perf_counter()
    parts = [np.asarray(revalue(b, bb, shock, vol)) for shock, vol in chunks]
    sequential = time.perf_counter() - t
    with cf.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda c: revalue(b, bb, *c), chunks[:threads]))  # warm-up
        t = time.perf_counter()
        list(pool.map(lambda c: revalue(b, bb, *c), chunks))
        parallel = time.perf_counter() - t
    return np.concatenate(parts, axis=0), sequential, parallel


# ============================================================================ (a) the analyst
def analyst_tails(holdings, pnl_t, rows, m: int):
    """VaR and ES (mean of the m largest losses) of the given rows of ``holdings``.

    Parameters
    ----------
    holdings : scipy.sparse.csr_matrix [rows x columns]
    pnl_t : ndarray [columns x scenarios], C-contiguous: P&L per unit of each column.
    rows : sequence of int
    m : int
        Tail size (VaR = m-th largest loss, ES = mean of the m largest).
    """
    n = pnl_t.shape[1]
    indptr, indices, data = holdings.indptr, holdings.indices, holdings.data
    var = np.empty(len(rows))
    es = np.empty(len(rows))
    for k, r in enumerate(rows):
        pnl = np.zeros(n)
        for p in range(indptr[r], indptr[r + 1]):
            pnl += data[p] * pnl_t[indices[p]]
        loss = -pnl
        tail = np.partition(loss, n - m)[n - m:]
        var[k] = tail.min()
        es[k] = tail.mean()
    return var, es


def sample_rows(n_rows: int, n_scenarios: int, budget: float):
    """All rows when ``rows x scenarios <= budget``, else an evenly strided sample of about that much."""
    if n_rows * n_scenarios <= budget:
        return np.arange(n_rows), False
    k = max(1, int(budget // n_scenarios))
    return np.unique(np.linspace(0, n_rows - 1, k).round().astype(np.int64)), True


def relative_error(engine, reference):
    """Largest |a - b| / max(|a|, |b|, 1e-6 max|b|): the project's relative tolerance (issue 2, item 9).

    The floor matters for exact hedges: an account long spot and short the
    perpetual of the same delta has a true loss of 0 in every scenario.  The
    engine nets the two into one USD delta of exactly 0; the analyst sums
    the two positions' P&L and is left with rounding residue of about 1e-16
    of the gross (1e-12 USD), which relative to 0 would read as a 100% error.
    """
    a = np.asarray(engine, dtype=float)
    b = np.asarray(reference, dtype=float)
    if a.size == 0:
        return 0.0
    floor = 1e-6 * max(np.abs(b).max(), 1e-300)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    return float(np.max(np.abs(a - b) / scale))


# ============================================================================ (b) QuantLib
class QuantLibBook:
    """Every option of a compiled book as a QuantLib EuropeanOption with its own quotes."""

    def __init__(self, compiled, valuation_date: dt.date):
        import QuantLib as ql

        self.ql = ql
        today = ql.Date(valuation_date.day, valuation_date.month, valuation_date.year)
        ql.Settings.instance().evaluationDate = today
        dc = ql.Actual365Fixed()
        cal = ql.NullCalendar()
        rate = ql.YieldTermStructureHandle(ql.FlatForward(today, compiled.options.rate, dc))
        div = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, dc))
        self.asset = np.asarray(compiled.options.asset)
        self.spot0 = np.asarray(compiled.options.spot, dtype=float)
        self.vol0 = np.asarray(compiled.options.vol, dtype=float)
        self.size = np.asarray(compiled.options.size, dtype=float)
        self.value0 = np.asarray(compiled.options.value, dtype=float)
        self.is_call = np.asarray(compiled.options.is_call, dtype=bool)
        self.strike = np.asarray(compiled.options.strike, dtype=float)
        self.expiry = np.asarray(compiled.options.expiry_after, dtype=float)  # years after the horizon
        self.spot_q, self.vol_q, self.options = [], [], []
        self.day_error = 0.0
        for j in range(self.strike.size):
            days = self.expiry[j] * 365.0
            self.day_error = max(self.day_error, abs(days - round(days)))
            s = ql.SimpleQuote(float(self.spot0[j]))
            v = ql.SimpleQuote(float(self.vol0[j]))
            vol = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, cal, ql.QuoteHandle(v), dc))
            process = ql.BlackScholesMertonProcess(ql.QuoteHandle(s), div, rate, vol)
            payoff = ql.PlainVanillaPayoff(ql.Option.Call if self.is_call[j] else ql.Option.Put, float(self.strike[j]))
            option = ql.EuropeanOption(payoff, ql.EuropeanExercise(today + int(round(days))))
            option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
            self.spot_q.append(s)
            self.vol_q.append(v)
            self.options.append(option)

    @property
    def n(self) -> int:
        return len(self.options)

    def pnl(self, shock_row, vol_shock_row):
        """P&L per unit of every option in one scenario, repriced one by one."""
        out = np.empty(self.n)
        for j in range(self.n):
            a = self.asset[j]
            self.spot_q[j].setValue(float(self.spot0[j] * math.exp(shock_row[a])))
            self.vol_q[j].setValue(float(self.vol0[j] * math.exp(vol_shock_row[a])))
            if self.expiry[j] > 0:
                value = self.options[j].NPV()
            else:  # expires within the horizon: intrinsic, as mcmargin.pricing
                s = self.spot0[j] * math.exp(shock_row[a])
                value = max(s - self.strike[j], 0.0) if self.is_call[j] else max(self.strike[j] - s, 0.0)
            out[j] = self.size[j] * (value - self.value0[j])
        return out


def quantlib_revaluation(compiled, valuation_date, shock, vol_shock, budget_s: float = 1.0, max_scenarios=None):
    """Reprice the options in the first scenarios of ``shock`` until ``budget_s`` is spent.

    Returns a dict with the scenarios priced, seconds, seconds per option
    repricing and the P&L ``[scenarios priced x options]``.
    """
    qb = QuantLibBook(compiled, valuation_date)
    if qb.n == 0:
        return {"n_options": 0, "scenarios": 0, "seconds": 0.0, "per_pricing_s": float("nan"),
                "pnl": np.empty((0, 0)), "day_error": 0.0}
    qb.pnl(shock[0], vol_shock[0])  # warm-up
    limit = shock.shape[0] if max_scenarios is None else min(max_scenarios, shock.shape[0])
    rows = []
    t = time.perf_counter()
    while len(rows) < limit and (len(rows) < 3 or time.perf_counter() - t < budget_s):
        s = len(rows)
        rows.append(qb.pnl(shock[s], vol_shock[s]))
    seconds = time.perf_counter() - t
    return {"n_options": qb.n, "scenarios": len(rows), "seconds": seconds,
            "per_pricing_s": seconds / (len(rows) * qb.n), "pnl": np.array(rows), "day_error": qb.day_error}
