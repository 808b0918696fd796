"""JAX's threefry2x32 counter-based generator, in NumPy, number for number.

:mod:`mcmargin.scenarios.rng` keys scenario ``i`` by ``fold_in(fold_in(key(seed),
stream), i)`` of ``jax.random`` and draws its normals with
``jax.random.normal(key, (dim,), float64)``.  Importing JAX costs about 2 s
and compiling the draw about 0.6 s per process, more than the default run
computes; this module produces the *same* float64 numbers with NumPy alone,
so the NumPy backend needs no JAX at all.

What is reproduced (JAX 0.4.30+ with ``jax_threefry_partitionable``, the
default since JAX 0.5):

- :func:`threefry2x32`: the Threefry-2x32 block cipher with 20 rounds
  (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
  as ``jax._src.random.threefry2x32`` computes it (unsigned 32-bit wraparound).
- ``key(seed)`` = ``(seed >> 32, seed & 0xFFFFFFFF)``; ``fold_in(key, d)`` =
  ``threefry2x32(key, (0, d))``.
- 64 random bits for element ``j`` of a draw: ``threefry2x32(key, (j >> 32,
  j & 0xFFFFFFFF))`` with the high word shifted left 32.
- ``uniform(lo, hi)``: the top 52 bits as the mantissa of a float in [1, 2),
  minus 1, times ``hi - lo``, plus ``lo``, floored at ``lo``.
- ``normal = sqrt(2) * erfinv(u)`` with ``u`` uniform on (-1, 1) and XLA's
  float64 ``ErfInv`` (Giles, "Approximating the erfinv function", GPU
  Computing Gems, 2011: three polynomial branches in ``w = -log1p(-u^2)``),
  evaluated with the same operations in the same order.

Integer steps are exact by construction; the float steps are IEEE
operations in XLA's order, and ``log1p``/``sqrt`` are the C library's, as
XLA's CPU backend uses them.  ``tests/test_rng.py`` compares every draw with
JAX on many keys, scenario offsets and dimensions; if a JAX release changes
its algorithm that test fails, and ``rng`` can go back to JAX.
"""

from __future__ import annotations

import numpy as np

_U32 = np.uint32
_ROT = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = _U32(0x1BD11BDA)


def threefry2x32(k0, k1, x0, x1):
    """The Threefry-2x32 (20 rounds) hash of counters ``(x0, x1)`` under key ``(k0, k1)``.

    All arguments are uint32 and broadcast together; returns two uint32 arrays.
    """
    k0, k1 = np.asarray(k0, _U32), np.asarray(k1, _U32)
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0 = np.asarray(x0, _U32) + ks[0]
    x1 = np.asarray(x1, _U32) + ks[1]
    with np.errstate(over="ignore"):
        for i in range(5):
            for r in _ROT[i % 2]:
                x0 = x0 + x1
                x1 = (x1 << _U32(r)) | (x1 >> _U32(32 - r))
                x1 = x0 ^ x1
            x0 = x0 + ks[(i + 1) % 3]
            x1 = x1 + ks[(i + 2) % 3] + _U32(i + 1)
    return x0, x1


def seed_key(seed: int):
    """``jax.random.key(seed)`` for a 32-bit unsigned seed, as its two key words."""
    seed = int(seed) & 0xFFFFFFFF
    return _U32(0), _U32(seed)


def fold_in(key, data):
    """``jax.random.fold_in(key, data)`` for uint32 ``data`` (scalar or array): keys as two arrays."""
    d = np.asarray(data, _U32)
    return threefry2x32(key[0], key[1], np.zeros_like(d), d)


def random_bits64(key, dim: int):
    """64 random bits per element of a ``(dim,)`` draw, for each key: shape ``(keys, dim)``, uint64."""
    k0, k1 = (np.asarray(k, _U32)[:, None] for k in key)
    j = np.arange(dim, dtype=np.uint64)
    hi, lo = threefry2x32(k0, k1, (j >> np.uint64(32)).astype(_U32), j.astype(_U32))
    return (hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)


def uniform(key, dim: int, lo: float, hi: float):
    """``jax.random.uniform(key, (dim,), float64, lo, hi)`` for each key: ``(keys, dim)``."""
    bits = random_bits64(key, dim)
    one = np.array(1.0).view(np.uint64)
    floats = ((bits >> np.uint64(64 - 52)) | one).view(np.float64) - 1.0
    lo, hi = float(lo), float(hi)
    out = np.empty_like(floats)
    _get_kernels()[2](floats, hi - lo, lo, lo, out)
    return out


