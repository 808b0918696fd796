"""Independent references for the tests: standard errors of Monte Carlo estimators and closed forms.

Nothing here imports mcmargin: these are the yardsticks the library is
measured against.  Every standard error is the asymptotic one of the
estimator at hand (sources in the docstrings), so a test can hold an
estimate to ``K_SE`` standard errors and no looser.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, stats

#: Tolerance of every statistical test, in standard errors of the estimate.
K_SE = 3.0


def within(estimate, reference, se, k=K_SE):
    """True where ``|estimate - reference| <= k * se`` (elementwise)."""
    return np.abs(np.asarray(estimate, float) - np.asarray(reference, float)) <= k * np.asarray(se, float)


def assert_within(estimate, reference, se, what, k=K_SE):
    estimate, reference, se = (np.asarray(x, float) for x in (estimate, reference, se))
    z = (estimate - reference) / se
    assert np.all(np.abs(z) <= k), f"{what}: estimate {estimate} vs reference {reference}, z = {np.round(z, 2)}"


# ------------------------------------------------------------------ moments of a sample
def mean_se(x):
    """Sample mean and its standard error sd / sqrt(n), per column."""
    x = np.asarray(x, float)
    return x.mean(axis=0), x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])


def std_se(x, kurtosis=None):
    """Sample standard deviation and its asymptotic standard error, per column.

    Delta method: Var(s^2) ~ (mu4 - sigma^4) / n, so SE(s) = SE(s^2) / (2 s).
    ``kurtosis`` (mu4 / sigma^4 of the law) uses the law's value instead of
    the sample's, for laws whose sample fourth moment converges slowly.
    """
    x = np.asarray(x, float)
    n = x.shape[0]
    d = x - x.mean(axis=0)
    v = (d * d).mean(axis=0)
    mu4 = (d ** 4).mean(axis=0) if kurtosis is None else kurtosis * v * v
    return np.sqrt(v), np.sqrt(np.maximum(mu4 - v * v, 0.0) / n) / (2 * np.sqrt(v))


def corr_se(x, y):
    """Sample correlation of two samples and its asymptotic standard error (any law with 4 moments).

    Influence function of Pearson's r on standardised data u, v:
    psi = u v - r (u^2 + v^2) / 2, so SE(r) = sd(psi) / sqrt(n)
    (e.g. van der Vaart, Asymptotic Statistics, example 3.6).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    u = (x - x.mean()) / x.std()
    v = (y - y.mean()) / y.std()
    r = float((u * v).mean())
    psi = u * v - 0.5 * r * (u * u + v * v)
    return r, float(psi.std() / math.sqrt(x.size))


def quantile_se(x, p, pdf_at_quantile):
    """Empirical p-quantile of x and its standard error sqrt(p (1 - p) / n) / f(x_p)."""
    x = np.asarray(x, float)
    return np.quantile(x, p), math.sqrt(p * (1 - p) / x.size) / pdf_at_quantile


# ------------------------------------------------------------------ VaR and ES of a sample
def tail_size(n, q):
    """m = ceil(N (1 - q) - 1e-9), written out independently of mcmargin.tails."""
    return max(1, math.ceil(n * (1 - q) - 1e-9))


def var_es_se(losses, q, pdf_at_var):
    """Standard errors of the VaR (m-th largest) and ES (mean of the m largest) estimators.

    VaR: sqrt(q (1 - q) / n) / f(VaR).  ES: sqrt([Var(L | L >= VaR) + q (ES - VaR)^2] / (n (1 - q)))
    (Chen, "Nonparametric estimation of expected shortfall", J. Fin. Econometrics 2008, thm 1);
    the tail variance and ES - VaR are read off the sample's own tail.
    """
    losses = np.sort(np.asarray(losses, float))[::-1]
    n = losses.size
    m = tail_size(n, q)
    tail = losses[:m]
    var, es = tail[-1], tail.mean()
    se_var = math.sqrt(q * (1 - q) / n) / pdf_at_var
    se_es = math.sqrt((tail.var() + q * (es - var) ** 2) / (n * (1 - q)))
    return se_var, se_es


# ------------------------------------------------------------------ closed forms
def lognormal_long(s0, s, q, mu=0.0):
    """Long one unit, log-return X ~ N(mu, s^2): loss L = s0 (1 - e^X). Returns VaR, ES, pdf of L at VaR, Var(L | L >= VaR)."""
    z = stats.norm.ppf(1 - q)
    var = s0 * (1 - math.exp(mu + s * z))
    es = s0 * (1 - math.exp(mu + s * s / 2) * stats.norm.cdf(z - s) / (1 - q))
    x = mu + s * z                              # L = g(X), |dL/dX| = s0 e^X
    e1 = math.exp(mu + s * s / 2) * stats.norm.cdf(z - s) / (1 - q)          # E[e^X | tail]
    e2 = math.exp(2 * mu + 2 * s * s) * stats.norm.cdf(z - 2 * s) / (1 - q)  # E[e^2X | tail]
    return var, es, stats.norm.pdf(z) / s / (s0 * math.exp(x)), s0 * s0 * (e2 - e1 * e1)


