"""Correlation matrices: checks and nearest-correlation repair.

A correlation matrix that is not positive semi-definite (hand-edited
configs, pairwise estimates over different windows) is repaired by
projection onto the nearest correlation matrix (Higham 2002, via
``statsmodels.stats.correlation_tools.corr_nearest``); the smallest
eigenvalue before and after is logged (docs/methodology.md, section 2.3).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

#: Eigenvalues above -PSD_TOL count as non-negative (rounding of inputs).
PSD_TOL = 1e-10


def check_correlation(matrix, labels, key: str = "scenarios.correlation") -> np.ndarray:
    """Validate a correlation matrix and repair it if it is not PSD.

    Parameters
    ----------
    matrix : array_like, shape (k, k)
    labels : sequence of str
        Names of the k variables, for messages.
    key : str
        Config key the matrix came from, for messages.

    Returns
    -------
    numpy.ndarray
        A symmetric PSD matrix with unit diagonal.
    """
    c = np.asarray(matrix, dtype=float)
    k = len(labels)
    if c.shape != (k, k):
        raise ConfigError(key, f"must be a {k}x{k} matrix (one row per risk factor: {', '.join(labels)}), "
                               f"got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ConfigError(key, "holds NaN or infinite entries")
    for i in range(k):
        if abs(c[i, i] - 1.0) > 1e-12:
            raise ConfigError(f"{key}[{i}][{i}]", f"diagonal entry for {labels[i]} must be 1, got {c[i, i]}")
        for j in range(i):
            if abs(c[i, j] - c[j, i]) > 1e-12:
                raise ConfigError(f"{key}[{i}][{j}]", f"matrix is not symmetric: {c[i, j]} vs {c[j, i]} "
                                                      f"({labels[i]}, {labels[j]})")
            if abs(c[i, j]) > 1:
                raise ConfigError(f"{key}[{i}][{j}]", f"correlation {c[i, j]} of ({labels[i]}, {labels[j]}) "
                                                      "is outside [-1, 1]")
    return nearest_correlation(c)


def nearest_correlation(c: np.ndarray) -> np.ndarray:
    """``c`` itself if PSD, else its nearest correlation matrix (logged)."""
    c = (c + c.T) / 2
    before = float(np.linalg.eigvalsh(c).min()) if c.size else 1.0
    if before >= -PSD_TOL:
        return c
    from statsmodels.stats.correlation_tools import corr_nearest
    from statsmodels.tools.sm_exceptions import IterationLimitWarning

    with warnings.catch_warnings(record=True) as caught:
        # statsmodels warns when the projection stops at its iteration limit; the result is
        # still repaired below and the log line says how well (no bare warning in the log).
        warnings.simplefilter("always", IterationLimitWarning)
        fixed = corr_nearest(c, threshold=1e-12, n_fact=1000)
    stopped = any(issubclass(w.category, IterationLimitWarning) for w in caught)
    fixed = (fixed + fixed.T) / 2
    np.fill_diagonal(fixed, 1.0)
    after = float(np.linalg.eigvalsh(fixed).min())
    log.warning("correlation matrix is not positive semi-definite (smallest eigenvalue %.3g); "
                "repaired by nearest-correlation projection (smallest eigenvalue now %.3g, "
                "largest entry change %.3g%s)", before, after, float(np.abs(fixed - c).max()),
                "; the projection stopped at its iteration limit" if stopped else "")
    return fixed


def cholesky_psd(c: np.ndarray) -> np.ndarray:
    """Lower factor L with L L^T = c, also for singular PSD c (eigen-decomposition fallback)."""
    try:
        return np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(c)
        return v * np.sqrt(np.clip(w, 0.0, None))
