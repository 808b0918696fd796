"""The Student-t copula scenario model (docs/methodology-history.md, H.6).

``t_copula`` (``scenarios=t_copula``): a Student-t copula with per-asset
Student-t marginals, each scaled to the asset's vol.  A parametric model:
its parameters come from ``scenarios.params``, a calibration of the history
on the fly, or the config, exactly as for ``gaussian`` and ``student_t``
(:func:`mcmargin.scenarios.parametric._factor_params`).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import special

from ..common.settings import one_of, plain, real_number
from ..stats.correlation import cholesky_psd
from . import rng
from .base import ScenarioModel, register
from .parametric import DRIFTS, _factor_params

log = logging.getLogger(__name__)

#: A marginal with at least this many degrees of freedom is drawn as a normal.
GAUSSIAN_DOF = 1000.0


class TCopulaScenarios(ScenarioModel):
    """Student-t copula with Student-t marginals (docs/methodology-history.md, H.6).

    For scenario i: ``Y = L Z`` (correlated normals), ``T = Y sqrt(nu_c / W)``
    with ``W ~ chi-square(nu_c)`` (a multivariate t: the copula), ``U =
    F_t(T; nu_c)``, ``X_j = F_t^-1(U_j; nu_j) sqrt((nu_j - 2) / nu_j)`` (unit
    variance), ``shock_j = mu_j + s_j X_j`` and ``vol_shock_j = nu_vol_j
    sqrt(h / D) (rho_j X_j + sqrt(1 - rho_j^2) Z_vol_j)``, as the parametric
    models.  The marginal transform runs on the host in SciPy (the array API
    has no Student-t quantile), tail-accurately via the smaller tail
    probability; the shocks then move to the backend.
    """

    def __init__(self, assets, factors, vol, vol_of_vol, spot_vol_corr, correlation, marginal_dof, copula_dof, *,
                 n, seed, horizon_days, days_per_year=365.0, drift="zero"):
        self.assets, self.factors = tuple(assets), tuple(factors)
        self.n, self.seed = int(n), int(seed)
        self.horizon_days, self.days_per_year = float(horizon_days), float(days_per_year)
        self.vol = np.asarray(vol, dtype=float)
        self.vol_of_vol = np.asarray(vol_of_vol, dtype=float)
        self.spot_vol_corr = np.asarray(spot_vol_corr, dtype=float)
        self.correlation = np.asarray(correlation, dtype=float)
        self.marginal_dof = np.asarray(marginal_dof, dtype=float)
        self.copula_dof = float(copula_dof)
        self.drift = drift
        root_h = math.sqrt(self.horizon_days / self.days_per_year)
        self._scale = self.vol * root_h
        self._vscale = self.vol_of_vol * root_h
        self._chol = cholesky_psd(self.correlation)
        self._col = np.array([self.assets.index(f) for f in self.factors], dtype=int)
        nu = self.marginal_dof
        self._gauss = nu >= GAUSSIAN_DOF
        self._unit = np.where(self._gauss, 1.0, np.sqrt(np.clip(nu - 2.0, 1e-12, None) / nu))
        self._mu = -0.5 * self._scale ** 2 if drift == "martingale" else np.zeros(len(self.factors))

    def _unit_marginals(self, z_ret, w):
        """Unit-variance Student-t marginals [n, k] under the t copula, from k normals and the mixing chi-square."""
        t = (z_ret @ self._chol.T) * np.sqrt(self.copula_dof / w)[:, None]
        p = special.stdtr(self.copula_dof, -np.abs(t))            # smaller tail probability, accurate
        q_t = special.stdtrit(np.where(self._gauss, 3.0, self.marginal_dof), p)
        q = np.where(self._gauss, special.ndtri(p), q_t)           # lower-tail quantile (<= 0)
        return -np.sign(t) * q * self._unit                         # unit-variance t marginals

    def return_shocks(self, z, w, backend):
        """Log-return shocks ``[n, assets]`` from given draws (``z`` [n, k] normals, ``w`` [n] chi-square(copula_dof)).

        The return part of :meth:`draw`, for callers that key their own draws
        (the backtest: docs/methodology.md, section 13).
        """
        z, w = np.asarray(z, dtype=np.float64), np.asarray(w, dtype=np.float64)
        shock = np.zeros((z.shape[0], len(self.assets)))
        shock[:, self._col] = self._mu + self._unit_marginals(z, w) * self._scale
        return backend.asarray(shock)

    def draw(self, start, stop, backend):
        k, a = len(self.factors), len(self.assets)
        c = stop - start
        z = np.asarray(rng.standard_normals(self.seed, start, stop, 2 * k))
        w = np.asarray(rng.chi_square(self.seed, start, stop, self.copula_dof))
        x = self._unit_marginals(z[:, :k], w)
        shock = np.zeros((c, a))
        vol = np.zeros((c, a))
        shock[:, self._col] = self._mu + x * self._scale
        rho = self.spot_vol_corr
        vol[:, self._col] = self._vscale * (rho * x + np.sqrt(1.0 - rho ** 2) * z[:, k:])
        return backend.asarray(shock), backend.asarray(vol)

    def describe(self):
        d = super().describe()
        d.update(model="t_copula", copula_dof=self.copula_dof, marginal_dof=self.marginal_dof.tolist(),
                 drift=self.drift, days_per_year=self.days_per_year, factors=list(self.factors),
                 vol=self.vol.tolist(), vol_of_vol=self.vol_of_vol.tolist(),
                 spot_vol_corr=self.spot_vol_corr.tolist(), correlation=self.correlation.tolist())
        return d


@register("t_copula")
def t_copula(cfg, assets, asset_vols, history=None):
    """t copula with per-asset Student-t marginals, from fitted or configured parameters."""
    cfg = plain(cfg)
    drift = one_of(cfg.get("drift", "zero"), "scenarios.drift", DRIFTS)
    dpy = real_number(cfg.get("days_per_year", 365.0), "scenarios.days_per_year", 0.0, low_open=True)
    default_dof = real_number(cfg.get("marginal_dof", 5.0), "scenarios.marginal_dof", 2.0, low_open=True)
    copula_dof = real_number(cfg.get("copula_dof", 6.0), "scenarios.copula_dof", 0.0, low_open=True)
    factors, p, corr = _factor_params(cfg, assets, asset_vols, history, fit_dof=True)
    nu = []
    for a, d in zip(factors, p["dof"]):
        if d is None:
            d = default_dof
        if not d > 2:
            log.warning("t_copula: marginal dof %.3g of %s raised to 2.05 (finite variance)", d, a)
            d = 2.05
        nu.append(d)
    if p["copula_dof"] is not None:
        log.info("t_copula: fitted copula dof %.3g replaces scenarios.copula_dof=%s", p["copula_dof"], copula_dof)
        copula_dof = p["copula_dof"]
    return TCopulaScenarios(assets, factors, p["vol"], p["vol_of_vol"], p["spot_vol_corr"], corr, nu, copula_dof,
                            n=cfg["n"], seed=cfg["seed"], horizon_days=cfg["horizon_days"], days_per_year=dpy,
                            drift=drift)
