"""The margin backtest: im(t) from information up to the close of t, against the realised loss over h rows.

docs/methodology.md, section 13.  For every date t from ``start`` to ``end``
and every portfolio of fixed quantities:

- ``im(t) = max(0, ES_q(t)) x (1 + buffer)``, ES from ``n`` scenarios of the
  scenario model built on the history up to and including row t;
- ``loss(t) = -(V(t + h) - V(t))``, ``V(t) = sum quantity x price(t)``;
- an exceedance is ``loss(t) > im(t)``.

Speed comes from doing once what does not change from date to date: the
returns and the vol filter (a causal recursion) are computed once for the
whole history; dates go through in blocks, one dask task each, whose
compiled kernel (:mod:`.kernels`) draws, revalues and reduces every date of
the block to its exact VaR and ES (the parametric models: :mod:`.parametric`,
fitted as of each date).  Each date's numbers depend only on the
rows up to it and on its key (seed, date), never on the block, the worker,
the start or the end: cutting the history after T leaves every im(t),
t <= T - h, bit-identical (tests/test_backtest.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time

import numpy as np
import pandas as pd

from ..calibration.apc import apc_margin, apc_variance, backtest_apc, with_procyclicality
from ..calibration.volatility import GARCH_MIN_OBS, devolatize, ewma_init_obs, ewma_variance, garch_fit
from ..common.dates import iso as _iso
from ..common.settings import one_of, real_number, whole_number
from ..errors import ConfigError, InputError
from ..inputs.history import history_file
from ..inputs.portfolios import Portfolios
from ..scenarios import threefry
from ..stats import coverage as cov
from ..stats.returns import daily_returns, horizon_returns
from ..tails import tail_size

log = logging.getLogger(__name__)

#: The history models and the parametric ones (fitted as of each date: :mod:`.parametric`).
MODELS = ("fhs", "historical", "gaussian", "student_t", "t_copula")
PARAMETRIC = MODELS[2:]
#: Stream of the backtest's draws (rng.NORMAL, MIXING, BOOTSTRAP are 0, 1, 2).
STREAM = 3
#: Scenario-model keys the backtest does not model yet; each must stay null (or empty).
UNSUPPORTED = ("params", "stress_period", "implied_vol_columns", "asset_map")


@dataclasses.dataclass(frozen=True)
class BacktestSettings:
    """What a backtest run needs, validated (keys as in conf/backtest.yaml)."""

    model: str = "fhs"
    n: int = 2000
    seed: int = 20261125
    horizon: int = 1
    lookback: int | None = 500
    vol_method: str = "ewma"
    ewma_lambda: float = 0.94
    gaps: str = "span"
    min_observations: int = 30
    confidence: float = 0.99
    buffer: float = 0.0
    start: str | None = None
    end: str | None = None
    refit_every: int = 250
    significance: float = 0.05
    block_dates: int = 250
    backend: str = "numpy"
    vol_floor_lookback: int | None = None
    apc: str = "none"               # margin.apc (docs/methodology.md, section 15)
    # The parametric models (gaussian, student_t, t_copula): conf/scenarios/NAME.yaml.
    drift: str = "zero"
    shrinkage: float | str = 0.0
    dof: float = 4.0                # student_t: used where the causal fit has too few residuals
    copula_dof: float = 6.0         # t_copula: likewise
    marginal_dof: float = 5.0       # t_copula: likewise

    @classmethod
    def from_config(cls, c: dict) -> "BacktestSettings":
        """From the resolved job config (``scenarios``, ``margin``, ``backtest`` sections)."""
        s, m, b = c.get("scenarios") or {}, c.get("margin") or {}, c.get("backtest") or {}
        model = s.get("model")
        if model not in MODELS:
            raise ConfigError("scenarios", f"the backtest runs the scenario models {', '.join(MODELS)}; "
                                           f"got {model!r}")
        for key in UNSUPPORTED:
            v = s.get(key)
            if v not in (None, "", {}, []):
                raise ConfigError(f"scenarios.{key}", f"is not supported by the backtest yet (got {v!r}): "
                                                      "leave it null")
        hd = real_number(s.get("horizon_days"), "scenarios.horizon_days", 0, low_open=True)
        if hd != int(hd):
            raise ConfigError("scenarios.horizon_days", f"the backtest counts the horizon in rows of the history: "
                                                        f"give a whole number, got {hd:g}")
        margin_model = m.get("model", "mc_es")
        if margin_model != "mc_es":
            raise ConfigError("margin.model", f"the backtest margins by expected shortfall (mc_es); got "
                                              f"{margin_model!r}")
        return cls(model=model, n=whole_number(s.get("n", 2000), "scenarios.n", 1),
                   seed=whole_number(s.get("seed", 0), "scenarios.seed", 0, 2 ** 32 - 1),
                   horizon=int(hd),
                   lookback=whole_number(s.get("lookback", 500), "scenarios.lookback", 2, allow_none=True),
                   vol_method=one_of(s.get("vol_method", "ewma"), "scenarios.vol_method", ("ewma", "garch")),
                   ewma_lambda=real_number(s.get("ewma_lambda", 0.94), "scenarios.ewma_lambda", 0, 1,
                                           low_open=True, high_open=True),
                   gaps=one_of(s.get("gaps", "span"), "scenarios.gaps", ("span", "drop")),
                   min_observations=whole_number(s.get("min_observations", 30), "scenarios.min_observations", 2),
                   confidence=real_number(m.get("confidence", 0.99), "margin.confidence", 0.5, 1, low_open=True,
                                          high_open=True),
                   buffer=real_number(m.get("buffer", 0.0), "margin.buffer", 0, 10),
                   start=_date_text(b.get("start"), "backtest.start"),
                   end=_date_text(b.get("end"), "backtest.end"),
                   refit_every=whole_number(b.get("refit_every", 250), "backtest.refit_every", 1),
                   significance=real_number(b.get("significance", 0.05), "backtest.significance", 0, 1,
                                            low_open=True, high_open=True),
                   block_dates=whole_number(b.get("block_dates", 250), "backtest.block_dates", 1),
                   backend=_backend_name(c.get("backend", "numpy")),
                   vol_floor_lookback=_vol_floor(model, s.get("vol_floor_lookback")),
                   apc=backtest_apc(m.get("apc"), model), **_parametric_keys(model, s))

    def describe(self) -> dict:
        d = dataclasses.asdict(self)
        if self.model == "historical":
            for k in ("n", "vol_method", "ewma_lambda", "refit_every"):
                d.pop(k)
        elif self.vol_method == "ewma" and self.model in ("fhs", "gaussian"):
            d.pop("refit_every")
        if self.model not in PARAMETRIC:
            d.pop("drift"), d.pop("shrinkage")
        for k, used_by in (("dof", "student_t"), ("copula_dof", "t_copula"), ("marginal_dof", "t_copula")):
            if self.model != used_by:
                d.pop(k)
        if self.vol_floor_lookback is None:
            d.pop("vol_floor_lookback")
        return d


def _parametric_keys(model: str, s: dict) -> dict:
    """The parametric models' own keys, validated (conf/scenarios/{gaussian,student_t,t_copula}.yaml)."""
    if model not in PARAMETRIC:
        return {}
    out = {"drift": one_of(s.get("drift", "zero"), "scenarios.drift", ("zero", "martingale"))}
    sh = s.get("shrinkage", 0.0)
    if isinstance(sh, str) and sh.lower().replace("-", "_") in ("ledoit_wolf", "lw", "auto"):
        out["shrinkage"] = "ledoit_wolf"
    else:
        try:
            out["shrinkage"] = real_number(sh, "scenarios.shrinkage", 0.0, 1.0)
        except ConfigError:
            raise ConfigError("scenarios.shrinkage", f"must be a number in [0, 1] or 'ledoit_wolf', "
                                                     f"got {sh!r}") from None
    if model == "student_t":
        out["dof"] = real_number(s.get("dof", 4.0), "scenarios.dof", 2.0, low_open=True)
    if model == "t_copula":
        out["copula_dof"] = real_number(s.get("copula_dof", 6.0), "scenarios.copula_dof", 0.0, low_open=True)
        out["marginal_dof"] = real_number(s.get("marginal_dof", 5.0), "scenarios.marginal_dof", 2.0, low_open=True)
    return out


