"""Conditional volatility: RiskMetrics EWMA and GARCH(1,1) (docs/methodology-history.md, H.2).

Both filters share one variance recursion, per series,

    sigma2[t+1] = omega + alpha * r[t]^2 + beta * sigma2[t]

EWMA is the special case ``omega = 0, alpha = 1 - lambda, beta = lambda``
(RiskMetrics 1996); GARCH(1,1) (Bollerslev 1986) fits ``omega, alpha,
beta`` by maximum likelihood with the ``arch`` package.  ``sigma2[t]`` is
the *ex-ante* variance of the return on row t (known at the end of row
t-1); ``forecast`` is the variance of the next row after the sample.
Returns are taken with zero mean (daily means are noise next to daily
vols).  A missing return (NaN) leaves the variance unchanged; a series with
no movement at all (cash, a stablecoin) has variance 0.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

VOL_METHODS = ("ewma", "garch")

#: Minimum number of returns for a GARCH(1,1) fit.
GARCH_MIN_OBS = 100


@dataclasses.dataclass
class VolFilter:
    """Output of :func:`filter_volatility` (daily units: variance per row).

    ``sigma2`` is a DataFrame like the returns (NaN before a series' first
    return); ``forecast``, ``omega``, ``alpha``, ``beta`` are Series by column.
    """

    method: str
    sigma2: pd.DataFrame
    forecast: pd.Series
    omega: pd.Series
    alpha: pd.Series
    beta: pd.Series
    converged: pd.Series

    def residuals(self, returns: pd.DataFrame) -> pd.DataFrame:
        """De-volatized returns ``r[t] / sigma[t]``; 0 where a series does not move."""
        return devolatize(returns, self.sigma2)


def devolatize(returns: pd.DataFrame, sigma2: pd.DataFrame) -> pd.DataFrame:
    """``r / sqrt(sigma2)``; 0 where both are 0 (no movement), NaN where the variance is 0 but r is not."""
    r = returns.to_numpy(dtype=np.float64)
    s = np.sqrt(sigma2.to_numpy(dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s > 0, r / np.where(s > 0, s, 1.0), np.where(r == 0, 0.0, np.nan))
    z[np.isnan(r) | np.isnan(s)] = np.nan
    return pd.DataFrame(z, index=returns.index, columns=returns.columns)


def ewma_init_obs(lam: float) -> int:
    """Returns averaged to start the EWMA recursion: about its memory, 1 / (1 - lambda), at least 20."""
    return int(max(20, round(1.0 / (1.0 - lam))))


def ewma_variance(returns: np.ndarray, lam: float, init_obs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RiskMetrics EWMA variance of each column of ``returns`` (T x k, NaN = missing).

    The recursion starts at a series' first return with the mean square of
    its first ``init_obs`` returns (default :func:`ewma_init_obs`).

    Returns
    -------
    sigma2 : ndarray (T, k)
        Ex-ante variance of each row's return (NaN before the first return).
    forecast : ndarray (k,)
        Variance of the row after the sample.
    """
    if not 0.0 < lam < 1.0:
        raise ValueError(f"EWMA lambda must be in (0, 1), got {lam}")
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        s2, f = ewma_variance(r[:, None], lam, init_obs)
        return s2[:, 0], f[0]
    t_len, k = r.shape
    m = init_obs or ewma_init_obs(lam)
    valid = ~np.isnan(r)
    sigma2 = np.full((t_len, k), np.nan)
    cur = np.full(k, np.nan)
    for j in range(k):
        rv = r[valid[:, j], j]
        if rv.size:
            cur[j] = np.mean(rv[:m] ** 2)
    started = np.zeros(k, dtype=bool)
    r2 = np.where(valid, r, 0.0) ** 2
    for t in range(t_len):
        started |= valid[t]
        sigma2[t] = np.where(started, cur, np.nan)
        cur = np.where(valid[t], lam * cur + (1.0 - lam) * r2[t], cur)
    return sigma2, np.where(started, cur, np.nan)


