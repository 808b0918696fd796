"""Required buffers against the named stresses, and margin.buffer read from a calibration dataset (mcmargin.calibration.buffer)."""

import math

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import jobs.stress as stress
from mcmargin.errors import ConfigError
from mcmargin.calibration.buffer import required_buffer, stress_coverage, stress_margin_gap

from conftest import run_job, stress_config


def brute_required(im, losses, b0):
    """Smallest b >= 0 with im (1 + b) / (1 + b0) >= every loss: a loop over the stresses and a bisection on b."""
    def covered(b):
        return all(im * (1 + b) / (1 + b0) >= loss for loss in losses)

    if covered(0.0):
        return 0.0
    hi = 1.0
    while not covered(hi):
        hi *= 2
        if hi > 1e300:
            return math.inf
    lo = 0.0
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (lo, mid) if covered(mid) else (mid, hi)
    return hi


def test_required_buffer_against_a_brute_force_loop():
    g = np.random.default_rng(3)
    n, s = 300, 7
    im = g.lognormal(10, 1, n)
    im[:5] = 0.0
    loss = g.normal(0, 1, (n, s)) * im[:, None] * g.uniform(0.1, 3, (n, 1))
    loss[:3, 0] = 1000.0                      # im 0, a stress loses: no buffer covers it
    loss[3:5] = -1.0                          # im 0, no stress loses: covered at 0
    loss[5:10] = -np.abs(loss[5:10])          # nothing lost: 0
    for b0 in (0.0, 0.1, 0.37):
        got = required_buffer(im, loss, b0)
        want = np.array([brute_required(im[i], loss[i], b0) for i in range(n)])
        assert np.isinf(got[:3]).all() and np.isinf(want[:3]).all()
        assert (got[3:10] == 0).all() and (want[3:10] == 0).all()
        np.testing.assert_allclose(got[10:], want[10:], rtol=1e-12, atol=1e-15)
        assert (got > 0).sum() > n // 3 and (got[10:] == 0).sum() > 10   # both cases occur


