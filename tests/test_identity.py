"""Object arrays by identity (mcmargin.common.identity)."""

import numpy as np

import pandas as pd
import pytest

from mcmargin.common.identity import factorize_addresses, object_addresses, positions_in


def test_addresses_are_the_objects_identities():
    a, b = "x" * 20, "y" * 20
    values = np.array([a, b, a], dtype=object)
    address = object_addresses(values)
    assert address.dtype == np.uint64 and address.tolist() == [id(a), id(b), id(a)]
    assert object_addresses(values[::-1]).tolist() == [id(a), id(b), id(a)][::-1]     # a strided view
    assert object_addresses(values[:0]).size == 0


@pytest.mark.parametrize("n", [0, 1, 500])
def test_positions_in_is_get_indexer(n):
    """Shared objects, equal text in other objects, and text not known (-1): get_indexer's answer."""
    g = np.random.default_rng(n)
    known = pd.Index(["BTC", "ETH", "SOL-PERP", "é"], dtype=object)
    pool = np.array(list(known) + ["missing", ""], dtype=object)
    values = pool[g.integers(0, pool.size, n)]
    copies = g.integers(0, max(n, 1), n // 4) if n else np.zeros(0, dtype=int)
    values[copies] = [("" + str(values[i]) + ".")[:-1] for i in copies]
    np.testing.assert_array_equal(positions_in(known, values), known.get_indexer(values))


def test_addresses_are_coded_in_order_of_first_appearance():
    address = np.array([7, 3, 7, 9, 3, 3], dtype=np.uint64)
    codes, first = factorize_addresses(address)
    assert codes.tolist() == [0, 1, 0, 2, 1, 1] and first.tolist() == [0, 1, 3]
