"""Student-t degrees of freedom by maximum likelihood (docs/methodology-history.md, H.4).

Three estimates, all on de-volatized residuals ``z`` of the look-back:

- :func:`fit_t_dof`: per series, location 0, scale ``s`` and dof ``nu`` of
  ``z ~ s * t(nu)`` (two-parameter ML, L-BFGS-B);
- :func:`fit_mvt_dof`: the joint dof of a multivariate t whose covariance
  is the residual correlation ``C`` (the ``student_t`` scenario model):
  ``z ~ sqrt((nu - 2) / nu) * C^(1/2) * t_k(nu)``, one-dimensional ML;
- :func:`fit_copula_dof`: the dof of a t copula with correlation matrix
  ``C`` on pseudo-observations ``u = rank / (n + 1)`` (canonical maximum
  likelihood, Genest, Ghoudi and Rivest 1995; Demarta and McNeil 2005).

The dof are bounded to [2.1, 1000] (marginals and multivariate t, where the
variance must exist) and [1, 1000] (copula); an estimate at the upper bound
means the data look Gaussian.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special, stats

DOF_MIN, DOF_MAX, COPULA_DOF_MIN = 2.1, 1000.0, 1.0


def _t_logpdf(x, nu):
    return (special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2) - 0.5 * math.log(nu * math.pi)
            - (nu + 1) / 2 * np.log1p(x * x / nu))


def fit_t_dof(z) -> dict:
    """ML fit of ``z ~ scale * t(dof)`` (location 0); NaNs are ignored.

    Returns ``{"dof", "scale", "loglik", "n"}``; dof NaN when fewer than 20
    non-zero values.
    """
    x = np.asarray(z, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 20 or not np.any(x != 0):
        return {"dof": math.nan, "scale": math.nan, "loglik": math.nan, "n": int(n)}
    sd = float(np.sqrt(np.mean(x * x)))

    def nll(p):
        nu = DOF_MIN + math.exp(p[0])
        s = math.exp(p[1])
        return -(np.sum(_t_logpdf(x / s, nu)) - n * math.log(s))

    best = None
    for nu0 in (4.0, 10.0, 50.0):
        s0 = sd * math.sqrt((nu0 - 2) / nu0)
        res = optimize.minimize(nll, [math.log(nu0 - DOF_MIN), math.log(s0)], method="L-BFGS-B",
                                bounds=[(math.log(1e-3), math.log(DOF_MAX - DOF_MIN)), (None, None)])
        if best is None or res.fun < best.fun:
            best = res
    nu = DOF_MIN + math.exp(best.x[0])
    return {"dof": float(min(nu, DOF_MAX)), "scale": float(math.exp(best.x[1])), "loglik": float(-best.fun),
            "n": int(n)}


def _inv_and_logdet(c: np.ndarray):
    w, v = np.linalg.eigh((c + c.T) / 2)
    w = np.clip(w, 1e-10, None)
    return (v / w) @ v.T, float(np.sum(np.log(w)))


def fit_mvt_dof(z, corr) -> dict:
    """ML dof of a multivariate t with covariance ``corr`` for complete residual rows ``z`` (n x k)."""
    x = np.asarray(z, dtype=np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    n, k = x.shape
    if n < 20 or k == 0:
        return {"dof": math.nan, "loglik": math.nan, "n": int(n)}
    inv, logdet = _inv_and_logdet(np.asarray(corr, dtype=np.float64))
    q = np.einsum("ij,jk,ik->i", x, inv, x)

    def nll(a):
        nu = DOF_MIN + math.exp(a)
        ll = (special.gammaln((nu + k) / 2) - special.gammaln(nu / 2) - k / 2 * math.log((nu - 2) * math.pi)
              - 0.5 * logdet - (nu + k) / 2 * np.log1p(q / (nu - 2)))
        return -float(np.sum(ll))

    res = optimize.minimize_scalar(nll, bounds=(math.log(1e-3), math.log(DOF_MAX - DOF_MIN)), method="bounded",
                                   options={"xatol": 1e-6})
    return {"dof": float(DOF_MIN + math.exp(res.x)), "loglik": float(-res.fun), "n": int(n)}


def pseudo_observations(z) -> np.ndarray:
    """Column ranks scaled into (0, 1): ``rank / (n + 1)`` (complete rows only)."""
    x = np.asarray(z, dtype=np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    return stats.rankdata(x, axis=0) / (x.shape[0] + 1)


def fit_copula_dof(z, corr) -> dict:
    """Canonical ML dof of a t copula with correlation ``corr`` for residual rows ``z`` (n x k, k >= 2)."""
    u = pseudo_observations(z)
    n, k = u.shape
    if n < 20 or k < 2:
        return {"dof": math.nan, "loglik": math.nan, "n": int(n)}
    inv, logdet = _inv_and_logdet(np.asarray(corr, dtype=np.float64))

    def nll(a):
        nu = math.exp(a)
        x = special.stdtrit(nu, u)
        q = np.einsum("ij,jk,ik->i", x, inv, x)
        joint = (special.gammaln((nu + k) / 2) - special.gammaln(nu / 2) - k / 2 * math.log(nu * math.pi)
                 - 0.5 * logdet - (nu + k) / 2 * np.log1p(q / nu))
        return -float(np.sum(joint) - np.sum(_t_logpdf(x, nu)))

    res = optimize.minimize_scalar(nll, bounds=(math.log(COPULA_DOF_MIN), math.log(DOF_MAX)), method="bounded",
                                   options={"xatol": 1e-5})
    return {"dof": float(math.exp(res.x)), "loglik": float(-res.fun), "n": int(n)}
