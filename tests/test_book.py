"""Account ids, each table row's account and the margin-group labels (mcmargin.book)."""

import numpy as np

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
