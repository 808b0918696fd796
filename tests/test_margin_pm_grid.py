"""The ``pm_grid`` margin model (mcmargin/margin/pm_grid.py, docs/methodology.md section 8).

Books worked by hand (arithmetic in the comments), the grid revalued
against an independent Black-Scholes (tests/recompute.py), the hedge
properties of the issue with default parameters, haircuts, both modes,
every instrument kind, and the stress job end to end.
"""

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

import recompute
from conftest import SCENARIOS_2F, VALUATION, run_job, stress_config
from mcmargin import build_scenarios
from mcmargin.aggregation import compile_book
from mcmargin.errors import ConfigError
from mcmargin.inputs.files import book_from_frames
from mcmargin.margin import MarginInputs, MarginParams, build_margin_models, known_models, margin_dataset

PmGrid = known_models()["pm_grid"]
D30 = (VALUATION + dt.timedelta(days=30)).isoformat()     # an expiry 30 days out: vol shocks at their base values
D120 = (VALUATION + dt.timedelta(days=120)).isoformat()

INSTRUMENTS = [
    # instrument, kind, underlying, settle, inverse, contract_size, expiry, strike, option_type
    ("BTC-PERP", "perpetual", "BTC", "USDT", "false", 1.0, "", np.nan, ""),
    ("BTC-FUT", "future", "BTC", "USDT", "false", 1.0, D30, np.nan, ""),
    ("BTC-FUT2", "future", "BTC", "USDT", "false", 1.0, D120, np.nan, ""),
    ("BTC-SPOT", "spot", "BTC", "USDT", "false", 1.0, "", np.nan, ""),
    ("BTC-INV", "perpetual", "BTC", "BTC", "true", 100.0, "", np.nan, ""),
    ("BTC-C", "option", "BTC", "USDT", "false", 1.0, D30, 100_000.0, "call"),
    ("BTC-P", "option", "BTC", "USDT", "false", 1.0, D30, 100_000.0, "put"),
    ("BTC-C2", "option", "BTC", "USDT", "false", 1.0, D120, 100_000.0, "call"),
    ("BTC-PI", "option", "BTC", "BTC", "true", 1.0, D120, 90_000.0, "put"),
    ("ETH-PERP", "perpetual", "ETH", "USDT", "false", 1.0, "", np.nan, ""),
]


def make_book(positions, collateral=(("z", "USDT", 1.0),), haircuts=(0.1, 0.15, 0.0)):
    """A book over BTC (100,000, vol 0.5), ETH (4,000, vol 0.7) and USDT from (account, instrument, qty) rows."""
    ins = pd.DataFrame(INSTRUMENTS, columns=["instrument", "kind", "underlying", "settle", "inverse", "contract_size",
                                             "expiry", "strike", "option_type"])
    mkt = pd.DataFrame(dict(asset=["BTC", "ETH", "USDT"], price=[100_000.0, 4_000.0, 1.0], vol=[0.5, 0.7, 0.0],
                            haircut=list(haircuts)))
    pos = pd.DataFrame(list(positions), columns=["account", "instrument", "quantity"])
    col = pd.DataFrame(list(collateral), columns=["account", "asset", "amount"])
    return book_from_frames(ins, mkt, pos, col, None, VALUATION)


SCEN = dict(SCENARIOS_2F, n=100)        # BTC/ETH return correlation 0.8; never drawn here


def margin(book, model=None, **settings):
    """The dataset of ``model`` (default: PmGrid with ``settings``, buffer 0.1) on ``book``, no scenario drawn."""
    model = model or PmGrid(MarginParams(buffer=0.1), **settings)
    scen = build_scenarios(SCEN, book.assets, book.market["vol"])
    compiled = compile_book(book, 2.0, row_kinds=model.rows)
    inputs = MarginInputs(compiled, None, portfolio=book, scenarios=scen)
    return margin_dataset(dataclasses.replace(inputs, grid_losses=model.grid_losses(inputs)), model)


def im(ds, account):
    return float(ds["im"].sel(account=account))


def bs(spot, strike, days, vol, call):
    return float(recompute.bs_usd(np.array(spot, dtype=float), strike, days / 365.0, vol, call))


