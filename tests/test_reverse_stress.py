"""Reverse stress (mcmargin.pipeline.stress.reverse_stress; docs/methodology.md, section 11)."""

import math

import numpy as np
import pandas as pd
import pytest

from conftest import VALUATION, run_job
from mcmargin import build_scenarios, run_stress
from mcmargin.inputs.files import book_from_frames

MARKET = pd.DataFrame(dict(asset=["BTC", "USDT"], price=[90_000.0, 1.0], vol=[0.5, 0.0]))
INSTRUMENTS = pd.DataFrame(dict(
    instrument=["BTC-PERP", "BTC-P-80", "BTC-P-40"], kind=["perpetual", "option", "option"],
    underlying=["BTC"] * 3, settle=["USDT"] * 3, inverse=["false"] * 3, contract_size=[1, 1, 1],
    expiry=["", "2027-03-26", "2027-03-26"], strike=[np.nan, 80_000.0, 40_000.0], option_type=["", "put", "put"]))
SCEN = dict(model="gaussian", n=1000, seed=1, horizon_days=2, risk_factors={"BTC": {"vol": 0.5}})


def run(positions, collateral, **kw):
    pos = pd.DataFrame(positions, columns=["account", "instrument", "quantity"])
    col = pd.DataFrame(collateral, columns=["account", "asset", "amount"])
    acc = pd.DataFrame(dict(account=sorted(set(pos["account"]) | set(col["account"])), group=""))
    book = book_from_frames(INSTRUMENTS, MARKET, pos, col, acc, VALUATION)
    scen = build_scenarios(SCEN, book.assets, book.market["vol"])
    return run_stress(book, scen, confidences=[0.99], **kw)


def test_a_monotone_book_by_hand():
    # Three pools long BTC perpetuals (no value today), equity = their USDT: a 10,000, b 20,000, c 5,000.
    # Along the default direction BTC falls by x (log): loss = q 90,000 (1 - e^-x); with u = 90,000 (1 - e^-x)
    # the uncovered losses are a: u - 10,000, b: u - 20,000, c: u/2 - 5,000; b > c once u > 30,000.
    # Cover-2 = (u - 10,000) + (u - 20,000) = 50,000 at u = 40,000: x = -ln(1 - 40,000 / 90,000) = ln(9/5).
    ds = run([("a", "BTC-PERP", 1.0), ("b", "BTC-PERP", 1.0), ("c", "BTC-PERP", 0.5)],
             [("a", "USDT", 10_000.0), ("b", "USDT", 20_000.0), ("c", "USDT", 5_000.0)],
             reverse=(np.array([-1.0, 0.0]), 50_000.0))
    assert float(ds["reverse_stress_move"]) == pytest.approx(math.log(9 / 5), abs=1e-4)
    assert float(ds["reverse_stress_move"]) >= math.log(9 / 5)            # the first move above the fund
    assert list(ds["reverse_stress_groups"].values) == ["a", "b"]
    assert ds.attrs["reverse_stress_monotone"] == 1 and ds.attrs["reverse_stress_fund"] == 50_000.0
    # Along +1 (BTC up) a long book never loses: no move exceeds the fund.
    up = run([("a", "BTC-PERP", 1.0)], [("a", "USDT", 10.0)], reverse=(np.array([1.0, 0.0]), 1.0))
    assert np.isnan(float(up["reverse_stress_move"])) and list(up["reverse_stress_groups"].values) == ["", ""]
    from mcmargin.output.summary import summary
    assert "no move along the direction" in summary(up)
    assert "reverse stress: Cover-2 exceeds 50,000 USD from a move of" in summary(ds)


def test_an_option_book_that_is_not_monotone_is_flagged():
    # Short one put at 80,000, long two at 40,000 (a ratio backspread): as BTC falls the loss grows to
    # about 40,000 near 40,000 and then shrinks as the long puts pay; Cover-2 rises, then falls.
    ds = run([("p", "BTC-P-80", -1.0), ("p", "BTC-P-40", 2.0)], [("p", "USDT", 1_000.0)],
             reverse=(np.array([-1.0, 0.0]), 20_000.0))
    move = float(ds["reverse_stress_move"])
    assert ds.attrs["reverse_stress_monotone"] == 0
    assert 0 < move < math.log(2)                       # found on the way down to 45,000, before the long puts pay
    assert list(ds["reverse_stress_groups"].values) == ["p", ""]


def test_the_job_runs_a_reverse_stress_and_refuses_one_without_a_fund(tmp_path):
    done = run_job("jobs.stress", "portfolio.n_accounts=200", "scenarios.n=1000", "backend=numpy",
                   "reverse_stress.enabled=true", "default_fund.size=1e6", f"output.path={tmp_path}/r.zarr")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reverse stress:" in done.stdout
    bad = run_job("jobs.stress", "portfolio.n_accounts=50", "scenarios.n=500", "reverse_stress.enabled=true",
                  f"output.path={tmp_path}/b.zarr")
    assert bad.returncode == 2 and "reverse_stress.fund" in bad.stderr and "Traceback" not in bad.stderr
    worse = run_job("jobs.stress", "portfolio.n_accounts=50", "scenarios.n=500", "reverse_stress.enabled=true",
                    "reverse_stress.fund=10", "+reverse_stress.direction={DOGE: -1}", f"output.path={tmp_path}/c.zarr")
    assert worse.returncode == 2 and "reverse_stress.direction.DOGE" in worse.stderr
