"""Calibration: recovery of known parameters from simulated data, the dataset, the job, real data."""

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mcmargin.calibration import (calibrate, devolatized_correlation, ewma_variance, filter_volatility, fit_copula_dof, fit_mvt_dof, fit_t_dof, garch_fit, ledoit_wolf_intensity, load_params, save_params)
from mcmargin.errors import ConfigError, InputError
from mcmargin.inputs.history import load_history, validate_history

ROOT = Path(__file__).resolve().parents[1]
CORR = np.array([[1.0, 0.8, -0.3], [0.8, 1.0, 0.1], [-0.3, 0.1, 1.0]])


def simulated_history(n=2500, vols=(0.6, 0.8, 0.3), corr=CORR, dof=5.0, seed=0, start="2019-01-01"):
    """Daily prices (7-day calendar) with constant annual vols and multivariate-t(dof) innovations."""
    g = np.random.default_rng(seed)
    k = len(vols)
    z = g.standard_normal((n, k)) @ np.linalg.cholesky(corr).T
    if dof:
        z *= np.sqrt((dof - 2) / g.chisquare(dof, n))[:, None]
    r = z * np.asarray(vols) / math.sqrt(365)
    prices = 100 * np.exp(np.vstack([np.zeros(k), np.cumsum(r, axis=0)]))
    idx = pd.date_range(start, periods=n + 1, freq="D", name="date")
    cols = [f"A{i}" for i in range(k)]
    return validate_history(pd.DataFrame(prices, index=idx, columns=cols).reset_index(), file="sim")


def sim_garch(n, omega, alpha, beta, seed, burn=500):
    g = np.random.default_rng(seed)
    z = g.standard_normal(n + burn)
    s2 = omega / (1 - alpha - beta)
    r = np.empty(n + burn)
    for t in range(n + burn):
        r[t] = math.sqrt(s2) * z[t]
        s2 = omega + alpha * r[t] ** 2 + beta * s2
    return r[burn:]


# ----------------------------------------------------------------------------- volatility
def test_ewma_recursion_by_hand_and_missing_returns():
    r = np.array([np.nan, 0.01, -0.02, np.nan, 0.03])
    s2, f = ewma_variance(r, 0.9, init_obs=2)
    v0 = (0.01 ** 2 + 0.02 ** 2) / 2
    v1 = 0.9 * v0 + 0.1 * 0.01 ** 2
    v2 = 0.9 * v1 + 0.1 * 0.02 ** 2
    assert np.isnan(s2[0])
    assert s2[1:].tolist() == pytest.approx([v0, v1, v2, v2])     # a missing return leaves it unchanged
    assert f == pytest.approx(0.9 * v2 + 0.1 * 0.03 ** 2)
    s2c, fc = ewma_variance(np.zeros(50), 0.94)                     # constant price: zero vol, not NaN
    assert fc == 0 and np.all(s2c == 0)


def test_ewma_recovers_constant_vol():
    # measured (5 seeds, 4000 obs, daily vol 2%): mean-vol error <= 1.3%, forecast error <= 17%
    for seed in range(3):
        r = np.random.default_rng(seed).standard_normal(4000) * 0.02
        s2, f = ewma_variance(r, 0.97)
        assert math.sqrt(np.mean(s2[500:])) == pytest.approx(0.02, rel=0.03)
        assert math.sqrt(f) == pytest.approx(0.02, rel=0.30)


def test_garch_recovers_parameters():
    # measured (5 seeds, 4000 obs): |alpha err| <= 0.011, |beta err| <= 0.009, long-run vol <= 4.5%
    omega, alpha, beta = 2e-6, 0.08, 0.90
    for seed in range(2):
        fit = garch_fit(sim_garch(4000, omega, alpha, beta, seed))
        assert fit["converged"]
        assert fit["alpha"] == pytest.approx(alpha, abs=0.03)
        assert fit["beta"] == pytest.approx(beta, abs=0.03)
        lr = math.sqrt(fit["omega"] / (1 - fit["alpha"] - fit["beta"]))
        assert lr == pytest.approx(math.sqrt(omega / (1 - alpha - beta)), rel=0.10)
        assert np.isnan(fit["sigma2"]).sum() == 0 and fit["forecast"] > 0