def lognormal_short(s0, s, q, mu=0.0):
    """Short one unit: loss L = s0 (e^X - 1). Returns VaR, ES, pdf of L at VaR, Var(L | L >= VaR)."""
    z = stats.norm.ppf(q)
    var = s0 * (math.exp(mu + s * z) - 1)
    es = s0 * (math.exp(mu + s * s / 2) * stats.norm.cdf(s - z) / (1 - q) - 1)
    x = mu + s * z
    e1 = math.exp(mu + s * s / 2) * stats.norm.cdf(s - z) / (1 - q)
    e2 = math.exp(2 * mu + 2 * s * s) * stats.norm.cdf(2 * s - z) / (1 - q)
    return var, es, stats.norm.pdf(z) / s / (s0 * math.exp(x)), s0 * s0 * (e2 - e1 * e1)


def student_t_es(q, dof):
    """ES at q of a standard Student-t loss: (dof + t_q^2) / (dof - 1) f(t_q) / (1 - q)
    (McNeil, Frey and Embrechts, Quantitative Risk Management, example 2.15)."""
    t = stats.t.ppf(q, dof)
    return (dof + t * t) / (dof - 1) * stats.t.pdf(t, dof) / (1 - q)


def student_t_long(s0, s, q, dof, mu=0.0):
    """Long one unit, log-return X = mu + s sqrt((dof - 2) / dof) T with T ~ t(dof): loss s0 (1 - e^X).

    VaR in closed form; ES = s0 (1 - E[e^X | X <= x_(1-q)]) by quadrature of
    the t density (the lower tail of e^X is bounded, so the integral is finite).
    Returns VaR, ES, pdf of L at VaR, Var(L | L >= VaR).
    """
    c = s * math.sqrt((dof - 2) / dof)
    tq = stats.t.ppf(1 - q, dof)
    x = mu + c * tq
    var = s0 * (1 - math.exp(x))
    part, _ = integrate.quad(lambda t: math.exp(mu + c * t) * stats.t.pdf(t, dof), -np.inf, tq,
                             epsabs=0, epsrel=1e-12, limit=200)
    part2, _ = integrate.quad(lambda t: math.exp(2 * (mu + c * t)) * stats.t.pdf(t, dof), -np.inf, tq,
                              epsabs=0, epsrel=1e-12, limit=200)
    es = s0 * (1 - part / (1 - q))
    e1, e2 = part / (1 - q), part2 / (1 - q)
    return var, es, stats.t.pdf(tq, dof) / c / (s0 * math.exp(x)), s0 * s0 * (e2 - e1 * e1)


def var_es_se_law(n, q, var, es, pdf_at_var, tail_var):
    """The standard errors of :func:`var_es_se` with the law's own tail variance, density and ES - VaR."""
    return (math.sqrt(q * (1 - q) / n) / pdf_at_var,
            math.sqrt((tail_var + q * (es - var) ** 2) / (n * (1 - q))))


def student_t_short_var(s0, s, q, dof, mu=0.0):
    """Short one unit under Student-t log-returns: VaR = s0 (e^(mu + c t_q) - 1) and the pdf of L there
    (its ES is infinite: E[e^X] diverges for a t law)."""
    c = s * math.sqrt((dof - 2) / dof)
    tq = stats.t.ppf(q, dof)
    x = mu + c * tq
    return s0 * (math.exp(x) - 1), stats.t.pdf(tq, dof) / c / (s0 * math.exp(x))


def brute_force_tails(h, pnl, m):
    """Each row's m worst losses and their scenarios, by brute force: every loss formed as the kernels form it
    (0.0 plus each holding of the CSR matrix ``h`` in order, over ``pnl`` [columns x scenarios]), ranked by
    loss descending, equal losses by the lower scenario."""
    losses = np.empty((h.shape[0], pnl.shape[1]))
    for r in range(h.shape[0]):
        acc = np.zeros(pnl.shape[1])
        for p in range(h.indptr[r], h.indptr[r + 1]):
            acc = acc + h.data[p] * pnl[h.indices[p]]
        losses[r] = -acc
    order = np.lexsort((np.broadcast_to(np.arange(pnl.shape[1]), losses.shape), -losses), axis=1)[:, :m]
    return np.take_along_axis(losses, order, 1), order
