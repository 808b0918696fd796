"""The backtest: figures against brute-force recomputes, no look-ahead bit for bit, the tests' verdicts, the job."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from scipy.stats import norm

from conftest import CONF, run_job
from mcmargin.backtest import kernels
from mcmargin.backtest.run import BacktestSettings, backtest_dataset, date_keys, run_backtest
from mcmargin.errors import ConfigError, InputError
from mcmargin.inputs.history import validate_history
from mcmargin.inputs.portfolios import Portfolios, load_portfolios
from mcmargin.scenarios import threefry
from mcmargin.stats.coverage import christoffersen_pvalue
from mcmargin.tails import var_es_reference

ASSETS = ("A", "B", "C")


def gaussian_history(n=900, vols=(0.01, 0.02, 0.015), seed=1, start="2010-01-01", regimes=False):
    """Business-day prices with i.i.d. Gaussian log returns (vols per row); ``regimes`` doubles vols for a stretch."""
    g = np.random.default_rng(seed)
    k = len(vols)
    corr = np.array([[1.0, 0.6, -0.2], [0.6, 1.0, 0.1], [-0.2, 0.1, 1.0]])[:k, :k]
    z = g.standard_normal((n, k)) @ np.linalg.cholesky(corr).T
    scale = np.ones(n)
    if regimes:
        scale[n // 3: n // 2] = 2.5
    r = z * np.asarray(vols) * scale[:, None]
    prices = 100 * np.exp(np.vstack([np.zeros(k), np.cumsum(r, axis=0)]))
    idx = pd.bdate_range(start, periods=n + 1, name="date")
    frame = pd.DataFrame(prices, index=idx, columns=list(ASSETS[:k]))
    return validate_history(frame.reset_index(), file="sim.csv")


def books(assets=ASSETS):
    q = np.array([[3.0, 1.0, 2.0], [5.0, -2.0, 0.0], [0.0, 0.0, 4.0], [2.0, -1.0, -1.5]])[:, :len(assets)]
    return Portfolios(("long", "long_short", "single", "hedged"), tuple(assets), q, "books.csv", "")


def settings(**kw):
    base = dict(model="fhs", n=400, seed=7, horizon=1, lookback=250, min_observations=30, confidence=0.99,
                buffer=0.0, block_dates=64)
    base.update(kw)
    return BacktestSettings(**base)


# ----------------------------------------------------------------------------- random numbers
def test_kernel_threefry_equals_the_numpy_cipher():
    g = np.random.default_rng(0)
    k0, k1, x0, x1 = (g.integers(0, 2 ** 32, 200, dtype=np.uint64) for _ in range(4))
    want0, want1 = threefry.threefry2x32(k0.astype(np.uint32), k1.astype(np.uint32), x0.astype(np.uint32),
                                         x1.astype(np.uint32))
    for i in range(200):
        a, b = kernels.threefry2x32(k0[i], k1[i], x0[i], x1[i])
        assert (int(a), int(b)) == (int(want0[i]), int(want1[i]))


def test_draw_rows_by_formula_and_uniform():
    key = date_keys(11, pd.DatetimeIndex(["2020-03-16"]))[0]
    rows = kernels.draw_rows(key[0], key[1], 5000, 2, 37)
    hi, lo = threefry.threefry2x32(np.uint32(key[0]), np.uint32(key[1]),
                                   np.repeat(np.arange(5000), 2).astype(np.uint32),
                                   np.tile(np.arange(2), 5000).astype(np.uint32))
    bits = (hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)
    want = np.floor((bits >> np.uint64(11)).astype(np.float64) / 2.0 ** 53 * 37).astype(np.int64)
    assert rows.ravel().tolist() == want.tolist()
    counts = np.bincount(rows.ravel(), minlength=37)           # uniform on 0..36: chi-square at 3 sigma
    stat = ((counts - 10000 / 37) ** 2 / (10000 / 37)).sum()
    assert stat < 36 + 3 * math.sqrt(72)


def test_date_keys_depend_on_the_date_only():
    a = date_keys(5, pd.DatetimeIndex(["2001-01-02", "2001-01-03", "2008-09-15"]))
    b = date_keys(5, pd.DatetimeIndex(["2008-09-15"]))
    assert a[2].tolist() == b[0].tolist()
    assert len({tuple(x) for x in a}) == 3
    assert date_keys(6, pd.DatetimeIndex(["2008-09-15"]))[0].tolist() != b[0].tolist()


# ----------------------------------------------------------------------------- figures against recomputes
def fhs_reference(history, pf, st, when):
    """im, var, es of every portfolio at ``when`` from the stress run's own FHS model built on the history cut there."""
    from mcmargin.scenarios.historical import fhs

    cfg = dict(model="fhs", n=st.n, seed=st.seed, horizon_days=st.horizon, lookback=st.lookback,
               vol_method=st.vol_method, ewma_lambda=st.ewma_lambda, gaps="span",
               min_observations=st.min_observations, valuation_date=str(when.date()),
               vol_floor_lookback=st.vol_floor_lookback)
    model = fhs(cfg, pf.assets, np.ones(len(pf.assets)), history)
    key = date_keys(st.seed, pd.DatetimeIndex([when]))[0]
    rows = kernels.draw_rows(key[0], key[1], st.n, st.horizon, model.residuals.shape[0])
    total = np.zeros((st.n, len(pf.assets)))
    s2 = np.tile(model.sigma2, (st.n, 1))
    for j in range(st.horizon):                     # the path, scenario by scenario in NumPy
        ret = np.sqrt(s2) * model.residuals[rows[:, j]]
        total += ret
        s2 = model.omega + model.alpha * ret ** 2 + model.beta * s2
    price = history.loc[when, list(pf.assets)].to_numpy()
    out = []
    for q in pf.quantity:
        losses = np.array([-sum(q[a] * price[a] * math.expm1(total[s, a]) for a in range(len(q)))
                           for s in range(st.n)])
        out.append(var_es_reference(losses, st.confidence))
    return np.array(out)