def test_garch_through_filter_handles_gaps_and_constants():
    r = sim_garch(1500, 2e-6, 0.08, 0.9, 3)
    r[[10, 11, 500]] = np.nan
    df = pd.DataFrame({"x": r, "cash": 0.0})
    vf = filter_volatility(df, "garch")
    assert vf.sigma2["x"].iloc[11] == vf.sigma2["x"].iloc[10]          # carried over the gap
    assert (vf.sigma2["cash"] == 0).all() and vf.forecast["cash"] == 0
    with pytest.raises(ValueError, match="at least"):
        garch_fit(np.random.default_rng(0).standard_normal(50))


# ----------------------------------------------------------------------------- dependence
def test_correlation_of_devolatized_returns_recovered():
    # measured (5 seeds, 1000 obs): max error 0.006..0.055; with 3000 obs, SE ~0.015
    g = np.random.default_rng(7)
    z = g.standard_normal((3000, 3)) @ np.linalg.cholesky(CORR).T
    vol = np.exp(np.cumsum(g.standard_normal((3000, 3)) * 0.05, axis=0)) * 0.02     # wandering vols
    r = pd.DataFrame(z * vol)
    vf = filter_volatility(r, "ewma", 0.94)
    corr, info = devolatized_correlation(vf.residuals(r), 0.0)
    assert np.abs(corr - CORR).max() < 0.05
    assert info["shrinkage"] == 0 and not info["repaired"]
    half, info = devolatized_correlation(vf.residuals(r), 0.5)
    assert np.allclose(half, 0.5 * corr + 0.5 * np.eye(3), atol=1e-12)
    lw, info = devolatized_correlation(vf.residuals(r), "ledoit_wolf")
    assert 0 <= info["shrinkage"] < 0.05                            # much data: little shrinkage
    assert 0.0 <= ledoit_wolf_intensity(g.standard_normal((30, 20))) <= 1.0


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.IterationLimitWarning")
def test_pairwise_correlation_not_psd_is_repaired_and_logged(caplog):
    # three assets observed pairwise on disjoint periods: +0.9, +0.9 and -0.9 cannot hold together
    g = np.random.default_rng(1)
    z = np.full((300, 3), np.nan)
    for block, (i, j, rho) in enumerate([(0, 1, 0.9), (1, 2, 0.9), (0, 2, -0.9)]):
        a = g.standard_normal(100)
        b = rho * a + math.sqrt(1 - rho ** 2) * g.standard_normal(100)
        z[block * 100:(block + 1) * 100, i], z[block * 100:(block + 1) * 100, j] = a, b
    caplog.set_level(logging.INFO)
    corr, info = devolatized_correlation(pd.DataFrame(z, columns=list("abc")))
    assert info["repaired"] and info["min_eigenvalue_raw"] < 0 <= info["min_eigenvalue"] + 1e-10
    assert np.linalg.eigvalsh(corr).min() > -1e-10 and np.allclose(np.diag(corr), 1)
    assert "smallest eigenvalue" in caplog.text and "repaired" in caplog.text


def test_constant_series_is_uncorrelated():
    z = pd.DataFrame({"a": np.random.default_rng(0).standard_normal(100), "cash": 0.0})
    corr, _ = devolatized_correlation(z)
    assert np.array_equal(corr, np.eye(2))


# ----------------------------------------------------------------------------- Student t
def test_t_dof_recovered():
    # measured (5 seeds): nu=5, 5000 obs: 4.83..5.20; mvt nu=6, 3000 obs: 5.54..6.52; copula 5.40..7.32
    g = np.random.default_rng(11)
    assert fit_t_dof(g.standard_t(5, 5000))["dof"] == pytest.approx(5.0, abs=0.75)
    assert fit_t_dof(g.standard_normal(5000))["dof"] > 30             # Gaussian data: large dof
    nu = 6.0
    z = g.standard_normal((3000, 3)) @ np.linalg.cholesky(CORR).T * np.sqrt((nu - 2) / g.chisquare(nu, 3000))[:, None]
    assert fit_mvt_dof(z, CORR)["dof"] == pytest.approx(nu, abs=1.5)
    assert fit_copula_dof(z, CORR)["dof"] == pytest.approx(nu, abs=2.0)
    assert math.isnan(fit_t_dof(np.zeros(100))["dof"])


