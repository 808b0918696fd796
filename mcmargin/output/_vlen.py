"""The compiled passes of :func:`.zarr_strings.vlen_utf8`: ASCII unicode arrays, and strings coded as runs
(numba; imported when a long string variable is written)."""

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


@numba.njit(nogil=True, cache=True)
def ascii_bytes(codes):
    """``(blob, offsets)``: the strings whose UCS-4 code points are the rows of ``codes`` (all below 128),
    string ``d`` as the bytes ``blob[offsets[d]:offsets[d + 1]]``."""
    n, width = codes.shape
    offsets = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        k = width
        while k > 0 and codes[i, k - 1] == 0:
            k -= 1
        offsets[i + 1] = offsets[i] + k
    blob = np.empty(offsets[n], dtype=np.uint8)
    for i in range(n):
        for j in range(offsets[i + 1] - offsets[i]):
            blob[offsets[i] + j] = codes[i, j]
    return blob, offsets


@numba.njit(nogil=True, cache=True)
def repeated_vlen(run_code, run_length, blob, offsets):
    """``vlen-utf8`` bytes of runs of strings: run ``r`` is ``run_length[r]`` copies of the string whose
    UTF-8 bytes are ``blob[offsets[d]:offsets[d + 1]]``, ``d = run_code[r]``."""
    n = 0
    total = 4
    for r in range(run_code.size):
        d = run_code[r]
        n += run_length[r]
        total += run_length[r] * (4 + offsets[d + 1] - offsets[d])
    out = np.empty(total, dtype=np.uint8)
    _put_count(out, 0, n)
    p = 4
    for r in range(run_code.size):
        d = run_code[r]
        a, k = offsets[d], offsets[d + 1] - offsets[d]
        for _ in range(run_length[r]):
            _put_count(out, p, k)
            p += 4
            for j in range(k):
                out[p + j] = blob[a + j]
            p += k
    return out


@numba.njit(inline="always")
def _put_count(out, at, value):
    for b in range(4):
        out[at + b] = (value >> (8 * b)) & 0xFF