def _vol_floor(model, v):
    rows = whole_number(v, "scenarios.vol_floor_lookback", 2, allow_none=True)
    if rows is not None and model != "fhs":
        raise ConfigError("scenarios.vol_floor_lookback", f"is supported by the backtest for fhs only, not {model!r}: "
                                                          "leave it null")
    return rows


def _backend_name(v) -> str:
    from ..backend import BACKENDS

    return one_of(v, "backend", BACKENDS)


def _date_text(v, key):
    if v is None:
        return None
    try:
        return _iso(pd.Timestamp(str(v)))
    except (ValueError, TypeError):
        raise ConfigError(key, f"expected an ISO date (YYYY-MM-DD) or null, got {v!r}") from None


# --------------------------------------------------------------------------- inputs prepared once
@dataclasses.dataclass
class _Prepared:
    dates: pd.DatetimeIndex      # history rows used
    prices: np.ndarray           # [T, k]
    file_rows: np.ndarray        # file row of each kept row
    first: int                   # position of the first backtest date
    last: int                    # position of the last
    init_rows: int               # rows the vol filter's start uses


def _prepare(history: pd.DataFrame, pf: Portfolios, st: BacktestSettings) -> _Prepared:
    file = history_file(history)
    report = history.attrs.get("report")
    px = history[list(pf.assets)]
    keep = px.notna().any(axis=1).to_numpy()
    rows_all = np.array([report.file_row(i) if report is not None else i + 2 for i in range(len(history))],
                        dtype=object)
    px = px.loc[keep]
    if (~keep).any():
        log.info("backtest: %d history row(s) without a price of a held asset not used", int((~keep).sum()))
    dates, prices, file_rows = px.index, px.to_numpy(dtype=np.float64), rows_all[keep]
    T, h = len(dates), st.horizon
    filtered = st.model != "historical"            # FHS and the parametric models filter vols
    init_rows = ewma_init_obs(st.ewma_lambda) if (filtered and st.vol_method == "ewma") else 0
    if filtered and st.vol_method == "garch":
        init_rows = GARCH_MIN_OBS
    # Start: the first date with a full look-back, else the one asked (with at least min_observations rows).
    need = max(st.min_observations + (h - 1 if st.model == "historical" else 0), init_rows, 1)
    if st.start is None:
        first = max(st.lookback if st.lookback is not None else need, need)
    else:
        first = int(np.searchsorted(dates.values, np.datetime64(pd.Timestamp(st.start)), "left"))
        if first < need:
            why = (f"the vol filter starts from the mean square of the first {init_rows} returns"
                   if init_rows >= st.min_observations else
                   f"scenarios.min_observations={st.min_observations} rows of look-back")
            raise ConfigError("backtest.start", f"{st.start} leaves {first} history row(s) before it; {why} "
                                                f"needs the backtest to start at row {need + 1} "
                                                f"({_iso(dates[min(need, T - 1)])}) or later")
    if init_rows:
        # The filter of each asset starts from its first init_rows returns: all must be known at the first date.
        for j, a in enumerate(pf.assets):
            seen = np.nonzero(~np.isnan(prices[:, j]))[0]
            if seen.size <= init_rows or seen[init_rows] > first:
                at = int(seen[init_rows]) if seen.size > init_rows else T - 1
                raise ConfigError("backtest.start", f"{_iso(dates[first])} is too early for {a}: its vol filter "
                                                    f"starts from its first {init_rows} returns, known only at "
                                                    f"{_iso(dates[at])}; start on that date or later")
    last_possible = T - 1 - h
    if st.end is None:
        last = last_possible
    else:
        last = int(np.searchsorted(dates.values, np.datetime64(pd.Timestamp(st.end)), "right")) - 1
        if last > last_possible:
            raise ConfigError("backtest.end", f"{st.end}: the last date with a realised loss over {h} row(s) is "
                                              f"{_iso(dates[last_possible])}")
    if first > last:
        raise InputError(file, f"no date to backtest: the history ({len(dates)} row(s) of "
                               f"{', '.join(pf.assets)}, {_iso(dates[0])}..{_iso(dates[-1])}) has no date from the "
                               f"start (row {first + 1}) to the last with a realised loss (row {last + 1})",
                         column="date")
    # Every held price from the first date to the last date + h: a margin or a loss cannot use a missing price.
    held = np.any(pf.quantity != 0, axis=0)
    block = prices[first:last + h + 1][:, held]
    if np.isnan(block).any():
        i, j = np.argwhere(np.isnan(block))[0]
        raise InputError(file, f"missing price of {np.array(pf.assets)[held][j]} on {_iso(dates[first + i])}, "
                               "inside the backtest (every held asset needs a price from the start to the end "
                               "+ horizon)", row=file_rows[first + i], column=str(np.array(pf.assets)[held][j]))
    return _Prepared(dates, prices, file_rows, first, last, init_rows)


