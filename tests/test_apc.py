"""Anti-procyclicality options and procyclicality metrics (mcmargin.margin.apc) on hand-worked series."""

import math

import numpy as np
import pandas as pd
import pytest

from mcmargin.errors import ConfigError
from mcmargin.calibration import apc
from mcmargin.calibration.apc import (apc_vol_path, floor_vol_path, max_increase, peak_to_trough, procyclicality,
                                 release_buffer, stressed_period, stressed_vol_path)


def test_buffer_releases_on_a_jump_and_rebuilds_as_margin_falls():
    m = np.array([100.0, 100.0, 200.0, 200.0, 160.0, 100.0, 100.0, 90.0])
    # A0 = 125; held at 125; the jump to 200 uses the buffer up (200, not 250); held at 200 while M is 160
    # (200 <= 1.25 x 160); M back at 100: at most 125 (buffer rebuilt); M at 90: at most 1.25 x 90 = 112.5
    want = [125.0, 125.0, 200.0, 200.0, 200.0, 125.0, 125.0, 112.5]
    np.testing.assert_array_equal(release_buffer(m), want)
    # the same path for two portfolios side by side, one scaled: homogeneous of degree 1
    both = release_buffer(np.stack([m, 3 * m], axis=1))
    np.testing.assert_array_equal(both[:, 0], want)
    np.testing.assert_allclose(both[:, 1], 3 * np.array(want), rtol=1e-15)
    # bounds: never below the model's margin, never more than 25% above it
    g = np.random.default_rng(1)
    path = np.exp(np.cumsum(g.normal(0, 0.1, 500)))
    a = release_buffer(path)
    assert (a >= path).all() and (a <= 1.25 * path * (1 + 1e-15)).all()


def test_procyclicality_metrics_by_hand():
    m = np.array([[2.0, 1.0], [3.0, 0.0], [6.0, 0.0], [4.0, 5.0]])
    assert peak_to_trough(m)[0] == 3.0 and peak_to_trough(m)[1] == math.inf
    np.testing.assert_array_equal(max_increase(m, 1), [1.0, math.inf])          # 6/3 - 1; 0 -> 5
    np.testing.assert_array_equal(max_increase(m, 2), [2.0, math.inf])         # 6/2 - 1; 0 (t=1) -> 5 (t=3)
    assert np.isnan(max_increase(m, 30)).all()                                  # fewer than 31 dates
    falling = np.array([4.0, 3.0, 2.0])
    assert max_increase(falling, 1) == pytest.approx(-1 / 4)                     # never rose: 3/4 - 1
    names = procyclicality(m, "_no_apc")
    assert set(names) == {"peak_to_trough_no_apc", "max_increase_1d_no_apc", "max_increase_30d_no_apc"}


def alternating(n, size):
    """Returns +size, -size, ...: a root mean square of exactly ``size``."""
    return size * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)


def test_floor_holds_after_a_volatility_jump_and_stress_weight_blends():
    # 40 rows at 1%, 20 rows at 4%, 40 rows at 1%: a jump and a return to calm.
    r = np.concatenate([alternating(40, 0.01), alternating(20, 0.04), alternating(40, 0.01)])[:, None]
    sigma = np.concatenate([np.full(40, 0.01), np.full(20, 0.04), np.full(40, 0.01)])[:, None]
    floor = floor_vol_path(r, 50)
    # at the last row the last 50 rows hold 10 rows of 4% (rows 50..59) and 40 of 1%
    assert floor[-1, 0] == pytest.approx(math.sqrt((10 * 0.04 ** 2 + 40 * 0.01 ** 2) / 50), rel=1e-14)
    assert floor[30, 0] == pytest.approx(0.01, rel=1e-14)
    floored = apc_vol_path("floor", sigma, r, floor_lookback=50)
    assert floored[65, 0] > sigma[65, 0]                      # calm again: the floor holds the vol up
    assert floored[65, 0] == pytest.approx(math.sqrt((20 * 0.04 ** 2 + 30 * 0.01 ** 2) / 50), rel=1e-14)
    np.testing.assert_array_equal(floored[45:60, 0], sigma[45:60, 0])   # in the jump, the model's own vol is higher
    # stress weight: the stressed window (20 rows) chosen from data up to each date is the jump once it is seen
    sv = stressed_vol_path(r, 20)
    assert sv[80, 0] == pytest.approx(0.04, rel=1e-14) and sv[30, 0] == pytest.approx(0.01, rel=1e-14)
    blended = apc_vol_path("stress_weight", sigma, r, stress_rows=20)
    assert blended[80, 0] == pytest.approx(0.75 * 0.01 + 0.25 * 0.04, rel=1e-14)
    np.testing.assert_array_equal(apc_vol_path("none", sigma, r), sigma)