@pytest.mark.parametrize("horizon", [1, 3])
def test_fhs_margin_equals_the_stress_models_recompute(horizon):
    hist = gaussian_history(500, regimes=True)
    pf = books()
    st = settings(horizon=horizon, n=300, lookback=200)
    ds = run_backtest(hist, pf, st)
    for when in ds["date"].values[[0, 57, 140, -1]]:
        when = pd.Timestamp(when)
        ref = fhs_reference(hist, pf, st, when)
        got = ds.sel(date=when)
        assert got["var"].values == pytest.approx(ref[:, 0], rel=1e-12, abs=1e-12)
        assert got["es"].values == pytest.approx(ref[:, 1], rel=1e-12, abs=1e-12)
        assert got["im"].values == pytest.approx(np.maximum(0, ref[:, 1]), rel=1e-12, abs=1e-12)


def test_vol_floor_and_garch_refits_equal_the_stress_models_recompute():
    """Floored FHS on every date; GARCH on the dates it is refitted (the stress model fits on the same data)."""
    hist = gaussian_history(520, regimes=True)
    pf = books()
    st = settings(n=300, lookback=120, vol_floor_lookback=400)
    ds = run_backtest(hist, pf, st)
    plain = run_backtest(hist, pf, settings(n=300, lookback=120))
    floored = ds["im"].values > plain["im"].values
    # a higher vol of one asset can lower a hedged book's margin; a single-name book's only rises
    assert floored.mean() > 0.2 and (ds["im"].values[:, 2] >= plain["im"].values[:, 2]).all()
    for when in ds["date"].values[[0, 150, 300, -1]]:
        ref = fhs_reference(hist, pf, st, pd.Timestamp(when))
        assert ds["es"].sel(date=when).values == pytest.approx(ref[:, 1], rel=1e-12)
    st = settings(n=200, lookback=150, vol_method="garch", refit_every=90, start=str(hist.index[200].date()))
    ds = run_backtest(hist, pf, st)
    assert [r["fitted_on"] for r in json.loads(ds.attrs["model"])["garch_refits"]][:2] == \
        [str(hist.index[200].date()), str(hist.index[290].date())]
    for when in (hist.index[200], hist.index[290]):
        ref = fhs_reference(hist, pf, st, when)
        assert ds["es"].sel(date=when).values == pytest.approx(ref[:, 1], rel=1e-9)


