"""Coverage statistics of a margin backtest (docs/methodology.md, section 13).

An *exceedance* on date t is a realised loss strictly above the margin
called for that date.  Under a correct model at confidence q the
exceedances are i.i.d. Bernoulli(p), p = 1 - q.  These are the tests
regulators ask for (EMIR RTS 153/2013 art. 49, CPMI-IOSCO PFMI 6; Basel
Committee 1996, "Supervisory framework for the use of backtesting"):

- :func:`kupiec_pvalue`: Kupiec's (1995) proportion-of-failures
  likelihood-ratio test of unconditional coverage, chi-square(1);
- :func:`christoffersen_pvalue`: Christoffersen's (1998) likelihood-ratio
  test of independence against a first-order Markov chain, chi-square(1);
- :func:`conditional_coverage_pvalue`: the joint test, chi-square(2);
- :func:`window_exceedances`, :func:`traffic_light`, :func:`red_windows`:
  the Basel traffic light on rolling 250-day windows.

All are pure functions of counts or boolean series; series run along
``axis`` (default 0, the date axis) and every other axis (portfolios) is
vectorised.  Logs use the convention 0 log 0 = 0, so series with no (or
only) exceedances have finite statistics.
"""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy
from scipy.stats import binom, chi2

#: Rolling window of the Basel traffic light (business days).
WINDOW = 250
#: Basel zone boundaries as cumulative binomial probabilities: a count whose
#: probability of that many *or fewer* exceedances reaches 95% is yellow, 99.99% red.
YELLOW_CDF, RED_CDF = 0.95, 0.9999
ZONES = np.array(["green", "yellow", "red"])


def _bernoulli_loglik(n_hits, n_total, prob):
    """log of prob^n_hits (1 - prob)^(n_total - n_hits), with 0 log 0 = 0."""
    return xlogy(n_hits, prob) + xlogy(n_total - n_hits, 1.0 - prob)


def kupiec_lr(n_exceedances, n_days, p):
    """Kupiec's proportion-of-failures statistic LR_uc (chi-square(1) under the null).

    ``LR_uc = -2 [x log p + (n - x) log(1 - p)] + 2 [x log(x/n) + (n - x) log(1 - x/n)]``
    for x exceedances in n days at exceedance probability p = 1 - confidence.
    Broadcasts over its arguments; n = 0 gives 0.
    """
    x = np.asarray(n_exceedances, dtype=float)
    n = np.asarray(n_days, dtype=float)
    if np.any(x < 0) or np.any(x > n):
        raise ValueError("need 0 <= n_exceedances <= n_days")
    with np.errstate(invalid="ignore", divide="ignore"):
        phat = np.where(n > 0, x / np.where(n > 0, n, 1.0), 0.0)
    lr = 2.0 * (_bernoulli_loglik(x, n, phat) - _bernoulli_loglik(x, n, p))
    return np.maximum(lr, 0.0)     # rounding can leave -1e-16 where phat == p


def kupiec_pvalue(n_exceedances, n_days, p):
    """p-value of Kupiec's unconditional-coverage test (two-sided LR, chi-square(1)).

    Parameters
    ----------
    n_exceedances, n_days : array_like of int
        Exceedances and days observed (broadcast together: one per portfolio).
    p : float
        Exceedance probability under the null, ``1 - confidence``.

    Returns
    -------
    numpy.ndarray or float
        ``P(chi2_1 >= LR_uc)``.  The test is two-sided: too *few* exceedances
        also give a small p-value.  A margin backtest uses it one-sided
        (:func:`coverage_rejected`): a model is rejected only when it has more
        exceedances than expected, ``x > n p``, and the p-value is small.
    """
    out = chi2.sf(kupiec_lr(n_exceedances, n_days, p), 1)
    return out[()] if isinstance(out, np.ndarray) else out


def transition_counts(exceedances, axis=0):
    """Counts n00, n01, n10, n11 of consecutive pairs (i -> j) of a boolean series along ``axis``."""
    e = np.moveaxis(np.asarray(exceedances, dtype=bool), axis, 0)
    prev, nxt = e[:-1], e[1:]
    n00 = np.sum(~prev & ~nxt, axis=0)
    n01 = np.sum(~prev & nxt, axis=0)
    n10 = np.sum(prev & ~nxt, axis=0)
    n11 = np.sum(prev & nxt, axis=0)
    return n00, n01, n10, n11


