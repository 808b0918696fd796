"""The stress run with history=PATH: every scenario generator end to end."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import jobs.stress as stress      # an in-repo module: an import error must fail the suite, not skip it

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
VALUATION = "2026-11-25"


@pytest.fixture(scope="module")
def history_csv(tmp_path_factory):
    """900 daily rows of the synthetic exchange's assets up to the valuation date; USDT constant."""
    g = np.random.default_rng(5)
    n = 900
    corr = np.array([[1, .8, .7, .65], [.8, 1, .75, .65], [.7, .75, 1, .6], [.65, .65, .6, 1]])
    z = g.standard_normal((n, 4)) @ np.linalg.cholesky(corr).T * np.sqrt(3 / g.chisquare(5, n))[:, None]
    r = z * np.array([0.55, 0.7, 0.9, 0.6]) / math.sqrt(365)
    p = np.exp(np.cumsum(r, axis=0)) * [90000, 3000, 150, 600]
    idx = pd.date_range(end=VALUATION, periods=n, freq="D", name="date")
    df = pd.DataFrame(p, index=idx, columns=["BTC", "ETH", "SOL", "BNB"])
    df["USDT"] = 1.0
    df["BTCVOL"] = 55 * np.exp(np.cumsum(g.standard_normal(n) * 0.04))
    df.iloc[:100, 2] = np.nan                      # SOL starts late
    path = tmp_path_factory.mktemp("hist") / "history.csv"
    df.to_csv(path)
    return str(path)


def stress_cfg(*overrides):
    tiny = ["portfolio.n_accounts=50", "scenarios.n=200", "backend=numpy", "output.scenarios=true"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="stress", overrides=tiny + list(overrides))


def check(ds, n=None):
    assets = list(ds["asset"].values)
    shock = ds["shock"].values
    assert np.isfinite(shock).all() and np.isfinite(ds["vol_shock"].values).all()
    assert np.all(shock[:, assets.index("USDT")] == 0)
    assert ds["shock"].dims == ("scenario", "asset") and ds["vol_shock"].dims == ("scenario", "asset")
    if n is not None:
        assert ds.sizes["scenario"] == n
    assert np.isfinite(ds["im"].values).all() and (ds["im"].values >= 0).all()
    assert (ds["im"].values > 0).any()
    return json.loads(ds.attrs["scenario_model"])


@pytest.mark.parametrize("model", ["gaussian", "student_t", "t_copula", "historical", "fhs"])
def test_stress_run_accepts_each_generator(history_csv, model):
    ds = stress.run(stress_cfg(f"scenarios={model}", f"history={history_csv}", "scenarios.lookback=300"))
    n = 300 - 2 + 1 if model == "historical" else 200          # historical: N = windows (horizon 2 rows)
    desc = check(ds, n)
    assert desc["n"] == n and desc["model"] == model
    if model in ("historical", "fhs"):
        assert desc["history_file"] == history_csv and desc["history_last"] == VALUATION


def test_stress_run_fhs_options(history_csv):
    ds = stress.run(stress_cfg("scenarios=fhs", f"history={history_csv}", "scenarios.stress_period=2025-01..2025-06",
                               "scenarios.stress_weight=0.25", "scenarios.vol_floor_lookback=800",
                               "scenarios.vol_method=garch", "scenarios.implied_vol_columns={BTC: BTCVOL}",
                               "scenarios.horizon_days=5"))
    desc = check(ds, 200)
    assert desc["implied_vol_columns"] == {"BTC": "BTCVOL"} and desc["horizon_rows"] == 5


def test_stress_run_with_calibrated_params(history_csv, tmp_path):
    from mcmargin.calibration import calibrate, save_params
    from mcmargin.inputs.history import load_history

    path = save_params(calibrate(load_history(history_csv), {"lookback": 300}), tmp_path / "params.nc")
    ds = stress.run(stress_cfg("scenarios=t_copula", f"scenarios.params={path}"))
    desc = check(ds, 200)
    assert set(desc["factors"]) == {"BTC", "ETH", "SOL", "BNB"} and desc["model"] == "t_copula"


def test_history_models_need_a_history():
    from mcmargin.errors import ConfigError

    with pytest.raises(ConfigError, match="history"):
        stress.run(stress_cfg("scenarios=fhs"))


# ----------------------------------------------------------------------------- options under row horizons
@pytest.fixture(scope="module")
def business_day_history(tmp_path_factory):
    """700 business days (252 rows a year) of the synthetic exchange's assets up to the valuation date."""
    g = np.random.default_rng(9)
    n = 700
    r = g.standard_normal((n, 4)) * np.array([0.55, 0.7, 0.9, 0.6]) / math.sqrt(252)
    p = np.exp(np.cumsum(r, axis=0)) * [90000, 3000, 150, 600]
    idx = pd.bdate_range(end=VALUATION, periods=n, name="date")
    df = pd.DataFrame(p, index=idx, columns=["BTC", "ETH", "SOL", "BNB"])
    df["USDT"] = 1.0
    path = tmp_path_factory.mktemp("bhist") / "history.csv"
    df.to_csv(path)
    return str(path)