def date_keys(seed: int, dates) -> np.ndarray:
    """Each date's key [D, 2] (uint64 words): fold_in(fold_in(fold_in(key(seed), STREAM), day), second of day).

    ``day`` counts days from 1970-01-01: a date's draws depend on the seed and
    the date alone, never on its position in the history or the run.
    """
    ts = pd.DatetimeIndex(dates)
    ns = ts.asi8
    day = np.floor_divide(ns, 86_400 * 10 ** 9)
    sec = np.floor_divide(ns - day * 86_400 * 10 ** 9, 10 ** 9)
    base = threefry.fold_in(threefry.seed_key(seed), STREAM)
    k = threefry.fold_in(base, (day.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32))
    k = threefry.fold_in(k, sec.astype(np.uint32))
    return np.stack([k[0].astype(np.uint64), k[1].astype(np.uint64)], axis=1)


def _window_bounds(complete_rows: np.ndarray, pos: np.ndarray, first_row: np.ndarray):
    """[lo, hi) into ``complete_rows`` of the rows in [first_row[d], pos[d]] for each date."""
    lo = np.searchsorted(complete_rows, first_row, "left")
    hi = np.searchsorted(complete_rows, pos, "right")
    return lo.astype(np.int64), hi.astype(np.int64)


# --------------------------------------------------------------------------- vol filter segments
@dataclasses.dataclass
class _Segment:
    """Dates [d0, d1) (positions into the backtest's dates) margined with one set of filter parameters."""

    d0: int
    d1: int
    z: np.ndarray            # [rows, k] residuals under these parameters
    after: np.ndarray        # [rows, k] variance forecast made at the close of each row
    omega: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    fitted_on: str | None = None