def test_stressed_window_reads_no_later_row():
    g = np.random.default_rng(4)
    r = g.standard_normal((400, 3)) * 0.01
    r[100:130] *= 5
    idx = pd.date_range("2020-01-01", periods=400, freq="D")
    frame = pd.DataFrame(r, index=idx)
    t0, t1 = stressed_period(frame, 50)
    assert idx[80] <= t0 <= idx[100] and t1 == t0 + pd.Timedelta(days=49)
    # a later, bigger stress moves the choice at later dates only
    later = r.copy()
    later[300:340] *= 10
    a, b = apc.stressed_windows(r, 50), apc.stressed_windows(later, 50)
    np.testing.assert_array_equal(a[:300], b[:300])
    assert 280 <= b[-1] <= 300 and stressed_period(frame.iloc[:250], 50) == (t0, t1)


def ewma_sigma(r, lam=0.94):
    """Causal EWMA vol forecast for each date, from returns up to and including it."""
    s2 = np.empty_like(r)
    v = r[:50].var()
    for t, x in enumerate(r):
        v = lam * v + (1 - lam) * x * x
        s2[t] = v
    return np.sqrt(s2)


def test_every_apc_option_lowers_max_increase_30d_on_a_regime_switch():
    """High, calm, high again (vol 3x): a margin proportional to the filtered vol (one linear position)."""
    g = np.random.default_rng(11)
    vol = np.concatenate([np.full(300, 0.03), np.full(700, 0.01), np.full(300, 0.03)])
    r = g.standard_normal(vol.size) * vol
    sigma = ewma_sigma(r)[:, None]
    z = 2.665                                              # ES 99% of a standard normal: any constant would do
    margin = {"none": z * sigma[:, 0]}
    margin["buffer"] = release_buffer(margin["none"])
    margin["floor"] = z * apc_vol_path("floor", sigma, r[:, None], floor_lookback=2520)[:, 0]
    margin["stress_weight"] = z * apc_vol_path("stress_weight", sigma, r[:, None])[:, 0]
    base = max_increase(margin["none"][400:], 30)          # after the first regime: the switch back to high
    assert base > 1.0
    for option in ("buffer", "floor", "stress_weight"):
        assert max_increase(margin[option][400:], 30) < 0.95 * base, option
        assert peak_to_trough(margin[option][400:]) < peak_to_trough(margin["none"][400:]), option


def test_apc_scenario_settings_map_onto_the_scenario_keys(tmp_path):
    idx = pd.date_range("2012-01-01", "2026-11-25", freq="D")
    g = np.random.default_rng(2)
    vol = np.where((idx >= "2020-03-01") & (idx < "2020-05-01"), 0.08, 0.02)
    prices = pd.DataFrame({"BTC": 100 * np.exp(np.cumsum(g.standard_normal(idx.size) * vol))}, index=idx)
    prices.index.name = "date"
    base = {"model": "fhs", "valuation_date": "2026-11-25", "stress_period": None, "stress_weight": 1.0,
            "vol_floor_lookback": None}
    cfg, attrs = apc.apc_scenario_settings("stress_weight", base, prices)
    assert cfg["stress_weight"] == 0.25
    # 125 rows hold the whole two months of the stress
    assert cfg["stress_period"]["start"] <= "2020-03-01" and cfg["stress_period"]["end"] >= "2020-04-30"
    assert attrs["apc_stress_weight"] == 0.25 and "chosen from data" in attrs["apc_stress_period"]
    cfg, _ = apc.apc_scenario_settings("stress_weight", dict(base, stress_period="covid", stress_weight=0.1), prices)
    assert cfg["stress_period"] == "covid" and cfg["stress_weight"] == 0.25      # raised to EMIR's 25%
    cfg, _ = apc.apc_scenario_settings("stress_weight", dict(base, stress_period="covid", stress_weight=0.5), prices)
    assert cfg["stress_weight"] == 0.5                                            # heavier: the user's kept
    cfg, attrs = apc.apc_scenario_settings("floor", base, prices)
    assert cfg["vol_floor_lookback"] == int((idx > pd.Timestamp("2016-11-25")).sum()) == 3652
    cfg, _ = apc.apc_scenario_settings("floor", dict(base, vol_floor_lookback=500), prices)
    assert cfg["vol_floor_lookback"] == 500
    assert apc.apc_scenario_settings("buffer", base, prices) == (base, {})
    with pytest.raises(ConfigError, match="margin.apc"):
        apc.apc_scenario_settings("floor", dict(base, model="gaussian"), prices)
    assert apc.effective_buffer(0.1, "buffer") == pytest.approx(1.1 * 1.25 - 1, rel=1e-15)
    assert apc.effective_buffer(0.1, "floor") == 0.1


