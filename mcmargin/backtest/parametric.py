"""The parametric scenario models in the backtest: gaussian, student_t and t_copula fitted as of each date.

docs/methodology.md, section 13.  For each date t the model of the stress
run (:mod:`mcmargin.scenarios.parametric`, :mod:`mcmargin.scenarios.copula`)
is built from the history up to and including the close of t only:

- vols: the causal variance filter of the FHS path (EWMA over the whole
  history once, or GARCH(1,1) refitted every ``backtest.refit_every``
  dates on returns up to the refit date), its forecasts summed over the h
  rows of the horizon (:func:`horizon_variance`);
- correlation: of the de-volatized residuals of the ``scenarios.lookback``
  rows ending at t (:func:`mcmargin.calibration.dependence.devolatized_correlation`:
  pairwise, shrunk, repaired to PSD), every date;
- degrees of freedom (``student_t``: the joint dof; ``t_copula``: each
  marginal's and the copula's) by maximum likelihood
  (:mod:`mcmargin.calibration.tdist`) on the residual window ending at each
  refit date, every ``backtest.refit_every`` dates from the start
  (:func:`fit_dof_schedule`);
- draws: the date's key (seed, date) of :func:`mcmargin.backtest.run.date_keys`
  is the root of :func:`mcmargin.scenarios.rng.standard_normals` and
  :func:`~mcmargin.scenarios.rng.chi_square`, scenario i under
  ``fold_in(fold_in(key, stream), i)``: never the date's position in the run.

:func:`parametric_block` draws, revalues and reduces every date of a block
on any array backend (NumPy included); each date's figures depend only on
its own inputs and key.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pandas as pd

from ..calibration.dependence import devolatized_correlation
from ..calibration.tdist import fit_copula_dof, fit_mvt_dof, fit_t_dof
from ..scenarios import rng, threefry
from ..scenarios.copula import TCopulaScenarios
from ..scenarios.parametric import ParametricScenarios
from . import kernels

log = logging.getLogger(__name__)

PARAMETRIC = ("gaussian", "student_t", "t_copula")


def horizon_variance(after: np.ndarray, omega, alpha, beta, h: int) -> np.ndarray:
    """Variance of the h-row log return: the sum of the recursion's forecasts for rows t+1..t+h.

    ``after`` [D, k] is the forecast for row t+1 made at the close of t;
    row t+j+1's is ``omega + (alpha + beta) x`` row t+j's (the expected
    variance under the recursion).  EWMA (omega 0, alpha + beta = 1): h times
    the one-row forecast, the square-root-of-time rule.
    """
    v = np.asarray(after, dtype=np.float64)
    total = v
    persistence = np.asarray(alpha) + np.asarray(beta)
    for _ in range(1, h):
        v = omega + persistence * v
        total = total + v
    return total


@dataclasses.dataclass(frozen=True)
class DofFit:
    """Degrees of freedom fitted at one refit date, used for dates [d0, d1) of the run."""

    d0: int
    d1: int
    fitted_on: str
    mvt_dof: float            # student_t: joint dof (NaN: not fitted)
    copula_dof: float         # t_copula: copula dof (NaN: not fitted)
    marginal_dof: np.ndarray  # t_copula: per held asset (NaN: not fitted)

    def describe(self, assets) -> dict:
        d = {"fitted_on": self.fitted_on}
        if math.isfinite(self.mvt_dof):
            d["mvt_dof"] = self.mvt_dof
        if math.isfinite(self.copula_dof):
            d["copula_dof"] = self.copula_dof
        if np.isfinite(self.marginal_dof).any():
            d["marginal_dof"] = {str(a): (float(v) if math.isfinite(v) else None)
                                 for a, v in zip(assets, self.marginal_dof)}
        return d


def residual_window(z: np.ndarray, row: int, lookback: int | None) -> np.ndarray:
    """The residual rows of the look-back ending at ``row`` (inclusive): what is known at its close."""
    lo = 0 if lookback is None else max(0, row - lookback + 1)
    return z[lo:row + 1]


def date_correlation(window: np.ndarray, shrinkage) -> np.ndarray:
    """Correlation of a date's residual window (pairwise, shrunk, PSD) as the stress run's calibration."""
    corr, _ = devolatized_correlation(pd.DataFrame(window), shrinkage, log_level=logging.DEBUG)
    return corr


def _moving(window: np.ndarray) -> np.ndarray:
    ok = np.isfinite(window)
    return np.array([bool(np.abs(window[ok[:, j], j]).max(initial=0.0) > 0) for j in range(window.shape[1])])


def fit_dofs(model: str, window: np.ndarray, shrinkage) -> tuple[float, float, np.ndarray]:
    """(mvt_dof, copula_dof, marginal_dof [k]) of ``model`` on one residual window (NaN where not fitted).

    As :func:`mcmargin.calibration.fit.calibrate` fits them: moving series
    only, the joint and copula dof under the window's correlation.
    """
    k = window.shape[1]
    mvt, cop, marg = math.nan, math.nan, np.full(k, np.nan)
    moving = _moving(window)
    if not moving.any() or model == "gaussian":
        return mvt, cop, marg
    corr = date_correlation(window, shrinkage)
    idx = np.nonzero(moving)[0]
    sub, zw = corr[np.ix_(idx, idx)], window[:, idx]
    if model == "student_t":
        mvt = float(fit_mvt_dof(zw, sub)["dof"])
    else:
        for j in idx:
            marg[j] = fit_t_dof(window[:, j])["dof"]
        if idx.size > 1:
            cop = float(fit_copula_dof(zw, sub)["dof"])
    return mvt, cop, marg


def fit_dof_schedule(model: str, z_of, positions: np.ndarray, dates, lookback, refit_every: int,
                     shrinkage) -> list[DofFit]:
    """Dof refitted every ``refit_every`` dates from the start, each on the residual window ending at its date.

    ``z_of(d)`` gives the residuals [rows, k] that date index ``d`` (into
    ``positions``) is margined with (the GARCH segment's, or the EWMA
    filter's); only their rows up to the refit date are read.
    """
    out = []
    for d0 in range(0, positions.size, refit_every):
        d1 = min(positions.size, d0 + refit_every)
        row = int(positions[d0])
        mvt, cop, marg = fit_dofs(model, residual_window(z_of(d0), row, lookback), shrinkage)
        out.append(DofFit(d0, d1, str(pd.Timestamp(dates[row]).date()), mvt, cop, marg))
    return out


def date_model(model: str, assets, var_h: np.ndarray, corr: np.ndarray, *, n: int, drift: str, dof: float,
               copula_dof: float, marginal_dof: np.ndarray):
    """The stress run's scenario model for one date, scaled to the horizon (its vol is the horizon's sd).

    ``horizon_days = days_per_year = 1`` makes the model's horizon scale its
    vol itself: ``sqrt(var_h)``, the sd of the h-row log return.
    """
    vol = np.sqrt(var_h)
    zeros = np.zeros(len(assets))
    if model == "t_copula":
        # Tabulated marginal transform: a new correlation every date, dofs only every refit.
        return TCopulaScenarios(assets, assets, vol, zeros, zeros, corr, marginal_dof, copula_dof, n=n, seed=0,
                                horizon_days=1.0, days_per_year=1.0, drift=drift, tabulated=True)
    return ParametricScenarios(assets, assets, vol, zeros, zeros, corr, n=n, seed=0, horizon_days=1.0,
                               days_per_year=1.0, dof=dof if model == "student_t" else None, drift=drift)


def date_shocks(model: str, date_model_, key, n: int, backend):
    """The date's ``n`` joint h-row log returns [n, k], drawn under its key (module docstring)."""
    k = len(date_model_.factors)
    # rng.standard_normals(0, 0, n, k, key=key), its random bits made by the compiled cipher (3x faster)
    z = threefry.normal_from_mantissas(kernels.keyed_mantissas(key[0], key[1], rng.NORMAL, n, k))
    w = None
    if model == "student_t":
        w = np.asarray(rng.chi_square(0, 0, n, date_model_.dof, key=key))
    elif model == "t_copula":
        w = np.asarray(rng.chi_square(0, 0, n, date_model_.copula_dof, key=key))
    return date_model_.return_shocks(z, w, backend)


