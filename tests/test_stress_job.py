"""The nightly stress job end to end: config, files, output, errors."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import recompute
from conftest import ROOT, run_job, stress_config
from mcmargin.errors import ConfigError
from mcmargin.output.store import open_dataset

CHECKER = ROOT.parent / "shared" / "tools" / "check_dataset.py"


def test_compose_and_run_default_synthetic():
    from jobs.stress import run

    ds = run(stress_config())
    assert ds.sizes["account"] == 60
    assert "scenario" not in ds.dims and "shock" not in ds      # output.scenarios is false by default
    assert list(ds["confidence"].values) == [0.99, 0.995]
    assert {"BTC", "ETH", "SOL", "BNB", "USDT"} <= set(ds["asset"].values)
    for key in ("config", "seed", "backend", "device", "versions", "timings", "chunk_scenarios", "created"):
        assert key in ds.attrs
    assert not any("time" in v or "chunk" in v for v in ds.data_vars)
    assert json.loads(ds.attrs["timings"])["total_s"] > 0


def test_margin_confidence_is_always_reported():
    from jobs.stress import run

    ds = run(stress_config("margin.confidence=0.975", "output.confidence=[0.99]"))
    assert list(ds["confidence"].values) == [0.975, 0.99]


def test_student_t_option_and_overrides():
    from jobs.stress import run

    ds = run(stress_config("scenarios=student_t", "scenarios.dof=3.5", "scenarios.horizon_days=5"))
    assert json.loads(ds.attrs["scenario_model"])["dof"] == 3.5
    assert ds.attrs["horizon_days"] == 5


@pytest.mark.parametrize("override,key", [
    ("margin.confidence=1.2", "margin.confidence"),
    ("scenarios.n=0", "scenarios.n"),
    ("valuation_date=2026-13-01", "valuation_date"),
    ("scenarios.dof=2", "scenarios.dof"),
    ("backend=torch", "backend"),
])
def test_config_errors_name_the_key(override, key):
    from jobs.stress import run

    overrides = [override] + (["scenarios=student_t"] if "dof" in override else [])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(stress_config(*overrides))


def test_unknown_key_is_an_error(tmp_path):
    out = tmp_path / "o.zarr"
    p = run_job("jobs.stress", "portfolio.n_acounts=10", f"output.path={out}")
    assert p.returncode != 0 and "n_acounts" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_bad_config_value_exits_cleanly(tmp_path):
    out = tmp_path / "o.zarr"
    p = run_job("jobs.stress", "portfolio.n_accounts=10", "margin.buffer=-1", f"output.path={out}")
    assert p.returncode == 2 and "margin.buffer" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_input_file_exits_cleanly_and_writes_nothing(exported_book, tmp_path):
    """Through the process boundary: exit status 2, no traceback, the message on stderr, nothing written."""
    import shutil
    book = tmp_path / "book"
    shutil.copytree(exported_book, book)
    market = pd.read_csv(book / "market.csv")
    market.loc[1, "price"] = -5
    market.to_csv(book / "market.csv", index=False)
    out = tmp_path / "second.zarr"
    p = run_job("jobs.stress", "portfolio=files", f"portfolio.dir={book}", f"output.path={out}")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "market.csv" in p.stderr and "row 3" in p.stderr and "'price'" in p.stderr
    assert not out.exists()


# --------------------------------------------------------------- end to end
def ql_value(spot, strike, days, vol, is_call):
    """QuantLib's analytic Black-Scholes value in USD (rate 0): the oracle of the inverse-option derivation."""
    import QuantLib as ql
    today = ql.Date(25, 11, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    flat = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, dc))
    process = ql.BlackScholesMertonProcess(ql.QuoteHandle(ql.SimpleQuote(spot)), flat, flat,
                                           ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(),
                                                                                               vol, dc)))
    option = ql.EuropeanOption(ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, strike),
                               ql.EuropeanExercise(today + days))
    option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
    return option.NPV()


@pytest.mark.parametrize("is_call", [True, False])
@pytest.mark.parametrize("strike", [60_000.0, 90_000.0, 130_000.0])
@pytest.mark.parametrize("days", [1, 30, 365])
def test_inverse_option_coin_derivation_matches_quantlib(is_call, strike, days):
    """The recompute's coin price of an inverse option (a change of numeraire: K options of the other kind on
    1/S struck at 1/K) is QuantLib's USD price divided by spot: a coin payoff (S-K)+/S is worth (S-K)+ USD."""
    for spot in (70_000.0, 90_000.0, 120_000.0):
        coin = float(recompute.inverse_option_coin(np.array(spot), strike, days / 365, 0.6, is_call))
        assert coin * spot == pytest.approx(ql_value(spot, strike, days, 0.6, is_call), rel=1e-9, abs=1e-9 * spot)


def check_recompute(ds, book_dir, **kw):
    """Every figure of ``ds`` against the independent recompute of tests/recompute.py; returns the recompute."""
    shock, vol_shock = ds["shock"].to_pandas(), ds["vol_shock"].to_pandas()
    ref = recompute.recompute(book_dir, shock, vol_shock, accounts=ds["account"].values,
                              confidences=ds["confidence"].values, **kw)
    recompute.assert_matches(ds, ref)
    return ref


