"""Liquidation prices of margin pools (mcmargin.margin.liquidation, docs/methodology.md section 10).

The model is ``tiered`` with buffer 0 and maintenance ratio 0.5 (default
tiers: 5% of notional below 1M USD), so every ``mm`` below is worked by hand;
BTC is at 100,000, ETH at 5,000, USDT at 1.
"""

import numpy as np
import pytest

import recompute
from mcmargin.margin import MarginParams
from mcmargin.margin.tiered import Tiered
from test_margin_tiered import CALL, K, N_D1, PUT, S, T, VOL, dataset  # noqa: F401

USDT_ = "USDT"


def test_two_asset_cross_pool_by_hand():
    ds = dataset([("l1", "BTC-PERP", 2), ("l2", "ETH-PERP", -20)],
                 collateral=[("l1", "USDT", 30_000), ("l2", "ETH", 2)], groups={"l1": "L", "l2": "L"})
    # Pool L: 2 BTC long (200,000) and 20 ETH short (100,000), both tier 0:
    # group_im = 0.05 x 200,000 + 0.05 x 100,000 = 15,000; mm = 0.5 x 15,000 = 7,500.
    # Equity today: 30,000 USDT + 2 ETH x 5,000 = 40,000 (perpetuals are worth nothing until prices move).
    assert float(ds["group_mm"].sel(group="L")) == pytest.approx(7_500.0, rel=1e-12)
    assert float(ds["group_equity"].sel(group="L")) == pytest.approx(40_000.0, rel=1e-12)
    lp = ds["liquidation_price"].sel(group="L")
    # BTC at x: 40,000 + 2 (x - 100,000) = 7,500  ->  x = 100,000 - 32,500 / 2 = 83,750.
    assert float(lp.sel(asset="BTC")) == pytest.approx(83_750.0, rel=1e-12)
    # ETH at y: the perp loses 20 (y - 5,000), the 2 ETH deposit gains 2 (y - 5,000) (collateral in the asset
    # is revalued): 40,000 - 18 (y - 5,000) = 7,500  ->  y = 5,000 + 32,500 / 18 = 6,805.555...
    assert float(lp.sel(asset="ETH")) == pytest.approx(5_000.0 + 32_500.0 / 18.0, rel=1e-12)
    # USDT at z: 40,000 + 30,000 (z - 1) = 7,500 at z = -0.083: no price in (0, 10) liquidates.
    assert np.isnan(float(lp.sel(asset="USDT")))
    assert ds["liquidation_price"].dims == ("group", "asset") and ds["liquidation_price"].attrs["units"] == "USD"


def test_none_where_no_price_within_ten_times_spot_liquidates_and_spot_where_already_below():
    ds = dataset([("n1", "BTC-PERP", -1), ("n2", "BTC-PERP", -1), ("u", "BTC-PERP", 10), ("w", "BTC-PERP", 1)],
                 collateral=[("n1", "USDT", 950_000), ("n2", "USDT", 850_000), ("u", "USDT", 1_000),
                             ("w", "USDT", 200_000)])
    lp = ds["liquidation_price"]
    # n1: im 0.05 x 100,000 = 5,000, mm 2,500; short 1 BTC: 950,000 - (x - 100,000) = 2,500 at x = 1,047,500,
    # beyond 10 x spot: none.  n2 with 850,000: x = 947,500.
    assert np.isnan(float(lp.sel(group="n1", asset="BTC")))
    assert float(lp.sel(group="n2", asset="BTC")) == pytest.approx(947_500.0, rel=1e-12)
    # n2's USDT deposit at z: 850,000 z - (100,000 - 100,000) = 2,500 at z = 2,500 / 850,000 = 0.00294.
    assert float(lp.sel(group="n2", asset=USDT_)) == pytest.approx(2_500.0 / 850_000.0, rel=1e-12)
    # No ETH exposure anywhere: none (but for u, below mm already, next).
    assert np.isnan(lp.sel(asset="ETH").drop_sel(group="u")).all()
    # w: long 1 BTC, 200,000 USDT: 200,000 + (x - 100,000) > 100,000 > 2,500 for every x > 0: none.
    assert np.isnan(float(lp.sel(group="w", asset="BTC")))
    # u: 10 BTC long (im 50,000, mm 25,000) on 1,000 USDT is below mm today: today's prices.
    np.testing.assert_array_equal(lp.sel(group="u").values, [S, 5_000.0, 1.0])


