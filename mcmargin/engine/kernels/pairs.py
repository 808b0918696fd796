"""Rows holding two positions: tails read from per-direction scenario lists (docs/architecture.md,
"Two-position rows").

A row holding q0 of column c0 and q1 of column c1 loses
``-((0.0 + q0 x0) + q1 x1)`` in a scenario whose P&L on the two columns is
``x = (x0, x1)``: a linear function of a point in the plane.  Its m worst
scenarios are the m points furthest out in one direction, so rows that hold
the same pair of columns (a quarter of the synthetic exchange's rows hold
one of five pairs; :func:`popular_pairs` picks those held by enough rows to
pay for their lists) can share work: for a fan of directions, the scenarios are
listed once per run in decreasing order of a bound on the loss of every row
whose direction lies near that one (:class:`PairSpace`), and each row walks
its direction's list, forming its exact losses, until the bound falls below
the m-th largest loss it has seen (:func:`walk_pair_rows`).  A row then
costs about 1.5 m losses instead of N, and the fold, the pilot and most of
the final cut are skipped for it.

The bound.  Let ``A`` whiten the pair (``A = L^-1``, ``L L^T`` their second
moment), ``y = A x`` and ``w = -A^-T q``: the loss is ``w . y`` (reals).
With ``s = |w|`` and the row's direction ``w / s`` within angle ``delta`` of
the list's direction ``v``, ``w . y <= s key(y)``, where ``key(y) = |y|``
if ``y`` itself lies within ``delta`` of ``v``, else
``(v . y) cos(delta) + |v_perp . y| sin(delta)`` (the largest of
``|y| cos(theta - phi)`` over the angles allowed).  Every key is raised by
``KEY_SLACK |y|``, which covers the rounding of the whitening, of the key
and of the loss itself (their relative error is at most a few units of
roundoff times the whitening's condition number, capped at
``MAX_CONDITION``).  So once ``s key`` of the next scenario is below the
m-th largest loss held, no scenario left can reach it: the kept set is the
exact top m, ties included (losses equal to the threshold are kept until the
final cut ranks them by scenario, as the fold's tails are).  A row whose
walk ends before that (the list is too short for it) or whose direction is
not covered is folded after all, as any other.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .fused import _compact_row

#: Directions in the fan (evenly spaced angles): each row walks the list of the nearest one.
DIRECTIONS = 64
#: A pair of columns is listed only if at least this many rows of the run hold it: its 64 lists cost
#: about as much as folding 500 rows (each list reads every scenario), a row's walk far less than its fold.
PAIR_ROWS_MIN = 1000
#: Nor when the tail is a large share of the scenarios (m > N / TAIL_SHARE_MAX): a walk of about 1.5 m
#: losses then costs as much as folding all N.
TAIL_SHARE_MAX = 40
#: Scenarios listed per direction: at least this many times m, plus 512 (a walk takes about 1.5 m).
LIST_FACTOR = 3
#: Relative slack on every key (covers the rounding; see the module docstring).
KEY_SLACK = 1e-7
#: Pairs whose whitening is worse conditioned than this are folded (their rounding is not covered).
MAX_CONDITION = 1e5
#: Half the angle between neighbouring directions, widened a little for the keys so that a row accepted
#: at ``delta`` (:func:`row_direction`) is covered whatever the rounding of its angle.
DELTA = math.pi / DIRECTIONS
KEY_DELTA = DELTA * 1.001


def _two_positions(holdings):
    """``(rows, pair)``: the rows of a CSR matrix holding exactly two positions with finite, nonzero
    quantities, and each one's pair of columns as one integer (first * columns + second)."""
    rows = np.flatnonzero(np.diff(holdings.indptr) == 2)
    at = holdings.indptr[rows]
    q = np.stack([holdings.data[at], holdings.data[at + 1]], axis=1)
    fine = np.isfinite(q).all(axis=1) & (q != 0).all(axis=1)
    rows, at = rows[fine], at[fine]
    return rows, holdings.indices[at].astype(np.int64) * holdings.shape[1] + holdings.indices[at + 1]