def test_every_figure_recomputed_from_the_files_in_process(exported_book):
    """var and es at every confidence, netting, groups, unit_es...: the recompute and the job agree."""
    from jobs.stress import run
    ds = run(stress_config("portfolio=files", f"portfolio.dir={exported_book}", "scenarios.n=1500",
                           "output.scenarios=true", "output.confidence=[0.95,0.99,0.995]"))
    assert list(ds["confidence"].values) == [0.95, 0.99, 0.995]
    check_recompute(ds, exported_book)
    assert (ds["group_members"] > 1).any() and (ds["netting_benefit"] > 0).any()
    assert (ds["margin_call"] > 0).any() and (ds["margin_call"] == 0).any()


@pytest.mark.slow
def test_export_run_files_and_recompute_every_figure(exported_book, tmp_path):
    """The CLI end to end (the process boundary: Hydra, the written dataset, the printed summary)."""
    out = tmp_path / "run.zarr"
    p = run_job("jobs.stress", "portfolio=files", f"portfolio.dir={exported_book}", "scenarios.n=1500",
                "output.scenarios=true", f"output.path={out}")
    assert p.returncode == 0, p.stderr
    assert "dataset written to" in p.stdout and "netting benefit" in p.stdout
    ds = open_dataset(out).load()
    assert ds["shock"].dims == ("scenario", "asset") and ds["vol_shock"].dims == ("scenario", "asset")
    assert (ds["shock"].sel(asset="USDT") == 0).all()
    check_recompute(ds, exported_book)


@pytest.mark.slow
def test_netcdf_output_meets_the_contract(tmp_path):
    out = tmp_path / "run.nc"
    p = run_job("jobs.stress", "portfolio.n_accounts=30", "scenarios.n=500", "output.scenarios=true",
                f"output.path={out}")
    assert p.returncode == 0, p.stderr
    if CHECKER.exists():
        import subprocess
        import sys
        c = subprocess.run([sys.executable, str(CHECKER), str(out), "--scenarios"], capture_output=True, text=True)
        assert c.returncode == 0, c.stdout + c.stderr
    ds = open_dataset(out)
    assert ds["im"].attrs["units"] == "USD" and ds["im"].attrs["long_name"]


def _break_positions_instrument(d):
    t = pd.read_csv(d / "positions.csv", dtype=str)
    t.loc[3, "instrument"] = "NOPE-PERP"
    t.to_csv(d / "positions.csv", index=False)
    return "positions.csv", "row 5", "'instrument'"


def _set_first_instrument_cell(d, kind, column, value):
    t = pd.read_csv(d / "instruments.csv", dtype=str)
    i = t.index[t["kind"] == kind][0]
    t.loc[i, column] = value
    t.to_csv(d / "instruments.csv", index=False)
    return "instruments.csv", f"row {i + 2}", repr(column)


def _expire_an_option(d):
    return _set_first_instrument_cell(d, "option", "expiry", "2026-11-25")


def _duplicate_collateral_row(d):
    t = pd.read_csv(d / "collateral.csv", dtype=str)
    pd.concat([t, t.iloc[[0]]]).to_csv(d / "collateral.csv", index=False)
    return "collateral.csv", f"row {len(t) + 2}", "'asset'"


def _bad_inverse_flag(d):
    return _set_first_instrument_cell(d, "perpetual", "inverse", "maybe")


@pytest.mark.parametrize("damage", [_break_positions_instrument, _expire_an_option, _duplicate_collateral_row,
                                    _bad_inverse_flag])
def test_each_bad_file_fails_the_job_cleanly(exported_book, tmp_path, damage):
    """In process: the error names file, row and column (the exit status and the writing are checked once,
    through the process boundary, in test_bad_input_file_exits_cleanly_and_writes_nothing)."""
    import shutil
    from jobs.stress import run
    from mcmargin.errors import InputError
    book = tmp_path / "book"
    shutil.copytree(exported_book, book, ignore=shutil.ignore_patterns("*.zarr"))
    file, row, column = damage(book)
    with pytest.raises(InputError) as info:
        run(stress_config("portfolio=files", f"portfolio.dir={book}"))
    msg = str(info.value)
    assert file in msg and row in msg and column in msg, msg


def test_collateral_im_is_the_collateral_margined_alone():
    """collateral_im by hand from the shocks: each asset's amount alone, ES at margin.confidence."""
    import datetime as dt

    from jobs.stress import run
    from mcmargin.pipeline import config as mc

    cfg = stress_config("portfolio.n_accounts=40", "scenarios.n=1500", "output.scenarios=true")
    ds = run(cfg)
    book = mc.book_from_config(dict(cfg.portfolio), dt.date(2026, 11, 25))
    price = book.market.set_index("asset")["price"]
    n, q, buffer = ds.sizes["scenario"], float(ds.attrs["margin_confidence"]), float(ds.attrs["margin_buffer"])
    m = math.ceil(n * (1 - q) - 1e-9)
    assert ds["collateral_im"].attrs["units"] == "USD" and ds["collateral_im"].attrs["long_name"]
    for account, rows in book.collateral.groupby("account"):
        total = 0.0
        for asset, amount in zip(rows["asset"], rows["amount"]):
            loss = -amount * price[asset] * np.expm1(ds["shock"].sel(asset=asset).to_numpy())
            total += max(0.0, np.sort(loss)[::-1][:m].mean())
        assert float(ds["collateral_im"].sel(account=account)) == pytest.approx(total * (1 + buffer), rel=1e-9,
                                                                              abs=1e-6)
    assert (ds["collateral_im"] >= 0).all() and (ds["collateral_im"] > 0).any()
