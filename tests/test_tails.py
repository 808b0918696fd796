"""Tail sizes, VaR/ES definitions and the streaming merge (both paths)."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from mcmargin.engine.kernels import fused as fastpath, reference
from mcmargin import tails
from mcmargin.backend import get_backend
from oracles import brute_force_tails


@pytest.mark.parametrize("n,q,m", [(20_000, 0.99, 200), (20_000, 0.995, 100), (100, 0.99, 1), (101, 0.99, 2),
                                   (1000, 0.975, 25), (7, 0.5, 4), (100_000, 0.99, 1000), (3, 0.999, 1)])
def test_tail_size(n, q, m):
    assert tails.tail_size(n, q) == m


def test_var_es_on_hand_examples():
    losses = np.array([5.0, -1.0, 3.0, 10.0, 0.0, 7.0, 2.0, 1.0, 4.0, 6.0])
    # N = 10, q = 0.8: m = 2 -> worst two are 10 and 7
    assert tails.var_es_reference(losses, 0.8) == (7.0, 8.5)
    # q = 0.75: m = ceil(2.5) = 3 -> 10, 7, 6
    assert tails.var_es_reference(losses, 0.75) == (6.0, 23.0 / 3)
    # q = 0.95: m = 1 -> VaR = ES = the worst loss
    assert tails.var_es_reference(losses, 0.95) == (10.0, 10.0)
    # ties count once each
    assert tails.var_es_reference([1.0, 3.0, 3.0, 3.0], 0.5) == (3.0, 3.0)


def _fold_all(path, holdings, pnl, m, chunk):
    b = get_backend("numpy")
    if path == "reference":
        state = None
        for s in range(0, pnl.shape[0], chunk):
            state = reference.fold_chunk(b, state, holdings, pnl[s:s + chunk], m)
        return tails.sorted_tail(state)
    state = fastpath.empty_state(holdings.shape[0], m)
    h = holdings.tocsr()
    for s in range(0, pnl.shape[0], chunk):
        fastpath.fold_chunk_fused(h.indptr.astype(np.int64), h.indices.astype(np.int64), h.data,
                                  np.ascontiguousarray(pnl[s:s + chunk].T), state.values, state.index, state.count,
                                  state.threshold, m, 7, s)
    return tails.sorted_tail(fastpath.top(state)[0])


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 6), n=st.integers(1, 300), m=st.integers(1, 40),
       chunk=st.integers(1, 120), seed=st.integers(0, 2**31))
def test_streaming_tail_is_exact_top_m(rows, cols, n, m, chunk, seed):
    rng = np.random.default_rng(seed)
    m = min(m, n)
    h = sp.random(rows, cols, density=0.6, random_state=rng, format="csr") * 10 - 0
    pnl = rng.standard_t(3, size=(n, cols))
    full = -(h @ pnl.T)                                   # [rows x n], the brute force
    want = -np.sort(-full, axis=1)[:, :m]
    for path in ("reference", "fused"):
        got = _fold_all(path, h, pnl, m, chunk)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-12)


def test_fused_path_is_chunking_invariant_bit_for_bit():
    rng = np.random.default_rng(3)
    h = sp.random(50, 20, density=0.2, random_state=rng, format="csr")
    pnl = rng.normal(size=(5000, 20))
    a = _fold_all("fused", h, pnl, 50, 5000)
    b = _fold_all("fused", h, pnl, 50, 333)
    np.testing.assert_array_equal(a, b)


def _kernel_tails(h, chunks, m):
    """The fused kernel's final tails (sorted by rank: loss descending, then scenario) and rows recomputed,
    run as the engine runs it: start (with a pilot when there are several chunks), a fold per chunk, finish."""
    kernel = fastpath.FusedKernel()
    n = sum(c.shape[1] for c in chunks)
    plan = kernel.plan(m, n, chunks[0].shape[1], h)
    state = kernel.start(h, chunks[0], m, plan)
    for c in chunks:
        state = kernel.fold(state, h, c, m)
    top, scenario, recomputed = kernel.finish(state, h, chunks, m)
    order = np.lexsort((scenario, -top), axis=1)
    return np.take_along_axis(top, order, 1), np.take_along_axis(scenario, order, 1), recomputed


@settings(max_examples=30, deadline=None)
@given(n=st.integers(40, 3000), m=st.integers(1, 40), chunks=st.integers(1, 4), ties=st.sampled_from([0, 1, 2]),
       seed=st.integers(0, 2**31))
def test_single_position_rows_get_the_exact_tail_of_the_fold(n, m, chunks, ties, seed):
    """Rows holding one position are not folded but read from their column's worst scenarios: the same
    losses and scenarios as the brute force, ties included: P&L with many equal values (ties: 1), runs of
    equal losses longer than the list's slack (2: the row is folded after all), and quantities whose
    products round distinct P&L to one loss."""
    g = np.random.default_rng(seed)
    cols, m = 5, min(m, n)
    pnl = g.standard_t(3, size=(cols, n))
    if ties == 1:
        pnl = np.round(pnl, 1)
    elif ties == 2:
        pnl[:, g.permutation(n)[: m + fastpath.SINGLE_SLACK + 20]] = pnl.min() - 1.0 if seed % 2 else pnl.max() + 1
    pnl[4] = 1.0 + np.spacing(1.0) * g.integers(0, 4, n)              # neighbouring floats: 0.1 * x ties some
    q = g.choice([-3.0, -0.1, 0.1, 1.0, 7.5, 1e-3], size=12)
    rows = [[(c, q[c + 2 * k])] for k in range(2) for c in range(cols)]  # single positions, both signs
    rows += [[(0, 1.0), (2, -2.0)], [], [(4, 0.1)], [(1, 0.0)]]         # a pair, an empty row, a zero quantity
    h = sp.csr_matrix((np.array([v for r in rows for _, v in r]), np.array([c for r in rows for c, _ in r]),
                       np.cumsum([0] + [len(r) for r in rows])), shape=(len(rows), cols))
    h.sort_indices()
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    got, got_scenario, _ = _kernel_tails(h, [np.ascontiguousarray(pnl[:, a:b]) for a, b in zip(bounds, bounds[1:])],
                                         m)
    want, want_scenario = brute_force_tails(h, pnl, m)
    np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))
    np.testing.assert_array_equal(got_scenario, want_scenario)


def test_single_position_rows_are_read_not_folded():
    """The fold never touches a single-position row (its state stays empty) and none is recomputed."""
    g = np.random.default_rng(5)
    pnl = g.normal(size=(3, 4000))
    h = sp.csr_matrix(np.array([[2.0, 0, 0], [0, -1.0, 0], [1.0, 1.0, 0]]))
    kernel = fastpath.FusedKernel()
    chunks = [pnl[:, :2000].copy(), pnl[:, 2000:].copy()]
    state = kernel.start(h, chunks[0], 20, kernel.plan(20, 4000, 2000, h))
    for c in chunks:
        state = kernel.fold(state, h, c, 20)
    assert list(state.listed) == [True, True, False] and list(state.count[:2]) == [0, 0] and state.count[2] >= 20
    assert kernel.finish(state, h, chunks, 20)[2] == 0


def test_top_of_a_row_short_of_m_is_padded_with_minus_infinity():
    state = fastpath.empty_state(2, 3)
    state.values[0, :5] = [4.0, 1.0, 5.0, 2.0, 3.0]
    state.values[1, :2] = [7.0, 6.0]
    state.values[1, 2:] = 99.0                                # garbage past the count is never read
    state.index[:] = np.arange(state.index.shape[1])
    state.count[:] = [5, 2]
    top, index = fastpath.top(state)
    order = np.argsort(top, axis=1)
    np.testing.assert_array_equal(np.take_along_axis(top, order, 1), [[3.0, 4.0, 5.0], [-np.inf, 6.0, 7.0]])
    np.testing.assert_array_equal(np.take_along_axis(index, order, 1), [[4, 0, 2], [-1, 1, 0]])


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 5), n=st.integers(1, 200), q=st.floats(0.5, 0.999), seed=st.integers(0, 2**31))
def test_var_es_is_the_mth_largest_and_the_mean_of_the_m_largest(rows, n, q, seed):
    """tails.var_es and var_es_reference against a full descending sort, m = ceil(N(1 - q) - 1e-9)."""
    from oracles import tail_size
    x = np.random.default_rng(seed).standard_t(3, size=(rows, n))
    m = tail_size(n, q)
    desc = -np.sort(-x, axis=1)
    var, es = tails.var_es(np.sort(x, axis=1), m)
    np.testing.assert_array_equal(var, desc[:, m - 1])
    np.testing.assert_allclose(es, desc[:, :m].sum(axis=1) / m, rtol=1e-14)
    assert tails.tail_size(n, q) == m
    for r in range(rows):
        v, e = tails.var_es_reference(x[r], q)
        assert v == desc[r, m - 1] and e == pytest.approx(desc[r, :m].mean(), rel=1e-14)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), n=st.integers(1, 1500), seed=st.integers(0, 2**31), ties=st.booleans(),
       wide=st.booleans())
def test_compiled_row_sort_is_numpys_sort_bit_for_bit(rows, n, seed, ties, wide):
    """fused.sort_rows (radix on order keys) leaves the same bits as ndarray.sort: ties, -inf padding,
    zero losses (-0.0), both signs, rows of one repeated value (every digit shared) and rows in falling order."""
    g = np.random.default_rng(seed)
    x = g.standard_t(3, size=(rows, n)) * (10.0 ** g.integers(-3, 9, size=(rows, 1)))
    if not wide:
        x = -np.abs(x) - 3e5                      # a row's worst losses: one sign, near one exponent
    if ties:
        x = np.round(x, -2)
    x[:, : n // 7] = -np.inf if seed % 2 else x[:, : n // 7]
    x[0, n // 2:] = 0.0
    x[x == 0.0] = -0.0                            # the kernels' zero loss (NumPy may order -0.0 and +0.0 either way)
    if rows > 1:
        x[1] = x[1, 0]
    if rows > 2:
        x[2] = np.sort(x[2])[::-1]                # falling, as a single-position row's tail comes: reversed
    got, want = x.copy(), x.copy()
    fastpath.sort_rows(got)
    want.sort(axis=1)
    np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))


def test_tails_are_float64_whatever_comes_in():
    """Money in float64 at the edges (design.md): a float32 or integer tail is widened before sorting and summing."""
    x32 = np.array([[3.0, 1.0, 2.0]], dtype=np.float32) + np.float32(1e-4)
    out = tails.sorted_tail(x32)
    assert out.dtype == np.float64 and np.array_equal(out, -np.sort(-x32.astype(np.float64), axis=1))
    losses = np.full(10, 0.1, dtype=np.float32)
    var, es = tails.var_es_reference(losses, 0.5)
    assert isinstance(var, np.float64) and es == np.sum(np.full(5, np.float32(0.1), dtype=np.float64)) / 5


@pytest.mark.parametrize("q", [0.0, 1.0, 1.5, -0.1])
def test_tail_size_rejects_confidence_outside_the_open_unit_interval(q):
    with pytest.raises(ValueError, match="confidence"):
        tails.tail_size(1000, q)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_exceedances_from_tail_match_a_loop_over_every_loss(width, n_limits, seed):
    """Hits and excess of each limit over a row's sorted kept losses, against a plain loop: limits between,
    equal to, below and above the losses, NaN limits, and -inf (the slots of a row holding fewer)."""
    rng = np.random.default_rng(seed)
    rows = 7
    losses = np.round(rng.standard_normal((rows, width)) * 3, 1)
    losses[rng.random((rows, width)) < 0.1] = -np.inf
    ordered = np.sort(losses, axis=1)
    limit = np.round(rng.standard_normal((rows, n_limits)) * 3, 1)
    pick = rng.random((rows, n_limits))
    limit[pick < 0.2] = ordered[np.arange(rows)[:, None], rng.integers(0, width, (rows, n_limits))][pick < 0.2]
    limit[(pick >= 0.2) & (pick < 0.3)] = np.nan
    limit[(pick >= 0.3) & (pick < 0.35)] = -np.inf
    hits, excess, exact = tails.exceedances_from_tail(ordered, limit)
    for r in range(rows):
        for k in range(n_limits):
            t = limit[r, k]
            above = [x for x in ordered[r] if x > t]
            assert hits[r, k] == len(above)
            with np.errstate(invalid="ignore"):
                expect = np.where(ordered[r] > t, ordered[r] - t, 0.0).sum()  # numpy's order of summation
            assert excess[r, k] == expect or (np.isnan(expect) and np.isnan(excess[r, k]))
            assert np.isclose(excess[r, k], sum(x - t for x in above), rtol=1e-12, atol=1e-9) or not above
            assert exact[r, k] == (np.isnan(t) or t >= ordered[r, 0])
