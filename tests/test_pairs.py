"""Two-position rows (mcmargin/engine/kernels/pairs.py): tails walked from per-direction lists, checked
against every loss formed and ranked by brute force."""

import contextlib

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from mcmargin.engine.kernels import fused as fastpath, pairs
from oracles import brute_force_tails


def _block(rows, columns):
    h = sp.csr_matrix((np.array([v for r in rows for _, v in r], dtype=float),
                       np.array([c for r in rows for c, _ in r]), np.cumsum([0] + [len(r) for r in rows])),
                      shape=(len(rows), columns))
    h.sort_indices()
    return h


@contextlib.contextmanager
def _popular_from(rows):
    """Pairs held by at least ``rows`` rows listed (the run's default asks for a thousand)."""
    saved = pairs.PAIR_ROWS_MIN
    pairs.PAIR_ROWS_MIN = rows
    try:
        yield
    finally:
        pairs.PAIR_ROWS_MIN = saved


def _engine_tails(h, chunks, m):
    """The fused kernel as the engine runs it (pilot, folds, finish): tails ranked (loss down, then scenario),
    rows recomputed, and the rows it left out of the folds."""
    kernel = fastpath.FusedKernel()
    n = sum(c.shape[1] for c in chunks)
    with _popular_from(16):
        plan = kernel.plan(m, n, chunks[0].shape[1], h)
    state = kernel.start(h, chunks[0], m, plan)
    listed = state.listed.copy()
    for c in chunks:
        state = kernel.fold(state, h, c, m)
    top, scenario, recomputed = kernel.finish(state, h, chunks, m)
    order = np.lexsort((scenario, -top), axis=1)
    return np.take_along_axis(top, order, 1), np.take_along_axis(scenario, order, 1), recomputed, listed


@settings(max_examples=40, deadline=None)
@given(n=st.integers(80, 4000), m=st.integers(1, 60), chunks=st.integers(1, 4),
       kind=st.sampled_from(["t", "rounded", "hedged", "degenerate", "few_scenarios"]), seed=st.integers(0, 2**31))
