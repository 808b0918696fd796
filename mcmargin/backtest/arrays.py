"""The backtest's per-date blocks on any array backend (NumPy, CuPy, JAX, the strict array API).

The same computation as :mod:`.kernels`, written once against the array
namespace of :class:`mcmargin.backend.Backend`: each date's scenarios are
drawn on the host by the same keyed Threefry formula (so the same residual
rows), gathered, revalued and reduced on the device with the backend's
top-k primitive.  Figures agree with the compiled kernels to rounding (sums
may run in another order); for a given backend each date's numbers depend
only on its own inputs and key, so the no-look-ahead property holds on every
backend.  ``backend=numpy`` (the default) takes the compiled kernels instead.
"""

from __future__ import annotations

import numpy as np

from ..scenarios import threefry


def draw_rows(key, n: int, h: int, n_rows: int) -> np.ndarray:
    """Residual rows ``[n, h]`` of a date's bootstrap, by the formula of :func:`.kernels.draw_rows` (NumPy)."""
    s = np.repeat(np.arange(n, dtype=np.uint32), h)
    j = np.tile(np.arange(h, dtype=np.uint32), n)
    hi, lo = threefry.threefry2x32(np.uint32(key[0]), np.uint32(key[1]), s, j)
    bits = (hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)
    u = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return (u * n_rows).astype(np.int64).reshape(n, h)


def _tail(backend, losses, m):
    """VaR and ES [P] of losses [P, n] on the backend: the m largest, sorted ascending."""
    xp = backend.xp
    worst = xp.sort(backend.top_k(losses, m), axis=-1)
    return backend.to_numpy(worst[:, 0]), backend.to_numpy(xp.sum(worst, axis=-1) / m)


def fhs_block(backend, keys, expo, sig2, omega, alpha, beta, z, win_lo, win_hi, rows, n, h, m):
    """:func:`.kernels.fhs_block` on ``backend`` (same arguments, NumPy in and out)."""
    xp = backend.xp
    z_dev = backend.asarray(z)
    om, al, be = (backend.asarray(x) for x in (omega, alpha, beta))
    n_dates, n_port, _ = expo.shape
    var, es = np.empty((n_dates, n_port)), np.empty((n_dates, n_port))
    for d in range(n_dates):
        lo, hi = int(win_lo[d]), int(win_hi[d])
        picked = rows[lo:hi][draw_rows(keys[d], n, h, hi - lo)]           # [n, h] residual rows
        s2 = xp.broadcast_to(backend.asarray(sig2[d]), (n, z.shape[1]))
        total = None
        for j in range(h):
            ret = xp.sqrt(s2) * xp.take(z_dev, xp.asarray(np.ascontiguousarray(picked[:, j])), axis=0)
            total = ret if total is None else total + ret
            s2 = om + al * ret * ret + be * s2
        losses = -(backend.asarray(expo[d]) @ xp.matrix_transpose(xp.expm1(total)))   # [P, n]
        var[d], es[d] = _tail(backend, losses, m)
    return var, es


def historical_block(backend, expo, windows, win_lo, win_hi, rows, m):
    """:func:`.kernels.historical_block` on ``backend``."""
    xp = backend.xp
    w_dev = backend.asarray(windows)
    n_dates, n_port, _ = expo.shape
    var, es = np.empty((n_dates, n_port)), np.empty((n_dates, n_port))
    for d in range(n_dates):
        sel = xp.take(w_dev, xp.asarray(rows[int(win_lo[d]):int(win_hi[d])]), axis=0)
        losses = -(backend.asarray(expo[d]) @ xp.matrix_transpose(sel))
        var[d], es[d] = _tail(backend, losses, int(m[d]))
    return var, es