@pytest.fixture(scope="module")
def history_csv(tmp_path_factory):
    g = np.random.default_rng(5)
    n = 900
    idx = pd.date_range(end="2026-11-25", periods=n, freq="D", name="date")
    vol = np.where((np.arange(n) > 300) & (np.arange(n) < 400), 0.06, 0.025)
    df = pd.DataFrame({a: p0 * np.exp(np.cumsum(g.standard_normal(n) * vol * k))
                       for a, p0, k in (("BTC", 90000, 1.0), ("ETH", 3000, 1.2), ("SOL", 150, 1.5),
                                        ("BNB", 600, 1.1))}, index=idx)
    df["USDT"] = 1.0
    path = tmp_path_factory.mktemp("apc") / "history.csv"
    df.to_csv(path)
    return str(path)


def test_the_stress_run_applies_each_apc_option(history_csv):
    import json

    import jobs.stress as stress
    from conftest import stress_config

    common = ("scenarios=fhs", f"history={history_csv}", "scenarios.n=400", "margin.buffer=0.1")
    none = stress.run(stress_config(*common))
    held = stress.run(stress_config(*common, "margin.apc=buffer"))
    # one date: the APC buffer is held in full, on top of margin.buffer, multiplicatively
    np.testing.assert_allclose(held["im"].values, none["im"].values * 1.25, rtol=1e-12)
    assert held.attrs["margin_apc"] == "buffer" and held.attrs["margin_buffer_before_apc"] == 0.1
    assert held.attrs["margin_buffer"] == pytest.approx(1.1 * 1.25 - 1, rel=1e-15)
    floor = stress.run(stress_config(*common, "margin.apc=floor"))
    desc = json.loads(floor.attrs["scenario_model"])
    assert desc["vol_floor_lookback"] == 900 and "10 years" in floor.attrs["apc_floor_lookback"]
    assert (floor["group_im"].values >= none["group_im"].values * (1 - 1e-9)).all()
    weighted = stress.run(stress_config(*common, "margin.apc=stress_weight"))
    desc = json.loads(weighted.attrs["scenario_model"])
    assert desc["stress_weight"] == 0.25
    start = pd.Timestamp(desc["stress_start"])
    idx = pd.date_range(end="2026-11-25", periods=900, freq="D")
    assert idx[200] <= start <= idx[320]                       # the window holds the volatile rows 301..399
    with pytest.raises(ConfigError, match="margin.apc"):
        stress.run(stress_config("margin.apc=floor"))            # gaussian scenarios: no history to floor on


def test_apc_variance_against_loops():
    g = np.random.default_rng(8)
    idx = pd.bdate_range("2005-01-03", periods=3200)
    r = g.standard_normal((idx.size, 2)) * 0.01
    r[1500:1600] *= 4
    r[0] = np.nan
    sig2 = (g.uniform(0.5, 2, (idx.size, 2)) * 0.01) ** 2
    pos = np.array([10, 400, 1550, 2700, 3199])
    floored = apc.apc_variance("floor", sig2[pos], r, pos, idx)
    weighted = apc.apc_variance("stress_weight", sig2[pos], r, pos, idx)
    for k, t in enumerate(pos):
        inside = [s for s in range(t + 1) if idx[s] > idx[t] - pd.DateOffset(years=10) and not np.isnan(r[s, 0])]
        long = np.sqrt(np.mean(r[inside] ** 2, axis=0))
        np.testing.assert_allclose(floored[k], np.maximum(np.sqrt(sig2[t]), long) ** 2, rtol=1e-12)
        # stressed window at t: brute force over every 125-row window ending at or before t
        rows = apc.STRESS_WINDOW_ROWS
        if t + 1 < rows:
            window = [s for s in range(t + 1) if not np.isnan(r[s, 0])]
        else:
            score = apc._stress_score(r[:t + 1])
            sums = [score[s:s + rows].sum() for s in range(t + 2 - rows)]
            s0 = int(np.argmax(sums))
            window = list(range(s0, s0 + rows))
        stressed = np.sqrt(np.nanmean(r[window] ** 2, axis=0))
        np.testing.assert_allclose(weighted[k], (0.75 * np.sqrt(sig2[t]) + 0.25 * stressed) ** 2, rtol=1e-12)
    assert np.array_equal(apc.apc_variance("none", sig2, r, pos, idx), sig2)


@pytest.fixture(scope="module")
def switch_files(tmp_path_factory):
    """Three assets: calm, a high-vol regime, calm, and high again; two books."""
    g = np.random.default_rng(17)
    n = 1100
    t = np.arange(n)
    vol = np.where(((t > 300) & (t < 450)) | (t > 850), 0.04, 0.01)
    r = g.standard_normal((n, 2)) * vol[:, None]
    idx = pd.date_range("2021-01-04", periods=n, freq="B", name="date")
    d = tmp_path_factory.mktemp("apcbt")
    pd.DataFrame(np.exp(np.cumsum(r, axis=0)) * [100, 40], index=idx, columns=["A", "B"]).to_csv(d / "h.csv")
    pd.DataFrame({"portfolio": ["long", "pair", "pair"], "asset": ["A", "A", "B"],
                  "quantity": [10, 10, 20]}).to_csv(d / "p.csv", index=False)
    return str(d / "h.csv"), str(d / "p.csv")


