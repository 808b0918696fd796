"""Compiled CPU fast path: fused aggregation and tail selection (Numba).

The reference path (:func:`.reference.fold_chunk`) materialises the
losses of a block of rows for a whole chunk, then selects.  Here each row's
losses for a tile of scenarios are accumulated in a small buffer that stays
in L1 cache and are compared at once with the row's running threshold (the
smallest of its current m worst losses), so the loss matrix never travels
through main memory and, once the threshold is set, a loss costs one
comparison.  Until a row holds m losses, whole tiles are copied in without
comparison.  Candidates above the threshold are staged; when the stage is
full the row's values are partitioned back to the top m.

Exactness: every loss is formed by the same sum, in the order of the
row's holdings, as the reference; the kept set is the exact top m.

State per row block (:class:`~.base.TailState`): ``values[rows, m + stage + tile]``
(top-m set in the first m slots, staged candidates after), ``index`` of the
same shape (the scenario of each held loss), ``count[rows]`` (values held),
``threshold[rows]`` (-inf until m values are held).

Ties: losses are ranked by value, and equal losses by the lower scenario
index first (:func:`_ranks_below`), so the kept scenarios are one
well-defined set whatever the chunking.  Scenarios arrive in increasing
index order, so a new loss equal to the threshold ranks below every kept
one and "strictly above the threshold" is exactly the test to stage it.

A threshold may be preset (a *pilot*, :func:`pilot_size`):
only losses above it are kept from the start, which saves most of the
candidate traffic of the warm-up.  The kept set is still the exact top m
whenever at least m losses beat the pilot; a row that ends with
``count < m`` did not, and the engine recomputes it without a pilot.
"""

from __future__ import annotations

import math
import sys
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros
from numba.extending import intrinsic

from .base import TailState

if sys.byteorder != "little":      # the screen reads a vector comparison as an integer, loss k in bit k
    raise ImportError("the fused kernel's screen assumes a little-endian machine: use engine.fast_path=false")

TILE = 512  # scenarios per buffer: 4 KiB of float64, resident in L1
#: The fold asks for the cache lines a row will stage its candidates into this many rows ahead: a row's
#: stage was last written a whole tile of rows ago, so its lines have left the nearer caches.
STAGE_AHEAD = 4


