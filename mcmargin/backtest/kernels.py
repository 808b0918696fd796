"""Compiled per-date kernels of the backtest: keyed bootstrap draws, revaluation, worst losses.

One call handles a block of dates; each date is computed on its own, in a
fixed order of operations, from that date's inputs and its key only, so a
date's numbers never depend on the block it sits in (docs/methodology.md,
section 13).  The kernels release the GIL, so dask's threads run blocks in
parallel.

Random numbers: the Threefry-2x32 cipher (20 rounds, as
:func:`mcmargin.scenarios.threefry.threefry2x32`, which the tests compare
bit for bit) under the date's key, with counter ``(scenario, step)``; the
64 output bits make ``u = top 53 bits / 2^53`` in [0, 1) and the residual
row ``floor(u R)`` of the R rows of the date's look-back (bias below
R / 2^53).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_M32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def _rotl(x, r):
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True)
def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 (20 rounds) of counter (x0, x1) under key (k0, k1); 32-bit words held in uint64."""
    m = np.uint64(0xFFFFFFFF)
    k0 = np.uint64(k0) & m
    k1 = np.uint64(k1) & m
    k2 = k0 ^ k1 ^ np.uint64(0x1BD11BDA)
    ks0, ks1, ks2 = k0, k1, k2
    a = (np.uint64(x0) + ks0) & m
    b = (np.uint64(x1) + ks1) & m
    for i in range(5):
        if i % 2 == 0:
            r0, r1, r2, r3 = 13, 15, 26, 6
        else:
            r0, r1, r2, r3 = 17, 29, 16, 24
        a = (a + b) & m
        b = _rotl(b, r0) ^ a
        a = (a + b) & m
        b = _rotl(b, r1) ^ a
        a = (a + b) & m
        b = _rotl(b, r2) ^ a
        a = (a + b) & m
        b = _rotl(b, r3) ^ a
        j = (i + 1) % 3
        if j == 0:
            a = (a + ks0) & m
        elif j == 1:
            a = (a + ks1) & m
        else:
            a = (a + ks2) & m
        j = (i + 2) % 3
        if j == 0:
            b = (b + ks0 + np.uint64(i + 1)) & m
        elif j == 1:
            b = (b + ks1 + np.uint64(i + 1)) & m
        else:
            b = (b + ks2 + np.uint64(i + 1)) & m
    return a, b


