"""Coverage statistics: hand-worked examples, closed-form chi-square tails, brute-force loops, simulations."""

import math

import numpy as np
import pytest
from scipy.stats import binom

from mcmargin.stats.coverage import (basel_zone_bounds, christoffersen_pvalue, conditional_coverage_pvalue, coverage_rejected, kupiec_pvalue, red_windows, traffic_light, transition_counts, window_exceedances)


def sf1(x):
    """chi-square(1) upper tail in closed form: P(Z^2 >= x) = erfc(sqrt(x / 2))."""
    return math.erfc(math.sqrt(x / 2))


def sf2(x):
    """chi-square(2) upper tail in closed form: exp(-x / 2)."""
    return math.exp(-x / 2)


def ll(k, n, p):
    """Bernoulli log-likelihood by hand, 0 log 0 = 0."""
    a = k * math.log(p) if k else 0.0
    b = (n - k) * math.log(1 - p) if n - k else 0.0
    return a + b


# ----------------------------------------------------------------------------- Kupiec
@pytest.mark.parametrize("x, n, p", [(5, 250, 0.01), (0, 250, 0.01), (1, 250, 0.01), (25, 1000, 0.01),
                                     (3, 500, 0.05), (250, 250, 0.01)])
def test_kupiec_against_hand_formula(x, n, p):
    lr = -2 * ll(x, n, p) + 2 * ll(x, n, x / n)
    assert kupiec_pvalue(x, n, p) == pytest.approx(sf1(lr), rel=1e-12, abs=1e-300)


def test_kupiec_worked_numbers():
    # 5 exceedances in 250 days at 99%: LR = 2 [5 ln(2) + 245 ln(98/99)] = 1.9568, p = 0.1618
    lr = 2 * (5 * math.log(2) + 245 * math.log(98 / 99))
    assert lr == pytest.approx(1.95681, abs=1e-5)
    assert kupiec_pvalue(5, 250, 0.01) == pytest.approx(0.16185, abs=1e-5)
    # exactly the expected count: no evidence at all
    assert kupiec_pvalue(10, 1000, 0.01) == 1.0
    # vectorised over portfolios
    got = kupiec_pvalue(np.array([0, 2, 5, 12]), 250, 0.01)
    assert got.shape == (4,)
    assert got[1] > got[2] > got[3]


def test_kupiec_one_sided_use():
    # zero exceedances in 1,000 days is significant two-sided but never rejects a margin model
    assert kupiec_pvalue(0, 1000, 0.01) < 0.001
    assert not coverage_rejected(0, 1000, 0.01, 0.05)
    assert coverage_rejected(20, 1000, 0.01, 0.05)
    assert not coverage_rejected(12, 1000, 0.01, 0.05)
    assert coverage_rejected(np.array([0, 20]), 1000, 0.01, 0.05).tolist() == [False, True]


def test_kupiec_size_matches_the_binomial_exactly_by_simulation():
    """Rejection rate of i.i.d. Bernoulli(p) series against the exact binomial rate, 3 standard errors."""
    n, p, reps = 1000, 0.01, 20000
    g = np.random.default_rng(7)
    hits = g.random((n, reps)) < p
    x = hits.sum(axis=0)
    rate = np.mean(kupiec_pvalue(x, n, p) < 0.05)
    k = np.arange(n + 1)
    exact = np.sum(binom.pmf(k, n, p) * (np.array([kupiec_pvalue(i, n, p) for i in k]) < 0.05))
    assert abs(rate - exact) < 3 * math.sqrt(exact * (1 - exact) / reps)
    assert 0.02 < exact < 0.08                      # the LR test's size near its nominal 5%
    # an under-margining model (true exceedance rate 2%): power against the exact binomial power
    x_bad = (g.random((n, 4000)) < 0.02).sum(axis=0)
    power = np.mean(coverage_rejected(x_bad, n, p, 0.05))
    exact_power = np.sum(binom.pmf(k, n, 0.02) * coverage_rejected(k, n, p, 0.05))
    assert abs(power - exact_power) < 3 * math.sqrt(exact_power * (1 - exact_power) / 4000)
    assert exact_power > 0.75


# ----------------------------------------------------------------------------- Christoffersen
SERIES = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=bool)


def test_transition_counts_by_hand():
    # pairs: 00 01 11 10 00 00 01 10 00
    assert [int(c) for c in transition_counts(SERIES)] == [4, 2, 2, 1]


def test_christoffersen_worked_example():
    n00, n01, n10, n11 = 4, 2, 2, 1
    pi01, pi11, pi = 2 / 6, 1 / 3, 3 / 9
    lr_ind = 2 * (ll(n01, n00 + n01, pi01) + ll(n11, n10 + n11, pi11) - ll(n01 + n11, 9, pi))
    assert lr_ind == pytest.approx(0.0, abs=1e-12)      # pi01 == pi11 here: no evidence of clustering
    assert christoffersen_pvalue(SERIES) == pytest.approx(1.0)
    clustered = np.array([0] * 20 + [1, 1, 1] + [0] * 20 + [1, 1] + [0] * 10, dtype=bool)
    # 19 + 19 + 9 quiet pairs, two clusters entered and left, three repeats: 54 pairs
    n00, n01, n10, n11 = 47, 2, 2, 3
    assert [int(c) for c in transition_counts(clustered)] == [n00, n01, n10, n11]
    lr = 2 * (ll(2, 49, 2 / 49) + ll(3, 5, 3 / 5) - ll(5, 54, 5 / 54))
    assert christoffersen_pvalue(clustered) == pytest.approx(sf1(lr), rel=1e-12)
    assert christoffersen_pvalue(clustered) < 0.01


