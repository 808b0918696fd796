"""Named stress scenarios and Cover-1/Cover-2 (issue 14, part A; docs/methodology.md section 11).

Every figure of the small book under two stress files, worked by hand
(linear positions exactly, options by an independent Black-Scholes at the
unchanged expiry); the uncovered losses of a synthetic book against a
brute-force loop pricing every contract on its own; bad files; the job.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import recompute
from conftest import VALUATION, run_job, small_frames_data
from jobs._cli import EXIT_USER_ERROR
from mcmargin import build_scenarios, run_stress
from mcmargin.errors import ConfigError, InputError
from mcmargin.inputs.files import book_from_frames
from mcmargin.scenarios.named import builtin_names, load_stress, load_stresses, stress_matrices

SCEN = dict(model="gaussian", n=200, seed=3, horizon_days=2,
            default_factor=dict(vol=None, vol_of_vol=1.0, spot_vol_corr=-0.3, dof=None))

# Stress 1: BTC -20%, ETH +20%, nothing else (others 0).  Stress 2: USDT de-pegs to 0.90, every other
# risky asset (BTC and ETH, through `others`) -10%, BTC implied vol x 1.5; SOL is not in the book.
S1 = """description: btc down, eth up
source: test
returns: {BTC: %r, ETH: %r}
vol_changes: {}
others: {return: 0.0, vol_change: 0.0}
""" % (math.log(0.8), math.log(1.2))
S2 = """description: depeg and vol
source: test
returns: {USDT: %r, SOL: -0.5}
vol_changes: {BTC: %r}
others: {return: %r, vol_change: 0}
""" % (math.log(0.9), math.log(1.5), math.log(0.9))


def _files(tmp_path, **texts):
    out = []
    for name, text in texts.items():
        p = tmp_path / f"{name}.yaml"
        p.write_text(text)
        out.append(str(p))
    return out


def _small_book():
    ins, mkt, pos, col, _ = small_frames_data()
    # a alone; b and c pooled in G1; d and e (no accounts row) are pools of their own.
    acc = pd.DataFrame(dict(account=["a", "b", "c"], group=["", "G1", "G1"]))
    return book_from_frames(ins, mkt, pos, col, acc, VALUATION)


def _bs(spot, strike, days, vol, call):
    return float(recompute.bs_usd(np.array(spot), strike, days / 365.0, vol, call))


def test_every_figure_of_the_small_book_by_hand(tmp_path):
    book = _small_book()
    stresses = load_stresses(_files(tmp_path, s1=S1, s2=S2))
    ds = run_stress(book, build_scenarios(SCEN, book.assets, book.market["vol"]), stresses=stresses,
                    default_fund=1_000.0)
    assert list(ds["stress"].values) == ["s1", "s2"] and list(ds["cover_rank"].values) == [1, 2]
    # Options, priced today and after each stress at their unchanged expiry (no time decay):
    # BTC-C call K 95,000, 30 days; BTC-P-INV put K 85,000, 121 days (coin-settled: its USD value is the
    # USD put at rate 0); ETH-C-EXP call K 3,000, 1 day.  Vols 0.5 (BTC), 0.7 (ETH).
    c0, p0, e0 = _bs(90_000, 95_000, 30, 0.5, True), _bs(90_000, 85_000, 121, 0.5, False), _bs(3_000, 3_000, 1, 0.7, True)
    # Stress 1: BTC 72,000, ETH 3,600, vols unchanged.
    c1, p1, e1 = _bs(72_000, 95_000, 30, 0.5, True), _bs(72_000, 85_000, 121, 0.5, False), _bs(3_600, 3_000, 1, 0.7, True)
    # Stress 2: BTC 81,000 (others), BTC vol 0.75; ETH 2,700 (others), vol 0.7; USDT 0.90.
    c2, p2, e2 = _bs(81_000, 95_000, 30, 0.75, True), _bs(81_000, 85_000, 121, 0.75, False), _bs(2_700, 3_000, 1, 0.7, True)
    loss = {
        # a: 1.5 BTC-PERP, -2 BTC-C, 20,000 USDT.
        "a": [1.5 * 18_000 + 2 * (c1 - c0),                      # perp 1.5 x (72,000 - 90,000)
              1.5 * 9_000 + 2 * (c2 - c0) + 20_000 * 0.1],       # perp, calls, USDT x (0.9 - 1)
        # b: -500 BTC-INV-PERP (face 100: P&L = -50,000 x expm1(r)), 3.5 BTC-P-INV, 1 BTC collateral.
        "b": [-50_000 * 0.2 - 3.5 * (p1 - p0) + 90_000 * 0.2,
              -50_000 * 0.1 - 3.5 * (p2 - p0) + 90_000 * 0.1],
        # c: 10 ETH-SPOT, -100 ETH-FUT of 0.1 ETH (a hedge: net 0), 1,000 USDT.
        "c": [10 * -600 - 100 * 0.1 * -600, 10 * 300 - 100 * 0.1 * 300 + 1_000 * 0.1],
        # d: 2 ETH collateral.
        "d": [2 * -600, 2 * 300],
        # e: -4 ETH-C-EXP, 500 USDT.
        "e": [4 * (e1 - e0), 4 * (e2 - e0) + 500 * 0.1],
    }
    equity = {"a": 20_000 - 2 * c0, "b": 3.5 * p0 + 90_000, "c": 10 * 3_000 + 1_000, "d": 2 * 3_000,
              "e": 500 - 4 * e0}
    accounts = list(ds["account"].values)
    assert accounts == ["a", "b", "c", "d", "e"]
    np.testing.assert_allclose(ds["equity"].values, [equity[k] for k in accounts], rtol=1e-12)
    want = np.array([loss[k] for k in accounts])
    np.testing.assert_allclose(ds["stress_loss"].values, want, rtol=1e-10, atol=1e-8)
    eq = np.array([equity[k] for k in accounts])[:, None]
    np.testing.assert_allclose(ds["uncovered_loss"].values, np.maximum(0.0, want - eq), rtol=1e-10, atol=1e-8)
    # Pools: G1 = b + c, and a, d, e alone.
    assert list(ds["group"].values) == ["G1", "a", "d", "e"]
    gl = np.array([np.add(loss["b"], loss["c"]), loss["a"], loss["d"], loss["e"]])
    ge = np.array([equity["b"] + equity["c"], equity["a"], equity["d"], equity["e"]])[:, None]
    np.testing.assert_allclose(ds["group_stress_loss"].values, gl, rtol=1e-10, atol=1e-8)
    gu = np.maximum(0.0, gl - ge)
    np.testing.assert_allclose(ds["group_uncovered_loss"].values, gu, rtol=1e-10, atol=1e-8)
    # Stress 1: a loses 27,000 less its short calls' gain, beyond its ~12,600 equity; e's short ETH calls
    # lose about 4 x 600 against ~320 of equity.  Under stress 2 only a is short (13,500 on the perp,
    # 2,000 on USDT and its short calls' vega against ~12,600 + its calls' value): about 500.
    assert gu[1, 0] > 0 and gu[3, 0] > 0 and gu[0, 0] == 0 and gu[2, 0] == 0
    assert gu[1, 1] > 0 and gu[0, 1] == gu[2, 1] == gu[3, 1] == 0
    np.testing.assert_allclose(ds["cover1"].values, [gu[1, 0], gu[1, 1]], rtol=1e-12)
    np.testing.assert_allclose(ds["cover2"].values, [gu[1, 0] + gu[3, 0], gu[1, 1]], rtol=1e-12)
    assert ds["cover_groups"].values.tolist() == [["a", "e"], ["a", ""]]
    assert float(ds["default_fund_required"]) == pytest.approx(gu[1, 0] + gu[3, 0], rel=1e-12)
    assert ds.attrs["default_fund_size"] == 1_000.0
    for name in ("stress_loss", "uncovered_loss", "group_stress_loss", "group_uncovered_loss", "cover1",
                 "cover2", "cover_groups", "default_fund_required"):
        assert ds[name].attrs["long_name"] and ds[name].attrs["units"], name


def test_the_summary_says_whether_cover2_exceeds_the_fund(tmp_path):
    from mcmargin.output.summary import summary

    book = _small_book()
    stresses = load_stresses(_files(tmp_path, s1=S1, s2=S2))
    ds = run_stress(book, build_scenarios(SCEN, book.assets, book.market["vol"]), stresses=stresses,
                    default_fund=1_000.0)
    text = summary(ds)
    line1 = next(x for x in text.splitlines() if x.strip().startswith("s1 "))
    line2 = next(x for x in text.splitlines() if x.strip().startswith("s2 "))
    assert "EXCEEDS" in line1 and "within the fund" in line2
    assert "default fund required" in text


def test_no_stresses_no_stress_variables(small_book):
    ds = run_stress(small_book, build_scenarios(SCEN, small_book.assets, small_book.market["vol"]), stresses=[])
    assert not {"stress_loss", "cover1", "cover2", "default_fund_required"} & set(ds.variables)
    assert "stress" not in ds.dims


def test_unlisted_assets_follow_others_cash_stays_and_missing_assets_are_skipped(tmp_path, caplog):
    s = load_stresses(_files(tmp_path, s2=S2))
    with caplog.at_level("INFO"):
        names, shock, vol = stress_matrices(s, ["BTC", "ETH", "USDT", "USDC"], [0.5, 0.7, 0.0, 0.0])
    assert names == ["s2"]
    np.testing.assert_allclose(shock, [[math.log(0.9), math.log(0.9), math.log(0.9), 0.0]])
    np.testing.assert_allclose(vol, [[math.log(1.5), 0.0, 0.0, 0.0]])
    assert "SOL" in caplog.text and "skipped" in caplog.text


def test_uncovered_losses_against_a_brute_force_loop(tmp_path):
    from mcmargin.inputs.synthetic import synthetic_book

    book = synthetic_book(n_accounts=150, seed=5)
    stresses = load_stresses(["crash_2022_11", "vol_spike", "stablecoin_depeg", "all_crypto_down"])
    ds = run_stress(book, build_scenarios(SCEN, book.assets, book.market["vol"]), stresses=stresses)
    names, shock, vol_shock = stress_matrices(stresses, book.assets, book.market["vol"])
    assets = list(book.assets)
    ins = book.instruments.set_index("instrument")
    mkt = book.market.set_index("asset")
    units = recompute.unit_pnl(ins, mkt, {a: shock[:, i] for i, a in enumerate(assets)},
                               {a: vol_shock[:, i] for i, a in enumerate(assets)}, VALUATION, 0.0)
    accounts = list(ds["account"].values)
    at = {a: i for i, a in enumerate(accounts)}
    loss = np.zeros((len(accounts), len(names)))
    for r in book.positions.itertuples():                 # every contract priced on its own, horizon 0
        loss[at[r.account]] -= r.quantity * units[r.instrument][1]
    for r in book.collateral.itertuples():
        j = assets.index(r.asset)
        loss[at[r.account]] -= r.amount * mkt.loc[r.asset, "price"] * np.expm1(shock[:, j])
    np.testing.assert_allclose(ds["stress_loss"].values, loss, rtol=1e-8, atol=1e-4)
    equity = ds["equity"].values
    np.testing.assert_allclose(ds["uncovered_loss"].values, np.maximum(0.0, loss - equity[:, None]),
                               rtol=1e-8, atol=1e-4)
    groups = list(ds["group"].values)
    gl = np.zeros((len(groups), len(names)))
    ge = np.zeros(len(groups))
    for acc, g in zip(accounts, ds["account_group"].values):
        gl[groups.index(g)] += loss[at[acc]]
        ge[groups.index(g)] += equity[at[acc]]
    gu = np.maximum(0.0, gl - ge[:, None])
    np.testing.assert_allclose(ds["group_uncovered_loss"].values, gu, rtol=1e-8, atol=1e-4)
    top = -np.sort(-gu, axis=0)
    np.testing.assert_allclose(ds["cover1"].values, top[0], rtol=1e-8, atol=1e-4)
    np.testing.assert_allclose(ds["cover2"].values, top[0] + top[1], rtol=1e-8, atol=1e-4)
    c1, c2 = ds["cover1"].values, ds["cover2"].values
    assert (c1 <= c2 + 1e-9).all() and (c2 <= gu.sum(axis=0) + 1e-6).all()
    assert (c2 > 0).any()


@pytest.mark.parametrize("text, key", [
    ("description: x\nsource: y\nreturns: {BTC: -0.1}\nvol_changes: {}\nothers: {return: 0, vol_change: 0}\n"
     "shock: 1\n", "shock"),
    ("description: x\nsource: y\nreturns: {BTC: -0.1}\nvol_changes: {}\nothers: {return: 0, vol_change: 0, "
     "beta: 1}\n", "others.beta"),
    ("description: x\nsource: y\nreturns: {BTC: }\nvol_changes: {}\nothers: {return: 0, vol_change: 0}\n",
     "returns.BTC"),
    ("description: x\nsource: y\nreturns: {BTC: .nan}\nvol_changes: {}\nothers: {return: 0, vol_change: 0}\n",
     "returns.BTC"),
    ("description: x\nsource: y\nreturns: {}\nvol_changes: {ETH: nan}\nothers: {return: 0, vol_change: 0}\n",
     "vol_changes.ETH"),
    ("description: x\nsource: y\nreturns: {}\nvol_changes: {}\nothers: {return: 0}\n", "others.vol_change"),
    ("description: x\nsource: y\nreturns: {}\nothers: {return: 0, vol_change: 0}\n", "vol_changes"),
])
def test_a_malformed_stress_file_names_the_file_and_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        load_stress(path)
    assert str(path) in str(e.value) and repr(key) in str(e.value)


def test_an_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"stress_tests.names\[0\]"):
        load_stresses(["no_such_stress"])


def test_a_bad_stress_file_exits_2_through_the_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("description: x\nsource: y\nreturns: {BTC: .nan}\nvol_changes: {}\n"
                   "others: {return: 0, vol_change: 0}\n")
    p = run_job("jobs.stress", "portfolio.n_accounts=20", "scenarios.n=100", "backend=numpy",
                "engine.progress=false", f"stress_tests.names=[{bad}]", f"output.path={tmp_path / 'o.zarr'}",
                cwd=tmp_path)
    assert p.returncode == EXIT_USER_ERROR, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and str(bad) in p.stderr and "'returns.BTC'" in p.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_the_default_run_has_every_builtin_stress(tmp_path):
    assert {"crash_2020_03_12", "crash_2021_05_19", "crash_2022_06", "crash_2022_11", "all_crypto_down",
            "vol_spike", "stablecoin_depeg"} <= set(builtin_names())
    out = tmp_path / "o.zarr"
    p = run_job("jobs.stress", "portfolio.n_accounts=30", "scenarios.n=100", "backend=numpy",
                "engine.progress=false", f"output.path={out}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    ds = xr.open_zarr(out)
    assert list(ds["stress"].values) == builtin_names()
    assert "default_fund_required" not in ds and "named stresses" in p.stdout
    # Every built-in file is well formed and moves something.
    for s in load_stresses(None):
        assert s.description and s.source
        assert s.returns or s.vol_changes or s.other_return or s.other_vol_change, s.name