def test_historical_margin_equals_the_stress_models_recompute():
    from mcmargin.scenarios.historical import historical

    hist = gaussian_history(400)
    pf = books()
    st = settings(model="historical", horizon=2, lookback=120)
    ds = run_backtest(hist, pf, st)
    assert ds["date"].values[0] == hist.index[120]             # the first date with a full look-back
    for when in ds["date"].values[[0, 100, -1]]:
        when = pd.Timestamp(when)
        cfg = dict(model="historical", n=1, seed=1, horizon_days=2, lookback=120, gaps="span", min_observations=30,
                   valuation_date=str(when.date()))
        model = historical(cfg, pf.assets, np.ones(3), hist)
        price = hist.loc[when, list(pf.assets)].to_numpy()
        for i, q in enumerate(pf.quantity):
            losses = -(np.expm1(model.windows[model.rows]) * (q * price)).sum(axis=1)
            v, e = var_es_reference(losses, 0.99)
            assert float(ds["var"].sel(date=when).values[i]) == pytest.approx(v, rel=1e-12)
            assert float(ds["es"].sel(date=when).values[i]) == pytest.approx(e, rel=1e-12)


def test_realised_losses_exceedances_and_window_counts():
    hist = gaussian_history(620)
    pf = books()
    st = settings(horizon=2, buffer=0.25, lookback=60, n=200, confidence=0.9)
    ds = run_backtest(hist, pf, st)
    px = hist[list(pf.assets)]
    for i, q in enumerate(pf.quantity):
        value = (px * q).sum(axis=1)
        want = -(value.shift(-2) - value).loc[ds["date"].values]
        assert ds["loss"].values[:, i] == pytest.approx(want.to_numpy(), rel=1e-12, abs=1e-9)
    assert np.array_equal(ds["im"].values, np.maximum(0, ds["es"].values) * 1.25)
    exc = ds["loss"].values > ds["im"].values
    assert np.array_equal(ds["exceedance"].values, exc)
    assert exc.sum() > 10
    for t in (100, 400):
        assert ds["window_exceedances"].values[t].tolist() == exc[max(0, t - 249):t + 1].sum(axis=0).tolist()
    assert ds["date"].values[-1] == hist.index[-3]              # the last date with a loss 2 rows later


# ----------------------------------------------------------------------------- no look-ahead
@pytest.mark.parametrize("kw", [dict(model="fhs", horizon=1), dict(model="fhs", horizon=2),
                                dict(model="historical", horizon=3),
                                dict(model="fhs", horizon=1, vol_method="garch", refit_every=60, n=200),
                                dict(model="fhs", horizon=2, n=150, backend="array_api_strict"),
                                dict(model="fhs", horizon=1, n=150, vol_floor_lookback=300)])
def test_no_look_ahead_bit_for_bit(kw):
    """Alter every price after T: every im(t), t <= T - h, is bit-identical; so are other block sizes and ends."""
    assert_no_look_ahead(settings, kw)


