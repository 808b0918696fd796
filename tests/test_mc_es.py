"""mcmargin.margin: every figure of the mc_es model on a small hand-made book against the recompute.

The book (tests/conftest.py ``small_frames``) holds a linear and an inverse
perpetual, a USD and an inverse (coin) option, spot, a future, an option
expiring inside the horizon, collateral in cash and coins, a two-account
group and singletons.  The reference is tests/recompute.py (no mcmargin).
"""

import math
import warnings

import numpy as np
import pytest

import recompute
from conftest import SCENARIOS_2F, stress_config
from mcmargin import MarginParams, build_scenarios, run_stress
from mcmargin.errors import ConfigError
from mcmargin.margin.mc_es import ROUNDING_FLOOR, margin_saving


def margin_frames():
    """The small book plus what catches margin-rule slips: a fractional long (0 < q < 1), an option so far out
    of the money that one contract's ES is below 1 USD, and a last account holding collateral only."""
    import pandas as pd
    from conftest import small_frames_data
    ins, mkt, pos, col, acc = small_frames_data()
    ins = pd.concat([ins, pd.DataFrame(dict(instrument=["BTC-C-FAR"], kind=["option"], underlying=["BTC"],
                                            settle=["USDT"], inverse=["false"], contract_size=[1],
                                            expiry=["2026-12-25"], strike=[400_000.0], option_type=["call"]))],
                    ignore_index=True)
    pos = pd.concat([pos, pd.DataFrame(dict(account=["f", "f", "g"], instrument=["BTC-PERP", "BTC-C-FAR", "ETH-SPOT"],
                                            quantity=[0.25, 3.0, 0.5]))], ignore_index=True)
    col = pd.concat([col, pd.DataFrame(dict(account=["f", "zz"], asset=["USDT", "ETH"], amount=[100.0, 1.0]))],
                    ignore_index=True)
    ins["vol"] = np.where(ins["instrument"] == "BTC-C", 0.65, np.nan)        # one option's own vol overrides BTC's
    return ins, mkt, pos, col, acc


@pytest.fixture(scope="module")
def margin_book():
    from conftest import VALUATION
    from mcmargin.inputs.files import book_from_frames
    return book_from_frames(*margin_frames(), VALUATION)


@pytest.fixture(scope="module")
def small_book_dir(tmp_path_factory):
    ins, mkt, pos, col, acc = margin_frames()
    d = tmp_path_factory.mktemp("small_book")
    for name, t in zip(("instruments", "market", "positions", "collateral", "accounts"), (ins, mkt, pos, col, acc)):
        t.to_csv(d / f"{name}.csv", index=False)
    return d


def run_small(small_book, **margin):
    scen = build_scenarios(dict(SCENARIOS_2F, n=2000), small_book.assets, small_book.market["vol"].to_numpy())
    params = MarginParams(**{"confidence": 0.99, "buffer": 0.1, "maintenance_ratio": 0.6, **margin})
    return run_stress(small_book, scen, margin=params, confidences=(0.95, 0.99, 0.995), include_scenarios=True), params


@pytest.mark.parametrize("margin", [{}, {"confidence": 0.995, "buffer": 0.0, "maintenance_ratio": 1.0},
                                    {"confidence": 0.95, "buffer": 0.37, "maintenance_ratio": 0.5}])
def test_every_figure_matches_the_recompute(margin_book, small_book_dir, margin):
    ds, p = run_small(margin_book, **margin)
    assert ds["account"].values[-1] == "zz" and 0 < float(ds["unit_es"].sel(instrument="BTC-C-FAR", side="long")) < 1
    ref = recompute.recompute(small_book_dir, ds["shock"].to_pandas(), ds["vol_shock"].to_pandas(),
                              accounts=ds["account"].values, confidences=ds["confidence"].values,
                              buffer=p.buffer, maintenance_ratio=p.maintenance_ratio,
                              margin_confidence=p.confidence)
    recompute.assert_matches(ds, ref, rtol=1e-10, atol=1e-8)
    # the book exercises what it should: netting, a pool, calls and no calls
    assert (ref["netting_benefit"] > 0).any() and (ref["group_members"] == 2).any()
    assert (ref["margin_call"] > 0).any() and (ref["margin_call"] == 0).any()
    assert ds.attrs["margin_confidence"] == p.confidence and ds.attrs["margin_buffer"] == p.buffer
    from omegaconf import OmegaConf
    from conftest import CONF
    assert ds.attrs["margin_model"] == OmegaConf.load(CONF / "margin" / "mc_es.yaml")["model"]
    assert ds.attrs["n_scenarios"] == ds.sizes["scenario"] == 2000
    assert "ceil" in ds.attrs["tail_definition"] and ds.attrs["methodology"].startswith(ds.attrs["margin_model"])
    assert ds.attrs["maintenance_ratio"] == p.maintenance_ratio