def parametric_block(backend, model, keys, expo, var_h, z, rows, lookback, shrinkage, dof, copula_dof,
                     marginal_dof, n, m, drift):
    """VaR and ES [D, P] of each portfolio on each date of a block under a parametric model.

    Parameters
    ----------
    backend : mcmargin.backend.Backend
    model : {"gaussian", "student_t", "t_copula"}
    keys : uint64 [D, 2]
        Each date's key (32-bit words).
    expo : float64 [D, P, k]
        USD exposure ``quantity x price(t)`` to each held asset.
    var_h : float64 [D, k]
        Variance of the h-row log return (:func:`horizon_variance`).
    z : float64 [rows, k]
        De-volatized residuals; date d reads the look-back rows ending at ``rows[d]``.
    dof, copula_dof : float64 [D]; marginal_dof : float64 [D, k]
        The model's degrees of freedom on each date.
    n, m : int
        Scenarios and tail size.
    drift : {"zero", "martingale"}
    """
    xp = backend.xp
    n_dates, n_port, k = expo.shape
    var, es = np.empty((n_dates, n_port)), np.empty((n_dates, n_port))
    assets = tuple(str(a) for a in range(k))
    for d in range(n_dates):
        corr = date_correlation(residual_window(z, int(rows[d]), lookback), shrinkage)
        mdl = date_model(model, assets, var_h[d], corr, n=n, drift=drift, dof=float(dof[d]),
                         copula_dof=float(copula_dof[d]), marginal_dof=marginal_dof[d])
        shocks = date_shocks(model, mdl, keys[d], n, backend)                         # [n, k]
        # [P, n]; as (n x k)(k x P), transposed: BLAS's fast shape (k x n products are 20x slower in NumPy)
        losses = -xp.matrix_transpose(xp.expm1(shocks) @ backend.asarray(np.ascontiguousarray(expo[d].T)))
        worst = xp.sort(backend.top_k(losses, m), axis=-1)
        var[d] = backend.to_numpy(worst[:, 0])
        es[d] = backend.to_numpy(xp.sum(worst, axis=-1) / m)
    return var, es