def _ewma_segment(r: np.ndarray, lam: float, n_dates: int) -> _Segment:
    s2, _ = ewma_variance(r, lam)
    valid = ~np.isnan(r)
    # The recursion's next value, as ewma_variance forms it (same expression, same rounding).
    after = np.where(valid, lam * s2 + (1.0 - lam) * np.where(valid, r, 0.0) ** 2, s2)
    z = devolatize(pd.DataFrame(r), pd.DataFrame(s2)).to_numpy()
    k = r.shape[1]
    return _Segment(0, n_dates, z, after, np.zeros(k), np.full(k, 1.0 - lam), np.full(k, lam))


def _garch_segments(r: np.ndarray, prep: _Prepared, st: BacktestSettings, file: str, assets) -> list[_Segment]:
    """GARCH(1,1) refitted every ``refit_every`` dates from the start, each fit on returns up to its date only."""
    n_dates = prep.last - prep.first + 1
    out = []
    for d0 in range(0, n_dates, st.refit_every):
        d1 = min(n_dates, d0 + st.refit_every)
        fit_row = prep.first + d0                 # fitted on rows 0..fit_row: what is known at its close
        end_row = prep.first + d1 - 1
        k = r.shape[1]
        s2 = np.full((end_row + 1, k), np.nan)
        om, al, be = np.zeros(k), np.zeros(k), np.zeros(k)
        for a in range(k):
            try:
                f = garch_fit(r[:fit_row + 1, a], name=str(assets[a]))
            except ValueError as exc:
                raise InputError(file, f"{exc} (GARCH refit at {_iso(prep.dates[fit_row])})",
                                 column=str(assets[a])) from None
            om[a], al[a], be[a] = f["omega"], f["alpha"], f["beta"]
            s2[:fit_row + 1, a] = f["sigma2"]
            cur = s2[fit_row, a]
            for t in range(fit_row, end_row):     # carry the fitted recursion forward to the segment's end
                x = r[t, a]
                cur = cur if np.isnan(x) else om[a] + al[a] * x * x + be[a] * cur
                s2[t + 1, a] = cur
        rr = r[:end_row + 1]
        valid = ~np.isnan(rr)
        after = np.where(valid, om + al * np.where(valid, rr, 0.0) ** 2 + be * s2, s2)
        z = devolatize(pd.DataFrame(rr), pd.DataFrame(s2)).to_numpy()
        out.append(_Segment(d0, d1, z, after, om, al, be, _iso(prep.dates[fit_row])))
    return out