# ----------------------------------------------------------------------------- calibrate
def test_calibrate_recovers_parameters_of_a_simulated_history():
    h = simulated_history()
    ds = calibrate(h, {"lookback": 2000, "ewma_lambda": 0.97})
    vols = np.array([0.6, 0.8, 0.3])
    # realized vol over 2000 rows: SE about 2-3% with t(5) returns
    assert np.allclose(ds["realized_vol"].values, vols, rtol=0.08)
    assert np.allclose(ds["vol"].values, vols, rtol=0.35)                 # one EWMA reading
    assert np.abs(ds["correlation"].values - CORR).max() < 0.06
    assert np.allclose(ds["dof"].values, 5.0, atol=1.5)
    assert float(ds["mvt_dof"]) == pytest.approx(5.0, abs=1.5)
    assert float(ds["copula_dof"]) == pytest.approx(5.0, abs=2.5)
    assert ds["correlation"].dims == ("asset", "asset_b")
    assert ds.attrs["periods_per_year"] == 365 and ds.attrs["lookback"] == 2000
    assert (ds["n_obs"] == 2000).all()
    assert ds.attrs["window_end"] == str(h.index[-1].date())
    assert ds["vol_path"].dims == ("date", "asset") and int(ds["in_lookback"].sum()) == 2000


def test_calibrate_garch_lookback_valuation_date_and_assets():
    h = simulated_history(n=1200, dof=None, seed=2)
    h.attrs["valuation_date"] = h.index[999]
    ds = calibrate(h, {"vol_method": "garch", "lookback": 500, "fit_dof": False}, assets=["A0", "A2"])
    assert list(ds["asset"].values) == ["A0", "A2"]
    assert ds.attrs["window_end"] == str(h.index[999].date()) and ds.sizes["date"] == 1000
    assert np.all(ds["garch_alpha"].values + ds["garch_beta"].values < 1.0001)
    assert np.isnan(ds["dof"].values).all()
    assert np.allclose(ds["vol"].values, [0.6, 0.3], rtol=0.35)


def test_calibrate_constant_series_and_errors():
    h = simulated_history(n=300, dof=None)
    h["USDT"] = 1.0
    ds = calibrate(h, {"lookback": 250})
    u = ds.sel(asset="USDT")
    assert float(u["vol"]) == 0 and float(u["realized_vol"]) == 0 and math.isnan(float(u["dof"]))
    assert np.array_equal(ds["correlation"].sel(asset="USDT").values, [0, 0, 0, 1])
    assert np.isfinite(ds["mvt_dof"])
    with pytest.raises(ConfigError, match="scenarios.ewma_lambda"):
        calibrate(h, {"ewma_lambda": 1.0})
    with pytest.raises(ConfigError, match="scenarios.vol_method"):
        calibrate(h, {"vol_method": "har"})
    with pytest.raises(ConfigError, match="scenarios.shrinkage"):
        calibrate(h, {"shrinkage": 2})
    with pytest.raises(InputError, match="no column 'VIX'"):
        calibrate(h, {"implied_vol_columns": {"A0": "VIX"}})
    h2 = h.copy()
    h2.iloc[:290, 0] = np.nan                                      # starts too late to calibrate
    with pytest.raises(InputError, match="too few returns.*A0"):
        calibrate(h2, {})


def test_save_load_round_trip_and_checks(tmp_path):
    ds = calibrate(simulated_history(n=400, dof=None), {"lookback": 300})
    for name in ("p.nc", "p.zarr"):
        path = save_params(ds, tmp_path / name)
        back = load_params(path)
        assert np.allclose(back["vol"].values, ds["vol"].values)
        assert np.allclose(back["correlation"].values, ds["correlation"].values)
        assert list(back["asset"].values) == ["A0", "A1", "A2"]
        assert back.attrs["vol_method"] == "ewma"
    save_params(ds, tmp_path / "p.zarr")                                  # overwrite in place
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p or ".old" in p]
    with pytest.raises(ConfigError, match="scenarios.params.*does not exist"):
        load_params(tmp_path / "missing.nc")
    bad = ds.drop_vars("correlation")
    bad.to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(InputError, match="no 'correlation'"):
        load_params(tmp_path / "bad.nc")