def assert_no_look_ahead(settings, kw, short_run=None):
    """The look-ahead check of :func:`test_no_look_ahead_bit_for_bit` for backtest settings ``settings(**kw)``
    (also the parametric models': tests/test_backtest_parametric.py); ``short_run``: more settings of the
    run that ends early."""
    hist = gaussian_history(520, regimes=True)
    pf = books()
    st = settings(**kw)
    ds = run_backtest(hist, pf, st)
    T = hist.index[400]
    altered = hist.copy()
    after = altered.index > T
    g = np.random.default_rng(99)
    altered.loc[after] = altered.loc[after].to_numpy() * np.exp(g.normal(0, 0.2, (after.sum(), 3)))
    altered = validate_history(altered.reset_index(), file="altered.csv")
    cut = run_backtest(altered, pf, settings(**{**kw, "block_dates": 13}))
    h = st.horizon
    upto = ds["date"].values <= np.datetime64(hist.index[400 - h])
    assert upto.sum() > 100
    for v in ("im", "var", "es", "loss"):
        a = ds[v].values[upto]
        b = cut[v].sel(date=ds["date"].values[upto]).values
        assert np.array_equal(a, b), v
    assert not np.array_equal(ds["im"].values[~upto], cut["im"].sel(date=ds["date"].values[~upto]).values)
    short = run_backtest(hist, pf, settings(**{**kw, "end": str(hist.index[300].date()), **(short_run or {})}))
    assert np.array_equal(short["im"].values, ds["im"].sel(date=short["date"].values).values)


def test_explicit_early_start_is_honoured_and_too_early_refused():
    hist = gaussian_history(300)
    pf = books()
    ds = run_backtest(hist, pf, settings(start=str(hist.index[40].date())))
    assert ds["date"].values[0] == hist.index[40]
    full = run_backtest(hist, pf, settings())
    assert full["date"].values[0] == hist.index[250]
    assert np.array_equal(full["im"].values, ds["im"].sel(date=full["date"].values).values)
    with pytest.raises(ConfigError, match="backtest.start"):
        run_backtest(hist, pf, settings(start=str(hist.index[10].date())))
    with pytest.raises(ConfigError, match="backtest.end"):
        run_backtest(hist, pf, settings(end=str(hist.index[-1].date())))


# ----------------------------------------------------------------------------- verdicts
def test_gaussian_closed_form_model_passes_and_an_under_scaled_one_fails():
    """i.i.d. N(0, s^2) daily P&L: ES_99 = s phi(z)/0.01 margins correctly; 0.6 x that is rejected."""
    g = np.random.default_rng(2)
    n, s = 3000, 1000.0
    loss = g.normal(0, s, (n, 1))
    es = np.full((n, 1), s * norm.pdf(norm.ppf(0.99)) / 0.01)
    var = np.full((n, 1), s * norm.ppf(0.99))
    dates = pd.bdate_range("2000-01-03", periods=n)
    right = backtest_dataset(dates, ["p"], var, es, loss, settings(), {})
    # the right model is margined at ES, above its VaR: exceedances are rarer than 1% and never too many
    assert bool(right["passed"].values[0]) and int(right["red_windows"].values[0]) == 0
    # a model calibrated at VaR_99 has 1% exceedances by construction: passes both tests
    at_var = backtest_dataset(dates, ["p"], var, var, loss, settings(), {})
    assert float(at_var["kupiec_pvalue"].values[0]) > 0.05 and bool(at_var["passed"].values[0])
    under = backtest_dataset(dates, ["p"], 0.6 * var, 0.6 * es, loss, settings(), {})
    assert not bool(under["passed"].values[0])
    assert float(under["kupiec_pvalue"].values[0]) < 1e-6 and int(under["red_windows"].values[0]) > 0


def test_fhs_on_iid_gaussian_prices_passes():
    hist = gaussian_history(1400, seed=3)
    ds = run_backtest(hist, books(), settings(n=500, lookback=500))
    assert ds["passed"].values.all(), ds["n_exceedances"].values
    assert (ds["red_windows"].values == 0).all()


def test_overlapping_horizon_tests_every_hth_date():
    """h = 5 with an exact 5-day model: exceedances cluster on consecutive dates, not on every 5th."""
    g = np.random.default_rng(4)
    n, h, s = 6000, 5, 1.0
    daily = g.normal(0, s, n + h)
    loss = np.array([daily[t + 1:t + 1 + h].sum() for t in range(n)])[:, None]
    var = np.full((n, 1), s * math.sqrt(h) * norm.ppf(0.99))
    dates = pd.bdate_range("2000-01-03", periods=n)
    ds = backtest_dataset(dates, ["p"], var, var, loss, settings(horizon=h), {})
    exc = ds["exceedance"].values[:, 0]
    assert christoffersen_pvalue(exc) < 1e-6                  # every date: overlap looks like clustering
    assert float(ds["christoffersen_pvalue"].values[0]) == christoffersen_pvalue(exc[::h])
    assert float(ds["christoffersen_pvalue"].values[0]) > 0.05
    assert ds.attrs["test_stride"] == h


