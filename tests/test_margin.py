"""Margin rules of mc_es (mcmargin.margin): exact cancellations, parameters, attributes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from conftest import stress_config
from mcmargin.errors import ConfigError
from mcmargin.margin import ROUNDING_FLOOR, MarginParams, margin_saving


@pytest.fixture(scope="module")
def runs():
    from jobs.stress import run

    return [run(stress_config("portfolio.n_accounts=400", "scenarios.n=3000", f"engine.scenario_chunk={c}",
                              f"engine.fast_path={fp}"))
            for c, fp in ((0, "true"), (701, "true"), (333, "false"))]


def _single_position_accounts(ds) -> np.ndarray:
    from mcmargin.synthetic import synthetic_book

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
    from mcmargin.scenarios.correlation import nearest_correlation

    bad = np.array([[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # statsmodels' IterationLimitWarning must not escape
        fixed = nearest_correlation(bad)
    assert np.linalg.eigvalsh(fixed).min() > -1e-10
    assert "repaired by nearest-correlation projection" in caplog.text