# --------------------------------------------------------------------------- the run
def run_backtest(history: pd.DataFrame, portfolios: Portfolios, settings: BacktestSettings, *,
                 scheduler=None, history_sha256: str | None = None):
    """Backtest ``portfolios`` on ``history`` (module docstring) and return the dataset (not written).

    Parameters
    ----------
    history : pandas.DataFrame
        From :func:`mcmargin.inputs.history.load_history`.
    portfolios : Portfolios
        From :func:`mcmargin.inputs.portfolios.load_portfolios`.
    settings : BacktestSettings
    scheduler : str or distributed.Client, optional
        dask scheduler of the date blocks (default: local threads).
    history_sha256 : str, optional
        Checksum of the history file, recorded in the attrs.

    Returns
    -------
    xarray.Dataset
        ``im, var, es, loss, exceedance, window_exceedances, traffic_light``
        over (date, portfolio) and the per-portfolio test results.
    """
    import dask

    from . import kernels

    fhs_block, historical_block = kernels.fhs_block, kernels.historical_block
    from ..backend import get_backend, resolve

    backend_name = resolve(settings.backend)
    if backend_name != "numpy":
        # Any other backend: the array-API blocks (the compiled kernels are NumPy's fast path).
        import functools

        from . import arrays

        be = get_backend(backend_name)
        fhs_block = functools.partial(arrays.fhs_block, be)
        historical_block = functools.partial(arrays.historical_block, be)

    t0 = time.perf_counter()
    st = settings
    file = history_file(history)
    prep = _prepare(history, portfolios, st)
    h, q = st.horizon, portfolios.quantity
    pos = np.arange(prep.first, prep.last + 1)
    n_dates = pos.size
    expo = q[None, :, :] * prep.prices[pos][:, None, :]       # [D, P, k] USD exposure at the close of t
    expo = np.where(q[None] == 0, 0.0, expo)                   # an asset not held: no exposure even without a price
    prices = np.where(np.isnan(prep.prices), 0.0, prep.prices)
    value = (q[None, :, :] * prices[:, None, :]).sum(axis=2)   # V(t) [T, P]
    loss = -(value[pos + h] - value[pos])
    info: dict = {"model": st.model, "backend": backend_name}
    tasks = []
    if st.model != "historical":
        r = daily_returns(pd.DataFrame(prep.prices, index=prep.dates), st.gaps).to_numpy(dtype=np.float64)
        if st.vol_method == "ewma":
            segments = [_ewma_segment(r, st.ewma_lambda, n_dates)]
            info.update(vol_method="ewma", ewma_lambda=st.ewma_lambda)
        else:
            segments = _garch_segments(r, prep, st, file, portfolios.assets)
            info.update(vol_method="garch", refit_every=st.refit_every,
                        garch_refits=[{"fitted_on": s.fitted_on,
                                       **{a: {"omega": float(s.omega[i]), "alpha": float(s.alpha[i]),
                                              "beta": float(s.beta[i])} for i, a in enumerate(portfolios.assets)}}
                                      for s in segments])
    if st.model in PARAMETRIC:
        tasks = _parametric_tasks(segments, prep, st, portfolios, expo, pos, get_backend(backend_name), info,
                                  file)
    elif st.model == "fhs":
        if st.vol_floor_lookback is not None:
            floor_var = _trailing_mean_square(r, st.vol_floor_lookback)
            info.update(vol_floor_lookback=st.vol_floor_lookback)
        keys = date_keys(st.seed, prep.dates[pos])
        m = tail_size(st.n, st.confidence)
        for seg in segments:
            complete = np.nonzero(np.isfinite(seg.z).all(axis=1))[0].astype(np.int64)
            seg_pos = pos[seg.d0:seg.d1]
            lo_row = seg_pos - st.lookback + 1 if st.lookback is not None else np.zeros_like(seg_pos)
            lo, hi = _window_bounds(complete, seg_pos, lo_row)
            _check_rows(hi - lo, st, prep, seg_pos, file, "complete residual row(s)")
            sig2 = seg.after[seg_pos]
            if st.vol_floor_lookback is not None:
                sig2 = np.maximum(sig2, floor_var[seg_pos])
            sig2 = apc_variance(st.apc, sig2, r, seg_pos, prep.dates, floor_set=st.vol_floor_lookback is not None)
            for b0 in range(seg.d0, seg.d1, st.block_dates):
                b1 = min(seg.d1, b0 + st.block_dates)
                i0, i1 = b0 - seg.d0, b1 - seg.d0
                tasks.append(dask.delayed(fhs_block, pure=False)(
                    keys[b0:b1], expo[b0:b1], sig2[i0:i1], seg.omega, seg.alpha, seg.beta, seg.z,
                    lo[i0:i1], hi[i0:i1], complete, st.n, h, m))
        info.update(n=st.n, seed=st.seed, tail_size=m)
    else:
        rh = horizon_returns(pd.DataFrame(prep.prices, index=prep.dates), h, st.gaps).to_numpy(dtype=np.float64)
        windows = np.expm1(rh)
        complete = np.nonzero(np.isfinite(rh).all(axis=1))[0].astype(np.int64)
        lo_row = np.maximum(pos - st.lookback + h, h) if st.lookback is not None else np.full_like(pos, h)
        lo, hi = _window_bounds(complete, pos, lo_row)
        _check_rows(hi - lo, st, prep, pos, file, f"complete {h}-row window(s)")
        ms = np.array([tail_size(int(c), st.confidence) for c in hi - lo], dtype=np.int64)
        windows = np.where(np.isfinite(windows), windows, 0.0)
        for b0 in range(0, n_dates, st.block_dates):
            b1 = min(n_dates, b0 + st.block_dates)
            tasks.append(dask.delayed(historical_block, pure=False)(
                expo[b0:b1], windows, lo[b0:b1], hi[b0:b1], complete, ms[b0:b1]))
        info.update(scenarios_per_date="every complete h-row window of the look-back, once",
                    min_scenarios=int((hi - lo).min()), max_scenarios=int((hi - lo).max()))
    t1 = time.perf_counter()
    sched = scheduler if (scheduler is None or isinstance(scheduler, str)) else scheduler.get
    if st.model in PARAMETRIC:
        # The parametric blocks multiply with BLAS; dask's threads are the parallelism: BLAS's own threads on
        # top of them only contend (twice the CPU time, measured).
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            results = dask.compute(*tasks, scheduler=sched or "threads")
    else:
        results = dask.compute(*tasks, scheduler=sched or "threads")
    var = np.concatenate([v for v, _ in results])
    es = np.concatenate([e for _, e in results])
    t2 = time.perf_counter()
    ds = backtest_dataset(prep.dates[pos], portfolios.names, var, es, loss, st, info)
    ds.attrs.update(history_file=file, portfolios_file=portfolios.file, portfolios_sha256=portfolios.sha256,
                    history_sha256=history_sha256 or "", first_date=_iso(prep.dates[prep.first]),
                    last_date=_iso(prep.dates[prep.last]),
                    timings=json.dumps({"prepare_s": round(t1 - t0, 3), "margin_s": round(t2 - t1, 3),
                                        "tasks": len(tasks)}))
    return with_procyclicality(ds, lambda: run_backtest(history, portfolios, dataclasses.replace(st, apc="none"),
                                                        scheduler=scheduler)["im"].transpose("date", "portfolio").values)


