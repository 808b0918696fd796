"""Correlation of de-volatized returns, with shrinkage (docs/methodology-history.md, H.3).

The correlation is estimated on residuals ``z[t] = r[t] / sigma[t]`` (returns
divided by their conditional vol) over the look-back window, pairwise over
the rows where both series have a residual (an asset that starts late still
contributes all its rows).  Shrinkage toward the identity,

    C_shrunk = (1 - delta) C + delta I,

uses a fixed ``delta`` in [0, 1] or the Ledoit-Wolf (2004) optimal
intensity (``"ledoit_wolf"``).  Pairwise estimates need not be positive
semi-definite: the result goes through the nearest-correlation projection
(Higham 2002), which logs the smallest eigenvalue before and after.
A series that never moves (cash) is uncorrelated with everything.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..stats.correlation import PSD_TOL, nearest_correlation

log = logging.getLogger(__name__)

#: Pairs with fewer common residuals than this get correlation 0 (and a warning).
MIN_PAIR_OBS = 20


def ledoit_wolf_intensity(x: np.ndarray) -> float:
    """Ledoit-Wolf (2004) shrinkage intensity toward a scaled identity for complete data ``x`` (T x k).

    Computed on standardised columns, so that the target is the identity
    correlation matrix; the formula is the one of scikit-learn's
    ``ledoit_wolf_shrinkage``.
    """
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    if n < 2 or p < 2:
        return 0.0
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    x = x / sd
    x2 = x ** 2
    emp_cov_trace = x2.sum(axis=0) / n
    mu = emp_cov_trace.sum() / p
    beta_ = float(np.sum(x2.T @ x2))
    delta_ = float(np.sum((x.T @ x) ** 2)) / n ** 2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * emp_cov_trace.sum() + p * mu ** 2) / p
    beta = min(beta, delta)
    return 0.0 if beta <= 0 or delta <= 0 else float(beta / delta)


def devolatized_correlation(residuals: pd.DataFrame, shrinkage=0.0, *,
                            log_level: int = logging.INFO) -> tuple[np.ndarray, dict]:
    """Pairwise correlation of residual columns, shrunk and repaired to a PSD correlation matrix.

    Parameters
    ----------
    residuals : DataFrame (T x k)
        De-volatized returns over the look-back (NaN = missing).
    shrinkage : float in [0, 1] or "ledoit_wolf"
    log_level : int
        Level of the summary line (the backtest, which estimates one matrix a
        date, logs it at DEBUG).

    Returns
    -------
    corr : ndarray (k, k)
    info : dict
        ``shrinkage`` (the intensity used), ``min_eigenvalue_raw`` (before
        repair), ``min_eigenvalue`` (after), ``repaired`` (bool),
        ``pair_obs`` (k x k common observations).
    """
    cols = list(residuals.columns)
    k = len(cols)
    z = residuals.to_numpy(dtype=np.float64)
    ok = ~np.isnan(z)
    okf = ok.astype(np.float64)
    pair_obs = (okf.T @ okf).astype(np.int64)       # counts, exact in float64 (BLAS: the backtest calls this daily)
    moving = np.array([np.nanmax(np.abs(z[:, j])) > 0 if ok[:, j].any() else False for j in range(k)], dtype=bool)
    corr = np.eye(k)
    if k > 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            raw = pd.DataFrame(z, columns=range(k)).corr(min_periods=MIN_PAIR_OBS).to_numpy()
        low = np.tril(moving[:, None] & moving[None, :], -1)    # pairs i > j of moving series
        finite = np.isfinite(raw)
        for i, j in zip(*np.nonzero(low & ~finite)):
            log.warning("correlation of %s and %s: only %d common residuals (< %d); set to 0",
                        cols[i], cols[j], pair_obs[i, j], MIN_PAIR_OBS)
        v = np.where(low & finite, np.clip(np.where(finite, raw, 0.0), -1.0, 1.0), 0.0)
        corr = corr + v + v.T
    if isinstance(shrinkage, str):
        if shrinkage.lower().replace("-", "_") not in ("ledoit_wolf", "lw", "auto"):
            raise ValueError(f"shrinkage must be a number in [0, 1] or 'ledoit_wolf', got {shrinkage!r}")
        complete = ok[:, moving].all(axis=1)
        delta = ledoit_wolf_intensity(z[np.ix_(complete, moving)]) if moving.sum() > 1 else 0.0
    else:
        delta = float(shrinkage)
        if not 0.0 <= delta <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {delta}")
    if delta > 0:
        corr = (1.0 - delta) * corr + delta * np.eye(k)
    before = float(np.linalg.eigvalsh(corr).min()) if k else 1.0
    fixed = nearest_correlation(corr)
    after = float(np.linalg.eigvalsh(fixed).min()) if k else 1.0
    repaired = before < -PSD_TOL
    log.log(log_level, "de-volatized correlation of %d series: shrinkage %.3f, smallest eigenvalue %.4g%s",
            k, delta, before, f" (repaired: now {after:.4g})" if repaired else "")
    return fixed, {"shrinkage": delta, "min_eigenvalue_raw": before, "min_eigenvalue": after,
                   "repaired": repaired, "pair_obs": pair_obs}
