"""The t copula's marginal transform, exact (SciPy) and tabulated (mcmargin/scenarios/copula.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mcmargin.backend import get_backend
from mcmargin.scenarios import copula

PAIRS = [(4.0, 5.0), (6.0, 3.0), (3.0, 12.0), (8.0, 8.5), (2.5, 30.0), (6.0, math.inf), (30.0, 2.05)]


@pytest.mark.parametrize("copula_dof, marginal_dof", PAIRS)
def test_exact_transform_is_the_quantile_of_the_copula_probability(copula_dof, marginal_dof):
    """Against scipy.stats by its definition: F^-1(F_t(-|t|; nu_c); nu) (the normal for an infinite nu)."""
    t = np.array([1e-3, 0.3, -1.0, 2.5, -7.0, 40.0])
    marginal = stats.norm if math.isinf(marginal_dof) else stats.t(marginal_dof)
    want = marginal.ppf(stats.t.cdf(-np.abs(t), copula_dof))
    np.testing.assert_allclose(copula.lower_quantiles(t, copula_dof, marginal_dof), want, rtol=1e-9)


@pytest.mark.parametrize("copula_dof, marginal_dof", PAIRS)
def test_tabulated_transform_is_within_1e9_of_scipy(copula_dof, marginal_dof):
    """Every magnitude the table covers (6e-8 to 2,048), drawn log-uniformly, and beyond it (up to 2e4, taken
    by SciPy itself: the same values); zeros and values beyond the table go to SciPy."""
    rng = np.random.default_rng(7)
    t = np.exp(rng.uniform(-16.0, 10.0, 200_000)) * rng.choice([-1.0, 1.0], 200_000)
    exact = copula.lower_quantiles(t, copula_dof, marginal_dof)
    got = copula.tabulated_lower_quantiles(t, copula_dof, marginal_dof)
    assert np.all(got <= 0)
    # SciPy itself is only good to about 1e-9 relatively near t = 0 (a tail probability near 1/2): there the
    # comparison is absolute, on quantiles below 1e-4.
    small = np.abs(exact) < 1e-4
    np.testing.assert_allclose(got[~small], exact[~small], rtol=1e-9, atol=0)
    np.testing.assert_allclose(got[small], exact[small], rtol=0, atol=1e-13)
    edges = np.array([0.0, -0.0, 1e-9, -1e-12, 3e7, -1e9, 2048.0, -2049.0, np.inf, -np.inf])
    np.testing.assert_array_equal(copula.tabulated_lower_quantiles(edges, copula_dof, marginal_dof),
                                  copula.lower_quantiles(edges, copula_dof, marginal_dof))


def test_table_nodes_and_slopes_are_the_exact_transform_and_its_derivative():
    """Node values are SciPy's; the cell-end slopes are d log(-q) / ds (s: the place in a cell) by finite
    differences of the exact transform, away from 0 where SciPy itself is noisy."""
    q, h, left, right = copula.marginal_table(4.0, 7.0)
    lo, hi = copula.TABLE_BINADES
    cells = 1 << copula.NODE_BITS
    k = np.array([20 * cells + 5, 24 * cells + 100, 30 * cells + 255, 34 * cells + 7])
    a = np.ldexp(1.0 + (k % cells) / cells, lo + k // cells)
    np.testing.assert_array_equal(q[k], copula.lower_quantiles(a, 4.0, 7.0))
    np.testing.assert_array_equal(h[k], np.log(-q[k]))
    width = np.ldexp(1.0, lo + k // cells) / cells
    eps = 1e-6
    slope = (np.log(-copula.lower_quantiles(a + eps * width, 4.0, 7.0))
             - np.log(-copula.lower_quantiles(a - eps * width, 4.0, 7.0))) / (2 * eps)
    np.testing.assert_allclose(left[k], slope, rtol=1e-6)
    np.testing.assert_allclose(right[k - 1], slope, rtol=1e-6)     # the same node, the end of the cell before


def test_tabulated_model_draws_the_exact_models_shocks_to_1e9():
    """TCopulaScenarios(tabulated=True), as the backtest builds it, against the exact model on the same draws."""
    corr = np.array([[1.0, 0.6, 0.3], [0.6, 1.0, 0.5], [0.3, 0.5, 1.0]])
    args = (("A", "B", "C"), ("A", "B", "C"), [0.5, 0.7, 0.9], [0.0] * 3, [0.0] * 3, corr, [3.5, 6.0, 2000.0], 5.0)
    kw = dict(n=20_000, seed=3, horizon_days=1.0, days_per_year=1.0)
    exact, table = copula.TCopulaScenarios(*args, **kw), copula.TCopulaScenarios(*args, **kw, tabulated=True)
    rng = np.random.default_rng(2)
    z, w = rng.standard_normal((20_000, 3)), rng.chisquare(5.0, 20_000)
    nb = get_backend("numpy")
    a, b = np.asarray(exact.return_shocks(z, w, nb)), np.asarray(table.return_shocks(z, w, nb))
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-14)
