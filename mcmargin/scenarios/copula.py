"""The Student-t copula scenario model (docs/methodology-history.md, H.6).

``t_copula`` (``scenarios=t_copula``): a Student-t copula with per-asset
Student-t marginals, each scaled to the asset's vol.  A parametric model:
its parameters come from ``scenarios.params``, a calibration of the history
on the fly, or the config, exactly as for ``gaussian`` and ``student_t``
(:func:`mcmargin.scenarios.parametric._factor_params`).
"""

from __future__ import annotations

import functools
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

#: The tabulated marginal transform (:func:`marginal_table`): 2 ** NODE_BITS cells in each binade of |t|
#: from 2 ** LO to 2 ** HI (6e-8 to 2,048; beyond, where a copula draw almost never lands and SciPy's
#: quantile of a probability below 1e-100 may lose its digits, the transform is computed by SciPy directly).
TABLE_BINADES = (-24, 11)
NODE_BITS = 8


class TCopulaScenarios(ScenarioModel):
    """Student-t copula with Student-t marginals (docs/methodology-history.md, H.6).

    For scenario i: ``Y = L Z`` (correlated normals), ``T = Y sqrt(nu_c / W)``
    with ``W ~ chi-square(nu_c)`` (a multivariate t: the copula), ``U =
    F_t(T; nu_c)``, ``X_j = F_t^-1(U_j; nu_j) sqrt((nu_j - 2) / nu_j)`` (unit
    variance), ``shock_j = mu_j + s_j X_j`` and ``vol_shock_j = nu_vol_j
    sqrt(h / D) (rho_j X_j + sqrt(1 - rho_j^2) Z_vol_j)``, as the parametric
    models.  The marginal transform runs on the host in SciPy (the array API
    has no Student-t quantile), tail-accurately via the smaller tail
    probability; the shocks then move to the backend.  With ``tabulated`` the
    transform is read from a table per (copula dof, marginal dof)
    (:func:`marginal_table`, relative error below 1e-9): for callers that
    draw under many correlations but few dofs (the backtest).
    """

    def __init__(self, assets, factors, vol, vol_of_vol, spot_vol_corr, correlation, marginal_dof, copula_dof, *,
                 n, seed, horizon_days, days_per_year=365.0, drift="zero", tabulated=False):
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
        self.tabulated = bool(tabulated)
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
        dof = np.where(self._gauss, np.inf, self.marginal_dof)
        if self.tabulated:
            return tabulated_unit_marginals(t, self.copula_dof, dof, self._unit)
        return -np.sign(t) * lower_quantiles(t, self.copula_dof, dof) * self._unit   # unit-variance marginals

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


def lower_quantiles(t, copula_dof: float, marginal_dof):
    """The marginals' lower-tail quantiles ``F^-1(F_t(-|t|; copula_dof); marginal_dof)`` (<= 0), by SciPy.

    ``marginal_dof`` broadcasts against ``t``; an infinite one is the normal.
    Through the smaller tail probability, so the far tails keep their digits.
    """
    t, nu = np.asarray(t, dtype=float), np.asarray(marginal_dof, dtype=float)
    p = special.stdtr(copula_dof, -np.abs(t))
    gauss = np.isinf(nu)
    q_t = special.stdtrit(np.where(gauss, 3.0, nu), p)
    return np.where(gauss, special.ndtri(p), q_t)


