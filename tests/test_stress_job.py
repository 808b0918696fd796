"""The nightly stress job end to end: config, files, output, errors."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import norm

from conftest import ROOT, run_job, stress_config
from mcmargin.errors import ConfigError
from mcmargin.output import open_dataset

CHECKER = ROOT.parent / "shared" / "tools" / "check_dataset.py"


def test_compose_and_run_default_synthetic():
    from jobs.stress import run

    ds = run(stress_config())
    assert ds.sizes["account"] == 60 and ds.sizes["scenario"] if "scenario" in ds.dims else True
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


def test_bad_input_file_exits_cleanly_and_writes_nothing(tmp_path):
    book = tmp_path / "book"
    assert run_job("jobs.stress", "portfolio.n_accounts=20", "scenarios.n=100", f"portfolio.export={book}",
                   f"output.path={tmp_path / 'first.zarr'}").returncode == 0
    market = pd.read_csv(book / "market.csv")
    market.loc[1, "price"] = -5
    market.to_csv(book / "market.csv", index=False)
    out = tmp_path / "second.zarr"
    p = run_job("jobs.stress", "portfolio=files", f"portfolio.dir={book}", f"output.path={out}")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "market.csv" in p.stderr and "row 3" in p.stderr and "'price'" in p.stderr
    assert not out.exists()


# --------------------------------------------------------------- end to end
def bs(spot, strike, t, vol, is_call):
    """Black-Scholes with rate 0, written out independently of mcmargin."""
    if t <= 0:
        return max(spot - strike, 0.0) if is_call else max(strike - spot, 0.0)
    sd = vol * math.sqrt(t)
    d1 = (math.log(spot / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    if is_call:
        return spot * norm.cdf(d1) - strike * norm.cdf(d2)
    return strike * norm.cdf(-d2) - spot * norm.cdf(-d1)


def brute_force(book_dir: Path, ds: xr.Dataset, valuation="2026-11-25", horizon=2, buffer=0.1, q=0.99):
    """Every account's and group's figures by plain loops over the exported shocks."""
    ins = pd.read_csv(book_dir / "instruments.csv", dtype={"instrument": str}).set_index("instrument")
    mkt = pd.read_csv(book_dir / "market.csv").set_index("asset")
    pos = pd.read_csv(book_dir / "positions.csv", dtype={"account": str})
    col = pd.read_csv(book_dir / "collateral.csv", dtype={"account": str})
    accs = pd.read_csv(book_dir / "accounts.csv", dtype={"account": str, "group": str}).fillna("")
    shock = ds["shock"].to_pandas()
    vshock = ds["vol_shock"].to_pandas()
    n = shock.shape[0]
    m = math.ceil(n * (1 - q) - 1e-9)
    today = pd.Timestamp(valuation)

    def unit(instr):
        """(value today, P&L per scenario) of one contract."""
        r = ins.loc[instr]
        s0 = mkt.loc[r.underlying, "price"]
        s1 = s0 * np.exp(shock[r.underlying].to_numpy())
        inverse = str(r.inverse).lower() in ("true", "1", "yes")
        if r.kind == "option":
            t = (pd.Timestamp(r.expiry) - today).days / 365
            vol = r.vol if "vol" in r and not pd.isna(r.vol) else mkt.loc[r.underlying, "vol"]
            v0 = bs(s0, r.strike, t, vol, r.option_type == "call")
            v1 = np.array([bs(s, r.strike, t - horizon / 365, vol * math.exp(dv), r.option_type == "call")
                           for s, dv in zip(s1, vshock[r.underlying].to_numpy())])
            return r.contract_size * v0, r.contract_size * (v1 - v0)
        if inverse:
            return 0.0, r.contract_size * (1 / s0 - 1 / s1) * s1
        value = r.contract_size * s0 if r.kind == "spot" else 0.0
        return value, r.contract_size * (s1 - s0)

    units = {i: unit(i) for i in pos["instrument"].unique()}

    def es(losses):
        return np.sort(losses)[::-1][:m].mean()

    loss, equity, isolated = {}, {}, {}
    for a in ds["account"].values:
        total, eq, iso = np.zeros(n), 0.0, 0.0
        for _, p in pos[pos["account"] == a].iterrows():
            v0, pnl = units[p.instrument]
            total -= p.quantity * pnl
            eq += p.quantity * v0
            iso += max(0.0, es(-p.quantity * pnl))
        for _, c in col[col["account"] == a].iterrows():
            price = mkt.loc[c.asset, "price"]
            total -= c.amount * price * np.expm1(shock[c.asset].to_numpy())
            eq += c.amount * price
        loss[a], equity[a], isolated[a] = total, eq, iso * (1 + buffer)
    group_of = {a: a for a in ds["account"].values}
    group_of.update({a: g for a, g in zip(accs["account"], accs["group"]) if g})
    return loss, equity, isolated, group_of, es


@pytest.mark.slow
def test_export_run_files_and_recompute_every_figure(tmp_path):
    book_dir, out = tmp_path / "book", tmp_path / "run.zarr"
    p = run_job("jobs.stress", "portfolio.n_accounts=40", "scenarios.n=1500", f"portfolio.export={book_dir}",
                f"output.path={tmp_path / 'synthetic.zarr'}")
    assert p.returncode == 0, p.stderr
    assert {f.name for f in book_dir.iterdir()} >= {"instruments.csv", "market.csv", "positions.csv",
                                                    "collateral.csv", "accounts.csv"}
    p = run_job("jobs.stress", "portfolio=files", f"portfolio.dir={book_dir}", "scenarios.n=1500",
                "output.scenarios=true", f"output.path={out}")
    assert p.returncode == 0, p.stderr
    assert "dataset written to" in p.stdout and "netting benefit" in p.stdout
    ds = open_dataset(out).load()
    assert ds["shock"].dims == ("scenario", "asset") and ds["vol_shock"].dims == ("scenario", "asset")
    assert (ds["shock"].sel(asset="USDT") == 0).all()

    loss, equity, isolated, group_of, es = brute_force(book_dir, ds)
    for a in ds["account"].values:
        e = es(loss[a])
        assert float(ds["es"].sel(account=a, confidence=0.99)) == pytest.approx(e, rel=1e-9, abs=1e-6)
        assert float(ds["im"].sel(account=a)) == pytest.approx(max(0.0, e) * 1.1, rel=1e-9, abs=1e-6)
        assert float(ds["equity"].sel(account=a)) == pytest.approx(equity[a], rel=1e-9, abs=1e-6)
        assert float(ds["isolated_im"].sel(account=a)) == pytest.approx(isolated[a], rel=1e-9, abs=1e-6)
        assert str(ds["account_group"].sel(account=a).item()) == group_of[a]
    for g in ds["group"].values:
        members = [a for a in ds["account"].values if group_of[a] == g]
        assert members
        e = es(sum(loss[a] for a in members))
        eq = sum(equity[a] for a in members)
        assert float(ds["group_es"].sel(group=g, confidence=0.99)) == pytest.approx(e, rel=1e-9, abs=1e-6)
        assert float(ds["group_im"].sel(group=g)) == pytest.approx(max(0.0, e) * 1.1, rel=1e-9, abs=1e-6)
        assert float(ds["group_equity"].sel(group=g)) == pytest.approx(eq, rel=1e-9, abs=1e-6)
        assert float(ds["group_margin_call"].sel(group=g)) == pytest.approx(
            max(0.0, max(0.0, e) * 1.1 - eq), rel=1e-9, abs=1e-6)
    assert (ds["group_members"] > 1).any()


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


@pytest.fixture(scope="module")
def exported_book(tmp_path_factory):
    book = tmp_path_factory.mktemp("book")
    p = run_job("jobs.stress", "portfolio.n_accounts=20", "scenarios.n=100", f"portfolio.export={book}",
                f"output.path={book / 'ignored.zarr'}")
    assert p.returncode == 0, p.stderr
    return book


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


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_break_positions_instrument, _expire_an_option, _duplicate_collateral_row,
                                    _bad_inverse_flag])
def test_each_bad_file_fails_the_job_cleanly(exported_book, tmp_path, damage):
    import shutil
    book = tmp_path / "book"
    shutil.copytree(exported_book, book, ignore=shutil.ignore_patterns("*.zarr"))
    file, row, column = damage(book)
    out = tmp_path / "out.zarr"
    p = run_job("jobs.stress", "portfolio=files", f"portfolio.dir={book}", f"output.path={out}")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert file in p.stderr and row in p.stderr and column in p.stderr, p.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.zarr*"))


def test_collateral_im_is_the_collateral_margined_alone():
    """collateral_im by hand from the shocks: each asset's amount alone, ES at margin.confidence."""
    import datetime as dt

    from jobs.stress import run
    from mcmargin import config as mc

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