@pytest.mark.parametrize("model,rows", [("historical", 5), ("fhs", 5), ("fhs", 2)])
def test_history_models_recompute_with_calendar_day_decay(business_day_history, tmp_path, model, rows):
    """Options under a horizon of ``rows`` business days decay by rows x 365 / 252 calendar days (5 rows: 7.2
    days, past the 7-day options' expiry, so they pay intrinsic); every figure against tests/recompute.py."""
    import recompute
    book = tmp_path / "book"
    ds = stress.run(stress_cfg(f"scenarios={model}", f"history={business_day_history}", "scenarios.lookback=300",
                               f"scenarios.horizon_days={rows}", f"portfolio.export={book}",
                               "portfolio.n_accounts=40"))
    desc = json.loads(ds.attrs["scenario_model"])
    assert desc["periods_per_year"] == 252 and desc["horizon_rows"] == rows
    days = recompute.horizon_calendar_days(rows, 252)
    shock, vol_shock = ds["shock"].to_pandas(), ds["vol_shock"].to_pandas()
    kw = dict(accounts=ds["account"].values, confidences=ds["confidence"].values)
    ref = recompute.recompute(book, shock, vol_shock, horizon_calendar_days=days, **kw)
    recompute.assert_matches(ds, ref)
    # negative control: decaying the options by `rows` calendar days instead gives other figures
    wrong = recompute.recompute(book, shock, vol_shock, horizon_calendar_days=float(rows), **kw)
    assert not np.allclose(wrong["unit_es"], ref["unit_es"], rtol=1e-6)


@pytest.fixture(scope="module")
def renamed(history_csv, tmp_path_factory):
    """The history with its columns named as a data vendor would, and params calibrated on it and on the original."""
    from mcmargin.calibration import calibrate, save_params
    from mcmargin.inputs.history import load_history

    d = tmp_path_factory.mktemp("renamed")
    h = pd.read_csv(history_csv).rename(columns={"BTC": "XBTUSD", "ETH": "ETHUSD", "SOL": "SOLUSD"})
    h.to_csv(d / "vendor.csv", index=False)
    vendor = save_params(calibrate(load_history(d / "vendor.csv"), {"lookback": 300}), d / "vendor.nc")
    plain = save_params(calibrate(load_history(history_csv), {"lookback": 300}), d / "plain.nc")
    return d / "vendor.csv", vendor, plain


VENDOR_MAP = "scenarios.asset_map={XBTUSD: BTC, ETHUSD: ETH, SOLUSD: SOL}"


def test_params_missing_book_assets_exit_2_naming_them(renamed, tmp_path):
    from conftest import run_job

    _, vendor, _ = renamed
    out = tmp_path / "o.zarr"
    p = run_job("jobs.stress", "portfolio.n_accounts=20", "scenarios.n=200", f"scenarios.params={vendor}",
                f"output.path={out}")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "scenarios.params" in p.stderr and "BTC, ETH, SOL" in p.stderr and "asset_map" in p.stderr
    assert "BNB" not in p.stderr.split("risky asset(s)")[1].split("(")[0]       # BNB is covered
    assert not out.exists()


def test_asset_map_maps_params_and_history_columns(renamed, history_csv):
    vendor_csv, vendor, plain = renamed
    base = stress.run(stress_cfg(f"scenarios.params={plain}"))
    mapped = stress.run(stress_cfg(f"scenarios.params={vendor}", VENDOR_MAP))
    assert np.array_equal(base["im"].values, mapped["im"].values)
    # The same mapping for a history calibrated on the fly, and for filtered historical simulation.
    for model in ("gaussian", "fhs"):
        base = stress.run(stress_cfg(f"scenarios={model}", f"history={history_csv}", "scenarios.lookback=300"))
        mapped = stress.run(stress_cfg(f"scenarios={model}", f"history={vendor_csv}", "scenarios.lookback=300",
                                       VENDOR_MAP))
        assert np.array_equal(base["im"].values, mapped["im"].values), model


@pytest.mark.parametrize("bad,match", [("scenarios.asset_map={XBTUSD: DOGE}", "DOGE is not a market asset"),
                                       ("scenarios.asset_map={NOPE: BTC}", "NOPE")])
def test_asset_map_errors_name_the_key(renamed, bad, match):
    from mcmargin.errors import ConfigError

    _, vendor, _ = renamed
    with pytest.raises(ConfigError, match=match) as e:
        stress.run(stress_cfg(f"scenarios.params={vendor}", bad))
    assert "scenarios.asset_map" in str(e.value)


def test_params_fallback_lets_missing_assets_take_configured_values(renamed, caplog):
    from mcmargin.errors import ConfigError

    _, vendor, _ = renamed
    with pytest.raises(ConfigError, match="params_fallback"):
        stress.run(stress_cfg(f"scenarios.params={vendor}"))
    with caplog.at_level("WARNING"):
        ds = stress.run(stress_cfg(f"scenarios.params={vendor}", "scenarios.params_fallback=true"))
    assert "BTC, ETH, SOL: they take the configured values" in caplog.text
    assert json.loads(ds.attrs["scenario_model"])["factors"] == ["BTC", "ETH", "SOL", "BNB"]
