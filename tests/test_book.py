"""Account ids, each table row's account and the margin-group labels (mcmargin.book)."""

import numpy as np
import pytest

from mcmargin.inputs.synthetic import synthetic_book


def test_account_index_matches_a_brute_force_lookup():
    book = synthetic_book(300, seed=4)
    ids = book.account_ids
    every = set(book.positions["account"]) | set(book.collateral["account"]) | set(book.accounts["account"])
    assert list(ids) == sorted(every)
    where = {a: i for i, a in enumerate(ids)}
    for table in ("positions", "collateral", "accounts"):
        want = [where[a] for a in getattr(book, table)["account"]]
        np.testing.assert_array_equal(book.account_rows(table), want, err_msg=table)
    named = dict(zip(book.accounts["account"], book.accounts["group"]))
    assert list(book.account_groups()) == [named.get(a) or a for a in ids]
    assert (book.account_groups() != book.account_groups().index).any()      # the fixture has real groups


@pytest.mark.parametrize("rows", [40, 12_000], ids=["plain", "coded"])
def test_a_loaded_books_account_index_is_the_one_its_columns_give(rows):
    """Loaders set the index from their coded columns (files.py); it must equal the columns' own, ids padded
    with spaces and ids held only by collateral or only by the accounts table included."""
    import pandas as pd

    from mcmargin.inputs.book import Book
    from mcmargin.inputs.files import book_from_frames

    base = synthetic_book(20, seed=2)
    g = np.random.default_rng(8)
    ids = np.array([f"K{i:05d}" for i in g.permutation(rows)], dtype=object)
    instruments = base.instruments["instrument"].to_numpy(dtype=object)
    pos_ids = ids[g.integers(0, rows // 2, rows)]
    positions = pd.DataFrame({"account": [f" {a}" if i % 3 == 0 else a for i, a in enumerate(pos_ids)],
                              "instrument": instruments[np.arange(rows) % instruments.size], "quantity": 1.0})
    positions = positions[~pd.DataFrame({"a": pos_ids, "i": positions["instrument"]}).duplicated().to_numpy()]
    collateral = pd.DataFrame({"account": ids[rows // 4: rows], "asset": "USDT", "amount": 10.0})
    accounts = pd.DataFrame({"account": np.append(ids[: rows // 8], "Z-only-here"), "group": ""})
    book = book_from_frames(base.instruments, base.market, positions, collateral, accounts, base.valuation_date)
    assert "_account_index" in book.__dict__                 # set by the loader
    again = Book(book.instruments, book.market, book.positions, book.collateral, book.accounts,
                 book.valuation_date)
    assert book.account_ids.tolist() == again.account_ids.tolist() == sorted(
        {a.strip() for a in pos_ids} | set(ids[rows // 4:]) | set(ids[: rows // 8]) | {"Z-only-here"})
    for table in ("positions", "collateral", "accounts"):
        np.testing.assert_array_equal(book.account_rows(table), again.account_rows(table), err_msg=table)
        assert (book.account_ids[book.account_rows(table)] == getattr(book, table)["account"].to_numpy()).all()


def test_categories_no_row_uses_are_not_accounts():
    """A categorical account column may list ids that no row holds: they are not accounts of the book."""
    import pandas as pd

    from mcmargin.inputs import files

    base = synthetic_book(2500, seed=3)
    positions = base.positions.copy()
    assert len(positions) >= files._DISTINCT_TEXT_MIN        # the coded path
    positions["account"] = pd.Categorical(positions["account"],
                                          categories=["NOBODY-1", *base.account_ids[::-1], "NOBODY-2"])
    book = files.book_from_frames(base.instruments, base.market, positions, base.collateral, base.accounts,
                                  base.valuation_date)
    assert book.account_ids.tolist() == base.account_ids.tolist()
    for table in ("positions", "collateral", "accounts"):
        np.testing.assert_array_equal(book.account_rows(table), base.account_rows(table), err_msg=table)


@pytest.mark.parametrize("extra, padded", [([], False), ([""], False), ([], True)],
                         ids=["plain", "empty-category", "padded-twin"])
def test_a_categorical_account_column_gives_the_book_its_text_gives(extra, padded):
    """Categories are coded as they are unless stripping changes one or one is empty: then through the text."""
    import pandas as pd

    from mcmargin.inputs import files

    base = synthetic_book(2500, seed=3)
    positions = base.positions.copy()
    text = positions["account"].to_numpy(dtype=object).copy()
    if padded:
        text[text == "A000007"] = " A000007"     # some rows name the account padded, as a second category
        assert (text == " A000007").any()
    as_text = positions.assign(account=text)
    coded = positions.assign(account=pd.Categorical(text, categories=[*extra, *pd.unique(text)][::-1]))
    books = [files.book_from_frames(base.instruments, base.market, p, base.collateral, base.accounts,
                                    base.valuation_date) for p in (as_text, coded)]
    for table in ("positions", "collateral", "accounts"):
        pd.testing.assert_frame_equal(getattr(books[0], table), getattr(books[1], table))
        np.testing.assert_array_equal(books[0].account_rows(table), books[1].account_rows(table))
    assert books[1].account_ids.tolist() == base.account_ids.tolist()
