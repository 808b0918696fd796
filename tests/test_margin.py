"""mcmargin.margin: every figure of the mc_es model on a small hand-made book against the recompute.

The book (tests/conftest.py ``small_frames``) holds a linear and an inverse
perpetual, a USD and an inverse (coin) option, spot, a future, an option
expiring inside the horizon, collateral in cash and coins, a two-account
group and singletons.  The reference is tests/recompute.py (no mcmargin).
"""

import numpy as np
import pytest

import recompute
from conftest import SCENARIOS_2F
from mcmargin import MarginParams, build_scenarios, run_stress
from mcmargin.errors import ConfigError


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
    from mcmargin.io import book_from_frames
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
    from mcmargin import exposure
    from mcmargin.engine import compute_tails
    from mcmargin.margin import margin_dataset
    scen = build_scenarios(dict(SCENARIOS_2F, n=300), small_book.assets, small_book.market["vol"].to_numpy())
    result = compute_tails(exposure.compile_book(small_book, 2), scen, [0.99])
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
