"""The backtest with the parametric scenario models (gaussian, student_t, t_copula) fitted as of each date.

Figures against closed forms under brute-force causal fits, no look-ahead bit for bit, the draws' keys,
the verdict on i.i.d. Gaussian prices, the array backends and the config errors
(docs/methodology.md, section 13).
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import run_job
from mcmargin.backtest import kernels
from mcmargin.backtest.parametric import horizon_variance
from mcmargin.backtest.run import BacktestSettings, date_keys, run_backtest
from mcmargin.calibration.tdist import fit_mvt_dof
from mcmargin.errors import ConfigError
from mcmargin.inputs.history import validate_history
from mcmargin.inputs.portfolios import Portfolios
from mcmargin.scenarios import rng, threefry
from test_backtest import (ASSETS, assert_no_look_ahead, backtest_config, books, gaussian_history,  # noqa: F401
                           job_files)

PARAMETRIC = ("gaussian", "student_t", "t_copula")


def settings(**kw):
    base = dict(model="gaussian", n=300, seed=7, horizon=1, lookback=250, ewma_lambda=0.97, min_observations=30,
                confidence=0.99, buffer=0.0, block_dates=64, refit_every=60)
    base.update(kw)
    return BacktestSettings(**base)


def t_history(n=700, vols=(0.0002, 0.0004, 0.0003), dof=5.0, seed=4):
    """Business-day prices whose log returns are multivariate t (dof) with unit-variance scaling and correlation."""
    g = np.random.default_rng(seed)
    corr = np.array([[1.0, 0.6, -0.2], [0.6, 1.0, 0.1], [-0.2, 0.1, 1.0]])
    z = g.standard_normal((n, 3)) @ np.linalg.cholesky(corr).T
    w = g.chisquare(dof, n)
    r = z * np.sqrt((dof - 2.0) / w)[:, None] * np.asarray(vols)
    prices = 100 * np.exp(np.vstack([np.zeros(3), np.cumsum(r, axis=0)]))
    frame = pd.DataFrame(prices, index=pd.bdate_range("2012-01-02", periods=n + 1, name="date"), columns=ASSETS)
    return validate_history(frame.reset_index(), file="t.csv")


def one_book(q=(3.0, 1.0, 2.0)):
    return Portfolios(("long",), ASSETS, np.array([q]), "books.csv", "")


# ----------------------------------------------------------------------------- independent references
def brute_force_fit(prices, lam, lookback, row):
    """EWMA forecast for row+1 and window residual correlation at ``row``, by plain loops (no library code).

    The recursion starts from the mean square of the first max(20, round(1 / (1 - lam))) returns; the residual
    of each return is divided by the variance known before it.
    """
    logp = np.log(prices)
    k = prices.shape[1]
    m0 = max(20, round(1.0 / (1.0 - lam)))
    s2 = [sum((logp[i + 1, a] - logp[i, a]) ** 2 for i in range(m0)) / m0 for a in range(k)]
    z = np.full(prices.shape, np.nan)
    for t in range(1, row + 1):
        for a in range(k):
            ret = logp[t, a] - logp[t - 1, a]
            z[t, a] = ret / math.sqrt(s2[a])
            s2[a] = lam * s2[a] + (1.0 - lam) * ret * ret
    win = z[row - lookback + 1:row + 1]
    n = win.shape[0]
    mean = [sum(win[i, a] for i in range(n)) / n for a in range(k)]
    corr = np.eye(k)
    for a in range(k):
        for b in range(a):
            sab = sum((win[i, a] - mean[a]) * (win[i, b] - mean[b]) for i in range(n))
            saa = sum((win[i, a] - mean[a]) ** 2 for i in range(n))
            sbb = sum((win[i, b] - mean[b]) ** 2 for i in range(n))
            corr[a, b] = corr[b, a] = sab / math.sqrt(saa * sbb)
    return np.array(s2), corr, win


def es_standard_error(dist, q, n):
    """Monte Carlo standard error of the ES estimate (mean of the worst n(1-q)) of ``dist`` with n draws."""
    v = dist.ppf(q)
    es = dist.expect(lambda x: x, lb=v, conditional=True)
    m2 = dist.expect(lambda x: x * x, lb=v, conditional=True)
    return es, math.sqrt((m2 - es * es + q * (es - v) ** 2) / (n * (1 - q)))


@pytest.mark.parametrize("model", ["gaussian", "student_t"])
def test_margin_equals_the_closed_form_es_under_the_causal_fit(model):
    """Linear book, small vols: ES = sigma_p phi(z_q)/(1-q) (normal) or the scaled Student-t ES, within MC error.

    sigma_p from the EWMA forecast and the window correlation computed by loops here; the t dof is the causal
    fit at the refit date (recomputed here on the loop-computed residual window).
    """
    hist = t_history() if model == "student_t" else gaussian_history(700, vols=(0.0002, 0.0004, 0.0003), seed=5)
    pf = one_book()
    n, q, lam, L = 400_000, 0.99, 0.97, 250
    rows = list(range(420, 426))
    st = settings(model=model, n=n, start=str(hist.index[rows[0]].date()), end=str(hist.index[rows[-1]].date()),
                  lookback=L, ewma_lambda=lam, refit_every=250)
    ds = run_backtest(hist, pf, st)
    assert ds.sizes["date"] == len(rows)
    prices = hist[list(ASSETS)].to_numpy()
    nu = None
    if model == "student_t":
        fits = json.loads(ds.attrs["model"])["dof_fits"]
        assert [f["fitted_on"] for f in fits] == [str(hist.index[rows[0]].date())]   # fitted on data up to its date
        _, corr0, win0 = brute_force_fit(prices, lam, L, rows[0])
        nu = fits[0]["mvt_dof"]
        assert nu == pytest.approx(fit_mvt_dof(win0, corr0)["dof"], rel=1e-5)
        assert 3 < nu < 12                                          # the data's dof is 5
    rel = []
    for i, row in enumerate(rows):
        s2, corr, _ = brute_force_fit(prices, lam, L, row)
        e = pf.quantity[0] * prices[row]
        sd = np.sqrt(s2)
        sigma_p = math.sqrt(sum(e[a] * e[b] * sd[a] * sd[b] * corr[a, b] for a in range(3) for b in range(3)))
        if model == "gaussian":
            dist = stats.norm(scale=sigma_p)
        else:
            dist = stats.t(nu, scale=sigma_p * math.sqrt((nu - 2) / nu))
        es, se = es_standard_error(dist, q, n)
        # exact revaluation (expm1) differs from the linear P&L by about sum |e_a| x_a^2 / 2 in the tail
        bias = 0.5 * float(np.sum(np.abs(e) * (6 * sd) ** 2))
        got = float(ds["es"].values[i, 0])
        assert abs(got - es) < 5 * se + bias, (row, got, es, se, bias)
        assert float(ds["var"].values[i, 0]) == pytest.approx(dist.ppf(q), rel=0.03)
        assert float(ds["im"].values[i, 0]) == max(0.0, got)
        rel.append((got - es) / se)
    assert abs(np.mean(rel)) < 4 / math.sqrt(len(rows)) + 1.0     # no common bias across the dates


def test_t_copula_single_name_margin_is_its_fitted_student_t_marginal():
    """A single-name book under the t copula: ES = sd x sqrt((nu-2)/nu) x ES of t(nu), nu the asset's causal fit.

    The marginal and copula dof are the ML fits on the residual window at the refit date (loops here).
    """
    from mcmargin.calibration.tdist import fit_copula_dof, fit_t_dof

    hist = t_history(dof=4.0, seed=6)
    pf = Portfolios(("single", "pair"), ASSETS, np.array([[0.0, 0.0, 4.0], [1.0, 0.0, 1.0]]), "books.csv", "")
    n, q, lam, L = 300_000, 0.99, 0.97, 250
    rows = [430, 431, 432]
    st = settings(model="t_copula", n=n, start=str(hist.index[rows[0]].date()),
                  end=str(hist.index[rows[-1]].date()), lookback=L, ewma_lambda=lam, refit_every=250)
    ds = run_backtest(hist, pf, st)
    prices = hist[list(ASSETS)].to_numpy()
    fit = json.loads(ds.attrs["model"])["dof_fits"][0]
    assert fit["fitted_on"] == str(hist.index[rows[0]].date()) and set(fit["marginal_dof"]) == {"A", "C"}
    _, corr0, win0 = brute_force_fit(prices, lam, L, rows[0])
    nu = fit["marginal_dof"]["C"]
    assert nu == pytest.approx(fit_t_dof(win0[:, 2])["dof"], rel=1e-6)
    assert fit["marginal_dof"]["A"] == pytest.approx(fit_t_dof(win0[:, 0])["dof"], rel=1e-6)
    sub = corr0[np.ix_([0, 2], [0, 2])]
    assert fit["copula_dof"] == pytest.approx(fit_copula_dof(win0[:, [0, 2]], sub)["dof"], rel=1e-4)
    for i, row in enumerate(rows):
        s2, _, _ = brute_force_fit(prices, lam, L, row)
        e = 4.0 * prices[row, 2]
        dist = stats.t(nu, scale=e * math.sqrt(s2[2]) * math.sqrt((nu - 2) / nu))
        es, se = es_standard_error(dist, q, n)
        bias = 0.5 * e * (6 * math.sqrt(s2[2])) ** 2
        assert abs(float(ds["es"].values[i, 0]) - es) < 5 * se + bias, (row, float(ds["es"].values[i, 0]), es, se)


def test_horizon_variance_sums_the_recursions_forecasts():
    after = np.array([[1e-4, 4e-4], [2e-4, 1e-4]])
    om, al, be = np.array([1e-6, 2e-6]), np.array([0.08, 0.1]), np.array([0.9, 0.85])
    for h in (1, 2, 5):
        want = np.zeros_like(after)
        for d in range(2):
            for a in range(2):
                v = after[d, a]
                for _ in range(h):
                    want[d, a] += v
                    v = om[a] + (al[a] + be[a]) * v
        assert horizon_variance(after, om, al, be, h) == pytest.approx(want, rel=1e-14)
    lam = 0.94                                                      # EWMA: h times the one-row forecast
    assert horizon_variance(after, 0.0, 1 - lam, lam, 3) == pytest.approx(3 * after, rel=1e-14)


# ----------------------------------------------------------------------------- draws keyed by (seed, date)
def test_date_normals_are_the_rng_under_the_date_key():
    key = date_keys(11, pd.DatetimeIndex(["2020-03-16"]))[0]
    fast = threefry.normal_from_mantissas(kernels.keyed_mantissas(key[0], key[1], rng.NORMAL, 700, 5))
    assert np.array_equal(fast, rng.standard_normals(0, 0, 700, 5, key=key))
    # key(seed) is the key (0, seed): the keyed draws are the seed's own when given that key
    assert np.array_equal(rng.standard_normals(9, 3, 40, 4), rng.standard_normals(0, 3, 40, 4, key=(0, 9)))
    assert np.array_equal(np.asarray(rng.chi_square(9, 3, 40, 4.5)), np.asarray(rng.chi_square(0, 3, 40, 4.5,
                                                                                                 key=(0, 9))))
    # a scenario's draw does not depend on how many are drawn; normals are N(0, 1)
    assert np.array_equal(fast[:100], rng.standard_normals(0, 0, 100, 5, key=key))
    assert abs(fast.mean()) < 4 / math.sqrt(fast.size) and abs(fast.std() - 1) < 0.05


# ----------------------------------------------------------------------------- no look-ahead
@pytest.mark.parametrize("kw", [dict(model="gaussian", horizon=1), dict(model="gaussian", horizon=2),
                                dict(model="student_t", horizon=1), dict(model="t_copula", horizon=2),
                                dict(model="gaussian", horizon=1, vol_method="garch", refit_every=80, n=150),
                                dict(model="t_copula", horizon=1, backend="array_api_strict", n=150),
                                dict(model="gaussian", horizon=1, drift="martingale", shrinkage="ledoit_wolf")])
def test_no_look_ahead_bit_for_bit(kw):
    """Alter every price after T: every im(t), t <= T - h, is bit-identical; so are other block sizes and ends."""
    assert_no_look_ahead(settings, kw, short_run={"block_dates": 1000})


def test_models_differ_and_fat_tails_raise_the_margin():
    """Same data, same keys: student_t and t_copula margins exceed the gaussian's on fat-tailed data."""
    hist = t_history(600, vols=(0.01, 0.02, 0.015), dof=4.0)
    pf = books()
    out = {m: run_backtest(hist, pf, settings(model=m, n=2000, refit_every=100))["im"].values for m in PARAMETRIC}
    for m in ("student_t", "t_copula"):
        assert (out[m].mean(axis=0) > 1.03 * out["gaussian"].mean(axis=0)).all(), m