def popular_pairs(holdings, m: int, n: int) -> list:
    """The pairs of columns worth listing in a run (``[[first, second], ...]``, JSON-able): held by at least
    :data:`PAIR_ROWS_MIN` rows of the whole book ``holdings`` (CSR), the tail size m at most N / 40."""
    if m * TAIL_SHARE_MAX > n:
        return []
    _, pair = _two_positions(holdings)
    codes, counts = np.unique(pair, return_counts=True)
    columns = holdings.shape[1]
    return [[int(c // columns), int(c % columns)] for c in codes[counts >= PAIR_ROWS_MIN]]


def two_position_rows(holdings, listed_pairs) -> np.ndarray:
    """Which rows of a CSR block hold exactly two positions (finite, nonzero quantities) of one of the
    ``listed_pairs`` (:func:`popular_pairs`)."""
    out = np.zeros(holdings.shape[0], dtype=bool)
    if not listed_pairs:
        return out
    rows, pair = _two_positions(holdings)
    wanted = np.array([a * holdings.shape[1] + b for a, b in listed_pairs], dtype=np.int64)
    out[rows[np.isin(pair, wanted)]] = True
    return out


class PairSpace:
    """Two columns' P&L over every scenario, whitened, and the direction lists of :func:`walk_pair_rows`.

    Parameters
    ----------
    x : numpy.ndarray [2 x N]
        The two columns' P&L, in holding order, every scenario.
    length : int
        Scenarios listed per direction (at least; all N when N is smaller).
    """

    def __init__(self, x: np.ndarray, length: int):
        self.x = np.ascontiguousarray(x, dtype=np.float64)
        n = self.x.shape[1]
        self.n, self.length = n, min(length, n)
        self._fan = None
        self.usable = bool(np.isfinite(self.x).all()) and n > 0
        if not self.usable:
            return
        second = self.x @ self.x.T / n
        second += np.eye(2) * (1e-12 * np.trace(second) + np.finfo(float).tiny)
        try:
            lower = np.linalg.cholesky(second)
        except np.linalg.LinAlgError:
            self.usable = False
            return
        self.lower = lower
        self.usable = bool(np.linalg.cond(lower) <= MAX_CONDITION)
        if not self.usable:
            return
        whiten = np.linalg.inv(lower)
        self.y = np.ascontiguousarray(whiten @ self.x)
        self.radius = np.sqrt(self.y[0] ** 2 + self.y[1] ** 2)

    def fan(self):
        """Every direction's list, made at the first call: ``(x0, x1, key, scenario, start, floor)``, list d
        being entries ``start[d] ... start[d + 1]`` (the listed scenarios' P&L, keys and indices in
        decreasing key order) and ``floor[d]`` a bound on the key of every scenario it leaves out (-inf:
        none)."""
        if self._fan is None:
            lists = [self.direction_list(d) for d in range(DIRECTIONS)]
            start = np.zeros(DIRECTIONS + 1, dtype=np.int64)
            start[1:] = np.cumsum([listed[2].size for listed in lists])
            self._fan = (*(np.concatenate([listed[i] for listed in lists]) for i in range(4)), start,
                         np.array([listed[4] for listed in lists]))
        return self._fan

    def direction_list(self, d: int):
        """``(x0, x1, key, scenario, floor)`` of direction d alone (:meth:`fan`)."""
        angle = 2 * math.pi * d / DIRECTIONS
        key = np.empty(self.n)
        direction_keys(self.y, self.radius, math.cos(angle), math.sin(angle), math.cos(KEY_DELTA),
                       math.sin(KEY_DELTA), KEY_SLACK, key)
        picked, floor = _largest(key, self.length)
        order = picked[np.argsort(-key[picked])]           # equal keys in any order: the walk is exact anyway
        return (np.ascontiguousarray(self.x[0, order]), np.ascontiguousarray(self.x[1, order]),
                np.ascontiguousarray(key[order]), order.astype(np.int64), floor)


def _largest(key, length):
    """Indices of at least the ``length`` largest keys (all those at or above a bound) and a bound on every key
    left out (-inf when none is)."""
    n = key.size
    if length >= n:
        return np.arange(n), -np.inf
    # A bound a little below the length-th largest, read from a sample, then one screen: cheaper than a
    # partition of every key.  If the sample misleads (fewer pass), the exact partition.
    step = max(1, n // 8192)
    sample = key[::step]
    j = min(sample.size - 1, int(math.ceil(sample.size * 1.25 * length / n)))
    guess = np.partition(sample, sample.size - 1 - j)[sample.size - 1 - j]
    picked = np.flatnonzero(key >= guess)
    if picked.size >= length:
        return picked, float(guess)           # every key left out is below the guess
    split = np.argpartition(-key, length)              # the largest left out at position `length`
    return split[:length], float(key[split[length]])


@numba.njit(nogil=True, cache=True)
def direction_keys(y, radius, cos_a, sin_a, cos_d, sin_d, slack, key):
    """``key[s]`` = the bound of the module docstring for the direction at angle a, half-width d."""
    for s in range(radius.size):
        r = radius[s]
        along = cos_a * y[0, s] + sin_a * y[1, s]
        across = abs(cos_a * y[1, s] - sin_a * y[0, s])
        k = r if along >= r * cos_d else along * cos_d + across * sin_d
        key[s] = k + slack * r


#: A row is walked when the cosine of its angle to its direction is at least this (a hair wider than DELTA,
#: the largest angle to the nearest direction, for the rounding of the angle; the keys allow KEY_DELTA).
COS_ACCEPT = math.cos(DELTA * 1.0001)


@numba.njit(nogil=True, cache=True)
def row_direction(lower, q0, q1):
    """``(direction, scale, covered)`` of a row holding ``q0`` and ``q1`` of a pair whitened by ``lower``
    (:attr:`PairSpace.lower`): the nearest direction of the fan, ``s = |w|`` with ``w = -L^T q`` (the loss
    is ``w . y``; module docstring), and whether the row lies within the angle its keys allow."""
    w0 = -(lower[0, 0] * q0 + lower[1, 0] * q1)
    w1 = -(lower[0, 1] * q0 + lower[1, 1] * q1)
    scale = math.sqrt(w0 * w0 + w1 * w1)
    if not (scale > 0.0 and scale < np.inf):
        return 0, scale, False
    step = 2.0 * math.pi / DIRECTIONS
    d = int(math.floor(math.atan2(w1, w0) / step + 0.5)) % DIRECTIONS
    a = step * d
    return d, scale, (w0 * math.cos(a) + w1 * math.sin(a)) / scale >= COS_ACCEPT


@numba.njit(nogil=True, cache=True, inline="always")
def _beneath(bound, thr):
    """Whether a loss bound (``s key``) stays below the threshold by more than its own last bits' rounding."""
    return bound + abs(bound) * 1e-9 < thr


@numba.njit(nogil=True, cache=True)
def walk_pair_rows(rows, q0, q1, lower, x0, x1, key, scenario, start, floor, n, m, values, index, count):
    """Each row's exact tail candidates from its direction's list (module docstring), into the fold's state.

    Row ``rows[i]`` holds ``q0[i]`` and ``q1[i]`` of a pair whitened by
    ``lower``; it walks the list of its direction k (:func:`row_direction`):
    entries ``start[k] ... start[k + 1]`` of ``x0``, ``x1``, ``key``,
    ``scenario`` (:meth:`PairSpace.fan`), with ``floor[k]`` bounding the
    keys not listed.  Its losses are formed as the fold forms them; those
    at or above the running threshold are held in ``values``/``index``
    (compacted to the top m when the row's slots are full), ``count`` set
    to the number held.  A row whose walk cannot prove its tail complete,
    or whose direction is not covered, gets ``count = 0`` (the caller folds
    it).  ``n``: the run's scenarios.
    """
    width = values.shape[1]
    for i in range(rows.size):
        r = rows[i]
        k, scale, covered = row_direction(lower, q0[i], q1[i])
        if not covered:
            count[r] = 0
            continue
        a, b = start[k], start[k + 1]
        vals, ix = values[r], index[r]
        c = 0
        thr = -np.inf
        settled = b - a == n                  # every scenario listed: walking them all settles the row
        for e in range(a, b):
            if c >= m and _beneath(scale * key[e], thr):   # no scenario left can reach the m-th loss held
                settled = True
                break
            loss = -((0.0 + q0[i] * x0[e]) + q1[i] * x1[e])
            if loss >= thr:                   # equal losses too: the final cut ranks them by scenario
                vals[c] = loss
                ix[c] = scenario[e]
                c += 1
                if c == width or (c == m and thr == -np.inf):
                    c, thr = _compact_row(vals, ix, c, m)
        if not settled and c >= m:            # the list ran out: the scenarios not listed are below floor[k]
            settled = floor[k] == -np.inf or _beneath(scale * floor[k], thr)
        count[r] = c if settled and c >= m else 0