@njit(cache=True, nogil=True, inline="always")
def _row(k0, k1, s, j, n_rows):
    hi, lo = threefry2x32(k0, k1, s, j)
    bits = (hi << np.uint64(32)) | lo
    u = np.float64(bits >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    return np.int64(u * n_rows)


@njit(cache=True, nogil=True)
def draw_rows(k0, k1, n, h, n_rows):
    """Residual rows ``[n, h]`` of a date's bootstrap (scenario s, step j), for tests and references."""
    out = np.empty((n, h), dtype=np.int64)
    for s in range(n):
        for j in range(h):
            out[s, j] = _row(k0, k1, s, j, n_rows)
    return out


@njit(cache=True, nogil=True)
def keyed_mantissas(k0, k1, stream, n, dim):
    """The random mantissas ``[n, dim]`` of :func:`mcmargin.scenarios.rng.standard_normals` under key (k0, k1).

    Scenario s's key is ``fold_in(fold_in(key, stream), s)``, element j's 64
    bits ``threefry2x32(key_s, (0, j))``; returned as ``(bits >> 12) / 2^52``
    (exact), which :func:`mcmargin.scenarios.threefry.normal_from_mantissas`
    turns into the same normals, bit for bit (tests/test_backtest_parametric.py).
    """
    b0, b1 = threefry2x32(k0, k1, 0, stream)
    out = np.empty((n, dim))
    for s in range(n):
        s0, s1 = threefry2x32(b0, b1, 0, s)
        for j in range(dim):
            hi, lo = threefry2x32(s0, s1, 0, j)
            bits = (hi << np.uint64(32)) | lo
            out[s, j] = np.float64(bits >> np.uint64(12)) * (1.0 / 4503599627370496.0)
    return out


#: Losses of the pilot sample that sets a date's selection threshold.
PILOT = 1024


@njit(cache=True, nogil=True)
def _worst(x, m, buf):
    """The m largest values of ``x``, sorted ascending (exact).

    A pilot threshold (a high order statistic of the first PILOT losses,
    about 1.6 m expected above it) screens the losses in one pass; the m
    largest of the few kept are the m largest of all whenever at least m
    were kept (else a full partition).  The result is the same multiset,
    hence the same sorted array, whichever way it is found.
    """
    n = x.shape[0]
    if n >= 4 * PILOT and 8 * m < n:
        j = min(PILOT, int(1.6 * m * PILOT / n) + 4)
        tau = np.partition(x[:PILOT], PILOT - j)[PILOT - j]
        c = 0
        for i in range(n):
            if x[i] >= tau:
                buf[c] = x[i]
                c += 1
        if c >= m:
            return np.sort(np.partition(buf[:c], c - m)[c - m:])
    return np.sort(np.partition(x, n - m)[n - m:])


@njit(cache=True, nogil=True)
def _tail(losses, m, var, es):
    """VaR and ES of each row of ``losses`` [P, n] (mcmargin.tails: the m-th largest; the mean of the m largest).

    The m largest are sorted ascending and summed in that order, so the sum
    depends only on the values.
    """
    buf = np.empty(losses.shape[1])
    for p in range(losses.shape[0]):
        worst = _worst(losses[p], m, buf)
        acc = 0.0
        for i in range(m):
            acc += worst[i]
        var[p] = worst[0]
        es[p] = acc / m


@njit(cache=True, nogil=True)
def fhs_block(keys, expo, sig2, omega, alpha, beta, z, win_lo, win_hi, rows, n, h, m):
    """Worst m losses of each portfolio on each date of a block, by filtered historical simulation.

    Parameters
    ----------
    keys : uint64 [D, 2]
        Each date's key (32-bit words).
    expo : float64 [D, P, k]
        USD exposure ``quantity x price(t)`` of each portfolio to each asset.
    sig2 : float64 [D, k]
        Variance forecast for the first row after t (known at the close of t).
    omega, alpha, beta : float64 [k]
        Variance recursion along a path of ``h`` rows.
    z : float64 [R_all, k]
        De-volatized residuals; ``rows[win_lo[d]:win_hi[d]]`` are the date's look-back rows.
    n, h, m : int
        Scenarios, horizon rows, tail size.

    Returns
    -------
    var, es : float64 [D, P]
    """
    n_dates, n_port, k = expo.shape
    var = np.empty((n_dates, n_port))
    es = np.empty((n_dates, n_port))
    losses = np.empty((n_port, n))
    sd = np.empty(k)
    s2 = np.empty(k)
    total = np.empty(k)
    for d in range(n_dates):
        k0, k1 = keys[d, 0], keys[d, 1]
        lo, hi = win_lo[d], win_hi[d]
        n_rows = hi - lo
        for a in range(k):
            sd[a] = np.sqrt(sig2[d, a])
        if h == 1:
            # One row per scenario: revalue each look-back row once, then pick.
            table = np.zeros((n_port, n_rows))
            for r in range(n_rows):
                zr = rows[lo + r]
                for a in range(k):
                    x = np.expm1(sd[a] * z[zr, a])
                    for p in range(n_port):
                        table[p, r] -= expo[d, p, a] * x
            for s in range(n):
                r = _row(k0, k1, s, 0, n_rows)
                for p in range(n_port):
                    losses[p, s] = table[p, r]
        else:
            # The first step and the vol of the second depend only on the first row drawn: tabulate them
            # per look-back row (the same operations as the path below, so the same numbers).
            ret0 = np.empty((n_rows, k))
            sd1 = np.empty((n_rows, k))
            s2_1 = np.empty((n_rows, k))
            for r in range(n_rows):
                zr = rows[lo + r]
                for a in range(k):
                    ret = sd[a] * z[zr, a]
                    ret0[r, a] = ret
                    v = omega[a] + alpha[a] * ret * ret + beta[a] * sig2[d, a]
                    s2_1[r, a] = v
                    sd1[r, a] = np.sqrt(v)
            for s in range(n):
                r0 = _row(k0, k1, s, 0, n_rows)
                zr = rows[lo + _row(k0, k1, s, 1, n_rows)]
                for a in range(k):
                    ret = sd1[r0, a] * z[zr, a]
                    total[a] = 0.0 + ret0[r0, a] + ret
                    s2[a] = omega[a] + alpha[a] * ret * ret + beta[a] * s2_1[r0, a]
                for j in range(2, h):
                    zr = rows[lo + _row(k0, k1, s, j, n_rows)]
                    for a in range(k):
                        ret = np.sqrt(s2[a]) * z[zr, a]
                        total[a] += ret
                        s2[a] = omega[a] + alpha[a] * ret * ret + beta[a] * s2[a]
                for p in range(n_port):
                    losses[p, s] = 0.0
                for a in range(k):
                    x = np.expm1(total[a])
                    for p in range(n_port):
                        losses[p, s] -= expo[d, p, a] * x
        _tail(losses, m, var[d], es[d])
    return var, es


@njit(cache=True, nogil=True)
def historical_block(expo, windows, win_lo, win_hi, rows, m):
    """VaR and ES [D, P] of each portfolio on each date by historical simulation.

    ``windows`` [W, k] holds ``expm1`` of every h-row log return; the date's
    scenarios are the rows ``rows[win_lo[d]:win_hi[d]]``, each once; ``m[d]``
    is the date's tail size.
    """
    n_dates, n_port, k = expo.shape
    var = np.empty((n_dates, n_port))
    es = np.empty((n_dates, n_port))
    for d in range(n_dates):
        lo, hi = win_lo[d], win_hi[d]
        losses = np.zeros((n_port, hi - lo))
        for i in range(hi - lo):
            w = rows[lo + i]
            for a in range(k):
                x = windows[w, a]
                for p in range(n_port):
                    losses[p, i] -= expo[d, p, a] * x
        _tail(losses, m[d], var[d], es[d])
    return var, es