def _backtest(files, apc_option, **kw):
    from mcmargin.backtest.run import BacktestSettings, run_backtest
    from mcmargin.inputs.history import load_history
    from mcmargin.inputs.portfolios import load_portfolios

    h = load_history(files[0])
    if "cut" in kw:
        h = h.loc[:kw.pop("cut")]
    st = BacktestSettings(model="fhs", n=300, seed=3, horizon=1, lookback=250, buffer=0.1, apc=apc_option, **kw)
    return run_backtest(h, load_portfolios(files[1], list(h.columns)), st, scheduler="sync")


def test_the_backtest_applies_each_apc_option_and_reports_procyclicality(switch_files):
    none = _backtest(switch_files, "none")
    bare = none["im"].values
    for name in ("peak_to_trough", "max_increase_1d", "max_increase_30d"):
        np.testing.assert_array_equal(none[name].values, none[name + "_no_apc"].values)
        assert none[name].dims == ("portfolio",) and none[name].attrs["units"] == "1"
    np.testing.assert_array_equal(none["max_increase_30d"].values, max_increase(bare, 30))
    np.testing.assert_array_equal(none["peak_to_trough"].values, peak_to_trough(bare))
    buffered = _backtest(switch_files, "buffer")
    np.testing.assert_array_equal(buffered["im"].values, release_buffer(bare))
    np.testing.assert_array_equal(buffered["exceedance"].values, buffered["loss"].values > buffered["im"].values)
    np.testing.assert_array_equal(buffered["max_increase_30d_no_apc"].values, none["max_increase_30d"].values)
    assert buffered.attrs["margin_apc"] == "buffer"
    for option in ("buffer", "floor", "stress_weight"):
        ds = buffered if option == "buffer" else _backtest(switch_files, option)
        np.testing.assert_array_equal(ds["max_increase_30d_no_apc"].values, none["max_increase_30d"].values)
        assert (ds["max_increase_30d"].values < ds["max_increase_30d_no_apc"].values).all(), option
        assert (ds["peak_to_trough"].values < ds["peak_to_trough_no_apc"].values).all(), option
        if option == "floor":
            # every vol floored up: a one-asset book's margin never falls; a two-asset book's almost never
            assert (ds["im"].values[:, 0] >= bare[:, 0] * (1 - 1e-12)).all()
            assert (ds["im"].values >= bare * (1 - 1e-12)).mean() > 0.97


def test_the_backtest_apc_reads_no_later_row(switch_files):
    from mcmargin.inputs.history import load_history

    dates = load_history(switch_files[0]).index
    cut = dates[900]
    for option in ("floor", "stress_weight", "buffer"):
        full = _backtest(switch_files, option)
        short = _backtest(switch_files, option, cut=cut)
        n = short.sizes["date"]
        np.testing.assert_array_equal(full["im"].values[:n], short["im"].values)


def test_the_backtest_refuses_vol_options_with_historical_simulation():
    from mcmargin.backtest.run import BacktestSettings

    cfg = {"scenarios": {"model": "historical", "horizon_days": 1, "n": 1, "seed": 1},
           "margin": {"confidence": 0.99, "buffer": 0.0, "apc": "floor"}, "backtest": {}}
    with pytest.raises(ConfigError, match="margin.apc"):
        BacktestSettings.from_config(cfg)
    cfg["margin"]["apc"] = "buffer"
    assert BacktestSettings.from_config(cfg).apc == "buffer"


def test_metrics_declare_their_infinities_to_the_final_check():
    from mcmargin.calibration.apc import procyclicality_variables
    from mcmargin.output.store import check_figures
    import xarray as xr

    im = np.array([[0.0, 1.0], [2.0, 1.0]])                    # a margin that starts at 0: inf ratios
    ds = xr.Dataset(procyclicality_variables(im, im, "none"), coords={"portfolio": ["a", "b"]})
    assert np.isinf(ds["peak_to_trough"].values[0]) and np.isnan(ds["max_increase_30d"].values).all()
    check_figures(ds)                                          # declared: no error


def test_a_configured_vol_floor_wins_over_the_apc_floor_in_the_backtest(switch_files):
    user = _backtest(switch_files, "none", vol_floor_lookback=300)
    both = _backtest(switch_files, "floor", vol_floor_lookback=300)
    np.testing.assert_array_equal(both["im"].values, user["im"].values)
    np.testing.assert_array_equal(both["max_increase_30d"].values, both["max_increase_30d_no_apc"].values)