# ----------------------------------------------------------------------------- the job
def _job(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "jobs.calibrate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_calibrate_job_writes_dataset_and_plots(tmp_path):
    h = simulated_history(n=700, dof=None)
    h.to_csv(tmp_path / "hist.csv")
    out = tmp_path / "out" / "params.nc"
    p = _job(f"history={tmp_path / 'hist.csv'}", f"output.path={out}", "vol_method=garch", "lookback=400",
             "shrinkage=ledoit_wolf", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    ds = load_params(out)
    assert set(ds["asset"].values) == {"A0", "A1", "A2"} and ds.attrs["vol_method"] == "garch"
    for suffix in ("vol", "correlation", "qq"):
        png = tmp_path / "out" / f"params_{suffix}.png"
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "outputs").exists() and not (tmp_path / ".hydra").exists()
    assert "written:" in p.stdout


def test_calibrate_job_errors_exit_2_without_traceback(tmp_path):
    (tmp_path / "bad.csv").write_text("date,A\n2024-01-01,1\n2024-01-02,-1\n")
    out = tmp_path / "params.nc"
    p = _job(f"history={tmp_path / 'bad.csv'}", f"output.path={out}", cwd=tmp_path)
    assert p.returncode == 2
    assert "row 3" in p.stderr and "column 'A'" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def market_history(tmp_path_factory):
    """S&P 500 and NASDAQ closes (1999-2018) and VIX (2014-2019), bundled with the arch package."""
    data = pytest.importorskip("arch.data")
    from arch.data import nasdaq, sp500, vix

    df = pd.DataFrame({"SPX": sp500.load()["Adj Close"], "NDX": nasdaq.load()["Adj Close"]})
    df = df.join(vix.load()["vix"].rename("VIX"), how="outer")
    df.index.name = "date"
    path = tmp_path_factory.mktemp("arch") / "market.csv"
    df.to_csv(path)
    assert data is not None
    return load_history(path)


def test_smoke_real_market_history(market_history):
    h = market_history
    rep = h.attrs["report"]
    assert rep.late_starters() == {"VIX": "2014-01-03"}                   # the vol index starts late
    assert rep.dropped_rows                                                 # VIX-file holidays
    ds = calibrate(h, {"implied_vol_columns": {"SPX": "VIX"}, "vol_method": "ewma", "ewma_lambda": 0.97,
                       "shrinkage": "ledoit_wolf"})
    assert list(ds["asset"].values) == ["SPX", "NDX"]
    assert ds.attrs["periods_per_year"] == 252 and ds.attrs["window_end"] == "2019-01-03"
    assert np.all((ds["vol"].values > 0.10) & (ds["vol"].values < 0.60))   # Dec 2018 sell-off: ~25-30%
    assert float(ds["correlation"].sel(asset="SPX", asset_b="NDX")) > 0.8
    assert np.all((ds["dof"].values > 2.1) & (ds["dof"].values < 15))       # fat tails
    assert 0.5 < float(ds["vol_of_vol"].sel(asset="SPX")) < 3.0
    assert float(ds["spot_vol_corr"].sel(asset="SPX")) < -0.5              # leverage effect
    g = calibrate(h, {"vol_method": "garch", "valuation_date": "2008-12-31", "implied_vol_columns": {}},
                  assets=["SPX", "NDX"])
    assert float(g["vol"].sel(asset="SPX")) > 0.4                           # late 2008
    assert np.all(g["garch_alpha"].values + g["garch_beta"].values > 0.95)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_output_gets_the_process_umask(tmp_path, umask):
    """Plots, the parameter dataset and a stress dataset: mode 0666 & ~umask (files), 0777 & ~umask (dirs)."""
    import os
    import stat

    h = simulated_history(n=300, dof=None)
    h.to_csv(tmp_path / "hist.csv")
    out = tmp_path / "out"
    code = (f"import os, sys; os.umask({umask}); import runpy; "
            f"sys.argv = ['jobs.calibrate', 'history={tmp_path / 'hist.csv'}', 'output.path={out / 'params.zarr'}', "
            "'lookback=200', 'fit_dof=false']; runpy.run_module('jobs.calibrate', run_name='__main__')")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    code = code.replace("jobs.calibrate", "jobs.stress").replace(
        f"'history={tmp_path / 'hist.csv'}', 'output.path={out / 'params.zarr'}', 'lookback=200', 'fit_dof=false'",
        f"'portfolio.n_accounts=10', 'scenarios.n=200', 'output.path={out / 'stress.zarr'}'")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    seen = 0
    for f in [*pngs, *out.rglob("*")]:
        mode = stat.S_IMODE(f.stat().st_mode)
        want = (0o777 if f.is_dir() else 0o666) & ~umask
        assert mode == want, (f, oct(mode), oct(want))
        seen += 1
    assert seen > 10