# ----------------------------------------------------------------------------- dataset
def test_dataset_contract():
    hist = gaussian_history(330)
    ds = run_backtest(hist, books(), settings(), history_sha256="abc")
    assert set(ds.dims) == {"date", "portfolio"}
    assert ds["date"].dtype.kind == "M" and ds["portfolio"].values.tolist() == list(books().names)
    for v in ("im", "var", "es", "loss", "exceedance", "window_exceedances", "traffic_light"):
        assert ds[v].dims == ("date", "portfolio")
    for v in ("coverage", "n_exceedances", "n_days", "kupiec_pvalue", "christoffersen_pvalue",
              "conditional_coverage_pvalue", "red_windows", "passed"):
        assert ds[v].dims == ("portfolio",)
    for name, var in ds.data_vars.items():
        assert var.attrs.get("long_name") and var.attrs.get("units"), name
    assert ds["exceedance"].dtype == bool and ds["passed"].dtype == bool
    assert set(np.unique(ds["traffic_light"].values)) <= {"green", "yellow", "red"}
    assert json.loads(ds.attrs["backtest_settings"])["n"] == 400
    assert ds.attrs["first_date"] == str(hist.index[250].date()) and ds.attrs["history_sha256"] == "abc"
    assert "section 13" in ds.attrs["methodology"]


# ----------------------------------------------------------------------------- portfolios file
def write(tmp_path, text, name="books.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, row, column, words", [
    ("portfolio,asset,quantity\nlong,A,1\nlong,ZZZ,2\n", 3, "asset", "unknown asset 'ZZZ'"),
    ("portfolio,asset,quantity\nlong,A,1\nlong,B,nan\n", 3, "quantity", "not a finite number"),
    ("portfolio,asset,quantity\nlong,A,1\nlong,B,\n", 3, "quantity", "not a finite number"),
    ("portfolio,asset,quantity\n", 2, "portfolio", "no portfolios"),
    ("", 1, "portfolio", "empty file"),
    ("portfolio,asset\nlong,A\n", 1, "quantity", "missing column"),
    ("portfolio,asset,quantity\nlong,A,1\n,B,2\n", 3, "portfolio", "empty portfolio"),
    ("portfolio,asset,quantity\nlong,A,1\nlong,A,2\n", 3, "asset", "twice"),
])
def test_bad_portfolios_files_name_file_row_and_column(tmp_path, text, row, column, words):
    p = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_portfolios(p, ASSETS)
    assert (err.value.file, err.value.row, err.value.column) == (str(p), row, column)
    assert words in str(err.value)


def test_portfolios_file_csv_and_parquet(tmp_path):
    frame = pd.DataFrame({"portfolio": ["x", "x", "y"], "asset": ["C", "A", "B"], "quantity": [2.0, -1.5, 3.0],
                          "note": ["", "", ""]})
    frame.to_parquet(tmp_path / "b.parquet")
    pf = load_portfolios(tmp_path / "b.parquet", ASSETS)
    assert pf.names == ("x", "y") and pf.assets == ("A", "B", "C")
    assert pf.quantity.tolist() == [[-1.5, 0.0, 2.0], [0.0, 3.0, 0.0]]
    frame.to_csv(tmp_path / "b.csv", index=False)
    assert load_portfolios(tmp_path / "b.csv", ASSETS).quantity.tolist() == pf.quantity.tolist()


# ----------------------------------------------------------------------------- job
def backtest_config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="backtest", overrides=list(overrides))


