"""The compiled pass of :func:`.zarr_strings.vlen_utf8` for ASCII text (numba; imported when a long string
variable is written)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def ascii_vlen(codes):
    """``vlen-utf8`` bytes of the strings whose UCS-4 code points are the rows of ``codes`` ``[n x width]``
    (all below 128; a string ends after its last nonzero code point, as NumPy's unicode strings do):
    the count, then each string's length and bytes, counts as little-endian ``uint32``."""
    n, width = codes.shape
    lengths = np.empty(n, dtype=np.int64)
    total = 4
    for i in range(n):
        k = width
        while k > 0 and codes[i, k - 1] == 0:
            k -= 1
        lengths[i] = k
        total += 4 + k
    out = np.empty(total, dtype=np.uint8)
    _put_count(out, 0, n)
    p = 4
    for i in range(n):
        k = lengths[i]
        _put_count(out, p, k)
        p += 4
        for j in range(k):
            out[p + j] = codes[i, j]
        p += k
    return out


@numba.njit(inline="always")
def _put_count(out, at, value):
    for b in range(4):
        out[at + b] = (value >> (8 * b)) & 0xFF
