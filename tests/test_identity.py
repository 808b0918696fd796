"""Object arrays by identity (mcmargin.common.identity)."""

import numpy as np

from mcmargin.common.identity import object_addresses


def test_addresses_are_the_objects_identities():
    a, b = "x" * 20, "y" * 20
    values = np.array([a, b, a], dtype=object)
    address = object_addresses(values)
    assert address.dtype == np.uint64 and address.tolist() == [id(a), id(b), id(a)]
    assert object_addresses(values[::-1]).tolist() == [id(a), id(b), id(a)][::-1]     # a strided view
    assert object_addresses(values[:0]).size == 0
