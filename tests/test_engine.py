"""Scheduling and kernels: reproducibility across schedulers, JAX jit, chunk sizing."""

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import SCENARIOS_2F
from mcmargin import Chunking, build_scenarios, get_backend, run_stress
from mcmargin.engine import graph as engine
from mcmargin import aggregation, tails
from mcmargin.engine.kernels import fused, reference
from mcmargin.instruments import revaluation
from mcmargin.inputs.synthetic import synthetic_book

FIGURES = ("equity", "im", "isolated_im", "margin_call", "var", "es", "group_im", "group_es", "group_equity",
           "unit_es")


@pytest.fixture(scope="module")
def book():
    import datetime as dt
    return synthetic_book(n_accounts=150, seed=3, valuation_date=dt.date(2026, 11, 25))


@pytest.fixture(scope="module")
def scen(book):
    from omegaconf import OmegaConf
    cfg = OmegaConf.to_container(OmegaConf.load("conf/scenarios/gaussian.yaml"))
    return build_scenarios(dict(cfg, n=3000, seed=9), book.assets, book.market["vol"].to_numpy())


@pytest.mark.slow
def test_local_cluster_matches_threads_bit_for_bit(book, scen):
    import dask
    from distributed import Client, LocalCluster

    chunking = Chunking(700, 64)
    runs = {}
    for fast in (True, False):
        with dask.config.set(num_workers=1):
            runs["threads1", fast] = run_stress(book, scen, chunking=chunking, fast_path=fast, scheduler="threads")
        runs["threads2", fast] = run_stress(book, scen, chunking=chunking, fast_path=fast, scheduler="threads")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc) as client:
        for fast in (True, False):
            runs["cluster", fast] = run_stress(book, scen, chunking=chunking, fast_path=fast, scheduler=client)
    for fast in (True, False):
        for name in ("threads2", "cluster"):
            for v in FIGURES:
                np.testing.assert_array_equal(runs[name, fast][v].values, runs["threads1", fast][v].values,
                                              err_msg=f"{name} fast={fast} {v}")


def test_chunk_sizes_follow_problem_size_and_budget_only():
    import dask
    from mcmargin.engine.graph import TASK_BUDGET
    with dask.config.set(num_workers=1):
        a = Chunking().resolve(20_000, 5_300, 140, 200)
    with dask.config.set(num_workers=7):
        assert Chunking().resolve(20_000, 5_300, 140, 200) == a          # workers change nothing
    # within the task budget: a revaluation task's [chunk x columns] arrays, a fold task's [rows x (2m + chunk)]
    assert 8 * 8 * 140 * a.scenarios <= TASK_BUDGET and 8 * a.rows * (2 * 200 + a.scenarios) <= TASK_BUDGET
    # ... and not far inside it (each size within a factor 2 of its budget, or at its bound)
    assert 8 * 8 * 140 * (2 * a.scenarios) > TASK_BUDGET or a.scenarios == 16384
    assert 8 * (2 * a.rows) * (2 * 200 + a.scenarios) > TASK_BUDGET or a.rows == 4096
    assert 1024 <= a.scenarios <= 16384 and 256 <= a.rows <= 4096
    assert Chunking().resolve(20_000, 5_300, 140, 200, budget=2 * TASK_BUDGET).scenarios > a.scenarios
    small_budget = Chunking().resolve(20_000, 5_300, 140, 200, budget=8 * 2**20)
    assert small_budget.rows <= a.rows and small_budget.scenarios <= a.scenarios
    assert Chunking(512, 100).resolve(20_000, 5_300, 140, 200) == Chunking(512, 100)
    assert Chunking().resolve(300, 10, 5, 3).scenarios == 300


def test_kernels_under_jax_jit_match_numpy(book, scen):
    import jax

    jb, nb = get_backend("jax"), get_backend("numpy")
    cb = aggregation.compile_book(book, scen.horizon_days)
    shock, vol_shock = scen.draw(0, 500, jb)
    on_jax = revaluation.to_backend(cb, jb)
    pnl_jit = jax.jit(lambda s, v: revaluation.revalue(jb, on_jax, s, v))(shock, vol_shock)
    pnl_np = revaluation.revalue(nb, revaluation.to_backend(cb, nb), *scen.draw(0, 500, nb))
    np.testing.assert_allclose(np.asarray(pnl_jit), pnl_np, rtol=1e-12, atol=1e-9)

    h = jb.asarray(cb.exposures[:40].toarray())
    fold = jax.jit(lambda t, p: reference.fold_chunk(jb, t, h, p, 5))
    t1 = fold(reference.fold_chunk(jb, None, h, pnl_jit[:250], 5), pnl_jit[250:])
    ref = reference.fold_chunk(nb, None, cb.exposures[:40], pnl_np, 5)
    np.testing.assert_allclose(tails.sorted_tail(np.asarray(t1)), tails.sorted_tail(ref), rtol=1e-12, atol=1e-9)