def test_two_position_rows_get_the_exact_tail_of_the_fold(n, m, chunks, kind, seed):
    """Rows holding one of two popular pairs (both signs, every angle, near-perfect hedges of correlated
    columns) get the brute force's losses and scenarios bit for bit, ties by scenario included: heavy-tailed
    P&L, P&L rounded to a few values (long runs of equal losses), a column that is all zeros or a multiple
    of another (whitening refused: folded), and runs so short that the lists hold every scenario."""
    g = np.random.default_rng(seed)
    m = min(m, n)
    m = min(m, n // pairs.TAIL_SHARE_MAX)                 # larger tails are folded
    if kind == "few_scenarios":
        n, m = min(n, 300), min(m, 7)
    common = g.standard_t(3, size=n)
    pnl = np.stack([common + 0.3 * g.standard_t(3, size=n), 0.8 * common + 0.5 * g.standard_t(4, size=n),
                    g.standard_t(3, size=n) * 50.0, g.normal(size=n), g.normal(size=n)])
    if kind == "rounded":
        pnl = np.round(pnl, 0)
    elif kind == "degenerate":
        pnl[3] = 0.0
        pnl[4] = 2.0 * pnl[2]
    rows = []
    for k in range(20):                                 # popular pairs (16 rows or more): listed
        angle = g.uniform(0, 2 * np.pi) if k > 3 else k * np.pi / 2 + 1e-9 * (k + 1)   # and near the axes
        scale = 10.0 ** g.uniform(-3, 3)
        rows.append([(0, scale * np.cos(angle)), (1, scale * np.sin(angle))])
        rows.append([(2, g.choice([-1.0, 1.0]) * g.uniform(0.1, 5)), (3, g.normal())])
        rows.append([(2, g.normal()), (4, g.normal())])
    rows.append([(0, 1.0), (1, -1.25)])                   # near-perfect hedge of the correlated pair
    rows += [[(0, 2.0)], [(1, 1.0), (3, 1.0)], [], [(0, 1.0), (1, 1.0), (2, 1.0)]]   # folded or read otherwise
    h = _block(rows, pnl.shape[0])
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    parts = [np.ascontiguousarray(pnl[:, a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]
    got, got_scenario, _, listed = _engine_tails(h, parts, m)
    want, want_scenario = brute_force_tails(h, pnl, m)
    assert listed[[i for i, r in enumerate(rows) if len(r) == 2 and r[0][0] == 0 and r[1][0] == 1]].all()
    np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))
    np.testing.assert_array_equal(got_scenario, want_scenario)


def test_two_position_rows_are_walked_not_folded():
    """A popular pair's rows are left out of the pilot and the folds (their state stays empty until the
    finish) and all settle from their lists: none is folded again; a rare pair's rows are folded."""
    g = np.random.default_rng(7)
    n, m = 20_000, 200
    pnl = g.standard_t(4, size=(3, n))
    angles = g.uniform(0, 2 * np.pi, size=40)
    rows = [[(0, np.cos(a)), (1, np.sin(a))] for a in angles] + [[(1, 1.0), (2, 1.0)]]
    h = _block(rows, 3)
    kernel = fastpath.FusedKernel()
    chunks = [np.ascontiguousarray(pnl[:, :10_000]), np.ascontiguousarray(pnl[:, 10_000:])]
    with _popular_from(16):
        plan = kernel.plan(m, n, 10_000, h)
    assert plan["pairs"] == [[0, 1]]
    state = kernel.start(h, chunks[0], m, plan)
    for c in chunks:
        state = kernel.fold(state, h, c, m)
    assert state.listed[:40].all() and not state.listed[40]
    assert (state.count[:40] == 0).all() and state.count[40] >= m
    top, scenario, recomputed = kernel.finish(state, h, chunks, m)
    assert recomputed == 0
    want, want_scenario = brute_force_tails(h, pnl, m)
    order = np.lexsort((scenario, -top), axis=1)
    np.testing.assert_array_equal(np.take_along_axis(top, order, 1), want)
    np.testing.assert_array_equal(np.take_along_axis(scenario, order, 1), want_scenario)


def test_a_walk_that_cannot_settle_is_left_to_the_fold():
    """A row whose losses are all equal (every scenario one of two points, the row losing the same in both)
    cannot prove its tail complete from a short list: count 0, left to the fold; with every scenario
    listed it settles.  A pair whose whitening is singular is refused."""
    n, m = 5000, 50
    x = np.zeros((2, n))
    x[0, ::2] = 1.0
    x[1, 1::2] = 1.0
    values, index = np.empty((1, 2 * m + 512)), np.empty((1, 2 * m + 512), dtype=np.int64)
    count = np.full(1, -1, dtype=np.int64)
    space = pairs.PairSpace(x, 10 * n)
    d, scale, covered = pairs.row_direction(space.lower, -1.0, -1.0)
    x0, x1, key, scenario, floor = space.direction_list(d)
    assert covered and key.size == n and floor == -np.inf
    # The fan's other lists emptied: the row walks list d alone, cut short (its floor the next key) or whole.
    start = np.zeros(pairs.DIRECTIONS + 1, dtype=np.int64)
    for listed, settles in ((60, False), (n, True)):
        start[d + 1:] = listed
        floor_d = np.full(pairs.DIRECTIONS, -np.inf)
        floor_d[d] = key[listed] if listed < n else -np.inf
        pairs.walk_pair_rows(np.array([0]), np.array([-1.0]), np.array([-1.0]), space.lower, x0, x1, key, scenario,
                             start, floor_d, n, m, values, index, count)
        assert (count[0] >= m) == settles and (values[0, :count[0]] == 1.0).all()
    rng = np.random.default_rng(3).normal(size=n)
    assert not pairs.PairSpace(np.stack([rng, 3.0 * rng]), 100).usable      # collinear columns
