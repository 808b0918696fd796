"""Anti-procyclicality (EMIR RTS 153/2013 Art. 28): the three options, and how procyclical a margin is.

docs/methodology.md, section 15.  ``margin.apc`` picks one option (``none``
by default):

- ``buffer`` (Art. 28(1)(a)): a buffer of :data:`APC_BUFFER` (25%) on top of
  ``margin.buffer``, multiplicatively, drawn down when the margin rises
  (:func:`release_buffer`: the posted margin is held where it was while the
  model's margin stays below it, and never exceeds the model's margin by more
  than 25%);
- ``stress_weight`` (Art. 28(1)(b)): at least 25% weight on stressed
  observations, through the history models' own ``scenarios.stress_period`` /
  ``scenarios.stress_weight`` (:func:`apc_scenario_settings`), the stressed
  period chosen from the data up to the margin date where none is given
  (:func:`stressed_period`);
- ``floor`` (Art. 28(1)(c)): margin not lower than with volatility over a
  10-year look-back, through ``scenarios.vol_floor_lookback`` set to the rows of
  the last :data:`APC_FLOOR_YEARS` years.

:func:`procyclicality` gives the metrics a backtest reports with and without
the option: ``peak_to_trough``, ``max_increase_1d``, ``max_increase_30d``.
In a backtest (``mcmargin.backtest``) the options act date by date from rows
up to each date: :func:`apc_variance` (the FHS vol of ``stress_weight`` and
``floor``), :func:`apc_margin` (the released ``buffer``) and
:func:`with_procyclicality` (the metrics, with and without APC).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["APC_OPTIONS", "APC_BUFFER", "APC_STRESS_WEIGHT", "APC_FLOOR_YEARS", "STRESS_WINDOW_ROWS",
           "apc_option", "effective_buffer", "release_buffer", "procyclicality", "max_increase", "peak_to_trough",
           "stressed_period", "stressed_windows", "stressed_vol_path", "floor_vol_path", "apc_vol_path", "floor_rows",
           "apc_scenario_settings", "HISTORY_MODELS", "floor_vol_dates", "apc_variance", "apc_margin",
           "procyclicality_variables", "with_procyclicality", "backtest_apc", "METRIC_ATTRS"]

#: Values of ``margin.apc``.
APC_OPTIONS = ("none", "buffer", "stress_weight", "floor")
#: Art. 28(1)(a): "a margin buffer at least equal to 25% of calculated margins".
APC_BUFFER = 0.25
#: Art. 28(1)(b): "at least 25% weight to stressed observations in the look-back period".
APC_STRESS_WEIGHT = 0.25
#: Art. 28(1)(c): "volatility estimated over a 10 year historical look back period".
APC_FLOOR_YEARS = 10
#: Rows of the stressed period chosen from data (about six months of trading days): as long as the
#: named periods of mcmargin.scenarios.stress_periods (gfc is 7 months, covid 3), long enough for a vol.
STRESS_WINDOW_ROWS = 125
#: Scenario models that read a price history, so that stress weight and floor can reach their vol.
HISTORY_MODELS = ("fhs", "historical")


def apc_option(value, key: str = "margin.apc") -> str:
    """``margin.apc`` checked (``none`` when absent or null)."""
    if value is None:
        return "none"
    if not isinstance(value, str) or value not in APC_OPTIONS:
        raise ConfigError(key, f"expected one of {', '.join(APC_OPTIONS)}, got {value!r}")
    return value


def effective_buffer(buffer: float, apc: str) -> float:
    """The buffer a single margin date applies: ``(1 + buffer)(1 + 0.25) - 1`` with ``apc=buffer``, else ``buffer``.

    One date has no earlier margin to draw the APC buffer down against, so
    the stress run holds it in full; the backtest releases it along the path
    (:func:`release_buffer`).
    """
    return (1.0 + buffer) * (1.0 + APC_BUFFER) - 1.0 if apc == "buffer" else float(buffer)


def release_buffer(margin, buffer: float = APC_BUFFER) -> np.ndarray:
    """The margin posted under the APC buffer option, along dates (axis 0).

    ``margin`` is the model's margin ``M_t`` (``[date]`` or ``[date x
    portfolio]``, buffer of ``margin.buffer`` included).  The posted margin is

        ``A_0 = (1 + buffer) M_0``,
        ``A_t = min((1 + buffer) M_t, max(M_t, A_{t-1}))``:

    it stays where it was while the model's margin moves inside
    ``[A_{t-1} / (1 + buffer), A_{t-1}]``; a rise of ``M`` is absorbed by the
    buffer until ``M`` reaches the posted margin (the buffer is then used up,
    ``A = M``); a fall lowers ``A`` only once it is more than ``1 + buffer``
    times ``M``.  The buffer is rebuilt as the model's margin falls back.  A
    NaN margin (no figure that date) gives NaN and restarts the path.
    Positively homogeneous: scaling ``M`` scales ``A``, so a rescaled buffer
    (``jobs.calibrate_buffer``) rescales the posted margin exactly.
    """
    m = np.asarray(margin, dtype=float)
    out = np.empty_like(m)
    scale = 1.0 + float(buffer)
    prev = np.full(m.shape[1:], np.nan)
    for t in range(m.shape[0]):
        cap = scale * m[t]
        held = np.where(np.isnan(prev), cap, np.maximum(m[t], prev))
        prev = np.minimum(cap, held)
        out[t] = prev
    return out


def max_increase(margin, dates: int) -> np.ndarray:
    """Largest relative increase ``M_t / M_{t - dates} - 1`` over t (axis 0; NaN pairs skipped).

    A rise from 0 is ``+inf``; 0 to 0 is no increase (0).  NaN when fewer than
    ``dates + 1`` dates.  Negative when the margin never rose over that span.
    """
    m = np.asarray(margin, dtype=float)
    if m.shape[0] <= dates:
        return np.full(m.shape[1:], np.nan)
    now, before = m[dates:], m[:-dates]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(before > 0, now / np.where(before > 0, before, 1.0) - 1.0,
                       np.where(now > 0, np.inf, 0.0))
    rel = np.where(np.isnan(now) | np.isnan(before), np.nan, rel)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # an all-NaN portfolio gives NaN, not a warning
        return np.nanmax(rel, axis=0)


def peak_to_trough(margin) -> np.ndarray:
    """Largest margin over the window divided by the smallest (axis 0); ``+inf`` when the smallest is 0."""
    m = np.asarray(margin, dtype=float)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hi, lo = np.nanmax(m, axis=0), np.nanmin(m, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lo > 0, hi / np.where(lo > 0, lo, 1.0), np.where(np.isnan(lo), np.nan, np.inf))


def procyclicality(margin, suffix: str = "") -> dict:
    """``{peak_to_trough, max_increase_1d, max_increase_30d}`` (names + ``suffix``) of ``margin`` [date x ...]."""
    return {f"peak_to_trough{suffix}": peak_to_trough(margin),
            f"max_increase_1d{suffix}": max_increase(margin, 1),
            f"max_increase_30d{suffix}": max_increase(margin, 30)}


#: Attributes of the procyclicality metrics (dataset variables over ``portfolio``).
METRIC_ATTRS = {
    "peak_to_trough": {"long_name": "largest margin over the window divided by the smallest", "units": "1",
                       "nonfinite": "+inf, nan: +inf where the smallest margin is 0, nan with no margin"},
    "max_increase_1d": {"long_name": "largest relative increase of margin over 1 date: max_t im(t)/im(t-1) - 1",
                        "units": "1", "nonfinite": "+inf, nan: +inf for a rise from 0, nan with fewer than 2 dates"},
    "max_increase_30d": {"long_name": "largest relative increase of margin over 30 dates: max_t im(t)/im(t-30) - 1",
                         "units": "1", "nonfinite": "+inf, nan: +inf for a rise from 0, nan with fewer than 31 dates"},
}


def _stress_score(r: np.ndarray) -> np.ndarray:
    """Per row, the mean over the series present of ``r^2 / mean(r^2 over rows up to it)`` (causal; 0 if none)."""
    sq = r ** 2
    seen = np.cumsum(~np.isnan(sq), axis=0)
    total = np.cumsum(np.where(np.isnan(sq), 0.0, sq), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ms = total / np.where(seen > 0, seen, np.nan)
        z = np.where(ms > 0, sq / np.where(ms > 0, ms, np.nan), np.nan)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        score = np.nanmean(z, axis=1) if z.shape[1] else np.zeros(r.shape[0])
    return np.where(np.isnan(score), 0.0, score)


def stressed_windows(returns, rows: int = STRESS_WINDOW_ROWS) -> np.ndarray:
    """For each date t, the first row of the stressed window chosen from the returns up to t.

    ``returns`` is ``[date x series]`` daily log returns.  Each row is scored
    by :func:`_stress_score` (each series' squared return over its mean square
    so far, so no asset dominates by its level of vol, averaged over series);
    the stressed window at t is the ``rows``-row window ending at or before t
    with the largest total score, the earliest on ties; before ``rows`` rows
    exist, every row so far.  Row t's choice reads rows up to t only.
    """
    r = np.asarray(returns, dtype=float)
    n = r.shape[0]
    w = int(rows)
    out = np.zeros(n, dtype=np.int64)
    if n < w:
        return out
    score = _stress_score(r)
    csum = np.concatenate([[0.0], np.cumsum(score)])
    sums = csum[w:] - csum[:-w]                       # window ending at row w-1+k, starting at k
    best_k, best = 0, -np.inf
    for k in range(sums.size):
        if sums[k] > best:
            best_k, best = k, sums[k]
        out[w - 1 + k] = best_k
    return out


def stressed_period(returns: pd.DataFrame, rows: int = STRESS_WINDOW_ROWS) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The stressed window (first and last date) of ``returns`` chosen at its last date (:func:`stressed_windows`).

    Pass the returns up to the margin date: no later row can move the choice.
    """
    if len(returns) == 0:
        raise ValueError("no returns to choose a stressed period from")
    first = int(stressed_windows(returns.to_numpy(dtype=float), rows)[-1])
    last = len(returns) - 1 if len(returns) < rows else first + int(rows) - 1
    return returns.index[first], returns.index[last]