# XLA's float64 ErfInv (Giles 2011): coefficients per branch, highest degree
# first.  Branch w < 6.25 has 23, w < 16 has 19 and w >= 16 has 17.
_W625 = (-3.6444120640178196996e-21, -1.685059138182016589e-19, 1.2858480715256400167e-18,
         1.115787767802518096e-17, -1.333171662854620906e-16, 2.0972767875968561637e-17,
         6.6376381343583238325e-15, -4.0545662729752068639e-14, -8.1519341976054721522e-14,
         2.6335093153082322977e-12, -1.2975133253453532498e-11, -5.4154120542946279317e-11,
         1.051212273321532285e-09, -4.1126339803469836976e-09, -2.9070369957882005086e-08,
         4.2347877827932403518e-07, -1.3654692000834678645e-06, -1.3882523362786468719e-05,
         0.0001867342080340571352, -0.00074070253416626697512, -0.0060336708714301490533,
         0.24015818242558961693, 1.6536545626831027356)
_W16 = (2.2137376921775787049e-09, 9.0756561938885390979e-08, -2.7517406297064545428e-07,
        1.8239629214389227755e-08, 1.5027403968909827627e-06, -4.013867526981545969e-06,
        2.9234449089955446044e-06, 1.2475304481671778723e-05, -4.7318229009055733981e-05,
        6.8284851459573175448e-05, 2.4031110387097893999e-05, -0.0003550375203628474796,
        0.00095328937973738049703, -0.0016882755560235047313, 0.0024914420961078508066,
        -0.0037512085075692412107, 0.005370914553590063617, 1.0052589676941592334,
        3.0838856104922207635)
_WBIG = (-2.7109920616438573243e-11, -2.5556418169965252055e-10, 1.5076572693500548083e-09,
         -3.7894654401267369937e-09, 7.6157012080783393804e-09, -1.4960026627149240478e-08,
         2.9147953450901080826e-08, -6.7711997758452339498e-08, 2.2900482228026654717e-07,
         -9.9298272942317002539e-07, 4.5260625972231537039e-06, -1.9681778105531670567e-05,
         7.5995277030017761139e-05, -0.00021503011930044477347, -0.00013871931833623122026,
         1.0103004648645343977, 4.8499064014085844221)


# XLA's CPU ``log1p`` (xla/codegen/intrinsic/log1p): log(1 + x) for |x| >= sqrt(2) - 1,
# else x - x^2/2 + x^3 P(x)/Q(x) with Cephes' rational approximation, each
# polynomial by Horner's rule from a zero start, highest degree first.
_LOG1P_SMALL = 0.41421356237309504880
_LOG1P_DEN = (1.0, 1.5062909083469192043167E1, 8.3047565967967209469434E1, 2.2176239823732856465394E2,
              3.0909872225312059774938E2, 2.1642788614495947685003E2, 6.0118660497603843919306E1)
_LOG1P_NUM = (4.5270000862445199635215E-5, 4.9854102823193375972212E-1, 6.5787325942061044846969E0,
              2.9911919328553073277375E1, 6.0949667980987787057556E1, 5.7112963590585538103336E1,
              2.0039553499201281259648E1)

# XLA compiles with LLVM's floating-point contraction on: every multiply whose
# only use is an add becomes one fused multiply-add (a single rounding).  The
# kernels (:mod:`._threefry_kernels`) spell those FMAs out and leave every
# other operation uncontracted, so each value is rounded where XLA rounds it.
_COEF = np.array([(_W625[i], _W16[i] if i < 19 else np.nan, _WBIG[i] if i < 17 else np.nan)
                  for i in range(23)])


_KERNELS = None


def _get_kernels():
    """(erfinv, normal_from_uniform, scale_shift): the compiled kernels, cached on disk by numba."""
    global _KERNELS
    if _KERNELS is None:
        from . import _threefry_kernels as k

        _KERNELS = (k.erfinv, k.normal_from_uniform, k.scale_shift)
    return _KERNELS


def erfinv(x):
    """XLA's float64 ``ErfInv``, operation for operation (module docstring); elementwise."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    _get_kernels()[1](x, out)
    return out / np.float64(np.sqrt(2.0))


def normal_from_mantissas(floats):
    """:func:`normal` from its draws' 52 random mantissa bits, given as ``floats = (bits >> 12) / 2^52``.

    ``floats`` (in [0, 1), any shape) are what :func:`uniform` forms before
    scaling (``1.m - 1`` is ``m / 2^52`` exactly); for callers that make the
    random bits themselves (the backtest's compiled Threefry,
    :func:`mcmargin.backtest.kernels.keyed_mantissas`).
    """
    f = np.ascontiguousarray(floats, dtype=np.float64)
    lo = np.nextafter(-1.0, 0.0)
    u = np.empty_like(f)
    _get_kernels()[2](f, 1.0 - lo, lo, lo, u)
    out = np.empty_like(u)
    _get_kernels()[1](u, out)
    return out


def normal(key, dim: int):
    """``jax.random.normal(key, (dim,), float64)`` for each key: ``(keys, dim)``."""
    u = uniform(key, dim, np.nextafter(-1.0, 0.0), 1.0)
    out = np.empty_like(u)
    _get_kernels()[1](u, out)
    return out