# ----------------------------------------------------------------------------- books worked by hand
def test_a_single_future():
    ds = margin(make_book([("f", "BTC-FUT", 2.0)]))
    # 2 BTC futures, 200,000 USD of delta.  Core grid: worst move -16% -> loss 32,000.
    # Extended -66% counted at 0.5 x 0.16 / 0.66: 200,000 x 0.66 x 0.5 x 0.16 / 0.66 = 16,000 < 32,000.
    # No option, no offsetting future: contingencies 0.  im = 32,000 x 1.1 = 35,200.
    assert im(ds, "f") == pytest.approx(35_200.0, rel=1e-12)
    assert float(ds["pm_grid_scenario_loss"].sel(account="f")) == pytest.approx(32_000.0, rel=1e-12)
    assert float(ds["pm_grid_contingency"].sel(account="f")) == 0.0
    # The same future alone is the account: isolated_im equals im.
    assert float(ds["isolated_im"].sel(account="f")) == pytest.approx(35_200.0, rel=1e-12)


def test_a_calendar_spread():
    ds = margin(make_book([("s", "BTC-FUT", 1.0), ("s", "BTC-FUT2", -1.0)]))
    # Long 1 BTC Dec, short 1 BTC Mar: no net delta, every grid loss is 0.
    # Offsetting futures: 1% x min(100,000 long, 100,000 short) = 1,000.  im = 1,000 x 1.1 = 1,100.
    assert float(ds["pm_grid_scenario_loss"].sel(account="s")) == 0.0
    assert float(ds["pm_grid_futures_contingency"].sel(account="s")) == pytest.approx(1_000.0, rel=1e-12)
    assert im(ds, "s") == pytest.approx(1_100.0, rel=1e-12)
    # Alone, each leg needs 16,000 x 1.1 = 17,600.
    assert float(ds["isolated_im"].sel(account="s")) == pytest.approx(35_200.0, rel=1e-12)


SMALL = dict(buckets=1, price_range=0.10, extended_moves=[-0.5], extended_fraction=0.5)


def test_a_short_straddle_on_an_explicit_small_grid():
    ds = margin(make_book([("x", "BTC-C", -1.0), ("x", "BTC-P", -1.0)]), **SMALL)
    # Grid: moves -10%, 0, +10% x vol (0.5 x 1.5, 0.5, 0.5 x 0.75) (30 days: shocks up 0.5, down 0.25 exactly),
    # plus -50% with vol up, counted at 0.5 x 0.10 / 0.50 = 0.1.  No time passes on the grid.
    v0 = bs(100_000, 100_000, 30, 0.5, True) + bs(100_000, 100_000, 30, 0.5, False)       # ~ 2 x 5,700
    losses = []
    for m in (-0.1, 0.0, 0.1):
        for vol in (0.75, 0.5, 0.375):
            s = 100_000 * (1 + m)
            losses.append(bs(s, 100_000, 30, vol, True) + bs(s, 100_000, 30, vol, False) - v0)
    s = 50_000
    losses.append(0.1 * (bs(s, 100_000, 30, 0.75, True) + bs(s, 100_000, 30, 0.75, False) - v0))
    worst = max(losses)                 # +-10% with vol up: ~ 10,000 intrinsic + vol -> about 9,800
    # Contingency: 2 net short options at strike 100,000: 1% x 2 x 100,000 = 2,000; one expiry: no vega offset.
    expected = (worst + 2_000.0) * 1.1
    assert im(ds, "x") == pytest.approx(expected, rel=1e-9)
    assert float(ds["pm_grid_short_option_contingency"].sel(account="x")) == pytest.approx(2_000.0, rel=1e-12)
    assert float(ds["pm_grid_vega_contingency"].sel(account="x")) == 0.0


def test_an_option_hedged_by_a_future_on_an_explicit_small_grid():
    ds = margin(make_book([("h", "BTC-C", 1.0), ("h", "BTC-FUT", -0.5)]), **SMALL)
    # Long 1 ATM call (30 days), short 0.5 BTC future (delta ~0.53 hedged to ~0.03).
    c0 = bs(100_000, 100_000, 30, 0.5, True)
    losses = []
    for m in (-0.1, 0.0, 0.1):
        for vol in (0.75, 0.5, 0.375):
            losses.append(-(bs(100_000 * (1 + m), 100_000, 30, vol, True) - c0) + 0.5 * 100_000 * m)
    # -50%, vol up, at 0.1: the call loses most of c0, the short future gains 25,000.
    losses.append(0.1 * (-(bs(50_000, 100_000, 30, 0.75, True) - c0) + 0.5 * 100_000 * -0.5))
    # Long options, one future: no contingency.
    assert im(ds, "h") == pytest.approx(max(0.0, max(losses)) * 1.1, rel=1e-9)
    assert float(ds["pm_grid_contingency"].sel(account="h")) == 0.0


