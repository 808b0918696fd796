"""The stress run with history=PATH: every scenario generator end to end (skipped without jobs.stress)."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

stress = pytest.importorskip("jobs.stress", reason="the stress job (jobs/stress.py) is not available")

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
    return json.loads(ds.attrs["scenario_model"]) if "scenario_model" in ds.attrs else None


@pytest.mark.parametrize("model", ["gaussian", "student_t", "t_copula", "historical", "fhs"])
def test_stress_run_accepts_each_generator(history_csv, model):
    ds = stress.run(stress_cfg(f"scenarios={model}", f"history={history_csv}", "scenarios.lookback=300"))
    n = 300 - 2 + 1 if model == "historical" else 200          # historical: N = windows (horizon 2 rows)
    desc = check(ds, n)
    if desc is not None:
        assert desc["n"] == n
        if model in ("historical", "fhs"):
            assert desc["history_file"] == history_csv and desc["history_last"] == VALUATION


def test_stress_run_fhs_options(history_csv):
    ds = stress.run(stress_cfg("scenarios=fhs", f"history={history_csv}", "scenarios.stress_period=2025-01..2025-06",
                               "scenarios.stress_weight=0.25", "scenarios.vol_floor_lookback=800",
                               "scenarios.vol_method=garch", "scenarios.implied_vol_columns={BTC: BTCVOL}",
                               "scenarios.horizon_days=5"))
    desc = check(ds, 200)
    if desc is not None:
        assert desc["implied_vol_columns"] == {"BTC": "BTCVOL"} and desc["horizon_rows"] == 5


def test_stress_run_with_calibrated_params(history_csv, tmp_path):
    from mcmargin.calibration import calibrate, save_params
    from mcmargin.history import load_history

    path = save_params(calibrate(load_history(history_csv), {"lookback": 300}), tmp_path / "params.nc")
    ds = stress.run(stress_cfg("scenarios=t_copula", f"scenarios.params={path}"))
    desc = check(ds, 200)
    if desc is not None:
        assert set(desc["factors"]) == {"BTC", "ETH", "SOL", "BNB"} and desc["model"] == "t_copula"


def test_history_models_need_a_history():
    from mcmargin.errors import ConfigError

    with pytest.raises(ConfigError, match="history"):
        stress.run(stress_cfg("scenarios=fhs"))