@functools.lru_cache(maxsize=512)
def marginal_table(copula_dof: float, marginal_dof: float) -> tuple[np.ndarray, ...]:
    """``(q, h, left, right)`` of :func:`lower_quantiles` for :func:`tabulated_lower_quantiles`.

    Nodes: ``a_k = 2^e (1 + j / 2^NODE_BITS)``, every binade e of
    :data:`TABLE_BINADES` cut in 2 ** NODE_BITS cells, so a |t|'s cell and its
    place in it are read from the bits of the float (no logarithm).  ``q``
    and ``h = log(-q)`` at the nodes; ``left`` and ``right``: dh/ds at the
    two ends of each cell, s in [0, 1) the place in the cell (``dh/da = f_c(a)
    / (f(q) |q|)``, densities of the copula's t and of the marginal, times
    the cell's width).  In log q the transform is smooth and near a
    straight line in log |t| (linear near 0, a power in the tails), so a
    cubic Hermite interpolant over cells 0.4% wide is within about 1e-10 of
    it relatively (tested); SciPy's own values carry errors up to about 1e-9
    near t = 0, where the tail probability is close to 1/2.
    """
    lo, hi = TABLE_BINADES
    k = np.arange(((hi - lo) << NODE_BITS) + 1)
    a = np.ldexp(1.0 + (k & ((1 << NODE_BITS) - 1)) / (1 << NODE_BITS), lo + (k >> NODE_BITS))
    q = lower_quantiles(a, copula_dof, marginal_dof)
    dh = _density(a, copula_dof) / (_density(q, marginal_dof) * -q)
    width = np.ldexp(1.0, lo + (k[:-1] >> NODE_BITS)) / (1 << NODE_BITS)
    return q, np.log(-q), dh[:-1] * width, dh[1:] * width


def _density(x, dof: float):
    """The Student-t density with ``dof`` degrees of freedom at ``x`` (the normal's for an infinite dof)."""
    if math.isinf(dof):
        return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    log_c = special.gammaln(0.5 * (dof + 1.0)) - special.gammaln(0.5 * dof) - 0.5 * math.log(dof * math.pi)
    return np.exp(log_c - 0.5 * (dof + 1.0) * np.log1p(x * x / dof))


@functools.lru_cache(maxsize=64)
def _stacked_tables(copula_dof: float, marginal_dofs: tuple) -> tuple[np.ndarray, ...]:
    """:func:`marginal_table` of each column's marginal dof, each array stacked [columns x nodes] once."""
    tables = [marginal_table(copula_dof, d) for d in marginal_dofs]
    return tuple(np.stack(part) for part in zip(*tables))


def tabulated_lower_quantiles(t, copula_dof: float, marginal_dof) -> np.ndarray:
    """:func:`lower_quantiles` from :func:`marginal_table` (the few |t| outside it: by SciPy).

    ``t`` is [n] with one ``marginal_dof``, or [n x k] with one per column.
    """
    t = np.asarray(t, dtype=float)
    t2 = t.reshape(-1, 1) if t.ndim == 1 else t
    # The unit marginal of a negative t is its lower quantile times the unit: with unit 1, q itself.
    x = tabulated_unit_marginals(-np.abs(t2), copula_dof, marginal_dof, np.ones(t2.shape[1]))
    return x.ravel() if t.ndim == 1 else x


def tabulated_unit_marginals(t, copula_dof: float, marginal_dof, unit) -> np.ndarray:
    """``-sign(t) x unit x`` :func:`lower_quantiles` of ``t`` [n x k] (one marginal dof and unit per column),
    from :func:`marginal_table`; the few |t| outside it by SciPy."""
    t2 = np.ascontiguousarray(t, dtype=float)
    dofs = np.broadcast_to(np.asarray(marginal_dof, dtype=float), (t2.shape[1],))
    unit = np.ascontiguousarray(np.broadcast_to(np.asarray(unit, dtype=float), (t2.shape[1],)))
    q, h, left, right = _stacked_tables(float(copula_dof), tuple(float(d) for d in dofs))
    out = np.empty_like(t2)
    from ._copula_kernels import hermite_in_cells         # numba: imported by the step that needs it

    hermite_in_cells(t2, TABLE_BINADES[0], NODE_BITS, q, h, left, right, unit, out)
    rows, cols = np.nonzero(np.isnan(out))
    if rows.size:
        tt = t2[rows, cols]
        out[rows, cols] = -np.sign(tt) * lower_quantiles(tt, copula_dof, dofs[cols]) * unit[cols]
    return out


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