def test_coverage_and_gap_by_hand():
    im = np.array([100.0, 100.0, 0.0])
    loss = np.array([[50.0, 100.0, 150.0, 200.0], [-5.0, 0.0, 10.0, 99.0], [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(stress_coverage(im, loss), [0.5, 1.0, 0.75])
    np.testing.assert_array_equal(stress_margin_gap(im, loss), [100.0, 0.0, 1.0])
    # base = 100 / 1.25 = 80: 200 / 80 - 1 and 99 / 80 - 1; nothing to scale up against a loss of 1
    np.testing.assert_allclose(required_buffer(im, loss, 0.25), [1.5, 0.2375, np.inf], rtol=1e-15)
    assert required_buffer([300.0], [[200.0, 250.0]], 0.0)[0] == 0.0         # covered without any buffer
    assert required_buffer([300.0], [[200.0, 250.0]], 0.5)[0] == 0.25        # covered at b0 = 0.5, base 200: 250/200 - 1



@pytest.fixture(scope="module")
def run():
    return stress.run(stress_config("margin.buffer=0.2"))


def test_stress_run_reports_required_buffers_of_the_primary_model(run):
    ds = run
    assert ds.attrs["margin_buffer"] == 0.2 and ds.attrs["margin_apc"] == "none"
    gim = ds["group_im"].values
    loss = ds["group_stress_loss"].transpose("group", "stress").values
    names = list(ds["stress"].values)
    for i in range(ds.sizes["group"]):
        # brute force: every stress, one at a time
        want = brute_required(gim[i], [loss[i, names.index(s)] for s in names], 0.2)
        got = float(ds["group_required_buffer"][i])
        assert got == want or abs(got - want) <= 1e-12 * max(1.0, want), (i, got, want)
        cov = sum(gim[i] >= loss[i, k] for k in range(len(names))) / len(names)
        assert float(ds["group_stress_coverage"][i]) == cov
        assert float(ds["group_stress_margin_gap"][i]) == max(0.0, max(loss[i]) - gim[i])
    assert (ds["group_required_buffer"] > 0.2).any() and (ds["group_stress_coverage"] < 1).any()
    for v in ("group_required_buffer", "group_stress_coverage", "group_stress_margin_gap"):
        assert ds[v].dims == ("group",) and ds[v].attrs["long_name"] and ds[v].attrs["units"]


def test_several_models_use_the_primary(run):
    ds = stress.run(stress_config("margin.buffer=0.2", "margin.models=[span,mc_es]"))
    primary = ds["group_im"].sel(model="span").values
    loss = ds["group_stress_loss"].transpose("group", "stress").values
    np.testing.assert_array_equal(ds["group_required_buffer"].values, required_buffer(primary, loss, 0.2))


def test_summary_shows_the_margin_to_cover_every_stress(run):
    from mcmargin.output.summary import summary

    text = summary(run)
    total = float(run["group_stress_margin_gap"].sum())
    assert f"margin to cover every named stress {total:>14,.0f} USD" in text
    worst = str(run["group"].values[int(np.argmax(run["group_stress_margin_gap"].values))])
    line = next(ln for ln in text.splitlines() if "margin to cover every named stress" in ln)
    after = text.splitlines()[text.splitlines().index(line) + 1]
    assert after.split()[0] == worst


def calibration(path, buffers, kind="nc"):
    ds = xr.Dataset({"required_buffer": (("portfolio",), np.array(list(buffers.values()), dtype=float))},
                    coords={"portfolio": list(buffers)})
    if kind == "nc":
        ds.to_netcdf(path)
    else:
        ds.to_zarr(path)
    return str(path)


def test_margin_buffer_reads_a_calibration_dataset(run, tmp_path):
    path = calibration(tmp_path / "cal.nc", {"longs": 0.2, "hedged": 0.05})
    ds = stress.run(stress_config(f"margin.buffer={path}", "margin.buffer_portfolio=longs"))
    assert ds.attrs["margin_buffer"] == 0.2 and ds.attrs["margin_buffer_source"] == path
    assert ds.attrs["margin_buffer_portfolio"] == "longs"
    import json

    from mcmargin.common.audit import sha256_of

    # the calibration dataset is an input of the run: its sha256 is in the audit trail (jobs.reproduce checks it)
    assert json.loads(ds.attrs["input_sha256"]) == {str(Path(path).resolve()): sha256_of(path)}
    np.testing.assert_array_equal(ds["im"].values, run["im"].values)       # the same buffer as margin.buffer=0.2
    one = calibration(tmp_path / "one.zarr", {"only": 0.2}, kind="zarr")
    ds = stress.run(stress_config(f"margin.buffer={one}"))
    assert ds.attrs["margin_buffer_portfolio"] == "only"
    np.testing.assert_array_equal(ds["im"].values, run["im"].values)
    with pytest.raises(ConfigError, match="margin.buffer_portfolio"):
        stress.run(stress_config(f"margin.buffer={path}"))                  # two portfolios, none named
    with pytest.raises(ConfigError, match="margin.buffer_portfolio"):
        stress.run(stress_config(f"margin.buffer={path}", "margin.buffer_portfolio=nobody"))
    nan = calibration(tmp_path / "nan.nc", {"p": float("nan")})
    with pytest.raises(ConfigError, match=r"margin\.buffer.*NaN"):
        stress.run(stress_config(f"margin.buffer={nan}"))


def test_margin_buffer_neither_number_nor_dataset_exits_2(tmp_path):
    not_cal = tmp_path / "other.nc"
    xr.Dataset({"im": (("x",), [1.0])}).to_netcdf(not_cal)
    for value in (str(tmp_path / "missing.zarr"), "abc", str(not_cal)):
        out = tmp_path / "out.zarr"
        r = run_job("jobs.stress", "portfolio.n_accounts=20", "scenarios.n=100", "backend=numpy",
                    f"margin.buffer={value}", f"output.path={out}")
        assert r.returncode == 2, r.stderr
        assert "margin.buffer" in r.stderr and "Traceback" not in r.stderr and not out.exists()
