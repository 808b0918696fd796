"""Compiled book: position columns, risk factors and their P&L rules."""

import numpy as np
import pytest
from scipy.special import ndtr

from conftest import SCENARIOS_2F
from mcmargin import build_scenarios, get_backend
from mcmargin.instruments import black_scholes as pricing
from mcmargin.aggregation import column_pnl, compile_book
from mcmargin.instruments.revaluation import revalue, to_backend


def test_column_pnl_follows_each_contract_rule(small_book):
    scen = build_scenarios(SCENARIOS_2F, small_book.assets, small_book.market["vol"].to_numpy())
    cb = compile_book(small_book, scen.horizon_days)
    nb = get_backend("numpy")
    shock, vol_shock = scen.draw(0, 500, nb)
    pnl = column_pnl(cb, revalue(nb, to_backend(cb, nb), shock, vol_shock))
    s0 = {"BTC": 90_000.0, "ETH": 3_000.0}
    s1 = {a: s0[a] * np.exp(shock[:, list(cb.assets).index(a)]) for a in s0}
    col = cb.instrument_column
    # linear perpetual, size 1: S' - S;  spot ETH: S' - S;  future 0.1 ETH: 0.1 (S' - S)
    np.testing.assert_allclose(pnl[:, col["BTC-PERP"]], s1["BTC"] - s0["BTC"], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(pnl[:, col["ETH-SPOT"]], s1["ETH"] - s0["ETH"], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(pnl[:, col["ETH-FUT"]], 0.1 * (s1["ETH"] - s0["ETH"]), rtol=1e-12, atol=1e-9)
    # inverse perpetual, face 100 USD: 100 (1/S - 1/S') coins worth S' each
    np.testing.assert_allclose(pnl[:, col["BTC-INV-PERP"]], 100 * (1 / s0["BTC"] - 1 / s1["BTC"]) * s1["BTC"],
                               rtol=1e-12, atol=1e-9)
    # an option: Black-Scholes after the shock minus today's value
    vol1 = 0.5 * np.exp(vol_shock[:, 0])
    t0, t1 = 30 / 365, 28 / 365
    want = (pricing.black_scholes(np, ndtr, s1["BTC"], 95_000.0, t1, vol1, True)
            - pricing.black_scholes(np, ndtr, 90_000.0, 95_000.0, t0, 0.5, True))
    np.testing.assert_allclose(pnl[:, col["BTC-C"]], want, rtol=1e-12, atol=1e-9)
    # collateral: amount x price x expm1(shock); cash (USDT) never moves
    n_ins = cb.n_instruments
    np.testing.assert_allclose(pnl[:, n_ins + list(cb.assets).index("BTC")], s1["BTC"] - s0["BTC"], rtol=1e-12, atol=1e-9)
    assert (pnl[:, n_ins + list(cb.assets).index("USDT")] == 0).all()


def test_exact_hedges_net_to_nothing(small_frames):
    """Long spot and short perpetual of the same delta: no factor exposure, zero loss."""
    import pandas as pd
    from conftest import VALUATION
    from mcmargin.inputs.files import book_from_frames

    ins, mkt, pos, col, acc = small_frames
    pos = pd.concat([pos, pd.DataFrame(dict(account=["h", "h"], instrument=["ETH-SPOT", "ETH-FUT"],
                                            quantity=[3.0, -30.0]))], ignore_index=True)
    book = book_from_frames(ins, mkt, pos, col, acc, VALUATION)
    cb = compile_book(book, 2)
    row = list(cb.accounts).index("h")
    assert cb.exposures[row].nnz == 0
    assert cb.holdings[row].nnz == 2


def test_factors_are_assets_then_options(small_book):
    cb = compile_book(small_book, 2)
    assert cb.n_factors == cb.assets.size + cb.options.strike.size
    assert cb.exposures.shape == (cb.holdings.shape[0], cb.n_factors)
    # no exposure to cash: it never moves
    usdt = list(cb.assets).index("USDT")
    assert cb.exposures[:, usdt].nnz == 0


def test_rows_partition_accounts_groups_and_units(small_book):
    """Rows are accounts, then multi-member groups (sum of their members' holdings), then +1 and -1 unit of
    every instrument, then +1 and -1 unit of every market asset as collateral; the six ranges tile the
    holdings exactly."""
    cb = compile_book(small_book, 2)
    na, ni = cb.accounts.size, cb.n_instruments
    r = {k: cb.rows(k) for k in ("accounts", "groups", "long", "short", "collateral_long", "collateral_short")}
    bounds = [(s.start, s.stop) for s in r.values()]
    assert bounds[0][0] == 0 and bounds[-1][1] == cb.holdings.shape[0]
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert r["accounts"].stop - r["accounts"].start == na and r["long"].stop - r["long"].start == ni
    import pandas as pd
    sizes = pd.Series(cb.account_group).value_counts()
    assert sorted(cb.multi_groups) == sorted(sizes.index[sizes > 1])          # pooled rows: groups of 2 or more
    assert r["groups"].stop - r["groups"].start == int((sizes > 1).sum())
    h = cb.holdings.toarray()
    for j, g in enumerate(cb.multi_groups):
        members = cb.account_group == g
        np.testing.assert_array_equal(h[r["groups"]][j], h[:na][members].sum(axis=0))
    units = np.hstack([np.eye(ni), np.zeros((ni, cb.assets.size))])
    np.testing.assert_array_equal(h[r["long"]], units)
    np.testing.assert_array_equal(h[r["short"]], -units)
    collateral_units = np.hstack([np.zeros((cb.assets.size, ni)), np.eye(cb.assets.size)])
    np.testing.assert_array_equal(h[r["collateral_long"]], collateral_units)
    np.testing.assert_array_equal(h[r["collateral_short"]], -collateral_units)
    with pytest.raises(KeyError):
        cb.rows("nope")


def test_rate_reaches_the_option_revaluation(small_book):
    """pricing.rate prices options before and after the shock (checked against the recompute's Black-Scholes)."""
    import recompute
    scen = build_scenarios(SCENARIOS_2F, small_book.assets, small_book.market["vol"].to_numpy())
    cb = compile_book(small_book, scen.horizon_days, rate=0.05)
    nb = get_backend("numpy")
    shock, vol_shock = scen.draw(0, 300, nb)
    pnl = column_pnl(cb, revalue(nb, to_backend(cb, nb), shock, vol_shock))
    s1 = 90_000.0 * np.exp(shock[:, 0])
    v0 = recompute.bs_usd(np.array(90_000.0), 95_000.0, 30 / 365, 0.5, True, 0.05)
    v1 = recompute.bs_usd(s1, 95_000.0, 28 / 365, 0.5 * np.exp(vol_shock[:, 0]), True, 0.05)
    np.testing.assert_allclose(pnl[:, cb.instrument_column["BTC-C"]], v1 - v0, rtol=1e-12, atol=1e-9)


def test_book_without_options_and_an_unheld_last_asset(small_frames):
    """No option at all (empty pricing arrays) and a last market asset nobody holds: shapes follow the tables."""
    import pandas as pd
    from conftest import VALUATION
    from mcmargin.inputs.files import book_from_frames
    ins, mkt, pos, col, acc = small_frames
    linear = ins[ins["kind"] != "option"]
    pos = pos[pos["instrument"].isin(linear["instrument"])]
    mkt = pd.concat([mkt, pd.DataFrame(dict(asset=["XRP"], price=[2.0], vol=[0.8], haircut=[0.3]))], ignore_index=True)
    book = book_from_frames(linear, mkt, pos, col, acc, VALUATION)
    cb = compile_book(book, 2)
    assert cb.holdings.shape[1] == cb.n_instruments + cb.assets.size == len(linear) + 4
    assert cb.options.strike.size == 0
    scen = build_scenarios(dict(SCENARIOS_2F, risk_factors=dict(SCENARIOS_2F["risk_factors"], XRP={"vol": 0.8}),
                                correlation=[[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 1.0]]),
                           book.assets, book.market["vol"].to_numpy())
    nb = get_backend("numpy")
    shock, vol_shock = scen.draw(0, 50, nb)
    pnl = revalue(nb, to_backend(cb, nb), shock, vol_shock)
    assert pnl.shape == (50, cb.assets.size)
    np.testing.assert_array_equal(pnl, np.expm1(shock))


def test_groups_are_sorted_and_labelled_as_numpy_unique_would():
    from mcmargin.aggregation.compiled import _sorted_unique

    g = np.random.default_rng(5)
    pool = np.array(["A000010", "A00001", "G0002", "é-pool", "Z", "a", "A000010 ", "中", ""], dtype=object)
    for n in (1, 7, 5000):
        labels = pool[g.integers(0, pool.size, n)]
        groups, members = _sorted_unique(labels)
        want, inverse = np.unique(labels, return_inverse=True)
        assert groups.dtype == object and groups.tolist() == want.tolist()
        np.testing.assert_array_equal(members, inverse)