def test_conditional_coverage_worked_example():
    clustered = np.array([0] * 20 + [1, 1, 1] + [0] * 20 + [1, 1] + [0] * 10, dtype=bool)
    p = 0.01
    # Christoffersen (1998): restricted likelihood p on the 54 transitions (5 hits), unrestricted Markov
    lr_cc = -2 * ll(5, 54, p) + 2 * (ll(2, 49, 2 / 49) + ll(3, 5, 3 / 5))
    assert conditional_coverage_pvalue(clustered, p) == pytest.approx(sf2(lr_cc), rel=1e-10, abs=1e-300)


def brute_force_lr_ind(e):
    n = {(a, b): 0 for a in (0, 1) for b in (0, 1)}
    for t in range(1, len(e)):
        n[int(e[t - 1]), int(e[t])] += 1
    n0, n1 = n[0, 0] + n[0, 1], n[1, 0] + n[1, 1]
    tot = n0 + n1
    un = (ll(n[0, 1], n0, n[0, 1] / n0) if n0 else 0.0) + (ll(n[1, 1], n1, n[1, 1] / n1) if n1 else 0.0)
    pi = (n[0, 1] + n[1, 1]) / tot
    return 2 * (un - (ll(n[0, 1] + n[1, 1], tot, pi) if 0 < pi < 1 else 0.0))


def test_christoffersen_vectorised_against_a_loop():
    g = np.random.default_rng(3)
    e = g.random((300, 40)) < np.linspace(0.001, 0.3, 40)
    got = christoffersen_pvalue(e)
    want = [sf1(max(brute_force_lr_ind(e[:, j]), 0.0)) for j in range(40)]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    # portfolios on the other axis: same numbers
    assert christoffersen_pvalue(e.T, axis=1) == pytest.approx(got)


def test_independence_size_and_power_by_simulation():
    """i.i.d. exceedances are rarely rejected; a Markov chain with clustering (pi11 = 0.3) is rejected mostly."""
    g = np.random.default_rng(11)
    n, reps, p = 1000, 4000, 0.02
    iid = g.random((n, reps)) < p
    size = np.mean(christoffersen_pvalue(iid) < 0.05)
    assert size < 0.08
    # Markov chain: P(hit | hit) = 0.3, P(hit | no hit) chosen so the stationary rate is p
    pi11 = 0.3
    pi01 = p * (1 - pi11) / (1 - p)
    u = g.random((n, 1000))
    chain = np.zeros((n, 1000), dtype=bool)
    for t in range(1, n):
        chain[t] = np.where(chain[t - 1], u[t] < pi11, u[t] < pi01)
    assert np.mean(christoffersen_pvalue(chain) < 0.05) > 0.9
    # conditional coverage: the under-scaled i.i.d. series (rate 3% vs p = 1%) fails, the right one does not
    assert np.mean(conditional_coverage_pvalue(g.random((n, 500)) < 0.03, 0.01) < 0.05) > 0.9
    assert np.mean(conditional_coverage_pvalue(g.random((n, 2000)) < 0.01, 0.01) < 0.05) < 0.1


def test_degenerate_series():
    assert christoffersen_pvalue(np.zeros(500, bool)) == 1.0
    assert christoffersen_pvalue(np.array([True])) == 1.0
    last = np.zeros(100, bool)
    last[-1] = True                                  # state 1 never left: no n1. pairs
    assert np.isfinite(christoffersen_pvalue(last))
    assert conditional_coverage_pvalue(np.zeros(1000, bool), 0.01) == pytest.approx(
        sf2(-2 * ll(0, 999, 0.01)), rel=1e-12)


# ----------------------------------------------------------------------------- traffic light
def test_window_exceedances_against_a_loop():
    g = np.random.default_rng(5)
    e = g.random((700, 3)) < 0.03
    got = window_exceedances(e, 250)
    for j in range(3):
        for t in range(700):
            assert got[t, j] == e[max(0, t - 249):t + 1, j].sum()
    assert window_exceedances(e.T, 250, axis=1).T.tolist() == got.tolist()


def test_basel_zones():
    assert basel_zone_bounds(0.01, 250) == (5, 10)
    assert traffic_light(np.arange(13)).tolist() == ["green"] * 5 + ["yellow"] * 5 + ["red"] * 3
    y, r = basel_zone_bounds(0.05, 250)
    assert binom.cdf(y - 1, 250, 0.05) < 0.95 <= binom.cdf(y, 250, 0.05)
    assert binom.cdf(r - 1, 250, 0.05) < 0.9999 <= binom.cdf(r, 250, 0.05)


def test_red_windows_against_a_loop():
    e = np.zeros((600, 2), dtype=bool)
    e[100:110, 0] = True                             # ten in a row: red from day 109 until day 100 + 249
    e[::30, 1] = True                                # one every 30 days: at most 9 in any 250 days
    got = red_windows(e, 250)
    want = [sum(e[max(0, t - 249):t + 1, j].sum() >= 10 for t in range(600)) for j in range(2)]
    assert got.tolist() == want == [241, 0]