def stressed_vol_path(returns, rows: int = STRESS_WINDOW_ROWS) -> np.ndarray:
    """``[date x series]``: each series' root mean square return over the stressed window chosen at each date."""
    r = np.asarray(returns, dtype=float)
    n = r.shape[0]
    first = stressed_windows(r, rows)
    sq = np.where(np.isnan(r), 0.0, r ** 2)
    cnt = np.concatenate([np.zeros((1, r.shape[1])), np.cumsum(~np.isnan(r), axis=0)])
    tot = np.concatenate([np.zeros((1, r.shape[1])), np.cumsum(sq, axis=0)])
    last = np.where(np.arange(n) < rows - 1, np.arange(n), first + int(rows) - 1)
    c = cnt[last + 1] - cnt[first]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((tot[last + 1] - tot[first]) / np.where(c > 0, c, np.nan))


def floor_vol_path(returns, rows: int) -> np.ndarray:
    """``[date x series]``: root mean square return over the last ``rows`` rows up to each date (fewer at the start)."""
    r = np.asarray(returns, dtype=float)
    sq = np.where(np.isnan(r), 0.0, r ** 2)
    cnt = np.concatenate([np.zeros((1, r.shape[1])), np.cumsum(~np.isnan(r), axis=0)])
    tot = np.concatenate([np.zeros((1, r.shape[1])), np.cumsum(sq, axis=0)])
    end = np.arange(1, r.shape[0] + 1)
    start = np.maximum(0, end - int(rows))
    c = cnt[end] - cnt[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((tot[end] - tot[start]) / np.where(c > 0, c, np.nan))


def apc_vol_path(apc: str, sigma, returns, floor_lookback: int | None = None,
                 stress_rows: int = STRESS_WINDOW_ROWS) -> np.ndarray:
    """The vol a history model uses at each date under ``margin.apc`` (the vol form of Art. 28(1)(b) and (c)).

    ``sigma`` ``[date x series]`` is the model's own vol forecast for each date
    (from rows up to it), ``returns`` the daily log returns on the same rows.

    - ``stress_weight``: ``0.75 sigma + 0.25 sigma_stress``, sigma_stress the
      RMS return of the stressed window chosen at that date
      (:func:`stressed_vol_path`), as ``scenarios.stress_weight`` blends them in fhs;
    - ``floor``: ``max(sigma, sigma_long)``, sigma_long the RMS return of the
      last ``floor_lookback`` rows (10 years), as ``scenarios.vol_floor_lookback``;
    - ``none``, ``buffer``: ``sigma`` unchanged (the buffer acts on the margin:
      :func:`release_buffer`).
    """
    s = np.asarray(sigma, dtype=float)
    if apc == "stress_weight":
        stressed = stressed_vol_path(returns, stress_rows)
        return (1.0 - APC_STRESS_WEIGHT) * s + APC_STRESS_WEIGHT * np.where(np.isnan(stressed), s, stressed)
    if apc == "floor":
        if floor_lookback is None:
            raise ValueError("floor needs floor_lookback rows")
        long = floor_vol_path(returns, floor_lookback)
        return np.fmax(s, long)
    return s


def floor_rows(index: pd.DatetimeIndex, years: int = APC_FLOOR_YEARS) -> int:
    """Rows of ``index`` within ``years`` calendar years up to its last date (the look-back of the floor)."""
    if len(index) == 0:
        return 2
    start = index[-1] - pd.DateOffset(years=years)
    return max(2, int((index > start).sum()))


def apc_scenario_settings(apc: str, scenarios: Mapping, history=None) -> tuple[dict, dict]:
    """The scenario settings under ``margin.apc`` (``stress_weight``, ``floor``), and attrs recording it.

    ``stress_weight``: where ``scenarios.stress_period`` is null, the period is
    chosen from the history up to the valuation date (:func:`stressed_period`)
    and ``stress_weight`` is 0.25; where a period is given it is kept and the
    weight becomes ``max(scenarios.stress_weight, 0.25)`` (the user's setting
    wins where it is at least as heavy).  ``floor``: ``vol_floor_lookback``
    becomes the rows of the last 10 years of the history, unless set (the
    user's look-back then wins).  Both need a history model (fhs,
    historical); ``none`` and ``buffer`` change no scenario setting.
    """
    cfg = dict(scenarios)
    if apc in ("none", "buffer"):
        return cfg, {}
    model = cfg.get("model")
    if model not in HISTORY_MODELS:
        raise ConfigError("margin.apc", f"margin.apc={apc} works through the history models' volatility "
                                        f"(scenarios=fhs or historical), not scenarios={model}")
    if history is None:
        raise ConfigError("history", f"margin.apc={apc} needs a price history: give history=PATH")
    from ..inputs.history import as_history
    from ..stats.returns import as_of, daily_returns

    h = as_of(as_history(history), cfg.get("valuation_date"))
    attrs = {}
    if apc == "stress_weight":
        given = cfg.get("stress_period")
        if given in (None, "") or (hasattr(given, "__len__") and len(given) == 0):
            cols = [c for c in h.columns if not str(c).startswith("_")]
            r = daily_returns(h[cols], str(cfg.get("gaps", "span"))).iloc[1:]
            t0, t1 = stressed_period(r)
            cfg["stress_period"] = {"start": t0.date().isoformat(), "end": t1.date().isoformat()}
            cfg["stress_weight"] = APC_STRESS_WEIGHT
            attrs["apc_stress_period"] = f"{t0.date().isoformat()}..{t1.date().isoformat()} (chosen from data)"
        else:
            w = float(cfg.get("stress_weight", 1.0))
            cfg["stress_weight"] = max(w, APC_STRESS_WEIGHT)
            if w < APC_STRESS_WEIGHT:
                log.warning("margin.apc=stress_weight: scenarios.stress_weight %g raised to %g", w, APC_STRESS_WEIGHT)
            attrs["apc_stress_period"] = f"{given} (scenarios.stress_period)"
        attrs["apc_stress_weight"] = float(cfg["stress_weight"])
    elif apc == "floor":
        if cfg.get("vol_floor_lookback") is None:
            cfg["vol_floor_lookback"] = floor_rows(h.index)
            attrs["apc_floor_lookback"] = f"{cfg['vol_floor_lookback']} rows (the last {APC_FLOOR_YEARS} years)"
        else:
            attrs["apc_floor_lookback"] = f"{cfg['vol_floor_lookback']} rows (scenarios.vol_floor_lookback)"
    return cfg, attrs


# --------------------------------------------------------------------------- in a backtest
def floor_vol_dates(returns, dates, years: int = APC_FLOOR_YEARS) -> np.ndarray:
    """``[date x series]``: RMS return over the rows dated within ``years`` calendar years up to each date.

    The look-back of the floor at date t is the rows in ``(t - years, t]``, as
    :func:`floor_rows` counts them for the stress run's ``vol_floor_lookback``.
    """
    r = np.asarray(returns, dtype=float)
    idx = pd.DatetimeIndex(dates)
    start = np.searchsorted(idx.values, (idx - pd.DateOffset(years=years)).values, side="right")
    sq = np.where(np.isnan(r), 0.0, r ** 2)
    cnt = np.concatenate([np.zeros((1, r.shape[1])), np.cumsum(~np.isnan(r), axis=0)])
    tot = np.concatenate([np.zeros((1, r.shape[1])), np.cumsum(sq, axis=0)])
    end = np.arange(1, r.shape[0] + 1)
    c = cnt[end] - cnt[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((tot[end] - tot[start]) / np.where(c > 0, c, np.nan))


def apc_variance(apc: str, sigma2, returns, positions, dates, floor_set: bool = False) -> np.ndarray:
    """The variance forecasts ``sigma2`` (rows ``positions`` of the history) under ``margin.apc``, for FHS.

    ``returns`` ``[row x series]`` are the history's daily log returns (row t:
    the return ending at t), ``dates`` its dates; every figure at a position
    reads rows up to it only.  ``stress_weight``: ``(0.75 sigma + 0.25
    sigma_stress)^2``; ``floor``: ``max(sigma, sigma_10y)^2``; otherwise
    ``sigma2`` itself.  ``floor_set``: ``scenarios.vol_floor_lookback`` already
    floors ``sigma2`` (the same floor on a look-back the user chose), which then
    wins, as in the stress run: ``floor`` changes nothing more.
    """
    if apc not in ("stress_weight", "floor") or (apc == "floor" and floor_set):
        return sigma2
    pos = np.asarray(positions)
    sigma = np.sqrt(np.asarray(sigma2, dtype=float))
    if apc == "floor":
        long = floor_vol_dates(returns, dates)[pos]
        return np.fmax(sigma, long) ** 2
    stressed = stressed_vol_path(returns)[pos]
    return ((1.0 - APC_STRESS_WEIGHT) * sigma + APC_STRESS_WEIGHT * np.where(np.isnan(stressed), sigma,
                                                                                stressed)) ** 2


def apc_margin(apc: str, im) -> np.ndarray:
    """The margin called under ``margin.apc`` from the model's margin path ``im`` [date x portfolio].

    ``buffer``: :func:`release_buffer`; the other options act on the vol
    (:func:`apc_variance`) and leave the path as it is.
    """
    return release_buffer(im) if apc == "buffer" else np.asarray(im, dtype=float)


def procyclicality_variables(im, im_no_apc, apc: str) -> dict:
    """The metrics of ``im`` and, suffixed ``_no_apc``, of the same run without APC, as dataset variables."""
    out = {}
    for suffix, path in (("", im), ("_no_apc", im_no_apc)):
        for name, values in procyclicality(path).items():
            attrs = dict(METRIC_ATTRS[name])
            if suffix:
                attrs["long_name"] += " (without anti-procyclicality)"
            else:
                attrs["long_name"] += f" (margin.apc={apc})"
            attrs["methodology"] = "docs/methodology.md, section 15"
            out[name + suffix] = (("portfolio",), np.asarray(values, dtype=float), attrs)
    return out


def with_procyclicality(ds, rerun_without_apc):
    """``ds`` (a backtest dataset) with the procyclicality metrics of its ``im``, with and without APC.

    ``rerun_without_apc()`` returns the ``im`` [date x portfolio] of the same
    backtest with ``margin.apc=none``; it is called only for the options that
    change the vol (``stress_weight``, ``floor``); the ``buffer`` option's
    margin without APC is the model's own, ``max(0, es) (1 + margin_buffer)``.
    """
    apc = str(ds.attrs.get("margin_apc", "none"))
    im = ds["im"].transpose("date", "portfolio").to_numpy()
    if apc == "none":
        bare = im
    elif apc == "buffer":
        bare = np.maximum(0.0, ds["es"].transpose("date", "portfolio").to_numpy()) * (
            1.0 + float(ds.attrs["margin_buffer"]))
    else:
        bare = np.asarray(rerun_without_apc(), dtype=float)
    return ds.assign(procyclicality_variables(im, bare, apc))


def backtest_apc(value, model: str) -> str:
    """``margin.apc`` of a backtest: the vol options need the filtered vol of ``scenarios=fhs``."""
    apc = apc_option(value)
    if apc in ("stress_weight", "floor") and model != "fhs":
        raise ConfigError("margin.apc", f"margin.apc={apc} acts on the filtered vol of each date: the backtest "
                                        f"applies it with scenarios=fhs, not {model}")
    return apc