def _parametric_tasks(segments, prep, st, portfolios, expo, pos, backend, info, file) -> list:
    """The dask tasks of a parametric model (:mod:`.parametric`): fitted as of each date, drawn under its key."""
    import dask

    import functools

    from . import parametric as par

    block = functools.partial(par.parametric_block, backend)     # the backend travels bound, not as a task input
    held = np.nonzero(np.any(portfolios.quantity != 0, axis=0))[0]
    assets = [str(portfolios.assets[i]) for i in held]
    n_dates = pos.size
    keys = date_keys(st.seed, prep.dates[pos])
    m = tail_size(st.n, st.confidence)
    zs = [np.ascontiguousarray(seg.z[:, held]) for seg in segments]
    seg_of = np.empty(n_dates, dtype=np.int64)
    for i, seg in enumerate(segments):
        seg_of[seg.d0:seg.d1] = i
    mvt = np.full(n_dates, st.dof)
    cop = np.full(n_dates, st.copula_dof)
    marg = np.full((n_dates, held.size), st.marginal_dof)
    fits = []
    if st.model != "gaussian":
        fits = par.fit_dof_schedule(st.model, lambda d: zs[seg_of[d]], pos, prep.dates, st.lookback,
                                    st.refit_every, st.shrinkage)
        for f in fits:
            if math.isfinite(f.mvt_dof):
                mvt[f.d0:f.d1] = max(f.mvt_dof, 2.0 + 1e-6)
            if math.isfinite(f.copula_dof):
                cop[f.d0:f.d1] = f.copula_dof
            marg[f.d0:f.d1] = np.where(np.isfinite(f.marginal_dof), np.maximum(f.marginal_dof, 2.05),
                                       st.marginal_dof)
    tasks = []
    for i, seg in enumerate(segments):
        seg_pos = pos[seg.d0:seg.d1]
        complete = np.nonzero(np.isfinite(zs[i]).all(axis=1))[0].astype(np.int64)
        lo_row = seg_pos - st.lookback + 1 if st.lookback is not None else np.zeros_like(seg_pos)
        lo, hi = _window_bounds(complete, seg_pos, lo_row)
        _check_rows(hi - lo, st, prep, seg_pos, file, "complete residual row(s)")
        var_h = par.horizon_variance(seg.after[seg_pos][:, held], seg.omega[held], seg.alpha[held],
                                     seg.beta[held], st.horizon)
        for b0 in range(seg.d0, seg.d1, st.block_dates):
            b1 = min(seg.d1, b0 + st.block_dates)
            i0, i1 = b0 - seg.d0, b1 - seg.d0
            tasks.append(dask.delayed(block, pure=False)(
                st.model, keys[b0:b1], expo[b0:b1][:, :, held], var_h[i0:i1], zs[i], seg_pos[i0:i1],
                st.lookback, st.shrinkage, mvt[b0:b1], cop[b0:b1], marg[b0:b1], st.n, m, st.drift))
    info.update(n=st.n, seed=st.seed, tail_size=m, assets=assets, lookback=st.lookback, shrinkage=st.shrinkage,
                drift=st.drift, horizon_variance="sum of the variance recursion's forecasts for rows t+1..t+h",
                correlation="de-volatized residuals of the look-back ending at each date (pairwise, shrunk, PSD)",
                draws="keyed by (seed, date): rng streams under the date key")
    if fits:
        info.update(dof_refit_every=st.refit_every, dof_fits=[f.describe(assets) for f in fits])
    return tasks


