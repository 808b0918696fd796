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


@pytest.fixture(scope="module")
def small_book_dir(tmp_path_factory):
    from conftest import small_frames_data
    ins, mkt, pos, col, acc = small_frames_data()
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
def test_every_figure_matches_the_recompute(small_book, small_book_dir, margin):
    ds, p = run_small(small_book, **margin)
    ref = recompute.recompute(small_book_dir, ds["shock"].to_pandas(), ds["vol_shock"].to_pandas(),
                              accounts=ds["account"].values, confidences=ds["confidence"].values,
                              buffer=p.buffer, maintenance_ratio=p.maintenance_ratio,
                              margin_confidence=p.confidence)
    recompute.assert_matches(ds, ref, rtol=1e-10, atol=1e-8)
    # the book exercises what it should: netting, a pool, calls and no calls
    assert (ref["netting_benefit"] > 0).any() and (ref["group_members"] == 2).any()
    assert (ref["margin_call"] > 0).any() and (ref["margin_call"] == 0).any()
    assert ds.attrs["margin_confidence"] == p.confidence and ds.attrs["margin_buffer"] == p.buffer
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
