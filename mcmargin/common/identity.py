"""Object arrays by identity: which elements are the same Python object.

The attribution's holding labels are gathered from short arrays of ids: a
million-account run's 7.8 million labels are a million distinct objects.
Their addresses are integers, grouped by array operations where hashing and
comparing the strings would cost most of a second a column
(:func:`mcmargin.output.zarr_strings.run_coded`).
"""

from __future__ import annotations

import ctypes

import numpy as np

__all__ = ["object_addresses"]


def object_addresses(values: np.ndarray) -> np.ndarray:
    """The address of every element of a 1-D object array (uint64, a copy): equal addresses, same object.

    ``values`` holds one ``PyObject`` pointer per element, read while it keeps its elements alive.
    """
    values = np.ascontiguousarray(values, dtype=object)
    if values.size == 0:
        return np.empty(0, dtype=np.uint64)
    view = np.ctypeslib.as_array((ctypes.c_uint64 * values.size).from_address(values.ctypes.data))
    return view.copy()