def _trailing_mean_square(r: np.ndarray, rows: int) -> np.ndarray:
    """Mean square of each column's returns over the ``rows`` rows ending at each row (NaN skipped; 0 if none).

    The anti-procyclical floor of the FHS variance (methodology-history H.7):
    running sums, so row t's value uses rows up to t only.
    """
    valid = ~np.isnan(r)
    zero = np.zeros((1, r.shape[1]))
    cs = np.vstack([zero, np.cumsum(np.where(valid, r * r, 0.0), axis=0)])
    cn = np.vstack([zero, np.cumsum(valid, axis=0)])
    t = np.arange(r.shape[0])
    lo = np.maximum(t - rows + 1, 0)
    total, count = cs[t + 1] - cs[lo], cn[t + 1] - cn[lo]
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def _check_rows(counts, st, prep, pos, file, what):
    short = counts < st.min_observations
    if short.any():
        i = int(np.argmax(short))
        raise InputError(file, f"the look-back of {_iso(prep.dates[pos[i]])} has {int(counts[i])} {what}; need "
                               f"{st.min_observations} (scenarios.min_observations): a later backtest.start or a "
                               "longer history", row=prep.file_rows[pos[i]], column="date")


# --------------------------------------------------------------------------- dataset and tests
def backtest_dataset(dates, names, var, es, loss, st: BacktestSettings, info: dict):
    """The backtest dataset from VaR, ES and realised losses [date x portfolio] (methodology section 13)."""
    import xarray as xr

    p = 1.0 - st.confidence
    im = apc_margin(st.apc, np.maximum(0.0, es) * (1.0 + st.buffer))
    exc = loss > im
    win = cov.window_exceedances(exc, cov.WINDOW)
    yellow_from, red_from = cov.basel_zone_bounds(p, cov.WINDOW)
    light = cov.traffic_light(win, yellow_from, red_from)
    n_days = np.full(len(names), exc.shape[0], dtype=np.int64)
    n_exc = exc.sum(axis=0).astype(np.int64)
    # Overlapping losses (h > 1) are dependent under any model: the LR tests use every h-th date.
    tested = exc[::st.horizon]
    kup = np.atleast_1d(cov.kupiec_pvalue(tested.sum(axis=0), tested.shape[0], p))
    chr_ = np.atleast_1d(cov.christoffersen_pvalue(tested))
    ccp = np.atleast_1d(cov.conditional_coverage_pvalue(tested, p))
    reds = cov.red_windows(exc, cov.WINDOW, red_from)
    too_many = cov.coverage_rejected(tested.sum(axis=0), tested.shape[0], p, st.significance)
    passed = ~too_many & (chr_ >= st.significance) & (reds == 0)
    dp, pp = ("date", "portfolio"), ("portfolio",)
    sec = "docs/methodology.md, section 13"
    q = st.confidence

    def v(dims, data, long_name, units, **extra):
        return xr.Variable(dims, data, {"long_name": long_name, "units": units, **extra})

    ds = xr.Dataset(
        {
            "im": v(dp, im, f"initial margin called at the close of t: max(0, ES_{q:g}) x (1 + buffer)", "USD"),
            "var": v(dp, var, f"value at risk at {q:g} over the horizon, from information up to t", "USD"),
            "es": v(dp, es, f"expected shortfall at {q:g} over the horizon, from information up to t", "USD"),
            "loss": v(dp, loss, f"realised loss -(V(t+{st.horizon}) - V(t)) over the next {st.horizon} row(s)",
                      "USD"),
            "exceedance": v(dp, exc, "realised loss strictly above the margin (loss > im)", "1"),
            "window_exceedances": v(dp, win.astype(np.int64), f"exceedances in the {cov.WINDOW} dates ending at t "
                                                              "(all dates so far when fewer)", "1"),
            "traffic_light": v(dp, light.astype(str), f"Basel zone of window_exceedances: green below "
                                                      f"{yellow_from}, yellow {yellow_from}-{red_from - 1}, red "
                                                      f"{red_from} or more", "1"),
            "coverage": v(pp, 1.0 - n_exc / n_days, "share of dates whose loss the margin covered", "1"),
            "n_exceedances": v(pp, n_exc, "dates with loss > im", "1"),
            "n_days": v(pp, n_days, "dates backtested", "1"),
            "kupiec_pvalue": v(pp, kup, "Kupiec (1995) LR test of unconditional coverage, p-value (every "
                                        "horizon-th date)", "1"),
            "christoffersen_pvalue": v(pp, chr_, "Christoffersen (1998) LR test of independence, p-value (every "
                                                 "horizon-th date)", "1"),
            "conditional_coverage_pvalue": v(pp, ccp, "Christoffersen (1998) LR test of conditional coverage, "
                                                      "p-value (every horizon-th date)", "1"),
            "red_windows": v(pp, reds.astype(np.int64), f"{cov.WINDOW}-date windows (one ending at each date) in "
                                                        "the red zone", "1"),
            "passed": v(pp, passed, f"not too many exceedances (one-sided Kupiec), Christoffersen independence at "
                                    f"{st.significance:g}, no red window", "1"),
        },
        coords={"date": ("date", pd.DatetimeIndex(dates).values.astype("datetime64[ns]"),
                         {"long_name": "date t at whose close the margin is called"}),  # units: set by the time encoding
                "portfolio": ("portfolio", np.array(names, dtype=str), {"long_name": "portfolio", "units": "1"})},
    )
    ds.attrs.update(methodology=sec, backtest_settings=json.dumps(st.describe()), model=json.dumps(info),
                    margin_confidence=q, margin_buffer=st.buffer, significance=st.significance,
                    test_stride=st.horizon, traffic_light_bounds=json.dumps([yellow_from, red_from]), margin_apc=st.apc,
                    window=cov.WINDOW)
    return ds


