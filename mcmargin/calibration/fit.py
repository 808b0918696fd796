"""Fit scenario-model parameters to a price history, as an xarray dataset.

:func:`calibrate` runs the whole estimation of docs/methodology-history.md
(sections H.1-H.5) and returns a dataset that :func:`load_params` reads
back and the parametric scenario models take instead of refitting
(``scenarios.params=PATH``):

========================  ==================================================
``vol(asset)``            annualised volatility forecast for the next row
                          (EWMA or GARCH), ``sqrt(periods_per_year)`` times
                          the daily one
``realized_vol(asset)``   annualised root-mean-square return over the
                          look-back
``correlation(asset,      correlation of de-volatized returns over the
asset_b)``                look-back (shrunk, PSD)
``dof(asset)``            Student-t dof of each residual series (ML)
``mvt_dof``               joint dof of the multivariate t (``student_t``)
``copula_dof``            dof of the t copula (``t_copula``)
``garch_omega/alpha/beta  the variance recursion of each series (EWMA:
(asset)``                 0, 1 - lambda, lambda), daily units
``vol_of_vol(asset)``,    annualised vol of the log change of the implied
``spot_vol_corr(asset)``  vol column mapped to the asset, and its
                          correlation with the asset's return (NaN where no
                          implied-vol column is mapped)
``n_obs(asset)``          residuals used in the look-back
``vol_path(date, asset)``, conditional vol (annualised) and residual of
``residual(date, asset)`` every row up to the valuation date
========================  ==================================================

Attributes record the method, lambda, look-back window, shrinkage, the
smallest correlation eigenvalue before and after repair, the history file
and its gap report, and the valuation date.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..common.audit import record_input
from ..common.settings import one_of, plain, real_number, whole_number
from ..errors import ConfigError, InputError
from ..inputs.history import GAP_POLICIES, as_history, history_file
from ..stats.returns import as_of, daily_returns, infer_periods_per_year, spanning_returns
from .dependence import devolatized_correlation
from .tdist import fit_copula_dof, fit_mvt_dof, fit_t_dof
from .volatility import VOL_METHODS, devolatize, filter_volatility

log = logging.getLogger(__name__)

#: Fewest residuals an asset needs in the look-back to be calibrated.
MIN_OBSERVATIONS = 20


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    """Estimation settings (config keys of the same names; see conf/calibrate.yaml)."""

    vol_method: str = "ewma"
    ewma_lambda: float = 0.97
    lookback: int | None = 500
    shrinkage: float | str = 0.0
    periods_per_year: float | None = None
    implied_vol_columns: Mapping = dataclasses.field(default_factory=dict)
    fit_dof: bool = True
    gaps: str = "span"
    valuation_date: object = None

    @classmethod
    def from_cfg(cls, cfg: Mapping | None, prefix: str = "scenarios", **defaults) -> "CalibrationSettings":
        """Settings from a config mapping (missing keys take ``defaults``, then the class defaults); validated."""
        cfg = plain(cfg or {})
        base = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(cls)}
        base.update(defaults)
        kw = {k: (cfg[k] if k in cfg and cfg[k] is not None else base[k]) for k in base}
        # null means "default" except where null is itself meaningful
        for k in ("lookback", "periods_per_year", "valuation_date"):
            if k in cfg:
                kw[k] = cfg[k]
        key = (lambda k: f"{prefix}.{k}" if prefix else k)
        kw["vol_method"] = one_of(kw["vol_method"], key("vol_method"), VOL_METHODS)
        kw["ewma_lambda"] = real_number(kw["ewma_lambda"], key("ewma_lambda"), 0.0, 1.0, low_open=True, high_open=True)
        kw["lookback"] = whole_number(kw["lookback"], key("lookback"), minimum=2, allow_none=True)
        sh = kw["shrinkage"]
        if isinstance(sh, str) and sh.lower().replace("-", "_") in ("ledoit_wolf", "lw", "auto"):
            kw["shrinkage"] = sh
        else:
            try:
                kw["shrinkage"] = real_number(sh, key("shrinkage"), 0.0, 1.0)
            except ConfigError:
                raise ConfigError(key("shrinkage"), f"must be a number in [0, 1] or 'ledoit_wolf', got {sh!r}") from None
        kw["periods_per_year"] = real_number(kw["periods_per_year"], key("periods_per_year"), 0.0, low_open=True,
                                             allow_none=True)
        ivc = kw["implied_vol_columns"] or {}
        if not isinstance(ivc, Mapping):
            raise ConfigError(key("implied_vol_columns"), "must map an asset to a history column, e.g. {SPX: VIX}")
        kw["implied_vol_columns"] = {str(a): str(c) for a, c in ivc.items() if c is not None}
        kw["gaps"] = one_of(kw["gaps"], key("gaps"), GAP_POLICIES)
        kw["fit_dof"] = bool(kw["fit_dof"])
        return cls(**kw)


def lookback_rows(index: pd.Index, lookback: int | None) -> slice:
    """Positions of the last ``lookback`` rows (all when None)."""
    n = len(index)
    return slice(0, n) if lookback is None or lookback >= n else slice(n - lookback, n)


def calibrate(history, cfg: Mapping | CalibrationSettings | None = None, *, assets: Sequence[str] | None = None,
              prefix: str = "scenarios") -> xr.Dataset:
    """Fit vols, de-volatized correlation and Student-t dof to ``history`` (module docstring).

    Parameters
    ----------
    history : DataFrame or path
        A price history (:func:`mcmargin.inputs.history.load_history`).  Only rows
        up to the valuation date (``cfg.valuation_date``, else
        ``history.attrs["valuation_date"]``, else the last row) are used.
    cfg : mapping or CalibrationSettings
        Estimation settings (:class:`CalibrationSettings`).
    assets : sequence of str, optional
        Price columns to calibrate; default every column that is not an
        implied-vol column.
    prefix : str
        Config prefix for error messages.
    """
    s = cfg if isinstance(cfg, CalibrationSettings) else CalibrationSettings.from_cfg(cfg, prefix)
    key = (lambda k: f"{prefix}.{k}" if prefix else k)
    h = as_of(as_history(history), s.valuation_date)
    file = history_file(h)
    ivc = s.implied_vol_columns
    for a, c in ivc.items():
        if c not in h.columns:
            raise InputError(file, f"no column {c!r} for the implied vol of {a} (config key "
                                   f"{key('implied_vol_columns')}.{a})", row=1)
    vol_cols = set(ivc.values())
    if assets is None:
        assets = [c for c in h.columns if c not in vol_cols]
    assets = [str(a) for a in assets]
    missing = [a for a in assets if a not in h.columns]
    if missing:
        raise InputError(file, f"no price column for asset(s) {', '.join(missing)}", row=1)
    if not assets:
        raise InputError(file, "no asset columns to calibrate", row=1)
    iv_used = {a: c for a, c in ivc.items() if a in assets}
    series = list(dict.fromkeys(assets + list(iv_used.values())))
    ppy = s.periods_per_year or infer_periods_per_year(h.index)

    px = h[series]
    px = px.loc[px.notna().any(axis=1).to_numpy()]   # rows where some series used has a price
    r = daily_returns(px, s.gaps)
    spans = spanning_returns(px)
    for c in series:
        if spans[c]:
            log.info("history %s: %d return(s) of %s span a gap (the move is counted when trading resumes)",
                     file, int(spans[c]), c)
    try:
        vf = filter_volatility(r, s.vol_method, s.ewma_lambda)
    except ValueError as exc:
        raise InputError(file, str(exc)) from None
    z = devolatize(r, vf.sigma2)
    win = lookback_rows(r.index, s.lookback)
    zw, rw = z.iloc[win], r.iloc[win]
    n_obs = zw[assets].notna().sum()
    short = [a for a in assets if n_obs[a] < MIN_OBSERVATIONS]
    if short:
        raise InputError(file, "too few returns in the look-back to calibrate "
                               + ", ".join(f"{a} ({int(n_obs[a])})" for a in short)
                               + f"; need at least {MIN_OBSERVATIONS}: a longer history or look-back, "
                                 "or leave the asset out", column=short[0])
    if len(zw) < (s.lookback or 0):
        log.warning("history %s has %d return rows up to the valuation date, fewer than the look-back of %d",
                    file, len(zw), s.lookback)

    corr, cinfo = devolatized_correlation(zw[assets], s.shrinkage)
    k = len(assets)
    moving = np.array([bool(np.nanmax(np.abs(rw[a].to_numpy())) > 0) if rw[a].notna().any() else False
                       for a in assets])
    dof = np.full(k, np.nan)
    mvt = {"dof": math.nan}
    cop = {"dof": math.nan}
    if s.fit_dof:
        for j, a in enumerate(assets):
            if moving[j]:
                dof[j] = fit_t_dof(zw[a].to_numpy())["dof"]
        mv = [a for a, m in zip(assets, moving) if m]
        if mv:
            idx = [assets.index(a) for a in mv]
            sub = corr[np.ix_(idx, idx)]
            mvt = fit_mvt_dof(zw[mv].to_numpy(), sub)
            if len(mv) > 1:
                cop = fit_copula_dof(zw[mv].to_numpy(), sub)

    vov = np.full(k, np.nan)
    svc = np.full(k, np.nan)
    for j, a in enumerate(assets):
        c = iv_used.get(a)
        if c is None:
            continue
        dv = rw[c]
        both = dv.notna() & rw[a].notna()
        if both.sum() < MIN_OBSERVATIONS:
            raise InputError(file, f"too few common rows of {a} and its implied vol {c} in the look-back "
                                   f"({int(both.sum())})", column=c)
        vov[j] = float(np.sqrt(np.mean(dv[dv.notna()] ** 2)) * math.sqrt(ppy))
        x, y = rw[a][both].to_numpy(), dv[both].to_numpy()
        svc[j] = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 0.0

    daily_forecast = vf.forecast[assets].to_numpy()
    realized = np.sqrt((rw[assets] ** 2).mean().to_numpy()) * math.sqrt(ppy)
    dates = r.index
    ds = xr.Dataset(
        {
            "vol": ("asset", np.sqrt(daily_forecast) * math.sqrt(ppy)),
            "realized_vol": ("asset", realized),
            "correlation": (("asset", "asset_b"), corr),
            "dof": ("asset", dof),
            "mvt_dof": ((), float(mvt["dof"])),
            "copula_dof": ((), float(cop["dof"])),
            "garch_omega": ("asset", vf.omega[assets].to_numpy(dtype=float)),
            "garch_alpha": ("asset", vf.alpha[assets].to_numpy(dtype=float)),
            "garch_beta": ("asset", vf.beta[assets].to_numpy(dtype=float)),
            "vol_of_vol": ("asset", vov),
            "spot_vol_corr": ("asset", svc),
            "implied_vol_column": ("asset", np.array([iv_used.get(a, "") for a in assets], dtype=object)),
            "n_obs": ("asset", n_obs[assets].to_numpy(dtype=np.int64)),
            "vol_path": (("date", "asset"), np.sqrt(vf.sigma2[assets].to_numpy()) * math.sqrt(ppy)),
            "residual": (("date", "asset"), z[assets].to_numpy()),
            "in_lookback": ("date", _mask(len(dates), win)),
        },
        coords={"asset": np.array(assets, dtype=object), "asset_b": np.array(assets, dtype=object),
                "date": dates.to_numpy(dtype="datetime64[ns]")},
    )
    ds["vol"].attrs.update(units="1/sqrt(year)", description="annualised volatility forecast for the next row")
    ds["correlation"].attrs["description"] = "correlation of de-volatized returns over the look-back"
    ds["dof"].attrs["description"] = "Student-t degrees of freedom of the residuals (ML)"
    ds["mvt_dof"].attrs["description"] = "degrees of freedom of the multivariate t (ML, covariance fixed)"
    ds["copula_dof"].attrs["description"] = "degrees of freedom of the t copula (canonical ML)"
    # The non-finite values these variables define (mcmargin.output.check_figures refuses any other).
    for name, meaning in (("dof", "not fitted (fit_dof false, or the asset does not move)"),
                          ("mvt_dof", "not fitted"), ("copula_dof", "not fitted (fewer than two moving assets)"),
                          ("garch_omega", "not a GARCH fit"), ("garch_alpha", "not a GARCH fit"),
                          ("garch_beta", "not a GARCH fit"), ("vol_of_vol", "no implied-vol column"),
                          ("spot_vol_corr", "no implied-vol column"),
                          ("vol_path", "before the asset's first return"), ("residual", "no return on that row")):
        ds[name].attrs["nonfinite"] = f"nan: {meaning}"
    report = h.attrs.get("report")
    ds.attrs.update({
        "title": "mcmargin calibration",
        "methodology": "docs/methodology-history.md",
        "vol_method": s.vol_method,
        "ewma_lambda": s.ewma_lambda if s.vol_method == "ewma" else float("nan"),
        "lookback": -1 if s.lookback is None else int(s.lookback),
        "window_start": str(dates[win][0].date()) if len(dates[win]) else "",
        "window_end": str(dates[win][-1].date()) if len(dates[win]) else "",
        "valuation_date": str(pd.Timestamp(s.valuation_date or h.attrs.get("valuation_date") or dates[-1]).date()),
        "periods_per_year": float(ppy),
        "shrinkage": float(cinfo["shrinkage"]),
        "shrinkage_setting": str(s.shrinkage),
        "min_eigenvalue_raw": cinfo["min_eigenvalue_raw"],
        "min_eigenvalue": cinfo["min_eigenvalue"],
        "correlation_repaired": int(cinfo["repaired"]),
        "gaps": s.gaps,
        "implied_vol_columns": json.dumps(iv_used),
        "history_file": file,
        "history_report": json.dumps(report.to_dict() if report is not None else {}),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mcmargin_version": _version(),
    })
    log.info("calibrated %d asset(s) on %s (%s, look-back %s..%s)", k, file, s.vol_method,
             ds.attrs["window_start"], ds.attrs["window_end"])
    return ds


def _mask(n: int, win: slice) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[win] = True
    return m


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("mcmargin")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


# --------------------------------------------------------------------------- persistence
def save_params(ds: xr.Dataset, path, key: str = "output.path") -> str:
    """Write a calibration dataset safely (netCDF, or Zarr for a ``.zarr`` path).

    Through :func:`mcmargin.output.write_dataset`: written beside ``path``
    and swapped into place when complete, only over a dataset mcmargin
    wrote (anything else at ``path`` is refused and left untouched).
    """
    from ..output.store import write_dataset

    path = os.fspath(path)
    out = ds.copy()
    for name in list(out.variables):
        if out[name].dtype == object:
            out[name] = out[name].astype(str)
    is_zarr = path.rstrip("/").lower().endswith(".zarr")
    with warnings.catch_warnings():   # zarr v3: string coordinates
        warnings.simplefilter("ignore")
        write_dataset(out, path.rstrip("/") if is_zarr else path, netcdf=not is_zarr, key=key)
    return path


def load_params(path, key: str = "scenarios.params") -> xr.Dataset:
    """Read and check a calibration dataset written by :func:`save_params` / ``jobs.calibrate``.

    Checks: ``vol(asset)`` (finite, >= 0) and ``correlation(asset, asset_b)``
    exist; the correlation is symmetric with unit diagonal, and is repaired
    to the nearest correlation matrix if it is not PSD (logged).
    """
    from ..stats.correlation import nearest_correlation

    file = os.fspath(path)
    if not os.path.exists(file):
        raise ConfigError(key, f"calibration dataset {file} does not exist (write it with jobs.calibrate)")
    record_input(file)
    try:
        if file.rstrip("/").lower().endswith(".zarr") or os.path.isdir(file):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = xr.open_zarr(file).load()
        else:
            with xr.open_dataset(file) as f:
                ds = f.load()
    except Exception as exc:  # any reader error: not a dataset we can use
        raise InputError(file, f"cannot read calibration dataset: {exc}") from None
    for var in ("vol", "correlation"):
        if var not in ds:
            raise InputError(file, f"calibration dataset has no {var!r} variable", column=var)
    if ds["vol"].dims != ("asset",) or ds["correlation"].dims != ("asset", "asset_b"):
        raise InputError(file, "expected vol(asset) and correlation(asset, asset_b)", column="correlation")
    ds = ds.assign_coords(asset=[str(a) for a in ds["asset"].values],
                          asset_b=[str(a) for a in ds["asset_b"].values])
    if list(ds["asset"].values) != list(ds["asset_b"].values):
        raise InputError(file, "asset and asset_b coordinates differ", column="correlation")
    vol = ds["vol"].values.astype(float)
    bad = ~np.isfinite(vol) | (vol < 0)
    if bad.any():
        a = ds["asset"].values[int(bad.argmax())]
        raise InputError(file, f"vol of {a} is {vol[bad.argmax()]}; must be finite and >= 0", column="vol")
    c = ds["correlation"].values.astype(float)
    if not np.isfinite(c).all() or np.abs(np.diag(c) - 1).max(initial=0) > 1e-9 \
            or np.abs(c - c.T).max(initial=0) > 1e-9:
        raise InputError(file, "correlation must be finite and symmetric with unit diagonal", column="correlation")
    fixed = nearest_correlation(c)
    if not np.array_equal(fixed, c):
        ds["correlation"] = (("asset", "asset_b"), fixed)
    ds.attrs["params_file"] = file
    return ds