def test_tenor_scaled_vol_shocks_and_caps():
    from mcmargin.margin.pm_grid import tenor_vol_shocks

    up, down = tenor_vol_shocks(np.array([30.0, 15.0, 120.0, 0.2, 100_000.0]))
    # 30 days: the base shocks; 15 days: x 2^0.30; 120 days: x (1/4)^0.13; 0.2 days floored at 1 day:
    # 0.5 x 30^0.3 = 1.389 (under the cap 2), 0.25 x 30^0.3 = 0.694 (under the cap 0.75).
    np.testing.assert_allclose(up, [0.5, 0.5 * 2 ** 0.3, 0.5 * 0.25 ** 0.13, 0.5 * 30 ** 0.3,
                                    0.5 * (30 / 100_000) ** 0.13], rtol=1e-14)
    np.testing.assert_allclose(down[:4], [0.25, 0.25 * 2 ** 0.3, 0.25 * 0.25 ** 0.13, 0.25 * 30 ** 0.3], rtol=1e-14)
    up, down = tenor_vol_shocks(np.array([1.0]), vol_up=1.0, vol_down=0.5)
    assert up[0] == 2.0 and down[0] == 0.75            # both capped


def test_the_grid_revalues_every_option_with_its_own_tenor_shock():
    """grid_losses against a brute-force revaluation, option by option (inverse option in coin, then USD)."""
    rows = [("a", "BTC-C", -1.0), ("a", "BTC-C2", 2.0), ("a", "BTC-PI", -3.0), ("a", "BTC-INV", 500.0),
            ("a", "ETH-PERP", 10.0), ("b", "BTC-P", 1.5), ("b", "BTC-SPOT", -0.2)]
    book = make_book(rows)
    model = PmGrid(MarginParams())
    compiled = compile_book(book, 2.0, row_kinds=model.rows)
    got = model.grid_losses(MarginInputs(compiled, None, portfolio=book))
    moves, states, _ = model.scenarios_table()
    terms = {r[0]: r for r in INSTRUMENTS}
    loss = {"a": np.zeros(moves.size), "b": np.zeros(moves.size)}
    for account, name, qty in rows:
        _, kind, und, _, inverse, size, expiry, strike, otype = terms[name]
        s0 = 100_000.0 if und == "BTC" else 4_000.0
        s1 = s0 * (1 + moves)
        if kind != "option":
            pnl = size * (s1 - s0) if inverse == "false" else size * (1 / s0 - 1 / s1) * s1
        else:
            days = (pd.Timestamp(expiry) - pd.Timestamp(VALUATION)).days
            p = 0.30 if days <= 30 else 0.13
            up, down = 0.5 * (30 / days) ** p, 0.25 * (30 / days) ** p
            vol1 = 0.5 * np.where(states > 0, 1 + up, np.where(states < 0, 1 - down, 1.0))
            call, t = otype == "call", days / 365.0
            if inverse == "true":
                v0 = s0 * recompute.inverse_option_coin(np.array(s0), strike, t, 0.5, call)
                v1 = s1 * recompute.inverse_option_coin(s1, strike, t, vol1, call)
            else:
                v0 = recompute.bs_usd(np.array(s0), strike, t, 0.5, call)
                v1 = recompute.bs_usd(s1, strike, t, vol1, call)
            pnl = size * (v1 - v0)
        loss[account] -= qty * pnl
    accounts = list(compiled.accounts)
    for name in ("a", "b"):
        np.testing.assert_allclose(got[accounts.index(name)], loss[name], rtol=1e-9, atol=1e-6)


# ----------------------------------------------------------------------------- hedges, default parameters
HEDGES = {
    "perp vs dated future": [("BTC-PERP", 1.0), ("BTC-FUT", -1.0)],
    "long call delta-hedged with a short perpetual": [("BTC-C", 10.0), ("BTC-PERP", -5.3)],
    "dollar-neutral BTC/ETH spread": [("BTC-PERP", 1.0), ("ETH-PERP", -25.0)],
}


@pytest.mark.parametrize("name", list(HEDGES))
def test_each_hedge_is_margined_well_below_its_legs(name):
    legs = HEDGES[name]
    rows = [("hedge", i, q) for i, q in legs] + [(f"leg{k}", i, q) for k, (i, q) in enumerate(legs)]
    ds = margin(make_book(rows))            # default parameters, cross mode, correlation 0.8 from the scenarios
    apart = sum(im(ds, f"leg{k}") for k in range(len(legs)))
    assert im(ds, "hedge") < 0.90 * apart, (im(ds, "hedge"), apart)
    assert float(ds["isolated_im"].sel(account="hedge")) == pytest.approx(apart, rel=1e-12)


