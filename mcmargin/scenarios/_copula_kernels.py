"""The compiled step of the t copula's tabulated marginal transform (:func:`.copula.tabulated_lower_quantiles`)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def hermite_in_cells(t, lo, node_bits, q, h, left, right, unit, out):
    """out[i, c] = -sign(t) unit[c] q(|t|), q(|t|) = q_k exp(H(s) - h_k) from column c's table
    (:func:`.copula.marginal_table`): the unit-variance marginal; NaN outside the table.

    The cell k of |t| and its place s in it come from the float's bits (its
    exponent, then the top ``node_bits`` of its mantissa, then the rest).
    H is the cubic Hermite interpolant of log(-q) across the cell; within a
    cell it moves by less than 0.07, so exp of the difference by its Taylor
    series to the 7th power is exact to about 1e-13: no call to log or exp.
    """
    shift = np.uint64(52 - node_bits)
    rest = np.uint64((1 << (52 - node_bits)) - 1)
    base = np.uint64((lo + 1023) << 52)                 # the bits of 2^lo
    per_unit = 1.0 / float(1 << (52 - node_bits))
    cells = np.uint64(left.shape[1])
    magnitude = np.uint64(0x7FFFFFFFFFFFFFFF)         # the bits of |t|: the sign bit cleared
    bits = t.view(np.uint64)
    for c in range(t.shape[1]):                         # column by column: one table in cache at a time
        for i in range(t.shape[0]):
            b = bits[i, c] & magnitude
            if b < base or (b - base) >> shift >= cells:
                out[i, c] = np.nan
                continue
            d = b - base
            k = np.int64(d >> shift)
            s = float(d & rest) * per_unit
            s2 = s * s
            s3 = s2 * s
            x = ((3.0 * s2 - 2.0 * s3) * (h[c, k + 1] - h[c, k]) + (s3 - 2.0 * s2 + s) * left[c, k]
                 + (s3 - s2) * right[c, k])
            e = 1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0 + x * (
                1.0 / 720.0 + x / 5040.0))))))
            lower = q[c, k] * e                         # the lower-tail quantile (<= 0)
            out[i, c] = -lower * unit[c] if t[i, c] > 0.0 else (lower * unit[c] if t[i, c] < 0.0 else 0.0)