def test_margin_confidence_must_be_computed(small_book):
    from mcmargin.aggregation import compile_book
    from mcmargin.engine.graph import compute_tails
    from mcmargin.margin import margin_dataset
    scen = build_scenarios(dict(SCENARIOS_2F, n=300), small_book.assets, small_book.market["vol"].to_numpy())
    result = compute_tails(compile_book(small_book, 2), scen, [0.99])
    with pytest.raises(ValueError, match="margin.confidence"):
        margin_dataset(result, MarginParams(confidence=0.975))


@pytest.mark.parametrize("kw,key", [({"confidence": 0.5}, "margin.confidence"), ({"confidence": 1.0}, "margin.confidence"),
                                    ({"buffer": -0.01}, "margin.buffer"), ({"buffer": float("nan")}, "margin.buffer"),
                                    ({"maintenance_ratio": 0.0}, "margin.maintenance_ratio"),
                                    ({"maintenance_ratio": 1.01}, "margin.maintenance_ratio")])
def test_margin_params_are_checked(kw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        MarginParams(**kw)


def test_margin_params_bounds_are_inclusive_where_documented():
    MarginParams(confidence=0.51, buffer=0.0, maintenance_ratio=1.0)      # buffer 0 and ratio 1 are allowed
    assert MarginParams().buffer == 0.0 and MarginParams().confidence == 0.99 and MarginParams().maintenance_ratio == 0.75


def test_units_and_names(small_book):
    ds, _ = run_small(small_book)
    for v in recompute.FIGURES:
        assert ds[v].attrs["long_name"], v
        assert ds[v].attrs["units"] == ("1" if v == "group_members" else "USD"), v
    assert ds["account_group"].attrs["long_name"]
    assert ds["confidence"].attrs == {"long_name": "confidence level q", "units": "1"}
    assert np.array_equal(ds["side"].values, ["long", "short"])


# ----------------------------------------------------------------------------- exact cancellations, parameters
@pytest.fixture(scope="module")
def runs():
    from jobs.stress import run

    return [run(stress_config("portfolio.n_accounts=400", "scenarios.n=3000", f"engine.scenario_chunk={c}",
                              f"engine.fast_path={fp}"))
            for c, fp in ((0, "true"), (701, "true"), (333, "false"))]


def _single_position_accounts(ds) -> np.ndarray:
    from mcmargin.inputs.synthetic import synthetic_book

    book = synthetic_book(n_accounts=400, seed=7)
    held = book.positions.groupby("account").size()
    # Collateral in cash (vol 0) never moves, so such an account's loss is its one position's.
    cash = set(book.market.loc[book.market["vol"] == 0, "asset"])
    risky = book.collateral.loc[~book.collateral["asset"].isin(cash) & (book.collateral["amount"] != 0), "account"]
    accounts = ds["account"].to_index()
    one = accounts.map(held).fillna(0).to_numpy() == 1
    return one & ~accounts.isin(risky)


def test_single_position_netting_is_exactly_zero_whatever_the_chunking(runs):
    single = _single_position_accounts(runs[0])
    assert single.sum() > 5  # the book has such accounts, or this test proves nothing
    for ds in runs:
        nb = ds["netting_benefit"].values
        assert (nb[single] == 0).all()
        # and im, isolated_im themselves agree to rounding, not just after the snap
        im, iso = ds["im"].values[single], ds["isolated_im"].values[single]
        np.testing.assert_allclose(im, iso, rtol=1e-14)


def test_real_netting_is_untouched(runs):
    ds = runs[0]
    nb = ds["netting_benefit"].values
    exact = ds["isolated_im"].values - ds["im"].values
    big = np.abs(exact) > 1e-9 * np.abs(ds["isolated_im"].values)
    assert big.sum() > 100
    np.testing.assert_array_equal(nb[big], exact[big])


def test_margin_saving_floor():
    apart = np.array([100.0, 100.0, 100.0, 0.0])
    together = np.array([100.0 * (1 + 0.5 * ROUNDING_FLOOR), 99.0, 100.0 * (1 - 3 * ROUNDING_FLOOR), 0.0])
    np.testing.assert_array_equal(margin_saving(apart, together), [0.0, 1.0, apart[2] - together[2], 0.0])


def test_every_variable_has_long_name_and_units(runs):
    ds = runs[0]
    for name in ds.data_vars:
        assert "long_name" in ds[name].attrs and "units" in ds[name].attrs, name
    assert ds["account_group"].attrs["units"] == "1"


@pytest.mark.parametrize("field, value", [("confidence", math.nan), ("buffer", math.nan), ("buffer", -0.1),
                                          ("maintenance_ratio", math.inf), ("confidence", "abc")])
def test_margin_params_refuse_non_finite(field, value):
    with pytest.raises(ConfigError, match=f"margin.{field}"):
        MarginParams(**{field: value})


def test_correlation_repair_warns_through_the_log_only(caplog):
    from mcmargin.stats.correlation import nearest_correlation

    bad = np.array([[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # statsmodels' IterationLimitWarning must not escape
        fixed = nearest_correlation(bad)
    assert np.linalg.eigvalsh(fixed).min() > -1e-10
    assert "repaired by nearest-correlation projection" in caplog.text


# ---------------------------------------------------------------- add-ons (docs/methodology.md, section 6)

def _addon_run(small_book, **add_ons):
    from mcmargin.margin import McEs
    from mcmargin.margin.mc_es import AddOns

    scen = build_scenarios(dict(SCENARIOS_2F, n=2000), small_book.assets, small_book.market["vol"].to_numpy())
    params = MarginParams(confidence=0.99, buffer=0.1, maintenance_ratio=0.6)
    return run_stress(small_book, scen, margin=McEs(params, AddOns(**add_ons)), confidences=(0.99,))


def _bs_call_and_delta(s, k, t, vol):
    """Black-Scholes call value and delta at rate 0, by hand (math.erf), for the add-on oracles."""
    n = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    d1 = (math.log(s / k) + 0.5 * vol * vol * t) / (vol * math.sqrt(t))
    return s * n(d1) - k * n(d1 - vol * math.sqrt(t)), n(d1)


@pytest.fixture(scope="module")
def addon_book():
    """The conftest small book with an ADV of 1 BTC and 1 ETH a day and bid-ask spreads on every instrument."""
    from conftest import VALUATION, small_frames_data
    from mcmargin.inputs.files import book_from_frames

    ins, mkt, pos, col, acc = small_frames_data()
    mkt = mkt.assign(adv=[1.0, 1.0, np.nan])
    ins = ins.assign(spread=[0.0002, 0.0004, 0.05, 0.08, 0.001, 0.0005, 0.2])
    return book_from_frames(ins, mkt, pos, col, acc, VALUATION)


def test_add_ons_are_off_by_default_and_change_nothing(addon_book):
    plain, on_nothing = _addon_run(addon_book), _addon_run(addon_book, max_netting=None)
    for v in ("im", "group_im", "isolated_im", "netting_benefit"):
        np.testing.assert_array_equal(plain[v].values, on_nothing[v].values)
    assert not [v for v in plain.data_vars if "mc_es_" in v]


def test_liquidity_addon_by_hand(addon_book):
    plain = _addon_run(addon_book)
    ds = _addon_run(addon_book, liquidity=True, liquidity_coefficient=0.1, liquidity_free_fraction=0.1)
    addon = ds["mc_es_liquidity_addon"]
    # d holds 2 ETH of collateral: Q = 2 ETH, e = 2 - 0.1 x 1 = 1.9, cost = 0.1 x 3000 x 1.9 x sqrt(1.9 / 1).
    assert float(addon.sel(account="d")) == pytest.approx(0.1 * 3000 * 1.9 * math.sqrt(1.9), rel=1e-12)
    # c: 10 ETH spot against -100 x 0.1 ETH futures nets to no ETH: no add-on (USDT has no ADV).
    assert float(addon.sel(account="c")) == 0.0
    # a: 1.5 BTC perpetual and -2 calls (K 95,000, 30 days, vol 0.5): Q = 1.5 - 2 N(d1) BTC.
    _, delta = _bs_call_and_delta(90_000.0, 95_000.0, 30 / 365, 0.5)
    q = abs(1.5 - 2 * delta)
    e = max(0.0, q - 0.1)
    assert float(addon.sel(account="a")) == pytest.approx(0.1 * 90_000 * e * math.sqrt(e), rel=1e-9)
    np.testing.assert_allclose(ds["im"].values, plain["im"].values + addon.values, rtol=1e-14)
    np.testing.assert_allclose(ds["group_im"].values, plain["group_im"].values + ds["group_mc_es_liquidity_addon"].values,
                               rtol=1e-14)


def test_closeout_cost_by_hand(addon_book):
    plain = _addon_run(addon_book)
    ds = _addon_run(addon_book, closeout=True)
    cost = ds["mc_es_closeout_cost"]
    # c: 10 ETH spot at 3,000 (spread 0.001) and 100 futures of 0.1 ETH (spread 0.0005): half-spreads.
    assert float(cost.sel(account="c")) == pytest.approx(10 * 3000 * 0.001 / 2 + 100 * 0.1 * 3000 * 0.0005 / 2, rel=1e-12)
    # a: 1.5 BTC perpetual (spread 0.0002) and 2 calls at their Black-Scholes premium (spread 0.05).
    premium, _ = _bs_call_and_delta(90_000.0, 95_000.0, 30 / 365, 0.5)
    assert float(cost.sel(account="a")) == pytest.approx(1.5 * 90_000 * 0.0002 / 2 + 2 * premium * 0.05 / 2, rel=1e-9)
    assert float(cost.sel(account="d")) == 0.0                        # collateral only
    # The pool G1 (a and b) closes its net position per instrument: no common instrument, so the sum.
    g1 = float(ds["group_mc_es_closeout_cost"].sel(group="G1"))
    assert g1 == pytest.approx(float(cost.sel(account="a")) + float(cost.sel(account="b")), rel=1e-12)
    np.testing.assert_allclose(ds["im"].values, plain["im"].values + cost.values, rtol=1e-14)


def test_netting_cap(addon_book):
    plain = _addon_run(addon_book)
    ds = _addon_run(addon_book, max_netting=0.25)
    # Cross-margin may save at most 25% of isolated_im - im: im' = im + 0.75 max(0, isolated_im - im).
    want = plain["im"].values + 0.75 * np.maximum(0.0, plain["isolated_im"].values - plain["im"].values)
    np.testing.assert_allclose(ds["im"].values, want, rtol=1e-14)
    saved = plain["group_isolated_im"].values - plain["group_im"].values
    np.testing.assert_allclose(ds["group_im"].values, plain["group_im"].values + 0.75 * np.maximum(0.0, saved),
                               rtol=1e-14)
    assert (ds["mc_es_netting_cap"] > 0).any()
    full = _addon_run(addon_book, max_netting=1.0)                   # a cap at 100% caps nothing
    np.testing.assert_array_equal(full["im"].values, plain["im"].values)


def test_add_on_keys_through_the_job():
    from jobs.stress import run
    from conftest import stress_config

    ds = run(stress_config("margin.mc_es.max_netting=0.5", "margin.mc_es.closeout_cost=true"))
    assert "mc_es_netting_cap" in ds
    assert (ds["mc_es_closeout_cost"] == 0).all()     # the synthetic book quotes no spreads
    with pytest.raises(ConfigError, match=r"margin\.mc_es\.max_netting"):
        run(stress_config("margin.mc_es.max_netting=1.5"))


@pytest.mark.parametrize("hedge", ["calendar", "delta_hedged_call", "btc_eth"])
def test_each_hedge_is_margined_well_below_its_legs(hedge):
    """Issue 12's hedges (the books of tests/test_margin_span.py), under mc_es with the same correlated
    scenarios: a perpetual against a dated future, a call delta-hedged with a perpetual, a dollar-neutral
    BTC/ETH spread; each below 0.90 of its legs margined alone, and a short straddle never above its legs."""
    from conftest import VALUATION
    from mcmargin.inputs.files import book_from_frames
    from test_margin_span import HEDGES, SCENARIOS_3F, call_delta, frames

    legs = HEDGES[hedge] or [("BTC-C-90-MAR", 1.0), ("BTC-PERP", -call_delta())]
    positions = [("h", i, q) for i, q in legs] + [(f"leg{k}", i, q) for k, (i, q) in enumerate(legs)]
    positions += [("s", "BTC-C-90-DEC", -1.0), ("s", "BTC-P-90-DEC", -1.0),
                  ("c", "BTC-C-90-DEC", -1.0), ("p", "BTC-P-90-DEC", -1.0)]
    book = book_from_frames(*frames(positions), VALUATION)
    scen = build_scenarios(dict(SCENARIOS_3F, n=20_000), book.assets, book.market["vol"])
    ds = run_stress(book, scen, margin=MarginParams(buffer=0.1), confidences=(0.99,))
    im = {a: float(ds["im"].sel(account=a)) for a in ds["account"].values}
    legs_alone = sum(im[f"leg{k}"] for k in range(len(legs)))
    assert im["h"] / legs_alone < 0.90, f"{hedge}: {im['h'] / legs_alone:.3f}"
    assert im["s"] <= im["c"] + im["p"] + 1e-9
