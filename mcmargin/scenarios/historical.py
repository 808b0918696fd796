"""Scenario models that resample price history (docs/methodology-history.md, H.5-H.8).

Registered models (``scenarios=`` config group):

``historical``
    Historical simulation: every overlapping ``h``-row log return of the
    look-back window, each once, in date order.  N is the number of
    windows, fixed by the data (``scenarios.n`` is ignored).
``fhs``
    Filtered historical simulation (Barone-Adesi, Giannopoulos and Vosper
    1999): whole cross-sectional vectors of de-volatized residuals of the
    look-back are bootstrapped and rescaled by today's vol forecast, the
    variance updated along each ``h``-row path by the filter's recursion.

Both history models take the history as of the valuation date
(``scenarios.valuation_date``, else ``history.attrs["valuation_date"]``,
else the last row), count horizons in rows (trading days) of the history,
and support a stressed period (alone or blended) and an anti-procyclical
vol floor.  Implied-vol shocks come from a history column mapped to the
asset (``implied_vol_columns``), else from the parametric vol-of-vol model
(``risk_factors`` entries, else ``default_factor``).  Cash assets (market
vol 0) and constant price series get zero shocks.

All randomness comes from :mod:`.rng` (bootstrap rows from ``integers``,
normals and chi-squares keyed by scenario index), so chunking never
changes a scenario.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..common.dates import iso as _iso
from ..common.settings import plain, real_number, whole_number
from ..errors import ConfigError, InputError
from . import rng
from .base import ScenarioModel, register
from ..stats.correlation import cholesky_psd

log = logging.getLogger(__name__)

#: Marginal dof at or above this are treated as Gaussian.


# --------------------------------------------------------------------------- helpers
def _calendar_days(rows: int, info: dict) -> float:
    """Calendar days a horizon of ``rows`` history rows spans on average (365 / rows per year each)."""
    return rows * 365.0 / float(info.get("periods_per_year", 365.0))


class _Layout:
    """Places per-series results into [scenario x asset] shock and vol-shock arrays.

    ``ret_col[a]`` / ``vol_col[a]``: 0 for a zero column, ``1 + s`` for series s,
    ``1 + m + j`` (vol only) for the j-th parametric vol shock.
    """

    def __init__(self, assets, n_series, ret_series: dict, iv_series: dict, par_assets: list,
                 par_series, par_sd, par_vscale, par_rho):
        self.assets, self.m = tuple(assets), int(n_series)
        self.ret_col = np.array([1 + ret_series[a] if a in ret_series else 0 for a in assets], dtype=np.int64)
        vol_col = np.zeros(len(assets), dtype=np.int64)
        for a, s in iv_series.items():
            vol_col[self.assets.index(a)] = 1 + s
        for j, a in enumerate(par_assets):
            vol_col[self.assets.index(a)] = 1 + self.m + j
        self.vol_col = vol_col
        self.par_assets = list(par_assets)
        self.par_series = np.asarray(par_series, dtype=np.int64)
        sd = np.asarray(par_sd, dtype=float)
        self.par_inv_sd = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0)
        vscale = np.asarray(par_vscale, dtype=float)
        self.par_vscale = np.where(sd > 0, vscale, 0.0)   # a series that never moves: no vol shock either
        rho = np.asarray(par_rho, dtype=float)
        self.par_a = self.par_vscale * rho
        self.par_b = self.par_vscale * np.sqrt(1.0 - rho ** 2)
        self._dev: dict = {}

    def dev(self, backend, name, value, integer=False):
        key = (backend.name, name)
        if key not in self._dev:
            self._dev[key] = backend.xp.asarray(value) if integer else backend.asarray(value)
        return self._dev[key]

    def assemble(self, total, seed, start, stop, backend):
        """``total`` (c x m, backend array of per-series log changes) -> (shock, vol_shock)."""
        xp = backend.xp
        c = stop - start
        zero = xp.zeros((c, 1), dtype=xp.float64)
        both = xp.concat([zero, total], axis=1)
        shock = xp.take(both, self.dev(backend, "ret_col", self.ret_col, True), axis=1)
        parts = [zero, total]
        kp = len(self.par_assets)
        if kp:
            e = xp.take(total, self.dev(backend, "par_series", self.par_series, True), axis=1) \
                * self.dev(backend, "par_inv_sd", self.par_inv_sd)
            zv = backend.asarray(rng.standard_normals(seed, start, stop, kp, stream=rng.NORMAL))
            parts.append(self.dev(backend, "par_a", self.par_a) * e + self.dev(backend, "par_b", self.par_b) * zv)
        vol = xp.take(xp.concat(parts, axis=1), self.dev(backend, "vol_col", self.vol_col, True), axis=1)
        return shock, vol


class _HistoryInputs:
    """What the history-based models share: settings, the history as of the valuation date, series."""

    def __init__(self, cfg: Mapping, assets, asset_vols, history, model: str, default_lambda: float):
        from ..calibration.fit import CalibrationSettings
        from ..inputs.history import as_history, history_file
        from ..stats.returns import as_of, infer_periods_per_year

        self.cfg = cfg
        if history is None:
            raise ConfigError("history", f"scenario model {model!r} needs a price history: give history=PATH "
                                         "(CSV or Parquet with a date column and one price column per asset)")
        self.settings = CalibrationSettings.from_cfg(cfg, "scenarios", ewma_lambda=default_lambda)
        self.h = as_of(as_history(history), self.settings.valuation_date)
        self.file = history_file(self.h)
        self.assets = tuple(assets)
        vols = np.asarray(asset_vols, dtype=float)
        self.factors = [a for a, v in zip(self.assets, vols) if v > 0]
        cash_in_history = [a for a, v in zip(self.assets, vols) if not v > 0 and a in self.h.columns]
        if cash_in_history:
            log.info("%s: %s have market vol 0 (cash): zero shocks whatever their history", model,
                     ", ".join(cash_in_history))
        missing = [a for a in self.factors if a not in self.h.columns]
        if missing:
            raise InputError(self.file, f"no price column for market asset(s) {', '.join(missing)}, which move "
                                        f"(market vol > 0); the {model} model needs their prices", row=1)
        empty = [a for a in self.factors if not self.h[a].notna().any()]
        if empty:
            raise InputError(self.file, f"no prices up to the valuation date for {', '.join(empty)}", column=empty[0])
        hd = float(cfg["horizon_days"])
        if hd != int(hd) or hd < 1:
            raise ConfigError("scenarios.horizon_days", f"history-based models count the horizon in rows (trading "
                                                        f"days) of the history: give a whole number, got {hd:g}")
        self.horizon = int(hd)
        self.min_obs = whole_number(cfg.get("min_observations", 30), "scenarios.min_observations", minimum=2)
        self.ppy = self.settings.periods_per_year or infer_periods_per_year(self.h.index)
        ivc = self.settings.implied_vol_columns
        for a, c in ivc.items():
            if c not in self.h.columns:
                raise InputError(self.file, f"no column {c!r} for the implied vol of {a} "
                                            f"(scenarios.implied_vol_columns.{a})", row=1)
        unused = [a for a in ivc if a not in self.factors]
        if unused:
            log.info("%s: implied_vol_columns for %s not used (not a moving market asset)", model, ", ".join(unused))
        self.iv = {a: c for a, c in ivc.items() if a in self.factors}
        self.series = list(dict.fromkeys(self.factors + list(self.iv.values())))
        self.model = model
        # The rows that matter are those where at least one series used has a price
        # (other columns of the file may trade on other days).
        px = self.h[self.series]
        self.prices = px.loc[px.notna().any(axis=1).to_numpy()]
        if len(self.prices) < len(px):
            log.info("%s: %d history row(s) without a price of %s not used", model, len(px) - len(self.prices),
                     ", ".join(self.series))

    # ------------------------------------------------------------------ vol-shock layout
    def vol_params(self):
        """Parametric vol-of-vol and spot-vol correlation of the factors without an implied-vol column."""
        table = self.cfg.get("risk_factors") or {}
        default = self.cfg.get("default_factor") or {}
        out = []
        for a in self.factors:
            if a in self.iv:
                continue
            p = table.get(a) or {}
            vals = []
            for key, fallback in (("vol_of_vol", 1.0), ("spot_vol_corr", -0.3)):
                v = p.get(key)
                where = f"scenarios.risk_factors.{a}.{key}"
                if v is None:
                    v, where = default.get(key, fallback), f"scenarios.default_factor.{key}"
                try:
                    v = float(v)
                except (TypeError, ValueError):
                    raise ConfigError(where, f"must be a number, got {v!r}") from None
                if (key == "vol_of_vol" and not (v >= 0 and math.isfinite(v))) or \
                        (key == "spot_vol_corr" and not -1 <= v <= 1):
                    raise ConfigError(where, f"invalid value {v}")
                vals.append(v)
            out.append((a, *vals))
        return out

    def layout(self, sd_series: np.ndarray) -> tuple[_Layout, dict]:
        """Layout with parametric vol shocks standardised by ``sd_series`` (std of each series' h-row change)."""
        idx = {s: i for i, s in enumerate(self.series)}
        vp = self.vol_params()
        par_assets = [a for a, *_ in vp]
        root = math.sqrt(self.horizon / self.ppy)
        lay = _Layout(self.assets, len(self.series), {a: idx[a] for a in self.factors},
                      {a: idx[c] for a, c in self.iv.items()}, par_assets, [idx[a] for a in par_assets],
                      [sd_series[idx[a]] for a in par_assets], [v * root for _, v, _ in vp],
                      [r for *_, r in vp])
        info = {"implied_vol_columns": dict(self.iv),
                "parametric_vol": {a: {"vol_of_vol": v, "spot_vol_corr": r} for a, v, r in vp}}
        return lay, info

    # ------------------------------------------------------------------ stress and floor
    def stress_period(self):
        spec = self.cfg.get("stress_period")
        if spec is None or spec == "" or (hasattr(spec, "__len__") and len(spec) == 0):
            return None
        from .stress_periods import parse_period
        return parse_period(spec)

    def stress_weight(self) -> float:
        return real_number(self.cfg.get("stress_weight", 1.0), "scenarios.stress_weight", 0.0, 1.0)

    def floor_rows(self):
        return whole_number(self.cfg.get("vol_floor_lookback"), "scenarios.vol_floor_lookback", minimum=2,
                            allow_none=True)

    def rows_in(self, index: pd.DatetimeIndex, period) -> np.ndarray:
        t0, t1, _ = period
        return np.nonzero((index >= t0) & (index <= t1))[0]

    def describe_common(self) -> dict:
        h = self.prices
        return {"history_file": self.file, "history_rows": int(len(h)), "history_first": _iso(h.index[0]),
                "history_last": _iso(h.index[-1]), "periods_per_year": self.ppy, "horizon_rows": self.horizon,
                "gaps": self.settings.gaps}


# --------------------------------------------------------------------------- historical
class HistoricalScenarios(ScenarioModel):
    """Historical simulation over overlapping h-row windows (module docstring).

    ``windows`` (N_src x m) holds the per-series log changes of each
    window (floor scaling already applied); ``rows`` (N,) picks the windows
    of each scenario (each once, or replicated to weight a stressed set).
    """

    def __init__(self, assets, windows, rows, layout: _Layout, *, seed, horizon_rows, info: dict,
                 window_dates):
        self.assets = tuple(assets)
        self.windows = np.asarray(windows, dtype=np.float64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.layout = layout
        self.n, self.seed, self.horizon_days = int(self.rows.size), int(seed), float(horizon_rows)
        self.horizon_rows = int(horizon_rows)
        self.info = info
        self.window_dates = list(window_dates)
        self.horizon_calendar_days = _calendar_days(self.horizon_rows, info)

    @property
    def scenario_dates(self) -> list[str]:
        """End date of each scenario's window (scenario order)."""
        return [self.window_dates[i] for i in self.rows]

    def draw(self, start, stop, backend):
        xp = backend.xp
        w = self.layout.dev(backend, "windows", self.windows)
        rows = xp.asarray(self.rows[start:stop])
        total = xp.take(w, rows, axis=0)
        return self.layout.assemble(total, self.seed, start, stop, backend)

    def describe(self):
        d = super().describe()
        d.update(model="historical", n_source="number of overlapping windows of horizon_rows rows in the "
                                              "look-back (scenarios.n is ignored)", **self.info)
        d["scenario_end_dates"] = self.scenario_dates
        return d


def _mixture(n_cur: int, n_st: int, weight: float, max_mult: int = 50):
    """Multiplicities (m_cur, m_st) so that stressed windows weigh ``weight`` of the set, as nearly as possible."""
    best = None
    for mc in range(1, max_mult + 1):
        for ms in range(1, max_mult + 1):
            w = ms * n_st / (mc * n_cur + ms * n_st)
            err = abs(w - weight)
            if best is None or err < best[0] - 1e-12:
                best = (err, mc, ms, w)
        if best[0] < 5e-4:
            break
    return best[1], best[2], best[3]


@register("historical")
def historical(cfg, assets, asset_vols, history=None):
    """Every overlapping horizon return of the look-back window, once each (N fixed by the data)."""
    from ..stats.returns import horizon_returns

    cfg = plain(cfg)
    if cfg.get("params"):
        raise ConfigError("scenarios.params", "historical simulation uses the price history itself, not fitted "
                                              "parameters; leave scenarios.params null")
    hi = _HistoryInputs(cfg, assets, asset_vols, history, "historical", 0.94)
    hrow = hi.horizon
    lookback = hi.settings.lookback
    prices = hi.prices
    rh = horizon_returns(prices, hrow, hi.settings.gaps)
    daily = horizon_returns(prices, 1, hi.settings.gaps)
    n_rows = len(rh)
    first_end = 0 if lookback is None else max(0, n_rows - lookback + hrow - 1)
    first_end = max(first_end, hrow)

    def complete(pos, what):
        pos = pos[pos >= hrow]
        block = rh.iloc[pos]
        ok = block.notna().all(axis=1).to_numpy()
        if not ok.all():
            bad = block.isna().sum()
            log.warning("historical: %d of %d %s window(s) dropped for missing prices (%s)", int((~ok).sum()),
                        len(ok), what, ", ".join(f"{c}: {int(v)}" for c, v in bad.items() if v))
        return pos[ok], int((~ok).sum())

    cur_pos, cur_dropped = complete(np.arange(first_end, n_rows), "look-back")
    period = hi.stress_period()
    weight = hi.stress_weight() if period is not None else 0.0
    info = hi.describe_common()
    info.update(lookback=-1 if lookback is None else lookback, windows_dropped_missing=cur_dropped)
    if period is not None:
        rows = hi.rows_in(rh.index, period)
        # windows whose h daily returns all lie in the period
        st = rows[rows - hrow + 1 >= (rows[0] if rows.size else 0)] if rows.size else rows
        st_pos, st_dropped = complete(st, "stressed")
        if st_pos.size < hi.min_obs:
            span = f"{_iso(period[0])}..{_iso(period[1].normalize())}"
            raise InputError(hi.file, f"stressed period {period[2]} ({span}) has "
                                      f"{st_pos.size} complete {hrow}-row window(s) in the history "
                                      f"({info['history_first']}..{info['history_last']}); need "
                                      f"{hi.min_obs} (scenarios.min_observations)", column="date")
        info.update(stress_period=period[2], stress_start=_iso(period[0]),
                    stress_end=_iso(period[1].normalize()),
                    stress_windows=int(st_pos.size), stress_windows_dropped_missing=st_dropped,
                    stress_weight=weight)
    else:
        st_pos = np.array([], dtype=np.int64)
    if weight >= 1.0:
        src = st_pos
        rows_idx = np.arange(src.size)
        info["blend"] = "stressed period alone"
    elif weight > 0.0:
        if cur_pos.size < hi.min_obs:
            raise InputError(hi.file, f"look-back has {cur_pos.size} complete windows; need {hi.min_obs}",
                             column="date")
        mc, ms, achieved = _mixture(cur_pos.size, st_pos.size, weight)
        src = np.concatenate([cur_pos, st_pos])
        rows_idx = np.concatenate([np.tile(np.arange(cur_pos.size), mc),
                                   cur_pos.size + np.tile(np.arange(st_pos.size), ms)])
        info.update(blend=f"{1 - weight:g} x current + {weight:g} x stressed windows (each current window "
                          f"{mc}x, each stressed window {ms}x; stressed share {achieved:.4f})",
                    stress_share=achieved)
        log.info("historical: stressed windows weigh %.4f of the set (asked %.4f)", achieved, weight)
    else:
        src = cur_pos
        rows_idx = np.arange(src.size)
    if src.size < hi.min_obs:
        raise InputError(hi.file, f"the look-back has only {src.size} complete {hrow}-row window(s) up to "
                                  f"{info['history_last']}; need {hi.min_obs} (scenarios.min_observations): "
                                  "a longer history, a longer scenarios.lookback, or fewer late-starting assets",
                         column="date")
    windows = rh.iloc[src].to_numpy(dtype=np.float64)
    # Anti-procyclicality floor: scale each series up to the vol of a long look-back.
    floor = hi.floor_rows()
    scale = np.ones(len(hi.series))
    if floor is not None:
        d = daily.iloc[max(0, len(daily) - floor):]
        long_sd = np.sqrt(np.nanmean(d.to_numpy() ** 2, axis=0))
        set_sd = np.sqrt(np.mean(windows[rows_idx] ** 2, axis=0) / hrow)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(set_sd > 0, np.maximum(1.0, long_sd / np.where(set_sd > 0, set_sd, 1.0)), 1.0)
        windows = windows * scale
        info.update(vol_floor_lookback=floor, vol_floor_scale={s: float(x) for s, x in zip(hi.series, scale)})
    sd = np.sqrt(np.mean(windows[rows_idx] ** 2, axis=0))
    layout, vinfo = hi.layout(sd)
    info.update(vinfo)
    info["window_vol"] = {s: float(x * math.sqrt(hi.ppy / hrow)) for s, x in zip(hi.series, sd)}
    dates = [_iso(t) for t in rh.index[src]]
    model = HistoricalScenarios(assets, windows, rows_idx, layout, seed=int(cfg["seed"]), horizon_rows=hrow,
                                info=info, window_dates=dates)
    if int(cfg.get("n", model.n)) != model.n:
        log.info("historical: N = %d windows (%s..%s); scenarios.n=%s is ignored", model.n, dates[0], dates[-1],
                 cfg.get("n"))
    return model


# --------------------------------------------------------------------------- filtered historical simulation
class FilteredHistoricalScenarios(ScenarioModel):
    """Filtered historical simulation (module docstring).

    ``residuals`` (R x m): complete de-volatized residual vectors of the
    look-back; ``sigma2`` (m,): the target variance of the first row of the
    horizon; ``omega, alpha, beta`` (m,): the variance recursion applied
    along the path.
    """

    def __init__(self, assets, residuals, sigma2, omega, alpha, beta, layout: _Layout, *, n, seed, horizon_rows,
                 info: dict):
        self.assets = tuple(assets)
        self.residuals = np.asarray(residuals, dtype=np.float64)
        self.sigma2 = np.asarray(sigma2, dtype=np.float64)
        self.omega, self.alpha, self.beta = (np.asarray(x, dtype=np.float64) for x in (omega, alpha, beta))
        self.layout = layout
        self.n, self.seed = int(n), int(seed)
        self.horizon_days = float(horizon_rows)
        self.horizon_rows = int(horizon_rows)
        self.info = info
        self.horizon_calendar_days = _calendar_days(self.horizon_rows, info)

    def draw(self, start, stop, backend):
        xp, lay = backend.xp, self.layout
        res = lay.dev(backend, "residuals", self.residuals)
        idx = np.asarray(rng.integers(self.seed, start, stop, self.residuals.shape[0], dim=self.horizon_rows),
                         dtype=np.int64)
        sig2 = lay.dev(backend, "sigma2", self.sigma2)
        omega, alpha, beta = (lay.dev(backend, k, v) for k, v in
                              (("omega", self.omega), ("alpha", self.alpha), ("beta", self.beta)))
        total = None
        for j in range(self.horizon_rows):
            z = xp.take(res, xp.asarray(np.ascontiguousarray(idx[:, j])), axis=0)
            r = xp.sqrt(sig2) * z
            total = r if total is None else total + r
            if j + 1 < self.horizon_rows:
                sig2 = omega + alpha * r * r + beta * sig2
        return lay.assemble(total, self.seed, start, stop, backend)

    def describe(self):
        d = super().describe()
        d.update(model="fhs", **self.info)
        return d


@register("fhs")
def fhs(cfg, assets, asset_vols, history=None):
    """Filtered historical simulation: bootstrapped residual vectors times today's vol."""
    from ..calibration.volatility import devolatize, filter_volatility
    from ..stats.returns import daily_returns

    cfg = plain(cfg)
    hi = _HistoryInputs(cfg, assets, asset_vols, history, "fhs", 0.94)
    s = hi.settings
    r = daily_returns(hi.prices, s.gaps)
    try:
        vf = filter_volatility(r, s.vol_method, s.ewma_lambda)
    except ValueError as exc:
        raise InputError(hi.file, str(exc)) from None
    z = devolatize(r, vf.sigma2)
    lb = s.lookback
    zw = z.iloc[max(0, len(z) - lb):] if lb is not None else z
    ok = zw.notna().all(axis=1).to_numpy()
    info = hi.describe_common()
    info.update(vol_method=s.vol_method, ewma_lambda=s.ewma_lambda if s.vol_method == "ewma" else None,
                lookback=-1 if lb is None else lb, residual_rows_dropped_missing=int((~ok).sum()))
    if not ok.all():
        bad = zw.isna().sum()
        log.warning("fhs: %d of %d look-back rows dropped for missing residuals (%s)", int((~ok).sum()), len(ok),
                    ", ".join(f"{c}: {int(v)}" for c, v in bad.items() if v))
    res = zw.to_numpy(dtype=np.float64)[ok]
    if res.shape[0] < hi.min_obs:
        raise InputError(hi.file, f"the look-back has only {res.shape[0]} complete residual row(s) up to "
                                  f"{info['history_last']}; need {hi.min_obs} (scenarios.min_observations)",
                         column="date")
    info.update(residual_rows=int(res.shape[0]), window_start=_iso(zw.index[ok][0]),
                window_end=_iso(zw.index[ok][-1]))
    now = np.sqrt(vf.forecast[hi.series].to_numpy(dtype=np.float64))
    params = cfg.get("params")
    if params:
        from ..calibration import load_params

        from .assets import check_params_cover, map_params

        ds = map_params(load_params(str(params)), cfg.get("_asset_map") or {}, str(params))
        check_params_cover(ds, list(hi.series), str(params), bool(cfg.get("params_fallback", False)))
        ppy = float(ds.attrs.get("periods_per_year", hi.ppy))
        used = []
        for i, a in enumerate(hi.series):
            if a in set(ds["asset"].values):
                now[i] = float(ds["vol"].sel(asset=a)) / math.sqrt(ppy)
                used.append(a)
        info["vol_forecast_from"] = f"{params} ({', '.join(used)})"
    target = now.copy()
    period = hi.stress_period()
    if period is not None:
        w = hi.stress_weight()
        rows = hi.rows_in(r.index, period)
        block = r.iloc[rows]
        counts = block.notna().sum().to_numpy()
        if rows.size == 0 or counts.min() < hi.min_obs:
            short = ", ".join(f"{c} ({int(n)})" for c, n in zip(hi.series, counts) if n < hi.min_obs) or "all"
            span = f"{_iso(period[0])}..{_iso(period[1].normalize())}"
            raise InputError(hi.file, f"stressed period {period[2]} ({span}) has too "
                                      f"few returns in the history ({info['history_first']}..{info['history_last']})"
                                      f" for {short}; need {hi.min_obs} (scenarios.min_observations)",
                             column="date")
        stressed = np.sqrt(np.nanmean(block.to_numpy() ** 2, axis=0))
        target = (1.0 - w) * target + w * stressed
        info.update(stress_period=period[2], stress_start=_iso(period[0]),
                    stress_end=_iso(period[1].normalize()),
                    stress_weight=w, stressed_vol={a: float(x * math.sqrt(hi.ppy)) for a, x in
                                                   zip(hi.series, stressed)})
    floor = hi.floor_rows()
    if floor is not None:
        d = r.iloc[max(0, len(r) - floor):].to_numpy()
        long_sd = np.sqrt(np.nanmean(d ** 2, axis=0))
        target = np.maximum(target, long_sd)
        info.update(vol_floor_lookback=floor, floor_vol={a: float(x * math.sqrt(hi.ppy)) for a, x in
                                                         zip(hi.series, long_sd)})
    info["forecast_vol"] = {a: float(x * math.sqrt(hi.ppy)) for a, x in zip(hi.series, now)}
    info["vol"] = {a: float(x * math.sqrt(hi.ppy)) for a, x in zip(hi.series, target)}
    layout, vinfo = hi.layout(target * math.sqrt(hi.horizon))
    info.update(vinfo)
    return FilteredHistoricalScenarios(assets, res, target ** 2, vf.omega[hi.series].to_numpy(dtype=float),
                                       vf.alpha[hi.series].to_numpy(dtype=float),
                                       vf.beta[hi.series].to_numpy(dtype=float), layout,
                                       n=int(cfg["n"]), seed=int(cfg["seed"]), horizon_rows=hi.horizon, info=info)
