"""The float steps of :mod:`.threefry`, compiled by numba (cached on disk: ``cache=True``).

XLA compiles with LLVM's floating-point contraction on: every multiply
whose only use is an add becomes one fused multiply-add (a single
rounding).  These kernels spell those FMAs out (``llvm.fma``: the hardware
instruction, or the C library's correctly rounded fma) and leave every
other operation uncontracted (numba's default), so each value is rounded
exactly where XLA rounds it.  ``math.log`` and ``math.sqrt`` lower to the
same LLVM intrinsics XLA's CPU backend uses (the C library's ``log``).

Kept in a module of their own, at module level: numba caches top-level
functions by file and line, while closures are compiled again in every
process.
"""

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from .threefry import _COEF, _LOG1P_DEN, _LOG1P_NUM, _LOG1P_SMALL

_DEN = np.array(_LOG1P_DEN)
_NUM = np.array(_LOG1P_NUM)


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma.f64)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def log1p(x):
    """XLA's CPU float64 log1p (see :mod:`.threefry`)."""
    if abs(x) >= _LOG1P_SMALL:
        return math.log(x + 1.0)
    q = 0.0
    for c in _DEN:
        q = _fma(q, x, c)
    p = 0.0
    for c in _NUM:
        p = _fma(p, x, c)
    x2 = x * x
    small = (x * x2) * (p / q)
    return x + _fma(-0.5, x2, small)


@numba.njit(cache=True, nogil=True)
def erfinv(x):
    """XLA's float64 ErfInv (Giles 2011), FMAs where XLA fuses them."""
    if abs(x) == 1.0:
        return x * np.inf
    w = -log1p(x * -x)
    b = 0 if w < 6.25 else 1 if w < 16.0 else 2
    z = w - 3.125 if b == 0 else math.sqrt(w) - (3.25 if b == 1 else 5.0)
    p = _COEF[0, b]
    last = 23 if b == 0 else 19 if b == 1 else 17
    for i in range(1, last):
        p = _fma(p, z, _COEF[i, b])
    return p * x


@numba.njit(cache=True, nogil=True)
def normal_from_uniform(u, out):
    """out = sqrt(2) erfinv(u), elementwise (C-contiguous float64 arrays)."""
    root2 = math.sqrt(2.0)
    for i in range(u.size):
        out.flat[i] = root2 * erfinv(u.flat[i])


@numba.njit(cache=True, nogil=True)
def scale_shift(x, a, b, lo, out):
    """out = max(lo, x * a + b), the multiply-add fused as XLA fuses it."""
    for i in range(x.size):
        out.flat[i] = max(lo, _fma(x.flat[i], a, b))
