"""The synthetic exchange (mcmargin.synthetic)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mcmargin.inputs.files import load_book_dir, validate_book
from mcmargin.inputs.synthetic import (ARCHETYPES, SYNTHETIC_ASSETS, account_archetypes, export_book, rough_margin, synthetic_book)

DATE = dt.date(2026, 3, 2)
N = 2000


@pytest.fixture(scope="module")
def book():
    return synthetic_book(N, seed=11, valuation_date=DATE)


@pytest.fixture(scope="module")
def archetypes():
    return account_archetypes(N, seed=11)


def frames_equal(a, b) -> bool:
    return all(getattr(a, t).equals(getattr(b, t)) for t in ("instruments", "market", "positions", "collateral",
                                                             "accounts"))


def test_deterministic_for_a_seed():
    first = synthetic_book(300, seed=3, valuation_date=DATE)
    assert frames_equal(first, synthetic_book(300, seed=3, valuation_date=DATE))


def test_other_seed_other_book():
    a, b = synthetic_book(300, seed=3, valuation_date=DATE), synthetic_book(300, seed=4, valuation_date=DATE)
    assert a.instruments.equals(b.instruments)          # the listing does not depend on the seed
    assert not a.positions.equals(b.positions)
    assert not a.collateral.equals(b.collateral)


def test_market(book):
    assert list(book.market["asset"]) == [a.asset for a in SYNTHETIC_ASSETS] == ["BTC", "ETH", "SOL", "BNB", "USDT"]
    m = book.market.set_index("asset")
    assert m.loc["BTC", "price"] == 90000 and m.loc["ETH", "price"] == 3000 and m.loc["USDT", "vol"] == 0
    assert book.risky_assets() == ["BTC", "ETH", "SOL", "BNB"]


def test_instruments(book):
    ins = book.instruments
    assert len(ins) >= 50 and ins["instrument"].is_unique
    assert set(ins["kind"]) == {"spot", "perpetual", "future", "option"}
    for kind in ("perpetual", "future", "option"):
        inverse = ins[(ins["kind"] == kind) & ins["inverse"]]
        assert len(inverse) > 0, kind
        assert (inverse["settle"] == inverse["underlying"]).all()
    assert set(ins.loc[ins["kind"] == "option", "underlying"]) == {"BTC", "ETH", "SOL"}
    assert {"BTC-USDT", "BTC-PERP", "BTC-USD-INV-PERP"} <= set(ins["instrument"])
    assert "BTC-20260401-FUT" in set(ins["instrument"])                       # +30 days
    assert "BTC-20260401-90000-C" in set(ins["instrument"])
    days = (ins["expiry"].dropna() - pd.Timestamp(DATE)).dt.days
    assert days.min() == 7 and days.max() == 180
    options = ins[ins["kind"] == "option"]
    for (underlying, expiry), chain in options.groupby(["underlying", "expiry"]):
        assert set(chain["option_type"]) == {"call", "put"}
    assert options.groupby("underlying")["expiry"].nunique()[["BTC", "ETH"]].min() >= 3


def test_every_archetype_trades_as_described(book, archetypes):
    assert set(archetypes) == set(ARCHETYPES)
    pos = book.positions.merge(book.instruments, on="instrument")
    pos["archetype"] = archetypes.reindex(pos["account"]).to_numpy()
    per_account = pos.groupby("account").size()
    kind_of = pos.groupby("archetype")["kind"].agg(set)
    assert kind_of["directional"] <= {"perpetual", "future"}
    assert kind_of["option_seller"] == {"option"}
    sellers = pos[pos["archetype"] == "option_seller"]
    assert (sellers["quantity"] < 0).all()
    makers = archetypes.index[archetypes == "market_maker"]
    assert per_account.reindex(makers).min() >= 10
    maker_pos = pos[pos["archetype"] == "market_maker"]
    assert (maker_pos["quantity"] > 0).any() and (maker_pos["quantity"] < 0).any()
    # Basis traders: long spot, short a derivative of about the same USD delta on the same coin.
    basis = pos[pos["archetype"] == "basis"].copy()
    price = book.market.set_index("asset")["price"]
    unit = np.where(basis["inverse"], basis["contract_size"],
                    basis["contract_size"] * price.reindex(basis["underlying"]).to_numpy())
    basis["delta"] = basis["quantity"] * unit
    assert (basis.loc[basis["kind"] == "spot", "quantity"] > 0).all()
    assert (basis.loc[basis["kind"] != "spot", "quantity"] < 0).all()
    net = basis.groupby(["account", "underlying"])["delta"].sum()
    gross = basis.groupby(["account", "underlying"])["delta"].apply(lambda d: d.abs().sum())
    assert (net.abs() <= 0.02 * gross + 200).all()
    # Whales are few and very large.
    notional = (pos["quantity"].abs() * pos["contract_size"]
                * np.where(pos["inverse"] & (pos["kind"] != "option"), 1.0,
                           price.reindex(pos["underlying"]).to_numpy()))
    gross_by = notional.groupby(pos["archetype"]).median()
    assert gross_by["whale"] > 20 * gross_by["directional"]
    assert (archetypes == "whale").mean() < 0.05


def test_fractional_quantities_and_no_zeros(book):
    q = book.positions["quantity"]
    assert (q != 0).all()
    assert (q != np.round(q)).any()


def test_groups(book):
    accounts = book.accounts
    assert list(accounts["account"]) == sorted(accounts["account"]) and len(accounts) == N
    assert accounts["account"].iloc[0] == "A000001"
    named = accounts.loc[accounts["group"] != "", "group"]
    sizes = named.value_counts()
    assert sizes.between(2, 5).all() and (sizes > 2).any()
    assert abs(len(named) / N - 0.2) < 0.01
    assert named.str.fullmatch(r"G\d{4}").all()
    assert not set(named) & set(book.account_ids)
    labels = book.account_groups()
    assert labels.nunique() == N - len(named) + len(sizes)


def test_group_share_zero_and_one():
    assert (synthetic_book(50, valuation_date=DATE, group_share=0.0).accounts["group"] == "").all()
    groups = synthetic_book(50, valuation_date=DATE, group_share=1.0).accounts["group"]
    assert (groups != "").sum() >= 49


def test_collateral(book, archetypes):
    coll = book.collateral
    assert set(coll["account"]) == set(book.accounts["account"])           # everyone posts something
    assert set(coll["asset"]) == {"BTC", "ETH", "SOL", "BNB", "USDT"}
    assert (coll["amount"] > 0).all()
    assert coll.groupby("account").size().max() > 1                         # multi-asset
    margin = rough_margin(book)
    short = margin["equity"] < margin["margin"]
    assert 0.03 <= short.mean() <= 0.12
    assert not short[archetypes.reindex(margin.index).isin(["basis", "whale"]).to_numpy()].any()


def test_passes_validation(book):
    again = validate_book(book)
    assert frames_equal(book, again)
    assert book.valuation_date == DATE and book.sources["positions"] == "synthetic:positions"


def test_small_books_have_every_archetype():
    book = synthetic_book(5, seed=1, valuation_date=DATE)
    assert set(account_archetypes(5, seed=1)) == set(ARCHETYPES)
    assert set(book.positions["account"]) == set(book.accounts["account"])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trip(tmp_path, fmt):
    book = synthetic_book(200, seed=5, valuation_date=DATE)
    export_book(book, tmp_path, fmt)
    again = load_book_dir(tmp_path, DATE)
    for table in ("instruments", "market", "positions", "collateral", "accounts"):
        pd.testing.assert_frame_equal(getattr(book, table), getattr(again, table), check_exact=True)


def test_scale():
    """100,000 accounts generate (their timing is a benchmark: python -m benchmarks.synthetic)."""
    big = synthetic_book(100_000, valuation_date=DATE)
    assert big.accounts["account"].iloc[-1] == "A100000"
    assert big.positions["account"].nunique() == 100_000


@pytest.mark.parametrize("n", [1, 9, 10, 999_999, 1_000_000, 1_234_567])
def test_account_ids_are_zero_padded_to_six_digits_or_more(n):
    from mcmargin.inputs.synthetic import _account_ids

    width = max(6, len(str(n)))
    ids = _account_ids(n)
    assert ids.dtype == object and type(ids[0]) is str
    picks = sorted({0, 1, n // 2, n - 1} & set(range(n)))
    assert [ids[i] for i in picks] == [f"A{i + 1:0{width}d}" for i in picks] and len(ids) == n
    if n < 100_000:
        assert ids.tolist() == [f"A{i:0{width}d}" for i in range(1, n + 1)]