def garch_fit(returns: np.ndarray, *, name: str = "series", dist: str = "normal") -> dict:
    """GARCH(1,1) with zero mean by maximum likelihood (``arch``), on one series with NaNs.

    Missing returns are skipped in the fit; the variance carries over them.
    Returns a dict with ``omega, alpha, beta`` (daily units), ``sigma2``
    (ex-ante variance per row, NaN before the first return), ``forecast``
    and ``converged``.
    """
    from arch import arch_model

    r = np.asarray(returns, dtype=np.float64)
    valid = ~np.isnan(r)
    rv = r[valid]
    sigma2 = np.full(r.shape, np.nan)
    if rv.size == 0:
        return dict(omega=np.nan, alpha=np.nan, beta=np.nan, sigma2=sigma2, forecast=np.nan, converged=False)
    if not np.any(rv != 0):
        first = int(valid.argmax())
        sigma2[first:] = 0.0
        return dict(omega=0.0, alpha=0.0, beta=0.0, sigma2=sigma2, forecast=0.0, converged=True)
    if rv.size < GARCH_MIN_OBS:
        raise ValueError(f"{name}: GARCH(1,1) needs at least {GARCH_MIN_OBS} returns, got {rv.size}")
    scale = 1.0 / max(float(np.std(rv)), 1e-12)  # unit-variance data suits the optimiser
    model = arch_model(rv * scale, mean="Zero", vol="GARCH", p=1, q=1, dist=dist, rescale=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(disp="off", show_warning=False)
    omega = float(res.params["omega"]) / scale ** 2
    alpha = float(res.params["alpha[1]"])
    beta = float(res.params["beta[1]"])
    converged = int(res.convergence_flag) == 0
    if not converged:
        log.warning("GARCH(1,1) fit of %s did not converge (flag %s); using its last estimate",
                    name, res.convergence_flag)
    if alpha + beta >= 1.0:
        log.warning("GARCH(1,1) fit of %s is not stationary (alpha + beta = %.4f)", name, alpha + beta)
    cond = np.asarray(res.conditional_volatility, dtype=np.float64) / scale
    # Carry the variance over missing returns (the fit skipped them).
    pos = np.nonzero(valid)[0]
    sigma2[pos] = cond ** 2
    first = int(pos[0])
    s = pd.Series(sigma2[first:]).ffill().to_numpy()
    sigma2[first:] = s
    forecast = omega + alpha * rv[-1] ** 2 + beta * cond[-1] ** 2
    return dict(omega=omega, alpha=alpha, beta=beta, sigma2=sigma2, forecast=float(forecast),
                converged=converged)


def filter_volatility(returns: pd.DataFrame, method: str = "ewma", lam: float = 0.94,
                      init_obs: int | None = None) -> VolFilter:
    """Conditional variance of every column of ``returns`` by EWMA(``lam``) or GARCH(1,1)."""
    if method not in VOL_METHODS:
        raise ValueError(f"vol method must be one of {VOL_METHODS}, got {method!r}")
    cols = list(returns.columns)
    r = returns.to_numpy(dtype=np.float64)
    if method == "ewma":
        s2, f = ewma_variance(r, lam, init_obs)
        k = len(cols)
        return VolFilter("ewma", pd.DataFrame(s2, index=returns.index, columns=cols), pd.Series(f, index=cols),
                         pd.Series(np.zeros(k), index=cols), pd.Series(np.full(k, 1.0 - lam), index=cols),
                         pd.Series(np.full(k, lam), index=cols), pd.Series(np.ones(k, dtype=bool), index=cols))
    fits = {c: garch_fit(r[:, j], name=str(c)) for j, c in enumerate(cols)}
    s2 = np.column_stack([fits[c]["sigma2"] for c in cols]) if cols else np.empty((len(returns), 0))
    get = lambda key: pd.Series([fits[c][key] for c in cols], index=cols, dtype=float)  # noqa: E731
    return VolFilter("garch", pd.DataFrame(s2, index=returns.index, columns=cols), get("forecast"),
                     get("omega"), get("alpha"), get("beta"),
                     pd.Series([fits[c]["converged"] for c in cols], index=cols, dtype=bool))