@intrinsic
def prefetch_for_write(typingctx, array, i):
    """A hint (LLVM's ``prefetch``, no fault, no effect on any value) that ``array[i]`` of a 1-D array will be
    written soon."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False,
                                           boundscheck=False)
        bytes_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [bytes_pointer, i32, i32, i32]), "llvm.prefetch.p0")
        # rw = 1 (write), locality = 3 (keep in every level), cache = 1 (data)
        builder.call(prefetch, [builder.bitcast(pointer, bytes_pointer), i32(1), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(array, i), codegen


def stage_size(m: int) -> int:
    """Candidates staged per row before a compaction (an O(m) partition).

    With a pilot threshold about 1.6 m losses beat it over a whole run, so
    a stage of m leaves most rows to the one selection of :func:`top_m` at
    the end; only ``blocks_in_flight`` states are alive
    at a time, so the extra room is cheap.
    """
    return max(m, 64)


def empty_state(rows: int, m: int) -> TailState:
    """A state holding nothing yet: room for m + stage + tile losses (and their scenarios) per row, thresholds -inf."""
    width = m + stage_size(m) + TILE
    return TailState(np.empty((rows, width)), np.zeros(rows, dtype=np.int64), np.full(rows, -np.inf), m,
                     index=np.empty((rows, width), dtype=np.int64))


def top(state: TailState) -> tuple[np.ndarray, np.ndarray]:
    """``(values, index)``: the kept worst losses per row and their scenarios, ``[rows x m]`` in any order.

    A row with ``count < m`` holds fewer; its missing slots are -inf (scenario -1).
    The state is left as it was (the selection works on copies).
    """
    rows = state.values.shape[0]
    values, index = np.empty((rows, state.m)), np.empty((rows, state.m), dtype=np.int64)
    top_m(state.values.copy(), state.index.copy(), state.count, state.m, values, index)
    return values, index


def csr_arrays(holdings):
    """(indptr, indices, data) of a SciPy CSR matrix, with the int64 indices the kernels are compiled for."""
    return holdings.indptr.astype(np.int64), holdings.indices.astype(np.int64), holdings.data


@numba.njit(nogil=True, cache=True, inline="always")
def _ranks_below(av, ai, bv, bi):
    """Whether loss ``av`` of scenario ``ai`` ranks below loss ``bv`` of scenario ``bi``.

    A smaller loss ranks below; of equal losses the later scenario does
    (lower scenario index first, docs/methodology.md section 16).  Scenario
    indices in a row are distinct, so this is a strict total order.
    """
    return av < bv or (av == bv and ai > bi)


@numba.njit(nogil=True, cache=True)
def _select_top_indexed(a, ix, n, m):
    """Rearrange the pairs ``(a[:n], ix[:n])`` so that the m highest-ranked by :func:`_ranks_below` are in
    ``a[:m]``, ``ix[:m]`` (any order); return the m-th largest value.

    In place (Hoare's selection with a median-of-three pivot).  The kept set
    is unique even among ties: of equal values, the lower indices.
    """
    k = n - m
    lo, hi = 0, n - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        if _ranks_below(a[mid], ix[mid], a[lo], ix[lo]):
            a[mid], a[lo] = a[lo], a[mid]
            ix[mid], ix[lo] = ix[lo], ix[mid]
        if _ranks_below(a[hi], ix[hi], a[lo], ix[lo]):
            a[hi], a[lo] = a[lo], a[hi]
            ix[hi], ix[lo] = ix[lo], ix[hi]
        if _ranks_below(a[hi], ix[hi], a[mid], ix[mid]):
            a[hi], a[mid] = a[mid], a[hi]
            ix[hi], ix[mid] = ix[mid], ix[hi]
        pv, pi = a[mid], ix[mid]
        i, j = lo, hi
        while i <= j:
            while _ranks_below(a[i], ix[i], pv, pi):
                i += 1
            while _ranks_below(pv, pi, a[j], ix[j]):
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                ix[i], ix[j] = ix[j], ix[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    t = a[k]
    for i in range(m):            # source ahead of destination: a forward copy is safe
        a[i] = a[k + i]
        ix[i] = ix[k + i]
    return t


@numba.njit(nogil=True, cache=True)
def _compact_row(vals, ix, n, m):
    """Keep the m highest-ranked of the pairs (vals[:n], ix[:n]) in their first m slots; return the new count
    and threshold (the smallest kept loss).

    With fewer than m values the threshold is left to the caller (-inf, or a
    pilot threshold).
    """
    if n < m:
        return n, -np.inf
    if n == m:
        return n, vals[:m].min()
    _select_top_indexed(vals, ix, n, m)
    return m, vals[:m].min()


@numba.njit(nogil=True, cache=True)
def _accumulate(buf, w, s0, pnl_t, indices, data, start, end):
    """buf[:w] = sum over holdings p of data[p] * pnl_t[indices[p], s0:s0+w], summed in holding order.

    Up to eight holdings per pass keep the running sum in registers, and the
    first pass starts from 0.0 instead of a zeroed buffer, so a row of n
    holdings costs about n / 8 passes over the buffer (most rows hold one
    to four; a row of many holdings reads each holding's slice from L2, and
    fewer passes leave more of that bandwidth to the slices).  The additions
    happen in the same order as the reference's sparse product, starting
    from 0.0 as it does, so the losses are the same numbers bit for bit.
    """
    # Slices first: indices are then plain range variables, which LLVM
    # vectorises (an offset index s0 + s would need a wraparound check).
    s1 = s0 + w
    p = start
    if p == end:
        for s in range(w):
            buf[s] = 0.0
        return
    first = True
    while end - p >= 8:
        _add_eight_holdings(buf, w, s0, s1, pnl_t, indices, data, p, first)
        p += 8
        first = False
    while p < end:
        k = min(end - p, 4)
        _add_holdings(buf, w, s0, s1, pnl_t, indices, data, p, k, first)
        p += k
        first = False


@numba.njit(nogil=True, cache=True, inline="always")
def _add_eight_holdings(buf, w, s0, s1, pnl_t, indices, data, p, first):
    """One pass adding holdings p ... p + 7 (in order) to buf[:w], or to 0.0 when ``first``."""
    q0, q1, q2, q3 = data[p], data[p + 1], data[p + 2], data[p + 3]
    q4, q5, q6, q7 = data[p + 4], data[p + 5], data[p + 6], data[p + 7]
    c0 = pnl_t[indices[p], s0:s1]
    c1 = pnl_t[indices[p + 1], s0:s1]
    c2 = pnl_t[indices[p + 2], s0:s1]
    c3 = pnl_t[indices[p + 3], s0:s1]
    c4 = pnl_t[indices[p + 4], s0:s1]
    c5 = pnl_t[indices[p + 5], s0:s1]
    c6 = pnl_t[indices[p + 6], s0:s1]
    c7 = pnl_t[indices[p + 7], s0:s1]
    if first:
        for s in range(w):
            buf[s] = ((((((((0.0 + q0 * c0[s]) + q1 * c1[s]) + q2 * c2[s]) + q3 * c3[s]) + q4 * c4[s])
                        + q5 * c5[s]) + q6 * c6[s]) + q7 * c7[s])
    else:
        for s in range(w):
            buf[s] = ((((((((buf[s] + q0 * c0[s]) + q1 * c1[s]) + q2 * c2[s]) + q3 * c3[s]) + q4 * c4[s])
                        + q5 * c5[s]) + q6 * c6[s]) + q7 * c7[s])


@numba.njit(nogil=True, cache=True, inline="always")
def _add_holdings(buf, w, s0, s1, pnl_t, indices, data, p, k, first):
    """One pass adding holdings p ... p + k - 1 (k = 1 to 4, in order) to buf[:w], or to 0.0 when ``first``."""
    if k == 4:
        q0, q1, q2, q3 = data[p], data[p + 1], data[p + 2], data[p + 3]
        c0 = pnl_t[indices[p], s0:s1]
        c1 = pnl_t[indices[p + 1], s0:s1]
        c2 = pnl_t[indices[p + 2], s0:s1]
        c3 = pnl_t[indices[p + 3], s0:s1]
        if first:
            for s in range(w):
                buf[s] = (((0.0 + q0 * c0[s]) + q1 * c1[s]) + q2 * c2[s]) + q3 * c3[s]
        else:
            for s in range(w):
                buf[s] = (((buf[s] + q0 * c0[s]) + q1 * c1[s]) + q2 * c2[s]) + q3 * c3[s]
    elif k == 3:
        q0, q1, q2 = data[p], data[p + 1], data[p + 2]
        c0 = pnl_t[indices[p], s0:s1]
        c1 = pnl_t[indices[p + 1], s0:s1]
        c2 = pnl_t[indices[p + 2], s0:s1]
        if first:
            for s in range(w):
                buf[s] = ((0.0 + q0 * c0[s]) + q1 * c1[s]) + q2 * c2[s]
        else:
            for s in range(w):
                buf[s] = ((buf[s] + q0 * c0[s]) + q1 * c1[s]) + q2 * c2[s]
    elif k == 2:
        q0, q1 = data[p], data[p + 1]
        c0 = pnl_t[indices[p], s0:s1]
        c1 = pnl_t[indices[p + 1], s0:s1]
        if first:
            for s in range(w):
                buf[s] = (0.0 + q0 * c0[s]) + q1 * c1[s]
        else:
            for s in range(w):
                buf[s] = (buf[s] + q0 * c0[s]) + q1 * c1[s]
    else:
        q0 = data[p]
        c0 = pnl_t[indices[p], s0:s1]
        if first:
            for s in range(w):
                buf[s] = 0.0 + q0 * c0[s]
        else:
            for s in range(w):
                buf[s] = buf[s] + q0 * c0[s]


@intrinsic
def below_mask(typingctx, array, start, bound):
    """A ``uint64`` whose bit k is ``array[start + k] < bound``, k = 0 ... 63 (a C-contiguous 1-D float64 array
    holding at least ``start + 64`` values; a NaN is never below).

    One vector comparison of 64 losses (LLVM: ``fcmp olt <64 x double>``,
    the mask bitcast to an integer, element k in bit k): the screen then
    visits only the set bits, and no loss costs a branch or a byte of its
    own.
    """
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"
            and array.dtype == types.float64):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False,
                                           boundscheck=False)
        lanes = ir.VectorType(ir.DoubleType(), 64)
        losses = builder.load(builder.bitcast(pointer, lanes.as_pointer()), align=8)
        splat = builder.insert_element(ir.Constant(lanes, ir.Undefined), args[2], ir.IntType(32)(0))
        splat = builder.shuffle_vector(splat, ir.Constant(lanes, ir.Undefined),
                                       ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64))
        return builder.bitcast(builder.fcmp_ordered("<", losses, splat), ir.IntType(64))
    return types.uint64(array, start, bound), codegen


@numba.njit(nogil=True, cache=True, inline="always")
def _screen_indexed(buf, w, thr, row, rix, c, base, at=0):
    """Append the losses -buf[:w] above thr to ``row[at + c ...]`` and their scenarios (``base + s`` for
    ``buf[s]``) to ``rix``, in scenario order; return the new count c.

    ``at`` is where a row starts in a flattened state, so the fold takes no
    view per row.  Few losses beat the threshold (about 1.6 m of N over a
    run): each group of 64 is compared at once into a bit mask
    (:func:`below_mask`) and each set bit is found by counting trailing
    zeros, so a group without a candidate costs one test and a candidate
    one turn of a short loop.  ``buf`` is C-contiguous.
    """
    nthr = -thr
    whole = w - w % 64
    for g in range(0, whole, 64):
        word = below_mask(buf, g, nthr)
        while word != 0:              # one turn per set bit, lowest scenario first
            s = g + trailing_zeros(word)
            row[at + c] = -buf[s]
            rix[at + c] = base + s
            c += 1
            word &= word - np.uint64(1)
    for s in range(whole, w):
        if buf[s] < nthr:
            row[at + c] = -buf[s]
            rix[at + c] = base + s
            c += 1
    return c


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "nsz"})
def _count_exceedances(buf, w, limits, hits, excess, r):
    """Add the exceedances of row r's limits by the losses -buf[:w] (a NaN limit is never exceeded).

    Branch-free, and the sums may be regrouped (``reassoc``), so LLVM
    vectorises them: counts are exact, an excess sum differs from a
    sequential one only in its last bits.
    """
    for k in range(limits.shape[1]):
        t = limits[r, k]
        if not t < np.inf:             # NaN: this row is not counted against this limit
            continue
        c = 0.0
        e = 0.0
        for s in range(w):
            d = -buf[s] - t
            c += 1.0 if d > 0.0 else 0.0
            e += d if d > 0.0 else 0.0
        hits[r, k] += c
        excess[r, k] += e


@numba.njit(nogil=True, cache=True)
def count_exceedances(indptr, indices, data, pnl_t, limits, hits, excess, stop):
    """Add to ``hits``/``excess`` [rows x K] the exceedances of ``limits`` by the losses ``-(H @ pnl_t)`` of a chunk.

    The same sums as :func:`fold_chunk_fused`, counted instead of kept: for
    the rows whose limit lies below their kept tail (docs/architecture.md,
    "Exceedances").
    """
    n = min(stop, pnl_t.shape[1])          # the chunk's first ``stop`` scenarios
    buf = np.empty(TILE)
    for s0 in range(0, n, TILE):
        w = min(TILE, n - s0)
        for r in range(indptr.size - 1):
            _accumulate(buf, w, s0, pnl_t, indices, data, indptr[r], indptr[r + 1])
            _count_exceedances(buf, w, limits, hits, excess, r)


@numba.njit(nogil=True, cache=True, inline="always")
def _take(values, index, at, c, thr, buf, w, m, full, base):
    """Fold the losses ``-buf[:w]`` of scenarios ``base ...`` into one row's tail (``c`` held, threshold
    ``thr``); return (c, thr).

    The row's losses and scenarios start at ``at`` in the flattened state
    ``values``, ``index`` (so the fold takes no view per row).  Warming up
    (no threshold yet) whole tiles are copied in; once a threshold is set
    (running or pilot) only losses above it are staged, and a full stage is
    compacted back to the top m.
    """
    if thr == -np.inf:             # warming up, no threshold yet: keep everything
        for s in range(w):
            values[at + c + s] = -buf[s]
            index[at + c + s] = base + s
        c += w
        if c >= m:
            c, thr = _compact_row(values[at:], index[at:], c, m)
    else:                          # running (or pilot) threshold: keep only what beats it
        c = _screen_indexed(buf, w, thr, values, index, c, base, at)
        if c > full:
            c, thr = _compact_row(values[at:], index[at:], c, m)
    return c, thr


@numba.njit(nogil=True, cache=True)
def fold_chunk_fused(indptr, indices, data, pnl_t, values, index, count, threshold, m, tile, offset):
    """Fold the losses ``-(H @ pnl_t)`` of one chunk (scenarios ``offset ...``) into the row tails, in place.

    ``pnl_t`` is ``[columns x scenarios]``, C-contiguous, so each holding adds
    a contiguous row slice to the buffer (vectorised by LLVM).  Rows are the
    outer loop within a tile so the tile of ``pnl_t`` stays in cache.
    ``values`` (and ``index``, their scenarios) must have room for m + stage + tile losses per row.
    """
    none = np.zeros((indptr.size - 1, 0))
    fold_chunk_fused_from(indptr, indices, data, pnl_t, values, index, count, threshold, m, tile, 0, offset, none,
                          none, none, np.zeros(indptr.size - 1, dtype=np.bool_), np.arange(indptr.size - 1))


@numba.njit(nogil=True, cache=True)
def fold_chunk_fused_from(indptr, indices, data, pnl_t, values, index, count, threshold, m, tile, first, offset,
                          limits, hits, excess, counting, active):
    """:func:`fold_chunk_fused` of the chunk's scenarios from ``first`` on (column s is scenario ``offset + s``).

    The first chunk of a row block with a pilot starts after the pilot
    sample, whose losses :func:`pilot_fold` has already folded in.  Rows
    flagged in ``counting`` also count their exceedances of ``limits``
    [rows x K] (NaN: not counted) into ``hits`` and ``excess`` from the
    same buffer (a pool margined below its pilot threshold: docs/architecture.md,
    "Exceedances").  Only the rows listed in ``active`` are folded (the
    others: :func:`single_position_tails`).
    """
    if values.shape[1] < m + tile:
        raise ValueError("values must hold m + stage + tile losses per row")
    n_rows = active.size
    n = pnl_t.shape[1]
    buf = np.empty(tile)
    width = values.shape[1]
    full = width - tile                    # compact once more than this is held
    flat_values, flat_index = values.ravel(), index.ravel()      # C-contiguous: views
    for s0 in range(first, n, tile):
        w = min(tile, n - s0)
        for j in range(n_rows):
            r = active[j]
            if j + STAGE_AHEAD < n_rows:   # the lines a later row will stage into: on their way meanwhile
                ahead = active[j + STAGE_AHEAD]
                at = ahead * width + count[ahead]
                prefetch_for_write(flat_values, at)
                prefetch_for_write(flat_index, at)
            _accumulate(buf, w, s0, pnl_t, indices, data, indptr[r], indptr[r + 1])
            if counting[r]:
                _count_exceedances(buf, w, limits, hits, excess, r)
            c, thr = _take(flat_values, flat_index, r * width, count[r], threshold[r], buf, w, m, full, offset + s0)
            count[r] = c
            threshold[r] = thr


# Radix selection (:func:`_mth_largest`).
_U1 = np.uint64(1)
_SIGN = np.uint64(1 << 63)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
#: Bits counted per pass of the radix selection (2048 counts: L1-resident).
DIGIT = 11


@numba.njit(nogil=True, cache=True, inline="always")
def _order_key(bits):
    """An unsigned integer ordered as the float64 whose bits these are (-0.0 just below +0.0; no NaN)."""
    return bits ^ _ALL if bits & _SIGN else bits | _SIGN


@numba.njit(nogil=True, cache=True)
def _mth_largest(a, n, m, hist, keys):
    """The m-th largest of ``a[:n]`` (1 <= m <= n, no NaN): the value a partition puts there; ``a`` is not moved.

    A most-significant-digit radix selection on order-preserving integer
    keys (:func:`_order_key`): the bits every key shares are skipped, then
    each pass counts the remaining keys by their next 11 bits (``hist``: at
    least 2048 counts), keeps only those of the bucket holding the answer
    (in ``keys``, scratch of at least n), and skips the bits they all share,
    until one key is left.  The first pass reads all n values, the next ones
    a few percent of them; no branch depends on a comparison of values:
    several times faster than a quickselect on a copy.
    """
    bits = a.view(np.uint64)
    lo = _ALL
    hi = np.uint64(0)
    for i in range(n):
        x = _order_key(bits[i])
        keys[i] = x
        lo = min(lo, x)
        hi = max(hi, x)
    k = n - m                      # the k-th smallest, 0-based
    c = n
    while lo != hi:
        shift = np.uint64(64) - leading_zeros(lo ^ hi)     # bits at or above shift: the same in every key left
        # About c / 2 buckets (16 to 2^DIGIT): clearing and scanning the counts costs no more than counting.
        d = min(np.uint64(DIGIT), shift, max(np.uint64(4), np.uint64(63) - leading_zeros(np.uint64(c))))
        shift -= d
        mask = (_U1 << d) - _U1
        hist[:np.int64(_U1 << d)] = 0
        for i in range(c):
            hist[np.int64((keys[i] >> shift) & mask)] += 1
        acc = 0
        b = 0
        while acc + hist[b] <= k:
            acc += hist[b]
            b += 1
        k -= acc
        bucket = np.uint64(b)
        kept = 0
        lo = _ALL
        hi = np.uint64(0)
        for i in range(c):
            x = keys[i]
            if (x >> shift) & mask == bucket:
                keys[kept] = x
                kept += 1
                lo = min(lo, x)
                hi = max(hi, x)
        c = kept
    keys[0] = _from_order_key(lo)     # back to the float's bits, read as a float
    return keys[:1].view(np.float64)[0]


@numba.njit(nogil=True, cache=True, inline="always")
def _from_order_key(key):
    """The float64 bits whose order key (:func:`_order_key`) this is."""
    return key ^ _SIGN if key & _SIGN else key ^ _ALL


@numba.njit(nogil=True, cache=True)
def sort_rows(a):
    """Sort every row of ``a`` [rows x n] (float64, C-contiguous, no NaN) in ascending order, in place.

    The same array as ``a.sort(axis=1)``: a least-significant-digit radix
    sort on the order keys (:func:`_order_key`), eight bits a pass; one read
    counts every digit, and a digit every key of the row shares (the sign
    and the high exponent bits, for a row's worst losses) costs no pass:
    about 25% less time than NumPy's sort on rows of a thousand.  A row in
    falling order (a single-position row's tail) is only reversed.  The keys put
    -0.0 before +0.0, where NumPy's sort leaves them in any order: the
    kernels' losses are never +0.0 (a sum that starts from 0.0 is never
    -0.0), so the sorted rows are the same.
    """
    rows, n = a.shape
    bits = a.view(np.uint64)
    keys = np.empty(n, dtype=np.uint64)
    other = np.empty(n, dtype=np.uint64)
    count = np.empty((8, 256), dtype=np.uint64)   # unsigned: no wraparound checks (11% faster)
    for r in range(rows):
        falling = True             # a single-position row's tail comes in falling order: reversed, not sorted
        for i in range(1, n):
            if a[r, i] > a[r, i - 1]:
                falling = False
                break
        if falling:
            for i in range(n // 2):
                a[r, i], a[r, n - 1 - i] = a[r, n - 1 - i], a[r, i]
            continue
        lo, hi = _ALL, np.uint64(0)
        for i in range(n):
            x = _order_key(bits[r, i])
            keys[i] = x
            lo = min(lo, x)
            hi = max(hi, x)
        # Digits wholly above the highest bit in which two keys differ are shared by all: no pass.
        digits = (64 - np.int64(leading_zeros(lo ^ hi)) + 7) // 8 if lo != hi else 0
        count[:digits, :] = 0
        for i in range(n):
            x = keys[i]
            for d in range(digits):
                count[d, (x >> np.uint64(8 * d)) & np.uint64(255)] += _U1
        src, dst = keys, other
        for d in range(digits):
            shared = False
            for b in range(256):
                shared |= count[d, b] == np.uint64(n)
            if shared:
                continue
            at = np.uint64(0)
            for b in range(256):             # bucket starts
                c = count[d, b]
                count[d, b] = at
                at += c
            shift = np.uint64(8 * d)
            for i in range(n):
                x = src[i]
                b = (x >> shift) & np.uint64(255)
                dst[count[d, b]] = x
                count[d, b] += _U1
            src, dst = dst, src
        for i in range(n):
            bits[r, i] = _from_order_key(src[i])


@numba.njit(nogil=True, cache=True)
def top_m(values, index, count, m, out, out_index):
    """``out[r]`` = the m highest-ranked losses held by row r and ``out_index[r]`` their scenarios, in any order
    (rows holding fewer: theirs, then -inf of scenario -1; rows of count -1 are not written).

    Per row: the m-th largest loss t by a radix selection
    (:func:`_mth_largest`), then one pass keeping every loss above t
    and, of the losses equal to t, those of the lowest scenarios (ties to the
    lower scenario, :func:`_ranks_below`).  The held losses are left in place.
    """
    hist = np.empty(1 << DIGIT, dtype=np.int64)
    keys = np.empty(values.shape[1], dtype=np.uint64)
    tied = np.empty(values.shape[1], dtype=np.int64)
    for r in range(values.shape[0]):
        n = count[r]
        if n < 0:
            continue
        row = values[r]
        rix = index[r]
        if n <= m:
            for i in range(n):
                out[r, i] = row[i]
                out_index[r, i] = rix[i]
            for i in range(n, m):
                out[r, i] = -np.inf
                out_index[r, i] = -1
            continue
        t = _mth_largest(row, n, m, hist, keys)
        c = 0
        nt = 0
        dest = out[r]
        dest_index = out_index[r]
        for i in range(n):          # branch-free: fewer than m losses exceed t, so c < m stays in bounds
            v = row[i]
            dest[c] = v
            dest_index[c] = rix[i]
            c += v > t
            tied[nt] = rix[i]
            nt += v == t
        if nt > m - c:               # more losses equal to t than places left: the lowest scenarios
            tied[:nt] = np.sort(tied[:nt])
        for i in range(m - c):
            out[r, c + i] = t
            out_index[r, c + i] = tied[i]


#: Losses the pilot's selection reads first to guess a bound (:func:`_jth_largest_loss`).
GUESS_SAMPLE = 512


@numba.njit(nogil=True, cache=True)
def _jth_largest_loss(sums, n, j, work, work_index, hist, keys):
    """``(t, c)``: t the j-th largest of the losses ``-sums[:n]`` (j <= n), the value a partition of all n
    puts there; and the c losses above a guess below t, kept in ``work[:c]`` with their positions in
    ``work_index[:c]``, in order (c = -1 when the guess failed).

    A guess below t first: a somewhat larger order statistic of the first
    few hundred losses (about twice the share j / n, scenarios being
    independent draws).  Every loss above the guess is then collected by one
    vectorised screen (:func:`_screen_indexed`), about 2 j of them, and the
    j-th largest is selected among them: exact, since the j largest all beat
    the guess.  If fewer than j do (a first sample unlike the rest, e.g.
    sorted input), t is selected from all n.  Selections are radix selections
    (:func:`_mth_largest`: nothing is moved).  ``work`` and ``work_index``
    hold at least n values, ``hist`` and ``keys`` the scratch of
    :func:`_mth_largest`; ``sums`` is C-contiguous.
    """
    e = min(n, max(8 * j, GUESS_SAMPLE))
    if e < n:
        for s in range(e):
            work[s] = -sums[s]
        guess = _mth_largest(work, e, min(e, 4 + (2 * j * e + n - 1) // n), hist, keys)
        c = _screen_indexed(sums, n, guess, work, work_index, 0, 0)
        if c >= j:
            return _mth_largest(work, c, j, hist, keys), c
    for s in range(n):
        work[s] = -sums[s]
    return _mth_largest(work, n, j, hist, keys), -1


@numba.njit(nogil=True, cache=True)
def pilot_fold(indptr, indices, data, pnl_t, values, index, count, threshold, m, sample, j, tile, block, active):
    """Pilot thresholds, and the pilot sample folded in, for every row of a block.

    For each row: the losses of the first ``sample`` scenarios of ``pnl_t``
    (the same sums as :func:`fold_chunk_fused`), its threshold = their j-th
    largest (-inf for a row with no holdings, which loses exactly 0), and
    then those losses folded into the row's tail exactly as
    :func:`fold_chunk_fused` would fold them with that threshold: the losses
    above it staged in scenario order, taken from the selection's own
    candidates (:func:`_jth_largest_loss`) when it has them.  The
    chunk's fold then starts at scenario ``sample``
    (:func:`fold_chunk_fused_from`): no sample loss is formed twice.
    ``block`` rows are done at once, each tile of ``pnl_t`` serving them all
    while it is in cache.  Only the rows listed in ``active`` get a pilot
    (the others are not folded).
    """
    if values.shape[1] < m + tile:
        raise ValueError("values must hold m + stage + tile losses per row")
    n_rows = active.size
    sums = np.empty((block, sample))
    buf = np.empty(tile)
    work = np.empty(sample)
    work_index = np.empty(sample, dtype=np.int64)
    hist = np.empty(1 << DIGIT, dtype=np.int64)
    keys = np.empty(sample, dtype=np.uint64)
    width = values.shape[1]
    full = width - tile
    flat_values, flat_index = values.ravel(), index.ravel()      # C-contiguous: views
    for r0 in range(0, n_rows, block):
        nr = min(block, n_rows - r0)
        for s0 in range(0, sample, tile):
            w = min(tile, sample - s0)
            for i in range(nr):
                r = active[r0 + i]
                _accumulate(buf, w, s0, pnl_t, indices, data, indptr[r], indptr[r + 1])
                sums[i, s0:s0 + w] = buf[:w]
        for i in range(nr):
            r = active[r0 + i]
            row_sums = sums[i]
            c = count[r]
            row, rix = values[r], index[r]
            if indptr[r + 1] == indptr[r]:
                thr, got = -np.inf, -1
            else:
                thr, got = _jth_largest_loss(row_sums, sample, j, work, work_index, hist, keys)
            if got >= 0:                  # the candidates above the guess hold every loss above thr
                for k in range(got):
                    if work[k] > thr:
                        row[c] = work[k]
                        rix[c] = work_index[k]
                        c += 1
                if c > full:
                    c, thr = _compact_row(row, rix, c, m)
            else:
                for s0 in range(0, sample, tile):
                    w = min(tile, sample - s0)
                    c, thr = _take(flat_values, flat_index, r * width, c, thr, row_sums[s0:s0 + w], w, m, full, s0)
            count[r] = c
            threshold[r] = thr


# Pilot thresholds (docs/architecture.md, "Pilot thresholds").

#: With a pilot, each row's threshold is set so that about this many times m
#: losses are expected above it over the whole run.
PILOT_FACTOR = 1.6
#: Fewest pilot order statistics a threshold is read from.
PILOT_MIN = 16
#: Pilot sample: the first scenarios of the first chunk.  Its losses are
#: materialised, each row's threshold is selected from them and they are
#: folded in with it (the first chunk's fold starts after the sample), so
#: the sample costs one streaming selection per row on top of the fold.
PILOT_SCENARIOS = 4096
#: Rows whose pilot samples are materialised at once (each tile of the
#: chunk's P&L serves them all while it is in cache; their 16 x 4,096
#: losses, 512 KiB, stay in L2: 8% less pilot time than 64 rows).
PILOT_ROWS = 16


def pilot_size(m: int, n: int, chunk: int):
    """(sample, j): a row's pilot threshold is the j-th largest of its first ``sample`` losses.

    With ``j = 1.6 m sample / N`` about 1.6 m losses are expected above it
    over the run; the sampling error of a j-th order statistic is about
    1 / sqrt(j) relative, so fewer than m (a recompute) is rare.  None
    when a pilot does not pay: a single chunk, or a threshold that would
    sit in the middle of the sample.
    """
    if chunk >= n:
        return None
    sample = min(chunk, PILOT_SCENARIOS)
    j = max(PILOT_MIN, math.ceil(PILOT_FACTOR * m * sample / n))
    return (sample, j) if 4 * j <= sample else None


def pilot_state(holdings, pnl_t, m, pilot, active=None) -> TailState:
    """The tail state of a row block after its pilot sample, each row's threshold its pilot threshold.

    A row's pilot threshold is the j-th largest of its losses over the first
    ``sample`` scenarios; those losses are folded in with it, so the first
    chunk's fold starts after the sample (``TailState.skip``).  A row with no holdings loses exactly 0 in every
    scenario: it gets no pilot (-inf), since no loss would beat a threshold of 0.  Only the rows listed in
    ``active`` (default: all) get a pilot.
    """
    sample, j = pilot
    indptr, indices, data = csr_arrays(holdings)
    state = empty_state(holdings.shape[0], m)
    active = np.arange(holdings.shape[0]) if active is None else active
    pilot_fold(indptr, indices, data, pnl_t, state.values, state.index, state.count, state.threshold, m, sample, j,
               TILE, PILOT_ROWS, active)
    state.skip = sample
    return state


# Rows holding a single position (docs/architecture.md, "Single-position rows").

#: Scenarios listed per (column, side) beyond the tail size, so that losses tied at the tail's edge are seen.
SINGLE_SLACK = 64


def single_position_rows(holdings) -> np.ndarray:
    """Whether each row of a CSR block holds exactly one position (one stored entry)."""
    return np.diff(holdings.indptr) == 1


def worst_first(pnl, side, length):
    """The ``length`` scenarios of a column's P&L ``pnl`` [scenarios] that are worst for a holding of sign
    ``side`` (+1: lowest P&L first; -1: highest first), in that order, equal P&L by scenario index: ``(pnl
    in that order, scenarios)``."""
    key = pnl if side > 0 else -pnl
    picked = np.argpartition(key, length - 1)[:length] if length < key.size else np.arange(key.size)
    order = picked[np.lexsort((picked, key[picked]))]
    return pnl[order], order


@numba.njit(nogil=True, cache=True)
def single_position_tails(quantity, which, pnl, scenario, m, n, rows, out, out_index):
    """The exact top m of rows holding one position each, from their column's worst scenarios, written to
    ``out[rows[r]]`` and ``out_index[rows[r]]``; whether each row's is exact (rows not exact are not written).

    Row r holds ``quantity[r]`` of a column whose P&L, listed worst first
    for the holding's sign (:func:`worst_first`), is ``pnl[which[r]]``, of
    scenarios ``scenario[which[r]]`` (at least m of the n scenarios).  Its
    losses are ``-(0.0 + q * x)``, the fold's sum for one holding, so the same
    numbers; rounding is monotone, so they fall (weakly) along the list, and
    the row's m largest are the list's first m, except that losses equal to
    the m-th, t, are ranked by scenario: of that run of equal losses, the
    lowest scenarios are kept.  When the run reaches the end of a list that
    does not hold all n scenarios, a loss equal to t may lie beyond it: the
    row is marked not exact (False) and left to the fold.
    """
    length = pnl.shape[1]
    loss = np.empty(length)
    exact = np.ones(quantity.size, dtype=np.bool_)
    for r in range(quantity.size):
        q, k = quantity[r], which[r]
        for i in range(length):
            loss[i] = -(0.0 + q * pnl[k, i])
        t = loss[m - 1]
        a = m - 1                  # the run of losses equal to t: [a, b)
        while a > 0 and loss[a - 1] == t:
            a -= 1
        b = m
        while b < length and loss[b] == t:
            b += 1
        if b == length and length < n:
            exact[r] = False
            continue
        dest = rows[r]
        for i in range(a):
            out[dest, i] = loss[i]
            out_index[dest, i] = scenario[k, i]
        tied = np.sort(scenario[k, a:b])
        for i in range(m - a):
            out[dest, a + i] = t
            out_index[dest, a + i] = tied[i]
    return exact


class FusedKernel:
    """:class:`~.base.TailKernel` of the compiled CPU fast path (NumPy backend only).

    Rows holding a single position are not folded: their tails are read at
    the end from their column's worst scenarios (:func:`single_position_tails`),
    listed once per run for each column and side.  Nor are rows holding two
    positions of a pair of columns that many rows of the run hold
    (:meth:`plan`): each walks a list of the pair's scenarios made once per
    run for its direction (:mod:`.pairs`).
    """

    label = "fused (numba)"
    transposed = True          # streams column rows of pnl: [factors x scenarios]

    def __init__(self):
        # The run's lists (worst scenarios of a column and side; a pair's direction lists), by key, made
        # once (:meth:`_made_once`); they belong to the run whose first P&L chunk is self._run_of.
        self._made, self._making, self._run_of = {}, {}, None
        self._lock = threading.Lock()

    def __getstate__(self):    # sent to a distributed worker: without the lists and the lock
        return {}

    def __setstate__(self, state):
        self.__init__()

    @staticmethod
    def sort_rows(tails):
        """The final tails sorted per row, in place where they lie (:func:`sort_rows`: NumPy's sort's array)."""
        tails = np.require(tails, np.float64, ["C", "W"])
        sort_rows(tails)
        return tails

    @staticmethod
    def row_bytes(m, chunk):
        """The tail state's losses and scenarios (:func:`empty_state`): no loss is kept per chunk, so a block
        of the same budget holds about three times the rows of the reference's (fewer, larger blocks: the
        per-block work of the finish, the attribution's pass over every chunk's P&L included, is spread
        over more rows; 100,000 x 100,000: 1,669 rows a block against 733, engine 7.1 -> 6.4 s)."""
        return 16 * (m + stage_size(m) + TILE)

    def plan(self, m, n_scenarios, chunk, holdings):
        """``{"pilot": [sample, j] or None, "pairs": [[first, second], ...]}``: the pilot's size
        (:func:`pilot_size`) and the pairs of columns whose rows walk lists (:func:`.pairs.popular_pairs`)."""
        from .pairs import popular_pairs

        pilot = pilot_size(m, n_scenarios, chunk)
        return {"pilot": None if pilot is None else list(pilot), "pairs": popular_pairs(holdings, m, n_scenarios)}

    def prepare(self, holdings):
        return holdings

    def start(self, holdings, first_pnl, m, plan, limits=None, listed=True):
        """The pilot's state (or an empty one), counting in the folds the rows whose ``limits`` lie below
        their pilot threshold: they would not be exact from the kept tail (:meth:`count` otherwise).

        With ``listed``, rows holding one position, and rows holding two of one
        of the plan's pairs, are left out of the folds (``state.listed``;
        :meth:`finish` reads their tails from lists).
        """
        from .pairs import two_position_rows

        rows = holdings.shape[0]
        pilot = None if plan is None else plan["pilot"]
        left_out = single_position_rows(holdings) if listed else np.zeros(rows, dtype=bool)
        if listed and plan is not None:
            left_out |= two_position_rows(holdings, plan["pairs"])
        state = (empty_state(rows, m) if pilot is None
                 else pilot_state(holdings, first_pnl, m, tuple(pilot), np.flatnonzero(~left_out)))
        state.listed = left_out
        k = 0 if limits is None else limits.shape[1]
        state.hits, state.excess = np.zeros((rows, k)), np.zeros((rows, k))
        below = (np.zeros((rows, k), dtype=bool) if pilot is None or limits is None
                 else limits < state.threshold[:, None])                  # NaN limits compare False
        state.limits = np.ascontiguousarray(np.where(below, limits, np.nan)) if k else np.zeros((rows, 0))
        state.counting = below.any(axis=1)
        if state.counting.any():           # the pilot folded the sample in: count it for those rows now
            flagged = np.flatnonzero(state.counting)
            h, e = np.zeros((flagged.size, k)), np.zeros((flagged.size, k))
            count_exceedances(*csr_arrays(holdings[flagged]), first_pnl, state.limits[flagged], h, e, pilot[0])
            state.hits[flagged], state.excess[flagged] = h, e
        return state

    def fold(self, state, holdings, pnl_t, m):
        """Fold the chunk's scenarios into ``state``, from ``state.skip`` on (those before: a pilot's sample)."""
        if state is None:
            state = self.start(holdings, None, m, None, listed=False)
        fold_chunk_fused_from(*csr_arrays(holdings), pnl_t, state.values, state.index, state.count, state.threshold, m,
                              TILE, state.skip, state.offset, state.limits, state.hits, state.excess, state.counting,
                              np.flatnonzero(~state.listed))
        state.skip = 0
        state.offset += pnl_t.shape[1]
        return state

    def finish(self, state, holdings, pnls, m):
        """The top m of every row and their scenarios; rows that kept fewer than m losses (a pilot threshold
        above their m-th largest, rare by design) are folded again over every chunk with no threshold: exact.
        Single-position rows are read from their column's worst scenarios, two-position rows walk their
        direction's list; the rare one whose tail is not settled there is folded again too."""
        rows = state.values.shape[0]
        held = np.diff(holdings.indptr)
        single = state.listed & (held == 1)
        pairs = np.flatnonzero(state.listed & (held == 2))
        if pairs.size:       # into the state, as a fold would leave them (count 0: not settled)
            self._two_position_tails(holdings, pairs, pnls, m, state)
        kept, scenario = np.empty((rows, m)), np.empty((rows, m), dtype=np.int64)
        # The state is spent: reordered.  Single-position rows hold nothing in it; they are written below (read
        # off their lists, or folded again with the short rows).
        count = np.where(single, -1, state.count)
        top_m(state.values, state.index, count, m, kept, scenario)
        short = np.flatnonzero((state.count < m) & ~single)
        if single.any():
            unsettled = self._single_position_tails(holdings, np.flatnonzero(single), pnls, m, kept, scenario)
            short = np.union1d(short, unsettled)
        if short.size:
            again, rows = None, holdings[short]
            for p in pnls:
                again = self.fold(again, rows, p, m)
            kept[short], scenario[short] = top(again)
        return kept, scenario, int(short.size)

    def _two_position_tails(self, holdings, rows, pnls, m, state):
        """Walk each two-position row in ``rows`` through its pair's list for its direction (:mod:`.pairs`),
        leaving its tail candidates in ``state`` (``count`` 0 where the walk does not settle it)."""
        from .pairs import LIST_FACTOR, walk_pair_rows

        at = holdings.indptr[rows]
        first, second = holdings.indices[at].astype(np.int64), holdings.indices[at + 1].astype(np.int64)
        q0, q1 = holdings.data[at].astype(np.float64), holdings.data[at + 1].astype(np.float64)
        n = sum(p.shape[1] for p in pnls)
        length = min(n, LIST_FACTOR * m + 512)
        state.count[rows] = 0
        pair = first * holdings.shape[1] + second
        order = np.argsort(pair, kind="stable")             # the rows of each pair together: one call a pair
        cuts = np.flatnonzero(np.diff(pair[order])) + 1
        for on in np.split(order, cuts):
            space = self._pair_space(pnls, int(first[on[0]]), int(second[on[0]]), length)
            if space.usable:
                walk_pair_rows(rows[on], q0[on], q1[on], space.lower, *space.fan(), n, m, state.values, state.index,
                               state.count)

    def _pair_space(self, pnls, first, second, length):
        """The :class:`.pairs.PairSpace` of two columns over every chunk with its direction lists, made once per
        run (the row blocks share it)."""
        from .pairs import PairSpace

        def make():
            space = PairSpace(np.stack([np.concatenate([p[first] for p in pnls]),
                                        np.concatenate([p[second] for p in pnls])]), length)
            if space.usable:
                space.fan()
            return space

        return self._made_once(pnls, ("pair", first, second, length), make)

    def _made_once(self, pnls, key, make):
        """``make()``, once per run for ``key``: a row block that asks while another block is making it waits
        for that one instead of making it again (both threads start on the same lists)."""
        with self._lock:
            if self._run_of is not pnls[0]:
                self._made, self._making, self._run_of = {}, {}, pnls[0]
            made, making = self._made, self._making.setdefault(key, threading.Lock())
        with making:
            if key not in made:
                made[key] = make()
            return made[key]

    def _single_position_tails(self, holdings, rows, pnls, m, kept, scenario):
        """Fill ``kept`` and ``scenario`` for the single-position ``rows``; the rows left unsettled."""
        columns = holdings.indices[holdings.indptr[rows]].astype(np.int64)
        quantity = holdings.data[holdings.indptr[rows]].astype(np.float64)
        side = np.where(quantity > 0, 1, -1)
        n = sum(p.shape[1] for p in pnls)
        length = min(n, m + SINGLE_SLACK)
        keys = list(zip(columns.tolist(), side.tolist()))
        lists = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        listed = [self._worst_first(pnls, column, sd, length) for column, sd in lists]
        pnl = np.stack([x for x, _ in listed])
        scen = np.stack([i for _, i in listed])
        which = np.array([lists[key] for key in keys], dtype=np.int64)
        exact = single_position_tails(quantity, which, pnl, scen, m, n, np.asarray(rows, dtype=np.int64), kept,
                                      scenario)
        return rows[~exact]

    def _worst_first(self, pnls, column, side, length):
        """:func:`worst_first` of one column over every chunk, listed once per run (the row blocks share it)."""
        return self._made_once(pnls, ("worst", column, side, length),
                               lambda: worst_first(np.concatenate([p[column] for p in pnls]), side, length))

    def count(self, holdings, rows, pnls, limits):
        """``(hits, excess)`` [len(rows) x K] of ``limits`` by the losses of ``rows`` over every chunk."""
        hits, excess = np.zeros(limits.shape), np.zeros(limits.shape)
        arrays = csr_arrays(holdings[rows])
        limits = np.ascontiguousarray(limits, dtype=float)
        for p in pnls:
            count_exceedances(*arrays, p, limits, hits, excess, p.shape[1])
        return hits, excess