def test_the_btc_eth_spread_charge_follows_the_correlation():
    rows = [("s", "BTC-PERP", 1.0), ("s", "ETH-PERP", -25.0)]
    # Joint grid: both legs move by the same bucket, net 0.  Alone: 16,000 each.
    # scenario loss = 0 + sqrt((1 - rho) / 2) x (32,000 - 0).
    for rho in (0.8, 0.0, 1.0):
        ds = margin(make_book(rows), correlation=rho)
        assert float(ds["pm_grid_scenario_loss"].sel(account="s")) == pytest.approx(
            np.sqrt((1 - rho) / 2) * 32_000.0, rel=1e-12, abs=1e-9)
    # Segregated (both settle in USDT): one pool, the same figure.
    ds = margin(make_book(rows), mode="segregated", correlation=0.8)
    assert float(ds["pm_grid_scenario_loss"].sel(account="s")) == pytest.approx(np.sqrt(0.1) * 32_000.0, rel=1e-12)


@pytest.mark.parametrize("mode", ["cross", "segregated"])
def test_a_short_straddle_is_never_above_its_legs(mode):
    for call, put in (("BTC-C", "BTC-P"), ("BTC-C2", "BTC-PI"), ("BTC-C", "BTC-PI")):
        for qty in (-1.0, -7.5):
            ds = margin(make_book([("x", call, qty), ("x", put, qty), ("c", call, qty), ("p", put, qty)]), mode=mode)
            assert im(ds, "x") <= im(ds, "c") + im(ds, "p") + 1e-9


HEDGED = [
    ([("BTC-PERP", 1.0)], [("BTC-FUT", -1.0)]),
    ([("BTC-SPOT", 2.0)], [("BTC-PERP", -2.0)]),
    ([("BTC-INV", 1000.0)], [("BTC-PERP", -1.0)]),          # 1,000 x 100 USD face = 100,000 USD = 1 BTC
    ([("BTC-C", -3.0), ("BTC-FUT", 1.0)], [("BTC-C", 3.0)]),
    ([("BTC-C", -1.0), ("BTC-P", -1.0)], [("BTC-C", 1.0), ("BTC-P", 1.0)]),
    ([("BTC-FUT", 1.0), ("ETH-PERP", -10.0)], [("BTC-PERP", -1.0), ("ETH-PERP", 10.0)]),   # the whole book hedged
]
#: Hedges across settlement currencies (BTC-settled inverse perp against a USDT-settled perp): in segregated
#: mode each currency is its own pool, so no offset is recognised there (Deribit S:PM does the same).
CROSS_CURRENCY = {2}


@pytest.mark.parametrize("mode", ["cross", "segregated"])
def test_adding_an_exact_hedge_never_raises_the_requirement(mode):
    for k, (book, hedge) in enumerate(HEDGED):
        if mode == "segregated" and k in CROSS_CURRENCY:
            continue
        after = {}
        for i, q in book + hedge:                 # a hedge in the same instrument closes the position
            after[i] = after.get(i, 0.0) + q
        rows = [("before", i, q) for i, q in book] + [("after", i, q) for i, q in after.items()]
        ds = margin(make_book(rows), mode=mode)
        assert im(ds, "after") <= im(ds, "before") + 1e-9, (k, im(ds, "after"), im(ds, "before"))
        assert im(ds, "before") > 0


# ----------------------------------------------------------------------------- collateral and modes
def test_haircuts_lower_adjusted_equity_and_raise_the_margin_call():
    rows = [("a", "BTC-FUT", 1.0)]
    coll = [("a", "BTC", 0.1), ("a", "USDT", 5_000.0)]
    cut = margin(make_book(rows, coll, haircuts=(0.1, 0.15, 0.0)))
    flat = margin(make_book(rows, coll, haircuts=(0.0, 0.0, 0.0)))
    # Equity 0.1 x 100,000 + 5,000 = 15,000; BTC haircut 10% of 10,000 = 1,000: adjusted 14,000.
    assert float(cut["equity"].sel(account="a")) == 15_000.0
    assert float(cut["adjusted_equity"].sel(account="a")) == pytest.approx(14_000.0, rel=1e-12)
    assert float(cut["pm_grid_haircut"].sel(account="a")) == pytest.approx(1_000.0, rel=1e-12)
    assert float(flat["adjusted_equity"].sel(account="a")) == 15_000.0
    # im = 16,000 x 1.1 = 17,600: calls 17,600 - 14,000 = 3,600 against 2,600 without haircuts.
    assert float(cut["margin_call"].sel(account="a")) == pytest.approx(3_600.0, rel=1e-12)
    assert float(flat["margin_call"].sel(account="a")) == pytest.approx(2_600.0, rel=1e-12)
    assert float(cut["group_adjusted_equity"].sel(group="a")) == pytest.approx(14_000.0, rel=1e-12)