def christoffersen_lr(exceedances, axis=0):
    """Christoffersen's independence statistic LR_ind (chi-square(1) under the null).

    The likelihood of the T - 1 transitions under a first-order Markov chain
    with pi01 = n01 / (n00 + n01), pi11 = n11 / (n10 + n11), against one
    Bernoulli(pi) with pi = (n01 + n11) / (T - 1).  A state never left from
    (no n1. pairs, e.g. no exceedance before the last day) contributes 0.
    """
    n00, n01, n10, n11 = (c.astype(float) for c in transition_counts(exceedances, axis))
    n0, n1 = n00 + n01, n10 + n11
    total = n0 + n1
    with np.errstate(invalid="ignore", divide="ignore"):
        pi = np.where(total > 0, (n01 + n11) / np.where(total > 0, total, 1.0), 0.0)
        pi01 = np.where(n0 > 0, n01 / np.where(n0 > 0, n0, 1.0), 0.0)
        pi11 = np.where(n1 > 0, n11 / np.where(n1 > 0, n1, 1.0), 0.0)
    markov = _bernoulli_loglik(n01, n0, pi01) + _bernoulli_loglik(n11, n1, pi11)
    lr = 2.0 * (markov - _bernoulli_loglik(n01 + n11, total, pi))
    return np.maximum(lr, 0.0)


def christoffersen_pvalue(exceedances, axis=0):
    """p-value of Christoffersen's (1998) independence test, chi-square(1).

    Parameters
    ----------
    exceedances : array_like of bool
        Exceedance series along ``axis`` (dates); other axes are portfolios.
        With a horizon of h > 1 rows, consecutive losses overlap and are
        dependent under any model: pass every h-th date
        (``exceedances[::h]``; docs/methodology.md, section 13).

    Returns
    -------
    numpy.ndarray or float
        ``P(chi2_1 >= LR_ind)``; 1 for a series with fewer than two days.
    """
    out = chi2.sf(christoffersen_lr(exceedances, axis), 1)
    return out[()] if isinstance(out, np.ndarray) else out


def conditional_coverage_pvalue(exceedances, p, axis=0):
    """p-value of Christoffersen's (1998) conditional-coverage test, chi-square(2).

    ``LR_cc = -2 log L(p) + 2 log L(pi01, pi11)`` on the T - 1 transitions
    (the likelihood conditional on the first day, as in Christoffersen 1998),
    which is exactly ``LR_uc`` on days 2..T plus ``LR_ind``.

    Parameters
    ----------
    exceedances : array_like of bool
        Exceedance series along ``axis`` (see :func:`christoffersen_pvalue`
        on overlapping horizons).
    p : float
        Exceedance probability under the null, ``1 - confidence``.
    """
    e = np.moveaxis(np.asarray(exceedances, dtype=bool), axis, 0)
    later = e[1:]
    lr = kupiec_lr(later.sum(axis=0), later.shape[0], p) + christoffersen_lr(e, 0)
    out = chi2.sf(lr, 2)
    return out[()] if isinstance(out, np.ndarray) else out


def coverage_rejected(n_exceedances, n_days, p, significance):
    """One-sided use of Kupiec's test: more exceedances than ``n p`` *and* p-value below ``significance``."""
    x = np.asarray(n_exceedances, dtype=float)
    n = np.asarray(n_days, dtype=float)
    return (x > n * p) & (np.asarray(kupiec_pvalue(x, n, p)) < significance)


def window_exceedances(exceedances, window: int = WINDOW, axis=0):
    """Exceedances in the ``window`` dates ending at each date (inclusive), or in all dates so far when fewer.

    Returns an int64 array of the input's shape.
    """
    if window < 1:
        raise ValueError("window must be at least 1")
    e = np.moveaxis(np.asarray(exceedances, dtype=bool), axis, 0)
    c = np.cumsum(e, axis=0, dtype=np.int64)
    out = c.copy()
    out[window:] -= c[:-window]
    return np.moveaxis(out, 0, axis)


def basel_zone_bounds(p: float = 0.01, window: int = WINDOW):
    """The counts at which the yellow and the red zone start: ``(yellow_from, red_from)``.

    Basel (1996): a count is yellow once the binomial probability of that many
    or fewer exceedances reaches 95%, red once it reaches 99.99%.  At p = 0.01
    and 250 days this gives the familiar (5, 10).
    """
    k = np.arange(window + 1)
    cdf = binom.cdf(k, window, p)
    return int(k[np.argmax(cdf >= YELLOW_CDF)]), int(k[np.argmax(cdf >= RED_CDF)])


def traffic_light(counts, yellow_from: int = 5, red_from: int = 10):
    """Basel zone of each window count: ``"green"`` (0-4), ``"yellow"`` (5-9), ``"red"`` (10+) by default.

    Returns an array of str of the counts' shape.
    """
    c = np.asarray(counts)
    return ZONES[(c >= yellow_from).astype(np.int64) + (c >= red_from)]


def red_windows(exceedances, window: int = WINDOW, red_from: int = 10, axis=0):
    """Number of rolling windows (one ending at each date, as in :func:`window_exceedances`) in the red zone.

    Overlapping windows are counted one by one, so a single cluster of
    exceedances can make several red windows; a sound model has none.
    """
    w = window_exceedances(exceedances, window, axis)
    return np.sum(w >= red_from, axis=axis)