def test_kernels_under_array_api_strict(book, scen):
    """The strict namespace rejects NumPy-only behaviour that would break on CuPy or JAX."""
    sb, nb = get_backend("array_api_strict"), get_backend("numpy")
    cb = aggregation.compile_book(book, scen.horizon_days)
    shock, vol_shock = scen.draw(0, 300, sb)
    assert type(shock).__module__.startswith("array_api_strict")
    pnl = revaluation.revalue(sb, revaluation.to_backend(cb, sb), shock, vol_shock)
    ref = revaluation.revalue(nb, revaluation.to_backend(cb, nb), *scen.draw(0, 300, nb))
    np.testing.assert_allclose(np.asarray(pnl), ref, rtol=1e-12, atol=1e-9)
    t = reference.fold_chunk(sb, None, sb.asarray(cb.exposures[:30].toarray()), pnl, 4)
    np.testing.assert_allclose(tails.sorted_tail(np.asarray(t)),
                               tails.sorted_tail(reference.fold_chunk(nb, None, cb.exposures[:30], ref, 4)), rtol=1e-12, atol=1e-9)


def test_auto_backend_follows_the_devices_present():
    """``auto`` is numpy exactly when no CUDA device exists (detected here without CuPy or JAX)."""
    from conftest import cuda_device_present
    from mcmargin.backend import resolve
    from mcmargin.errors import ConfigError
    got = resolve("auto")
    if cuda_device_present():
        assert got in ("cupy", "jax")
    else:
        assert got == "numpy"
    for name in ("numpy", "jax", "cupy", "array_api_strict"):
        assert resolve(name) == name
    with pytest.raises(ConfigError, match="backend"):
        resolve("torch")


def test_pilot_threshold_is_exact_and_rows_below_it_are_recomputed(book, scen, monkeypatch):
    """A pilot threshold set far too high (the pilot chunk's maximum) must not change any figure."""
    ref = run_stress(book, scen, chunking=Chunking(500, 64), fast_path=False)
    monkeypatch.setattr(fused, "PILOT_FACTOR", 1e-9)
    monkeypatch.setattr(fused, "PILOT_MIN", 1)
    cb = aggregation.compile_book(book, scen.horizon_days)
    result = engine.compute_tails(cb, scen, [0.99, 0.995], chunking=Chunking(500, 64))
    assert result.timings["pilot"] == [500, 1] and result.timings["rows_recomputed"] > 0
    got = run_stress(book, scen, chunking=Chunking(500, 64))
    for v in FIGURES:
        np.testing.assert_allclose(got[v].values, ref[v].values, rtol=1e-12, atol=1e-9, err_msg=v)


def test_blocks_in_flight_change_no_figure(book, scen):
    runs = {k: run_stress(book, scen, chunking=Chunking(700, 16), blocks_in_flight=k) for k in (1, 3, 0)}
    assert [int(r.attrs["blocks_in_flight"]) for r in runs.values()][:2] == [1, 3]
    for k in (3, 0):
        for v in FIGURES:
            np.testing.assert_array_equal(runs[k][v].values, runs[1][v].values, err_msg=f"{k} {v}")


def test_pilot_thresholds_are_order_statistics_of_the_sample(book, scen):
    cb = aggregation.compile_book(book, scen.horizon_days)
    h = cb.exposures
    empty = np.diff(h.indptr) == 0
    assert empty.any(), "the fixture should have rows without holdings (cash-only accounts)"
    pnl_t = engine._revalue_chunk(engine._to_backend(cb, "numpy"), scen, "numpy", 0, 1000, True)
    state = fused.pilot_state(h, pnl_t, 30, (700, 9))
    losses = -np.asarray(h @ pnl_t[:, :700])
    brute = np.sort(losses, axis=1)[:, -9]                      # 9th largest loss of the first 700
    np.testing.assert_array_equal(state.threshold[~empty], brute[~empty])
    # The sample is folded in by the pilot (the first chunk's fold starts after it): a row holds
    # exactly its sample losses above the threshold, and a row without holdings (no pilot) has
    # warmed up on the sample like any fold without a threshold, to its m-th largest loss, 0.
    for r in np.flatnonzero(~empty):
        kept = np.sort(state.values[r, :state.count[r]])
        np.testing.assert_array_equal(kept, np.sort(losses[r][losses[r] > brute[r]]))
    assert np.all(state.count[empty] == 30) and np.all(state.threshold[empty] == 0)


