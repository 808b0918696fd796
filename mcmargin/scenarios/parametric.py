"""Parametric Monte Carlo scenarios: correlated Gaussian and Student-t shocks.

Model (docs/methodology.md, section 2)
--------------------------------------
For risk factor i (a market asset with vol > 0) with annual vol sigma_i,
horizon h days and ``days_per_year`` D, the horizon scale is
``s_i = sigma_i * sqrt(h / D)``.  With standard normals Z (k return
factors, k vol factors) and the Cholesky factor L of the correlation
matrix C:

    eps   = L Z_ret                              correlated, unit variance
    eta_i = rho_i eps_i + sqrt(1 - rho_i^2) Z_vol_i
                                                 spot-vol correlation rho_i
    shock_i     = mu_i + s_i * w * eps_i         log-return over the horizon
    vol_shock_i = nu_i * sqrt(h / D) * w * eta_i log change of implied vol

``nu_i`` is the annual vol-of-vol.  ``w = 1`` for ``gaussian``; for
``student_t`` w = sqrt((dof - 2) / W) with W ~ chi-square(dof) shared by all
factors of a scenario (a multivariate t), so each factor's *marginal
standard deviation* equals s_i and the tails are jointly fat.  The drift
``mu_i`` is 0 (``drift: zero``, the default: the median scenario leaves
prices unchanged) or ``-s_i^2 / 2`` (``drift: martingale``, E[S'] = S for
the Gaussian model).  Cash assets have zero shocks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

from ..common.settings import mapping
from ..errors import ConfigError
from . import rng
from .base import ScenarioModel, register
from ..stats.correlation import check_correlation, cholesky_psd, nearest_correlation

log = logging.getLogger(__name__)

DRIFTS = ("zero", "martingale")


class ParametricScenarios(ScenarioModel):
    """Correlated Gaussian or multivariate Student-t shocks (module docstring).

    Parameters
    ----------
    assets : sequence of str
        Columns of the shocks (market assets).
    factors : sequence of str
        The assets that move (a subset of ``assets``).
    vol, vol_of_vol, spot_vol_corr : array_like, shape (k,)
        Annual return vol, annual vol-of-vol and spot-vol correlation per factor.
    correlation : array_like, shape (k, k)
        Return correlation of the factors (PSD, unit diagonal).
    n, seed : int
    horizon_days, days_per_year : float
    dof : float or None
        Student-t degrees of freedom (> 2); None for Gaussian.
    drift : {"zero", "martingale"}
    """

    def __init__(self, assets, factors, vol, vol_of_vol, spot_vol_corr, correlation, *, n, seed,
                 horizon_days, days_per_year=365.0, dof=None, drift="zero"):
        self.assets, self.factors = tuple(assets), tuple(factors)
        self.n, self.seed = int(n), int(seed)
        self.horizon_days, self.days_per_year = float(horizon_days), float(days_per_year)
        self.dof, self.drift = (None if dof is None else float(dof)), drift
        self.vol = np.asarray(vol, dtype=float)
        self.vol_of_vol = np.asarray(vol_of_vol, dtype=float)
        self.spot_vol_corr = np.asarray(spot_vol_corr, dtype=float)
        self.correlation = np.asarray(correlation, dtype=float)
        k, a = len(self.factors), len(self.assets)
        root_h = math.sqrt(self.horizon_days / self.days_per_year)
        scale = self.vol * root_h
        col = np.array([self.assets.index(f) for f in self.factors], dtype=int)
        # One matmul maps the 2k standard normals of a scenario to both shock
        # rows: correlation, spot-vol mixing, horizon scaling and placement
        # into asset columns, all folded into ``loading`` [2k x 2a].
        chol = cholesky_psd(self.correlation)
        loading = np.zeros((2 * k, 2 * a))
        loading[:k, col] = chol.T * scale                                  # returns
        vscale = self.vol_of_vol * root_h
        loading[:k, a + col] = chol.T * (self.spot_vol_corr * vscale)      # vol, via eps
        loading[k + np.arange(k), a + col] = np.sqrt(1 - self.spot_vol_corr ** 2) * vscale
        self._loading = loading
        self._drift = np.zeros(2 * a)
        if drift == "martingale":
            self._drift[col] = -0.5 * scale ** 2

    def draw(self, start, stop, backend):
        xp = backend.xp
        z = backend.asarray(rng.standard_normals(self.seed, start, stop, 2 * len(self.factors)))
        if self.dof is not None:
            w = backend.asarray(rng.chi_square(self.seed, start, stop, self.dof))
            z = z * xp.sqrt((self.dof - 2.0) / w)[:, None]
        both = z @ backend.asarray(self._loading) + backend.asarray(self._drift)
        a = len(self.assets)
        return both[:, :a], both[:, a:]

    def return_shocks(self, z, w, backend):
        """Log-return shocks ``[n, assets]`` from given draws, without the vol shocks.

        ``z`` [n, k]: the standard normals of the k return factors; ``w`` [n]:
        the chi-square(dof) mixing variable (Student-t; ignored for Gaussian).
        The same map as :meth:`draw` (the return rows of its loading), for
        callers that key their own draws (the backtest keys them by date:
        docs/methodology.md, section 13) and need no vol shocks.
        """
        xp = backend.xp
        z = backend.asarray(z)
        if self.dof is not None:
            z = z * xp.sqrt((self.dof - 2.0) / backend.asarray(w))[:, None]
        k, a = len(self.factors), len(self.assets)
        return z @ backend.asarray(np.ascontiguousarray(self._loading[:k, :a])) + backend.asarray(self._drift[:a])

    def describe(self):
        d = super().describe()
        d.update(model="student_t" if self.dof is not None else "gaussian", dof=self.dof, drift=self.drift,
                 days_per_year=self.days_per_year, factors=list(self.factors),
                 vol=self.vol.tolist(), vol_of_vol=self.vol_of_vol.tolist(),
                 spot_vol_corr=self.spot_vol_corr.tolist(), correlation=self.correlation.tolist())
        return d


def _fitted_params(cfg: Mapping, factors, history, fit_dof: bool):
    """Fitted parameters for the factors: ``scenarios.params`` (a calibration dataset), else a
    calibration of ``history`` on the fly (docs/methodology-history.md, H.5), else None."""
    path = cfg.get("params")
    if path:
        from ..calibration import load_params

        from .assets import check_params_cover, map_params

        ds = map_params(load_params(str(path)), cfg.get("_asset_map") or {}, str(path))
        check_params_cover(ds, factors, str(path), bool(cfg.get("params_fallback", False)))
        log.info("scenario parameters from %s for %s", path, ", ".join(factors))
        return ds
    if history is None:
        return None
    from ..calibration import calibrate
    from ..inputs.history import as_history

    h = as_history(history)
    ivc = set((cfg.get("implied_vol_columns") or {}).values())
    use = [a for a in factors if a in h.columns and a not in ivc and h[a].notna().any()]
    if not use:
        log.warning("history %s holds none of the risk factors (%s); using the configured parameters",
                    h.attrs.get("file", "<history>"), ", ".join(factors))
        return None
    log.info("calibrating %s on history %s", ", ".join(use), h.attrs.get("file", "<history>"))
    from ..calibration.fit import CalibrationSettings

    return calibrate(h, CalibrationSettings.from_cfg(cfg, "scenarios", fit_dof=fit_dof), assets=use)


def _factor_params(cfg: Mapping, assets, asset_vols, history=None, fit_dof: bool = False):
    """Risk-factor parameters of the moving assets, in market order, validated.

    Precedence per factor: fitted values (``scenarios.params`` dataset, or a
    calibration of ``history`` when no dataset is given) for the assets they
    cover; then the factor's ``risk_factors`` entry; then ``default_factor``
    (whose ``vol: null`` means the asset's market implied vol).  Without a
    ``default_factor`` key an unnamed factor is an error.  Correlations
    come from the fit between fitted assets, from the ``correlation`` matrix
    between configured ones, and are 0 otherwise; a mix is repaired to the
    nearest correlation matrix if it is not PSD (logged).

    Returns ``(factors, out, corr)``; ``out`` holds per-factor lists ``vol``,
    ``vol_of_vol``, ``spot_vol_corr``, ``dof`` (marginal Student-t dof or
    None), ``source``, and scalars ``mvt_dof``, ``copula_dof`` (None unless fitted).
    """
    table = mapping(cfg.get("risk_factors"), "scenarios.risk_factors") or {}
    names = list(table)
    market_vol = dict(zip(assets, (float(v) for v in asset_vols)))
    factors = [a for a, v in zip(assets, asset_vols) if v > 0]
    default = mapping(cfg.get("default_factor"), "scenarios.default_factor")
    missing = [a for a in factors if a not in table]
    fitted = _fitted_params(cfg, factors, history, fit_dof)
    fit_assets = [] if fitted is None else [str(a) for a in fitted["asset"].values]
    if default is None:
        missing = [a for a in missing if a not in fit_assets]
        if missing:
            raise ConfigError("scenarios.risk_factors", f"market asset(s) {', '.join(missing)} have vol > 0 but no "
                                                        "risk factor; add an entry with their annual vol")
        default = {}

    def fitted_value(a, var):
        if fitted is None or a not in fit_assets or var not in fitted:
            return None
        v = float(fitted[var].sel(asset=a))
        return v if math.isfinite(v) else None

    out = {"vol": [], "vol_of_vol": [], "spot_vol_corr": [], "dof": [], "source": []}
    for a in factors:
        p = mapping(table.get(a), f"scenarios.risk_factors.{a}") or {}
        out["source"].append("fitted" if a in fit_assets else "config" if a in table else "default")
        for key, fallback in (("vol", None), ("vol_of_vol", 0.0), ("spot_vol_corr", 0.0)):
            v = fitted_value(a, key)
            where = f"scenarios.params ({cfg.get('params')})" if cfg.get("params") else "calibration"
            if v is None:
                v = p.get(key)
                where = f"scenarios.risk_factors.{a}.{key}"
            if v is None:
                v = default.get(key, fallback)
                where = f"scenarios.default_factor.{key}"
                if v is None and key == "vol" and "default_factor" in cfg:
                    v = market_vol[a]
                    where = f"market vol of {a}"
            if v is None:
                raise ConfigError(f"scenarios.risk_factors.{a}.{key}", "is required")
            v = float(v)
            bad = (key != "spot_vol_corr" and (v < 0 or not math.isfinite(v))) or \
                  (key == "spot_vol_corr" and not -1 <= v <= 1)
            if bad:
                raise ConfigError(where if where.startswith("scenarios.") and "(" not in where
                                  else f"scenarios.risk_factors.{a}.{key}", f"invalid value {v} ({where})")
            out[key].append(v)
        d = fitted_value(a, "dof")
        if d is None and p.get("dof") is not None:
            d = float(p["dof"])
        out["dof"].append(d)
    mvt = None if fitted is None or "mvt_dof" not in fitted else float(fitted["mvt_dof"])
    cop = None if fitted is None or "copula_dof" not in fitted else float(fitted["copula_dof"])
    out["mvt_dof"] = mvt if mvt is not None and math.isfinite(mvt) else None
    out["copula_dof"] = cop if cop is not None and math.isfinite(cop) else None

    full = cfg.get("correlation")
    if full is not None:
        try:
            full = np.asarray(full, dtype=float)
        except (TypeError, ValueError):
            raise ConfigError("scenarios.correlation", "expected a square matrix of numbers (a list of rows of "
                                                       "equal length)") from None
    cfg_corr = np.eye(len(names)) if full is None else check_correlation(full, names)
    k = len(factors)
    corr = np.eye(k)
    mixed = False
    for i, a in enumerate(factors):
        for j in range(i):
            b = factors[j]
            if a in fit_assets and b in fit_assets:
                v = float(fitted["correlation"].sel(asset=a, asset_b=b))
            elif a in names and b in names:
                v = float(cfg_corr[names.index(a), names.index(b)])
                mixed |= bool(fit_assets)
            else:
                v = 0.0
            corr[i, j] = corr[j, i] = v
    if mixed:
        corr = nearest_correlation(corr)
    return factors, out, corr


def _parametric(cfg, assets, asset_vols, history, dof=None):
    drift = cfg.get("drift", "zero")
    if drift not in DRIFTS:
        raise ConfigError("scenarios.drift", f"must be one of {DRIFTS}, got {drift!r}")
    dpy = float(cfg.get("days_per_year", 365))
    if dpy <= 0:
        raise ConfigError("scenarios.days_per_year", f"must be > 0, got {dpy}")
    factors, p, corr = _factor_params(cfg, assets, asset_vols, history, fit_dof=dof is not None)
    if dof is not None and p["mvt_dof"] is not None:
        log.info("student_t: fitted joint degrees of freedom %.3g replace scenarios.dof=%s", p["mvt_dof"], dof)
        dof = max(p["mvt_dof"], 2.0 + 1e-6)
    return ParametricScenarios(assets, factors, p["vol"], p["vol_of_vol"], p["spot_vol_corr"], corr,
                               n=cfg["n"], seed=cfg["seed"], horizon_days=cfg["horizon_days"],
                               days_per_year=dpy, dof=dof, drift=drift)


@register("gaussian")
def gaussian(cfg, assets, asset_vols, history=None):
    """Correlated Gaussian log-returns and vol shocks.

    Vols and correlations come from ``scenarios.params`` (a calibration
    dataset) or, without one, from a calibration of ``history`` on the fly,
    for the factors they cover; the config's values otherwise (:func:`_factor_params`).
    """
    return _parametric(cfg, assets, asset_vols, history)


@register("student_t")
def student_t(cfg, assets, asset_vols, history=None):
    """Multivariate Student-t log-returns; ``scenarios.dof`` > 2.

    With fitted parameters (``scenarios.params`` or ``history``) the fitted
    joint dof (``mvt_dof``) replaces ``scenarios.dof``.
    """
    dof = cfg.get("dof")
    if dof is None or not float(dof) > 2:
        raise ConfigError("scenarios.dof", f"Student-t degrees of freedom must be > 2 (finite variance), got {dof}")
    return _parametric(cfg, assets, asset_vols, history, dof=float(dof))