# ----------------------------------------------------------------------------- verdicts
def test_gaussian_model_on_iid_gaussian_prices_passes():
    hist = gaussian_history(1400, seed=3)
    ds = run_backtest(hist, books(), settings(n=1000, lookback=500, ewma_lambda=0.97))
    assert ds["passed"].values.all(), ds["n_exceedances"].values
    assert (ds["red_windows"].values == 0).all()
    assert (ds["n_exceedances"].values <= 0.01 * ds.sizes["date"] + 3 * math.sqrt(0.01 * ds.sizes["date"])).all()


# ----------------------------------------------------------------------------- backends
@pytest.mark.parametrize("model", PARAMETRIC)
@pytest.mark.parametrize("backend", ["array_api_strict", "jax"])
def test_array_backends_match_numpy(model, backend):
    hist = gaussian_history(330, regimes=True)
    st = settings(model=model, n=500, block_dates=40, horizon=2)
    ref = run_backtest(hist, books(), st)
    ds = run_backtest(hist, books(), BacktestSettings(**{**st.__dict__, "backend": backend}))
    for v in ("var", "es", "im"):
        assert ds[v].values == pytest.approx(ref[v].values, rel=1e-11, abs=1e-9), v


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("overrides, key", [
    (("scenarios=student_t", "scenarios.dof=2"), "scenarios.dof"),
    (("scenarios=t_copula", "scenarios.copula_dof=0"), "scenarios.copula_dof"),
    (("scenarios=t_copula", "scenarios.marginal_dof=1.5"), "scenarios.marginal_dof"),
    (("scenarios=gaussian", "scenarios.drift=up"), "scenarios.drift"),
    (("scenarios=gaussian", "scenarios.shrinkage=2"), "scenarios.shrinkage"),
    (("scenarios=gaussian", "scenarios.horizon_days=2.5"), "scenarios.horizon_days"),
    (("scenarios=gaussian", "scenarios.params=p.nc"), "scenarios.params"),
    (("scenarios=student_t", "+scenarios.vol_floor_lookback=300"), "scenarios.vol_floor_lookback"),
    (("scenarios=gaussian", "margin.apc=floor"), "margin.apc"),
])
def test_bad_parametric_keys_are_named(job_files, overrides, key):  # noqa: F811 (fixture)
    from jobs.backtest import run

    cfg = backtest_config(f"history={job_files / 'prices.csv'}", f"portfolios={job_files / 'books.csv'}", *overrides)
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert err.value.key == key


def test_job_runs_a_parametric_model_and_bad_values_exit_2(job_files, tmp_path):  # noqa: F811 (fixture)
    out = tmp_path / "bt.nc"
    args = (f"history={job_files / 'prices.csv'}", f"portfolios={job_files / 'books.csv'}", "scenarios=t_copula",
            "scenarios.n=300", "scenarios.lookback=200", "backtest.refit_every=50", "backtest.plots=false",
            "output.report=false")
    res = run_job("jobs.backtest", *args, f"output.path={out}")
    assert res.returncode == 0, res.stderr
    from mcmargin.output.store import open_dataset

    ds = open_dataset(out)
    assert json.loads(ds.attrs["model"])["model"] == "t_copula" and ds.sizes["portfolio"] == 2
    assert json.loads(ds.attrs["backtest_settings"])["copula_dof"] == 6
    bad = tmp_path / "bad" / "bt.nc"
    res = run_job("jobs.backtest", *args, "scenarios.marginal_dof=2", f"output.path={bad}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "scenarios.marginal_dof" in res.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "bad").exists()