def _equity(x, calls, puts, cash=400_000.0):
    """Equity at BTC price x of ``calls`` and ``puts`` (negative: short) and ``cash`` USDT, priced on its own."""
    c = recompute.bs_usd(np.asarray(x, float), K, T, VOL, True)
    p = recompute.bs_usd(np.asarray(x, float), K, T, VOL, False)
    return cash + calls * c + puts * p


@pytest.mark.parametrize("calls, puts, side", [(-10, -10, None), (-5, -15, "down"), (-15, -5, "up")])
def test_options_by_black_scholes_nearest_crossing(calls, puts, side):
    ds = dataset([("so", "BTC-C", calls), ("so", "BTC-P", puts)], collateral=[("so", "USDT", 400_000)])
    # Straddle (-10, -10): notionals 10 N(d1) S + 10 (1 - N(d1)) S = 1M in tier 0: 50,000; premiums 10 (C + P):
    # im = 228,041.41, mm = 114,020.71; equity 400,000 - 178,041.41 = 221,958.59: liquidated on either side.
    mm = 0.5 * (0.05 * (abs(calls) * N_D1 + abs(puts) * (1 - N_D1)) * S - calls * CALL - puts * PUT)
    assert float(ds["group_mm"].sel(group="so")) == pytest.approx(mm, rel=1e-12)
    if side is None:
        assert mm == pytest.approx(114_020.71, abs=0.01)
    x = float(ds["liquidation_price"].sel(group="so", asset="BTC"))
    assert _equity(x, calls, puts) == pytest.approx(mm, rel=1e-9)
    # Nearest: equity stays above mm at every price closer to today's, on both sides.
    d = abs(x - S)
    closer = np.linspace(S - d, S + d, 4001)[1:-1]
    assert (_equity(closer, calls, puts) > mm).all()
    # More short puts: the fall liquidates first; more short calls: the rise.
    if side is not None:
        assert (x < S) == (side == "down")
        far = np.linspace(S, 10 * S if side == "down" else 1.0, 20001)
        assert (_equity(far, calls, puts) < mm).any()       # there is a crossing on the other side too, farther


def test_an_option_hedged_by_a_perpetual_crosses_where_black_scholes_says():
    ds = dataset([("c", "BTC-C", 3), ("c", "BTC-PERP", -8)], collateral=[("c", "USDT", 60_000)])
    # im = 0.05 x 3 N(d1) S + 0.05 x 800,000 = 8,167.66 + 40,000; mm = half; equity 60,000 + 3 C = 86,706.
    x = float(ds["liquidation_price"].sel(group="c", asset="BTC"))
    mm = float(ds["group_mm"].sel(group="c"))
    assert mm == pytest.approx(0.5 * (0.05 * 3 * N_D1 * S + 40_000.0), rel=1e-12)
    eq = 60_000.0 - 8 * (x - S) + 3 * recompute.bs_usd(np.array(x), K, T, VOL, True)   # the calls at x
    assert float(eq) == pytest.approx(mm, rel=1e-9)
    assert S < x < 1.2 * S                                # net short: liquidated as BTC rises


def test_liquidation_price_with_several_models_and_for_mc_es(small_book):
    from mcmargin import build_scenarios, run_stress
    from mcmargin.margin import McEs
    from conftest import SCENARIOS_2F

    scen = build_scenarios(SCENARIOS_2F, small_book.assets, small_book.market["vol"])
    params = MarginParams(confidence=0.99, buffer=0.1, maintenance_ratio=0.6)
    mc = McEs(params)
    mc.liquidation_price = True
    ds = run_stress(small_book, scen, margin=[mc, Tiered(params)], confidences=[0.99])
    lp = ds["liquidation_price"]
    assert lp.dims == ("model", "group", "asset")
    alone = run_stress(small_book, scen, margin=Tiered(params), confidences=[0.99])
    np.testing.assert_array_equal(lp.sel(model="tiered").values, alone["liquidation_price"].values)
    # mc_es: its own group_mm; a linear pool checked by the closed form.  Group c holds 10 ETH spot,
    # -100 x 0.1 ETH futures (no net ETH) and 1,000 USDT: no price of ETH or BTC moves its equity.
    got = lp.sel(model="mc_es")
    assert np.isnan(float(got.sel(group="c", asset="BTC")))
    assert np.isnan(float(got.sel(group="c", asset="ETH")))
    # d holds 2 ETH of collateral only: 6,000 - mm = 2 (3,000 - y) ... crossing at y = mm / 2.
    mm_d = float(ds["group_mm"].sel(model="mc_es", group="d"))
    assert float(got.sel(group="d", asset="ETH")) == pytest.approx(mm_d / 2.0, rel=1e-12)
