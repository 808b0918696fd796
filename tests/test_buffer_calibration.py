"""jobs.calibrate_buffer: the buffer sweep from a backtest's stored im and loss (mcmargin.calibration.buffer)."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from mcmargin.backtest.run import BacktestSettings, backtest_dataset, run_backtest
from mcmargin.calibration.buffer import buffer_grid, calibration_dataset, frontier_table
from mcmargin.errors import ConfigError
from mcmargin.inputs.history import load_history
from mcmargin.inputs.portfolios import load_portfolios

from conftest import run_job

B0 = 0.1


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """900 rows of three fat-tailed assets with a volatility regime switch, and four books."""
    g = np.random.default_rng(21)
    n = 900
    vol = np.where((np.arange(n) > 500) & (np.arange(n) < 620), 0.05, 0.015)
    z = g.standard_t(4, (n, 3)) / math.sqrt(2)
    r = z * vol[:, None] * np.array([1.0, 1.3, 0.8])
    idx = pd.date_range("2022-01-03", periods=n, freq="B", name="date")
    prices = pd.DataFrame(np.exp(np.cumsum(r, axis=0)) * [100, 50, 20], index=idx, columns=["A", "B", "C"])
    d = tmp_path_factory.mktemp("bt")
    prices.to_csv(d / "history.csv")
    pd.DataFrame({"portfolio": ["long", "long", "short", "hedged", "hedged", "single"],
                  "asset": ["A", "B", "C", "A", "B", "B"],
                  "quantity": [10, 20, -30, 10, -15, 5]}).to_csv(d / "portfolios.csv", index=False)
    return str(d / "history.csv"), str(d / "portfolios.csv")


def settings(**kw):
    base = dict(model="fhs", n=300, seed=7, horizon=1, lookback=250, buffer=B0, confidence=0.99)
    base.update(kw)
    return BacktestSettings(**base)


@pytest.fixture(scope="module")
def inputs(files):
    h = load_history(files[0])
    return h, load_portfolios(files[1], list(h.columns))


@pytest.fixture(scope="module")
def base(inputs):
    return run_backtest(*inputs, settings(), scheduler="sync")


def test_the_sweep_equals_rerunning_the_backtest(inputs, base):
    grid = [0.0, 0.05, 0.1, 0.37]
    cal = calibration_dataset(base, grid)
    for b in grid:
        again = run_backtest(*inputs, settings(buffer=b), scheduler="sync")
        point = cal.sel(buffer=b)
        for name in ("coverage", "kupiec_pvalue", "christoffersen_pvalue"):
            np.testing.assert_allclose(point[name].values, again[name].values, rtol=1e-12, atol=1e-15, err_msg=name)
        for name in ("n_exceedances", "red_windows"):
            np.testing.assert_array_equal(point[name].values, again[name].values, err_msg=name)
        np.testing.assert_allclose(point["mean_margin"].values, again["im"].mean("date").values, rtol=1e-12)
        np.testing.assert_array_equal(point["passed"].values, again["passed"].values & (again["coverage"] >= 0.99))
    assert cal["n_exceedances"].sel(buffer=0.0).sum() > cal["n_exceedances"].sel(buffer=0.37).sum()


def test_the_sweep_with_an_overlapping_horizon_tests_every_hth_date(inputs):
    two = run_backtest(*inputs, settings(horizon=2), scheduler="sync")
    cal = calibration_dataset(two, [0.0, 0.2])
    again = run_backtest(*inputs, settings(horizon=2, buffer=0.2), scheduler="sync")
    for name in ("kupiec_pvalue", "christoffersen_pvalue", "coverage"):
        np.testing.assert_allclose(cal[name].sel(buffer=0.2).values, again[name].values, rtol=1e-12, atol=1e-15)
    assert cal.attrs["test_stride"] == 2


def test_required_buffer_is_the_smallest_passing_grid_point_by_brute_force(base):
    grid = buffer_grid({"start": 0.0, "stop": 0.6, "step": 0.02})
    for target in (0.99, 0.995, 0.999):
        cal = calibration_dataset(base, grid, target_coverage=target)
        dates, names = base["date"].values, base["portfolio"].values
        es = base["es"].transpose("date", "portfolio").values
        var = base["var"].transpose("date", "portfolio").values
        loss = base["loss"].transpose("date", "portfolio").values
        st = settings()
        for j, p in enumerate(names):
            want = math.nan
            for b in grid:                                # the backtest's own tests, buffer by buffer, in order
                ds = backtest_dataset(dates, names, var, es, loss, dataclasses.replace(st, buffer=float(b)), {})
                if bool(ds["passed"].values[j]) and float(ds["coverage"].values[j]) >= target:
                    want = float(b)
                    break
            got = float(cal["required_buffer"].sel(portfolio=p))
            assert (math.isnan(got) and math.isnan(want)) or got == want, (target, p, got, want)
        if target == 0.995:
            req = cal["required_buffer"].values
            assert np.isfinite(req).any() and (req[np.isfinite(req)] > 0).any()   # the test can tell a buffer


def test_dataset_contract_and_frontier(base):
    cal = calibration_dataset(base, buffer_grid({"start": 0, "stop": 1, "step": 0.01}))
    assert cal.sizes["buffer"] == 101 and cal["buffer"].values[7] == 0.07
    for v in ("coverage", "n_exceedances", "kupiec_pvalue", "christoffersen_pvalue", "red_windows", "mean_margin",
              "peak_to_trough", "max_increase_1d", "max_increase_30d"):
        assert cal[v].dims == ("buffer", "portfolio") and cal[v].attrs["long_name"] and cal[v].attrs["units"]
    assert cal["required_buffer"].dims == ("portfolio",)
    # coverage never falls as the buffer grows; the mean margin grows in proportion to 1 + b
    assert (np.diff(cal["coverage"].values, axis=0) >= 0).all()
    np.testing.assert_allclose(cal["mean_margin"].values / cal["mean_margin"].values[0],
                               np.broadcast_to((1 + cal["buffer"].values[:, None]), cal["mean_margin"].shape),
                               rtol=1e-12)
    # the procyclicality metrics do not depend on the buffer (a rescaling)
    for v in ("peak_to_trough", "max_increase_1d", "max_increase_30d"):
        np.testing.assert_allclose(cal[v].values, np.broadcast_to(cal[v].values[0], cal[v].shape), rtol=1e-12)
    text = frontier_table(cal)
    assert "required_buffer" in text and "coverage" in text and "max_increase_30d" in text


def test_buffer_grid():
    np.testing.assert_array_equal(buffer_grid([0.3, 0.1, 0.1]), [0.1, 0.3])
    assert buffer_grid({"start": 0.1, "stop": 0.5, "step": 0.1}).tolist() == [0.1, 0.2, 0.3, 0.4, 0.5]
    with pytest.raises(ConfigError, match=r"buffer\.grid"):
        buffer_grid({"start": 0, "stop": 1, "step": 0})
    with pytest.raises(ConfigError, match=r"buffer\.grid\[1\]"):
        buffer_grid([0.1, -1])


def test_the_job_from_a_backtest_dataset_and_by_running_the_backtest(files, base, tmp_path):
    from mcmargin.output.store import write_dataset

    stored = base.copy()
    stored["date"].attrs.pop("units", None)     # the time encoding sets it (fixed in the backtest branch)
    bt = write_dataset(stored, tmp_path / "bt.zarr")
    out = tmp_path / "cal.nc"
    r = run_job("jobs.calibrate_buffer", f"backtest_path={bt}", "buffer.grid=[0,0.1,0.2,0.5]",
                f"output.path={out}")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cal_frontier.png").stat().st_size > 1000
    cal = xr.open_dataset(out).load()
    want = calibration_dataset(base, [0, 0.1, 0.2, 0.5])
    np.testing.assert_array_equal(cal["required_buffer"].values, want["required_buffer"].values)
    assert "required_buffer" in r.stdout
    # run the backtest first, with the same keys as jobs.backtest
    out2 = tmp_path / "cal2.zarr"
    r = run_job("jobs.calibrate_buffer", f"history={files[0]}", f"portfolios={files[1]}", "scenarios.n=300",
                "scenarios.seed=7", "scenarios.lookback=250", "scenarios.horizon_days=1", "margin.buffer=0.1",
                "buffer.grid=[0,0.1,0.2,0.5]", f"output.path={out2}", "output.plots=false")
    assert r.returncode == 0, r.stderr
    cal2 = xr.open_zarr(out2).load()
    np.testing.assert_allclose(cal2["coverage"].values, want["coverage"].values, rtol=1e-12)
    # the stress run takes it: margin.buffer=PATH
    from mcmargin.calibration.buffer import calibrated_buffer

    p = str(cal["portfolio"].values[0])
    got = cal["required_buffer"].sel(portfolio=p).item()
    if np.isfinite(got):
        assert calibrated_buffer(str(out), p) == got
    # errors: exit 2, naming the key, nothing written
    bad = tmp_path / "bad.zarr"
    for args, key in ((["backtest_path=/nonexistent.zarr"], "backtest_path"), ([], "history"),
                      ([f"backtest_path={bt}", "buffer.grid.step=0"], "buffer.grid.step"),
                      ([f"backtest_path={bt}", "buffer.significance=2"], "buffer.significance")):
        r = run_job("jobs.calibrate_buffer", *args, f"output.path={bad}")
        assert r.returncode == 2 and key in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert not bad.exists()