def test_pilot_changes_no_bit(book, scen):
    """With a pilot (its sample folded in by the pilot, the first fold starting after it) or
    without one (a single chunk), every row's VaR and ES are the same numbers, bit for bit."""
    cb = aggregation.compile_book(book, scen.horizon_days)
    runs = {}
    for name, chunking in (("pilot", Chunking(700, 64)), ("pilot, tiny blocks", Chunking(1200, 5)),
                           ("none", Chunking(scen.n, 64))):
        runs[name] = engine.compute_tails(cb, scen, [0.99, 0.995], chunking=chunking)
    assert runs["pilot"].timings["pilot"] and not runs["none"].timings["pilot"]
    for name in ("pilot", "pilot, tiny blocks"):
        np.testing.assert_array_equal(runs[name].var.view(np.uint64), runs["none"].var.view(np.uint64))
        np.testing.assert_array_equal(runs[name].es.view(np.uint64), runs["none"].es.view(np.uint64))


def test_screen_keeps_exactly_the_losses_above_the_threshold():
    """The fold's screen (64 losses per vector comparison, then the set bits) against a plain loop: every
    length around the 64-loss groups, losses equal to the threshold (not kept), NaN (never kept), -0.0."""
    from mcmargin.engine.kernels import fused as fastpath

    rng = np.random.default_rng(11)
    for w in (0, 1, 63, 64, 65, 127, 128, 200, 512):
        buf = np.round(rng.standard_normal(w), 1)
        if w > 3:
            buf[[0, w // 2, w - 1]] = [np.nan, -0.0, 0.0]
        for thr in (-np.inf, -1.0, 0.0, 0.3, np.inf):
            row, rix = np.full(w + 3, 7.0), np.full(w + 3, -1, dtype=np.int64)
            c = fastpath._screen_indexed(buf, w, thr, row, rix, 2, 1000, 1)
            want = [s for s in range(w) if -buf[s] > thr]
            assert c == 2 + len(want), (w, thr)
            assert np.array_equal(rix[3:3 + len(want)], 1000 + np.array(want, dtype=np.int64))
            assert np.array_equal(row[3:3 + len(want)], -buf[want]) and row[0] == 7.0 and rix[2] == -1


def test_streaming_selection_is_a_partition():
    from mcmargin.engine.kernels import fused as fastpath

    rng = np.random.default_rng(5)
    for n, j in ((4096, 66), (700, 9), (1000, 250), (300, 300), (2000, 16)):
        for sums in (rng.standard_normal(n), np.round(rng.standard_normal(n), 1), np.zeros(n),
                     np.sort(rng.standard_normal(n)), -np.sort(rng.standard_normal(n))):
            work, work_index = np.empty(n), np.empty(n, dtype=np.int64)
            got, c = fastpath._jth_largest_loss(sums, n, j, work, work_index,
                                                np.empty(1 << fastpath.DIGIT, dtype=np.int64),
                                                np.empty(n, dtype=np.uint64))
            assert got == np.partition(-sums, n - j)[n - j], (n, j)
            if c >= 0:        # the candidates: every loss above the guess, in scenario order
                assert c >= j and np.array_equal(work[:c], -sums[work_index[:c]])
                assert np.all(np.diff(work_index[:c]) > 0) and (work[:c] > got).sum() == (-sums > got).sum()
            a, ix = -sums.copy(), np.arange(n)
            t = fastpath._select_top_indexed(a, ix, n, j)     # the compaction's selection, by rank
            assert t == np.partition(-sums, n - j)[n - j]
            ranked = np.lexsort((np.arange(n), sums))[:j]    # larger loss first, then the lower scenario
            assert set(ix[:j]) == set(ranked) and np.array_equal(a[:j], -sums[ix[:j]])


def test_radix_selection_is_a_partition():
    """The finish's m-th largest (a radix selection on integer keys) is the value np.partition puts there:
    any magnitude, ties, signed zeros, infinities."""
    from mcmargin.engine.kernels import fused as fastpath

    rng = np.random.default_rng(11)
    hist = np.empty(1 << fastpath.DIGIT, dtype=np.int64)
    for trial in range(1500):
        n = int(rng.integers(1, 2500))
        m = int(rng.integers(1, n + 1))
        a = rng.standard_normal(n) * 10 ** rng.uniform(-3, 8)
        kind = trial % 5
        if kind == 1:
            a = np.round(a, 0)                       # many ties, and zeros of both signs
        elif kind == 2:
            a = np.zeros(n) if trial % 2 else -np.zeros(n)
        elif kind == 3:
            a = np.abs(a) + 1e5                       # one sign, one exponent: only mantissa bits differ
        elif kind == 4:
            a[: n // 2] = np.inf
            a[n // 2: n // 2 + 3] = -np.inf
        before = a.copy()
        keys = np.empty(n, dtype=np.uint64)
        assert fastpath._mth_largest(a, n, m, hist, keys) == np.partition(a, n - m)[n - m], (trial, n, m)
        np.testing.assert_array_equal(a, before)


def test_rows_without_holdings_lose_exactly_zero_and_are_not_recomputed(book, scen):
    cb = aggregation.compile_book(book, scen.horizon_days)
    result = engine.compute_tails(cb, scen, [0.99], chunking=Chunking(500, 64))
    assert result.timings["pilot"] and result.timings["rows_recomputed"] == 0
    empty = np.diff(cb.exposures.indptr) == 0
    assert np.all(result.var[empty] == 0) and np.all(result.es[empty] == 0)


def test_scheduler_threads():
    import dask

    assert engine.scheduler_threads("sync") == 1
    with dask.config.set(num_workers=3):
        assert engine.scheduler_threads(None) == engine.scheduler_threads("threads") == 3

    class Client:
        def nthreads(self):
            return {"tcp://a": 2, "tcp://b": 4}
    assert engine.scheduler_threads(Client()) == 6


def test_pilot_size():
    assert fused.pilot_size(1000, 100_000, 7543) == (4096, 66)
    assert fused.pilot_size(1000, 100_000, 2000) == (2000, 32)
    assert fused.pilot_size(200, 20_000, 20_000) is None        # one chunk: nothing to pilot
    assert fused.pilot_size(200, 1000, 100) is None              # threshold would sit mid-sample


def test_top_m_keeps_the_m_highest_ranked_ties_to_the_lower_scenario():
    from mcmargin.engine.kernels import fused as fastpath

    rng = np.random.default_rng(11)
    state = fastpath.empty_state(6, 40)
    state.values[:] = np.round(rng.standard_normal(state.values.shape), 1)    # ties included
    state.index[:] = rng.permutation(state.index.size).reshape(state.index.shape)
    state.count[:] = [40, 41, 300, state.values.shape[1], 12, 0]            # two rows hold fewer than m
    got, index = np.empty((6, 40)), np.empty((6, 40), dtype=np.int64)
    fastpath.top_m(state.values.copy(), state.index.copy(), state.count, 40, got, index)
    for r in range(6):
        n = state.count[r]
        # Brute force: rank by loss, equal losses by the lower scenario first; keep m.
        order = np.lexsort((state.index[r, :n], -state.values[r, :n]))[:40]
        want = np.sort(state.index[r, :n][order])
        held = index[r][index[r] >= 0]
        np.testing.assert_array_equal(np.sort(held), want)
        np.testing.assert_array_equal(np.sort(got[r][index[r] >= 0]), np.sort(state.values[r, :n][order]))
        assert (got[r][index[r] < 0] == -np.inf).all() and (index[r] < 0).sum() == max(0, 40 - n)


def test_blocked_revaluation_is_the_whole_chunks(book, scen):
    """The fused path revalues a chunk REVALUE_BLOCK scenarios at a time: the same numbers, bit for bit."""
    from mcmargin.backend import get_backend

    cb = aggregation.compile_book(book, scen.horizon_days)
    priced = engine._to_backend(cb, "numpy")
    b = get_backend("numpy")
    for start, stop in ((0, 1300), (1300, 1301), (7, 519)):
        shock, vol_shock = scen.draw(start, stop, b)
        whole = np.asarray(revaluation.revalue(b, priced, shock, vol_shock))
        got = engine._revalue_chunk(priced, scen, "numpy", start, stop, True)
        assert got.flags.c_contiguous and got.shape == whole.T.shape
        np.testing.assert_array_equal(got.view(np.uint64), whole.T.view(np.uint64))


@pytest.mark.parametrize("n, m", [(100_000, 1000), (20_000, 200), (4096, 41)])
def test_row_blocks_fill_the_task_budget_with_each_kernels_own_rows(n, m):
    """A block's rows are sized by what a row of that kernel holds (TailKernel.row_bytes): the fused kernel
    keeps no losses per chunk, so its blocks hold more rows than the reference's in the same budget, and
    neither exceeds the budget (above the 256-row floor)."""
    budget = 64 * 2**20
    fused_kernel, reference_kernel = fused.FusedKernel(), reference.ReferenceKernel("numpy")
    sizes = {}
    for name, kernel in {"fused": fused_kernel, "reference": reference_kernel}.items():
        ch = Chunking().resolve(n, 10**6, 111, m, budget, lambda chunk, k=kernel: k.row_bytes(m, chunk))
        per_row = kernel.row_bytes(m, ch.scenarios)
        assert ch.rows == 4096 or ch.rows * per_row <= budget < (ch.rows + 1) * per_row or ch.rows == 256
        sizes[name] = ch.rows
    assert sizes["fused"] > sizes["reference"]
    assert fused_kernel.row_bytes(m, 1) == 16 * (m + fused.stage_size(m) + fused.TILE)
    assert Chunking().resolve(n, 10**6, 111, m, budget).rows == sizes["reference"]     # the default is the reference's