@pytest.fixture(scope="module")
def job_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("backtest_job")
    gaussian_history(330).reset_index().to_csv(d / "prices.csv", index=False)
    (d / "books.csv").write_text("portfolio,asset,quantity\nlong,A,3\nlong,B,1\nhedge,A,1\nhedge,B,-0.5\n")
    return d


@pytest.mark.parametrize("override, key", [
    ("backtest.significance=2", "backtest.significance"), ("backtest.refit_every=0", "backtest.refit_every"),
    ("margin.confidence=nan", "margin.confidence"), ("scenarios.model=named", "scenarios"),
    ("backtest.start=notadate", "backtest.start"), ("scenarios.horizon_days=1.5", "scenarios.horizon_days"),
    ("backtest.plots=1", "backtest.plots"), ("scenarios.stress_period=covid", "scenarios.stress_period"),
    ("scenarios.vol_floor_lookback=1", "scenarios.vol_floor_lookback"), ("backend=tpu", "backend"),
])
def test_every_key_is_validated(job_files, override, key):
    from jobs.backtest import run

    cfg = backtest_config(f"history={job_files / 'prices.csv'}", f"portfolios={job_files / 'books.csv'}", override)
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert err.value.key == key


def test_vol_floor_is_for_fhs_only():
    with pytest.raises(ConfigError) as err:
        BacktestSettings.from_config({"scenarios": {"model": "historical", "horizon_days": 1,
                                                    "vol_floor_lookback": 300}})
    assert err.value.key == "scenarios.vol_floor_lookback"


def test_job_writes_dataset_and_plots(job_files, tmp_path):
    out = tmp_path / "bt.nc"
    res = run_job("jobs.backtest", f"history={job_files / 'prices.csv'}", f"portfolios={job_files / 'books.csv'}",
                  f"output.path={out}", "scenarios.n=300", "scenarios.lookback=250", "scenarios.horizon_days=1")
    assert res.returncode == 0, res.stderr
    assert out.exists() and (tmp_path / "bt_long.png").exists() and (tmp_path / "bt_hedge.png").exists()
    assert "passed" in res.stdout
    from mcmargin.output.store import open_dataset

    ds = open_dataset(out)
    assert ds.sizes["portfolio"] == 2 and ds.attrs["portfolios_sha256"] and ds.attrs["history_sha256"]


@pytest.mark.parametrize("text", ["portfolio,asset,quantity\nlong,A,1\nlong,NOPE,2\n",
                                  "portfolio,asset,quantity\nlong,A,nan\n", ""])
def test_job_bad_portfolios_exit_2_and_write_nothing(job_files, tmp_path, text):
    bad = write(tmp_path, text, "bad.csv")
    out = tmp_path / "out" / "bt.zarr"
    res = run_job("jobs.backtest", f"history={job_files / 'prices.csv'}", f"portfolios={bad}", f"output.path={out}")
    assert res.returncode == 2
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("mcmargin: error: file ") and str(bad) in line and "row " in line and "column " in line
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_worst_selection_is_exact_with_ties_and_adversarial_orders():
    g = np.random.default_rng(8)
    buf = np.empty(20000)
    cases = [g.normal(size=20000), np.sort(g.normal(size=20000)),          # ascending: the pilot sees the smallest
             np.sort(g.normal(size=20000))[::-1].copy(),                   # descending: the pilot sees the largest
             np.round(g.normal(size=20000), 1), np.zeros(20000), g.normal(size=500)]
    for x in cases:
        for m in (1, 37, 200):
            got = kernels._worst(x, m, buf)
            assert got.tolist() == np.sort(x)[-m:].tolist()