def expected_exceedances(ds) -> float:
    """Exceedances expected per portfolio under the null (n_days x (1 - confidence))."""
    return float(ds["n_days"].values[0]) * (1.0 - float(ds.attrs["margin_confidence"]))


def summary(ds) -> str:
    """One line per portfolio: exceedances, p-values, red windows, verdict."""
    lines = [f"backtest {ds.attrs['first_date']}..{ds.attrs['last_date']}: {int(ds['n_days'].values[0])} dates, "
             f"expected exceedances {expected_exceedances(ds):.1f} per portfolio"]
    width = max(9, max(len(str(p)) for p in ds["portfolio"].values))
    lines.append(f"{'portfolio':>{width}}  {'exceed':>6}  {'coverage':>8}  {'kupiec':>7}  {'indep':>7}  "
                 f"{'cc':>7}  {'red':>4}  {'mean im':>14}  passed")
    for i, p in enumerate(ds["portfolio"].values):
        g = lambda k: ds[k].values[i]  # noqa: E731
        lines.append(f"{str(p):>{width}}  {int(g('n_exceedances')):6d}  {g('coverage'):8.4f}  "
                     f"{g('kupiec_pvalue'):7.4f}  {g('christoffersen_pvalue'):7.4f}  "
                     f"{g('conditional_coverage_pvalue'):7.4f}  {int(g('red_windows')):4d}  "
                     f"{float(ds['im'].values[:, i].mean()):14,.2f}  {'yes' if g('passed') else 'NO'}")
    return "\n".join(lines)


__all__ = ["BacktestSettings", "run_backtest", "backtest_dataset", "date_keys", "summary", "MODELS"]
