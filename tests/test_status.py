"""Margin calls people can act on (mcmargin.margin.status, mcmargin.output.calls; docs/methodology.md, section 12)."""

import numpy as np
import pandas as pd
import pytest

from conftest import SCENARIOS_2F, run_job
from mcmargin import build_scenarios, run_stress
from mcmargin.errors import ConfigError
from mcmargin.margin import MarginParams, StatusLadder
from mcmargin.margin.status import margin_ratio
from mcmargin.output.calls import COLUMNS, margin_calls


def test_the_ladder_by_hand():
    ladder = StatusLadder()                       # 1.5, 1.2, 1.05 (Binance portfolio margin, uniMMR)
    ratio = np.array([np.inf, 2.0, 1.5, 1.4999, 1.2, 1.19, 1.05, 1.0499, 0.3, -1.0])
    assert list(ladder.status(ratio)) == ["healthy", "healthy", "healthy", "warning", "warning", "reduce_only",
                                          "reduce_only", "liquidation", "liquidation", "liquidation"]
    np.testing.assert_array_equal(margin_ratio(np.array([300.0, 50.0, -10.0]), np.array([200.0, 0.0, 10.0])),
                                  [1.5, np.inf, -1.0])
    with pytest.raises(ConfigError, match="margin.status"):
        StatusLadder(warning=1.1, reduce_only=1.2)
    with pytest.raises(ConfigError, match=r"margin\.status\.liquidation"):
        StatusLadder(liquidation=float("nan"))
    with pytest.raises(ConfigError, match=r"margin\.status\.healthy"):
        StatusLadder.from_config({"healthy": 2.0})


@pytest.fixture
def run(small_book):
    scen = build_scenarios(SCENARIOS_2F, small_book.assets, small_book.market["vol"])
    return run_stress(small_book, scen, margin=MarginParams(confidence=0.99, buffer=0.1, maintenance_ratio=0.6),
                      confidences=[0.99])


def test_ratios_status_and_topups_follow_the_dataset(run):
    ds = run
    np.testing.assert_allclose(ds["group_margin_ratio"], ds["group_equity"] / ds["group_mm"], rtol=1e-15)
    np.testing.assert_allclose(ds["margin_ratio"].where(ds["mm"] > 0), (ds["equity"] / ds["mm"]).where(ds["mm"] > 0),
                               rtol=1e-15)
    assert np.isinf(ds["margin_ratio"].where(ds["mm"] == 0, np.inf)).all()      # +inf where nothing to maintain
    assert list(ds["group_status"].values) == list(StatusLadder().status(ds["group_margin_ratio"].values))
    # Pools of the small book: G1 (a with 20,000 USDT, b with 1 BTC at 90,000), c (1,000 USDT), d (2 ETH),
    # e (500 USDT): the main collateral is the largest USD value held.
    assets = dict(zip(ds["group"].values.astype(str), ds["group_topup_asset"].values.astype(str)))
    assert assets == {"G1": "BTC", "c": "USDT", "d": "ETH", "e": "USDT"}
    prices = {"BTC": 90_000.0, "ETH": 3_000.0, "USDT": 1.0}
    for g, a in assets.items():
        call = float(ds["group_margin_call"].sel(group=g))
        assert float(ds["group_topup_amount"].sel(group=g)) == pytest.approx(call / prices[a], rel=1e-15)


def test_the_margin_call_table_lists_exactly_the_pools_with_a_call(run):
    ds = run
    table = margin_calls(ds)
    assert tuple(table.columns) == COLUMNS
    due = sorted(ds["group"].values[ds["group_margin_call"].values > 0].astype(str))
    assert sorted(table["group"]) == due and len(due) > 0
    assert list(table["call"]) == sorted(table["call"], reverse=True)
    for row in table.itertuples():
        g = ds.sel(group=row.group)
        assert row.call == float(g["group_margin_call"]) and row.im == float(g["group_im"])
        assert row.status == str(g["group_status"].values) and row.topup_asset == str(g["group_topup_asset"].values)
        members = sorted(ds["account"].values[ds["account_group"].values == row.group].astype(str))
        assert sorted(row.accounts.split(";")) == members


def test_the_job_writes_the_margin_call_file(tmp_path):
    out = tmp_path / "calls.csv"
    done = run_job("jobs.stress", "portfolio.n_accounts=300", "scenarios.n=2000", "backend=numpy",
                   f"output.path={tmp_path}/s.zarr", f"output.margin_calls={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    from mcmargin.output.store import open_dataset

    ds = open_dataset(tmp_path / "s.zarr").load()
    table = pd.read_csv(out)
    due = [str(g) for g, c in zip(ds["group"].values.tolist(), ds["group_margin_call"].values) if c > 0]
    assert sorted(table["group"].astype(str)) == sorted(due) and len(due) > 0
    assert "margin calls written to" in done.stdout
    bad = run_job("jobs.stress", "portfolio.n_accounts=50", "scenarios.n=500", f"output.path={tmp_path}/t.zarr",
                  f"output.margin_calls={tmp_path}/calls.txt")
    assert bad.returncode == 2 and "output.margin_calls" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "t.zarr").exists()                      # refused before any work