def test_unknown_key_exits_2(job_files, tmp_path):
    res = run_job("jobs.backtest", f"history={job_files / 'prices.csv'}", f"portfolios={job_files / 'books.csv'}",
                  "backtest.no_such_key=1", f"output.path={tmp_path / 'o.zarr'}", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_significance_sets_the_verdict_and_plots_are_optional(tmp_path):
    n = 1000
    loss = np.zeros((n, 1))
    loss[30::62] = 10.0                                        # 16 exceedances, at most 5 in any 250 dates
    var = np.ones((n, 1))
    dates = pd.bdate_range("2000-01-03", periods=n)
    lax = backtest_dataset(dates, ["p"], var, var, loss, settings(significance=0.01), {})
    p = float(lax["kupiec_pvalue"].values[0])
    strict = backtest_dataset(dates, ["p"], var, var, loss, settings(significance=p * 1.01), {})
    assert int(lax["n_exceedances"].values[0]) == 16 and int(strict["red_windows"].values[0]) == 0
    assert float(lax["christoffersen_pvalue"].values[0]) > p * 1.01
    assert p > 0.01 and bool(lax["passed"].values[0]) and not bool(strict["passed"].values[0])
    from jobs.backtest import write

    ds = run_backtest(gaussian_history(300), books(), settings())
    write(ds, tmp_path / "a" / "bt.zarr", plots=False)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["bt.zarr"]
    write(ds, tmp_path / "b" / "bt.nc", plots=True)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bt.nc", "bt_hedged.png", "bt_long.png",
                                                                  "bt_long_short.png", "bt_single.png"]


def test_all_rows_look_back_and_late_or_missing_prices():
    hist = gaussian_history(200)
    pf = books()
    ds = run_backtest(hist, pf, settings(lookback=None, n=200))
    assert ds["date"].values[0] == hist.index[30]              # min_observations rows (the EWMA start needs 20)
    late = hist.copy()
    late.loc[late.index[:150], "C"] = np.nan                    # C starts at row 150, after the default start
    late = validate_history(late.reset_index(), file="late.csv")
    with pytest.raises(ConfigError, match="too early for C"):
        run_backtest(late, pf, settings(lookback=100, n=200))
    ds = run_backtest(late, pf, settings(lookback=30, n=200, start=str(late.index[180].date())))
    assert ds["date"].values[0] == late.index[180]
    holed = hist.copy()
    holed.loc[holed.index[120], "B"] = np.nan
    holed = validate_history(holed.reset_index(), file="holed.csv")
    with pytest.raises(InputError) as err:
        run_backtest(holed, pf, settings(lookback=60, n=200))
    assert (err.value.row, err.value.column) == (122, "B")


@pytest.mark.parametrize("model", ["fhs", "historical"])
@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "jax"])
def test_array_api_blocks_match_the_compiled_kernels(model, backend):
    """The array-API path (what CuPy and JAX run) gives the compiled kernels' figures, the same draws included."""
    from mcmargin.backend import get_backend
    from mcmargin.backtest import arrays

    key = date_keys(3, pd.DatetimeIndex(["2011-08-08"]))[0]
    assert arrays.draw_rows(key, 700, 3, 211).tolist() == kernels.draw_rows(key[0], key[1], 700, 3, 211).tolist()
    hist = gaussian_history(330, regimes=True)
    for h in (1, 2):
        st = settings(model=model, horizon=h, n=4200, block_dates=40)
        ref = run_backtest(hist, books(), st)
        if backend == "numpy":                      # the numpy *array* path, not the kernels: call it directly
            import mcmargin.backtest.run as run_mod
            ds = _run_with_arrays(run_mod, hist, st, get_backend("numpy"))
        else:
            ds = run_backtest(hist, books(), BacktestSettings(**{**st.__dict__, "backend": backend}))
        for v in ("var", "es", "im"):
            assert ds[v].values == pytest.approx(ref[v].values, rel=1e-11, abs=1e-9), (v, h)


def _run_with_arrays(run_mod, hist, st, be):
    import functools

    from mcmargin.backtest import arrays

    saved = kernels.fhs_block, kernels.historical_block
    kernels.fhs_block = functools.partial(arrays.fhs_block, be)
    kernels.historical_block = functools.partial(arrays.historical_block, be)
    try:
        return run_mod.run_backtest(hist, books(), st)
    finally:
        kernels.fhs_block, kernels.historical_block = saved