def test_segregated_sums_the_settlement_pools():
    # Long 1 BTC linear perp (USDT-settled) against 1,000 x 100 USD inverse perp short (BTC-settled).
    rows = [("a", "BTC-PERP", 1.0), ("a", "BTC-INV", -1000.0)]
    cross = margin(make_book(rows))
    seg = margin(make_book(rows), mode="segregated")
    # Cross: one pool, no net delta; offsetting perpetuals 1% x 100,000 = 1,000 -> 1,100.
    assert im(cross, "a") == pytest.approx(1_100.0, rel=1e-12)
    # Segregated: each pool alone, 16,000 each -> 32,000 x 1.1 = 35,200; no haircut figure.
    assert im(seg, "a") == pytest.approx(35_200.0, rel=1e-12)
    assert "adjusted_equity" not in seg


@pytest.mark.parametrize("mode", ["cross", "segregated"])
def test_every_instrument_kind_gives_a_finite_requirement(mode, small_book):
    model = PmGrid(MarginParams(), mode=mode)
    ds = margin(small_book, model)
    for v in ("im", "group_im", "isolated_im"):
        assert np.isfinite(ds[v].values).all() and (ds[v].values >= 0).all(), v
    # One account per instrument kind, long and short.
    rows = [(f"{i}{q}", i, q) for i, *_ in INSTRUMENTS for q in (1.0, -1.0)]
    ds = margin(make_book(rows), model)
    assert np.isfinite(ds["im"].values).all() and (ds["im"].values >= 0).all()
    assert (ds["im"].drop_sel(account="z").values > 0).all()


def test_settings_are_checked_naming_the_key():
    common = {"model": "pm_grid", "confidence": 0.99, "buffer": 0.1, "maintenance_ratio": 0.75}
    for own, key in [({"mode": "abc"}, "margin.pm_grid.mode"), ({"price_range": 1.5}, "margin.pm_grid.price_range"),
                     ({"buckets": 0}, "margin.pm_grid.buckets"), ({"vol_down": 1.0}, "margin.pm_grid.vol_down"),
                     ({"extended_moves": [0.5, -1.0]}, r"margin.pm_grid.extended_moves\[1\]"),
                     ({"extended_moves": [0.0]}, "margin.pm_grid.extended_moves"),
                     ({"correlation": 2}, "margin.pm_grid.correlation"),
                     ({"min_days": float("nan")}, "margin.pm_grid.min_days"),
                     ({"colour": "red"}, "margin.pm_grid.colour")]:
        with pytest.raises(ConfigError, match=key):
            build_margin_models({**common, "pm_grid": own})
    assert build_margin_models({**common, "pm_grid": {"mode": "segregated"}})[0].settings["mode"] == "segregated"


# ----------------------------------------------------------------------------- the stress job
def test_the_stress_job_runs_pm_grid_alone_and_with_mc_es():
    from jobs.stress import run

    ds = run(stress_config("margin=pm_grid"))
    assert ds.attrs["margin_model"] == "pm_grid" and "section 8" in ds.attrs["methodology"]
    assert np.isfinite(ds["im"].values).all() and (ds["im"].values >= 0).all()
    assert (ds["im"].values > 0).any()
    assert (ds["adjusted_equity"].values <= ds["equity"].values).all()
    np.testing.assert_array_equal(ds["margin_call"].values,
                                  np.maximum(0.0, ds["im"].values - ds["adjusted_equity"].values))
    both = run(stress_config("margin.models=[mc_es,pm_grid]"))
    assert list(both["model"].values) == ["mc_es", "pm_grid"]
    np.testing.assert_array_equal(both["im"].sel(model="pm_grid").values, ds["im"].values)
    # mc_es writes no haircuts: its adjusted_equity is its equity.
    np.testing.assert_array_equal(both["adjusted_equity"].sel(model="mc_es").values, both["equity"].values)


def test_a_bad_mode_exits_2_naming_the_key(tmp_path):
    p = run_job("jobs.stress", "portfolio.n_accounts=40", "scenarios.n=400", "backend=numpy",
                "margin=pm_grid", "margin.pm_grid.mode=abc", f"output.path={tmp_path / 'o.zarr'}", cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "config key margin.pm_grid.mode:" in p.stderr and "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []
