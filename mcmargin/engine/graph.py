"""The stress engine: scenarios -> revaluation -> aggregation -> exact tails.

Work is cut into scenario chunks and row blocks and scheduled with dask.
For each scenario chunk one task draws the shocks and revalues every
column once; for each row block a chain of tasks folds the chunks into
the block's tails in scenario order.  Each task is deterministic and the
chain order is fixed, so results do not depend on the scheduler or the
number of workers; changing chunk sizes changes only the rounding of the
loss sums in the reference path (never which scenarios are drawn).

Peak memory: the tails of ``blocks_in_flight`` row blocks, O(block x m)
each, plus each chunk's P&L [factors x chunk] until the last block has
folded it, plus VaR/ES [rows x confidences].  Never O(rows x m).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import uuid

import dask
import numpy as np

from ..instruments import exposure
from .. import tails
from ..tails import TailResult
from ..backend import get_backend

log = logging.getLogger(__name__)

#: Default memory budget of one task (bytes): sizes chunks when not set.
TASK_BUDGET = 64 * 2**20

#: Runs longer than this show a progress bar (seconds).
PROGRESS_AFTER_S = 5.0


@dataclasses.dataclass(frozen=True)
class Chunking:
    """Scenario chunk and row block sizes (0 = choose from the problem size)."""

    scenarios: int = 0
    rows: int = 0

    def resolve(self, n_scenarios: int, n_rows: int, n_columns: int, m: int,
                budget: int = TASK_BUDGET) -> "Chunking":
        """Concrete sizes from the problem size and a memory budget per task.

        A revaluation task holds a few [chunk x columns] float64 arrays; a
        fold task holds its block's tails (about [rows x 2m] with the staged
        candidates) and, on the reference path, the block's losses
        [rows x chunk].  Never depends on the workers.
        """
        s = self.scenarios or _clamp(budget // (8 * 8 * max(n_columns, 1)), 1024, 16384)
        s = min(s, n_scenarios)
        r = self.rows or _clamp(budget // (8 * (2 * m + s)), 256, 4096)
        return Chunking(int(s), int(min(r, max(n_rows, 1))))


def _clamp(x, lo, hi):
    return int(max(lo, min(hi, x)))


def compute_tails(book: exposure.CompiledBook, scenarios, confidences, *, backend: str = "numpy",
                  fast_path: bool = True, chunking: Chunking = Chunking(), scheduler=None,
                  budget: int = TASK_BUDGET, progress: bool = False, blocks_in_flight: int = 0) -> TailResult:
    """VaR and ES at each confidence of every row of ``book.exposures``.

    Parameters
    ----------
    book : CompiledBook
    scenarios : ScenarioModel
    confidences : sequence of float
        q values; each row keeps its m = max over q of ``tail_size(N, q)`` worst losses.
    backend : str
        Array backend name (:mod:`mcmargin.backend`).
    fast_path : bool
        On the numpy backend, use the fused compiled kernel
        (:mod:`mcmargin.fastpath`) instead of the array-API reference.
    chunking : Chunking
    scheduler : str or dask Client, optional
        A dask scheduler name (``"threads"``, ``"sync"``, ...) or a ``distributed.Client``; default local threads.
    budget : int
        Memory budget of one task in bytes, for chunk sizes not set.
    progress : bool
        Show a progress bar on stderr once the run has taken a few seconds.
    blocks_in_flight : int
        Row blocks whose tails are folded at once (0 = twice the scheduler's
        threads).  Bounds the memory of the tails in flight; changes no result.
    """
    t0 = time.perf_counter()
    b = get_backend(backend)
    fused = fast_path and b.name == "numpy"
    n = scenarios.n
    n_rows = book.exposures.shape[0]
    confidences = [float(q) for q in confidences]
    sizes = [tails.tail_size(n, q) for q in confidences]
    m = max(sizes)
    ch = chunking.resolve(n, n_rows, book.n_factors, m, budget)
    starts = list(range(0, n, ch.scenarios))
    blocks = list(range(0, n_rows, ch.rows))

    # A plain task graph with named keys: dask.delayed would tokenize the
    # book and merge each block's layers into the next lane's (quadratic).
    run = uuid.uuid4().hex[:8]
    # The pricing arrays go to the backend (device) once, as a task of their own.
    dsk = {f"priced-{run}": (_to_backend, book, b.name), f"scenarios-{run}": scenarios}
    pnl = []
    for s in starts:
        pnl.append(f"revalue-{run}-{s}")
        dsk[pnl[-1]] = (_revalue_chunk, f"priced-{run}", f"scenarios-{run}", b.name, s,
                        min(s + ch.scenarios, n), fused)
    pilot = pilot_size(m, n, ch.scenarios) if fused else None
    lanes = blocks_in_flight or 2 * scheduler_threads(scheduler)
    out = []
    for i, r0 in enumerate(blocks):
        # Block i starts once block i - lanes is done: only `lanes` tails are
        # alive at a time, and a finished block's memory (warm, already
        # mapped) serves the next one.
        out.append(_block_tasks(dsk, book.exposures[r0:r0 + ch.rows], starts, pnl, m, sizes, b.name, fused,
                                pilot, f"{run}-{r0}", out[i - lanes] if i >= lanes else None))
    t1 = time.perf_counter()
    results = _run_graph(dsk, out, scheduler, progress)
    var = np.concatenate([r[0] for r in results], axis=0)
    es = np.concatenate([r[1] for r in results], axis=0)
    redone = sum(r[2] for r in results)
    if redone:
        log.debug("%d row(s) fell below their pilot threshold and were recomputed without it", redone)
    t2 = time.perf_counter()
    return TailResult(book, confidences, var, es, n, m, ch,
                      {"graph_s": t1 - t0, "compute_s": t2 - t1, "n_tasks": len(dsk),
                       "blocks_in_flight": min(lanes, len(blocks)),
                       "pilot": list(pilot or ()), "rows_recomputed": int(redone)})


#: With a pilot, each row's threshold is set so that about this many times m
#: losses are expected above it over the whole run (docs/architecture.md).
PILOT_FACTOR = 1.6
#: Fewest pilot order statistics a threshold is read from.
PILOT_MIN = 16
#: Pilot sample: the first scenarios of the first chunk.  Its losses are
#: materialised, each row's threshold is selected from them and they are
#: folded in with it (the first chunk's fold starts after the sample), so
#: the sample costs one streaming selection per row on top of the fold.
PILOT_SCENARIOS = 4096
#: Rows whose pilot samples are materialised at once (each tile of the
#: chunk's P&L serves them all while it is in cache).
PILOT_ROWS = 64


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


def _block_tasks(dsk, h, starts, pnl, m, sizes, backend_name, fused, pilot, key, after=None):
    """Add one row block's tasks to ``dsk``: an optional pilot, the chain of folds, VaR/ES.

    Returns the key of the block's (var, es, rows recomputed).
    """
    if after is not None:
        dsk[f"lane-{key}"] = (_after, h, after)
        h = f"lane-{key}"
    if not fused:  # the block's holdings go to the backend (device) once, not once per chunk
        dsk[f"holdings-{key}"] = (_sparse_on, backend_name, h)
        h = f"holdings-{key}"
    state = None
    if pilot:
        state = f"pilot-{key}"
        dsk[state] = (_pilot_state, h, pnl[0], m, list(pilot))
    fold = _fold_fused if fused else _fold_reference
    for s, p in zip(starts, pnl):
        dsk[f"fold-{key}-{s}"] = (fold, state, h, p, m, backend_name)
        if pilot and s == starts[0]:   # the pilot has folded in the chunk's first `sample` scenarios
            dsk[f"fold-{key}-{s}"] += (pilot[0],)
        state = f"fold-{key}-{s}"
    dsk[f"tail-{key}"] = (_finish, state, h, list(pnl), sizes, backend_name, fused)
    return f"tail-{key}"


def _after(x, _previous):
    """``x``, once ``_previous`` is computed: orders row blocks without copying anything."""
    return x


def scheduler_threads(scheduler) -> int:
    """Threads that run tasks under ``scheduler`` (a dask scheduler name or a ``distributed.Client``)."""
    if scheduler in ("sync", "synchronous", "single-threaded"):
        return 1
    if scheduler is None or isinstance(scheduler, str):
        from dask.system import CPU_COUNT

        return int(dask.config.get("num_workers", None) or CPU_COUNT)
    return max(1, sum(scheduler.nthreads().values()))


def _run_graph(dsk, keys, scheduler, progress):
    """Compute ``keys`` of the task graph on ``scheduler``, with progress on long runs.

    Progress always goes to stderr (stdout carries the job's summary): a bar
    on a terminal, a few plain lines otherwise (:mod:`mcmargin.progress`).
    """
    from .progress import Progress, dask_callback, wait_for_futures

    if scheduler is None or isinstance(scheduler, str):
        # A named local scheduler is looked up directly: dask.base.get_scheduler
        # would import distributed (0.3 s) only to look for a default Client.
        name = (scheduler or "threads").lower()
        get = dask.base.named_schedulers.get(name) or dask.base.get_scheduler(scheduler=name)
        if not progress:
            return get(dsk, keys)
        bar = Progress(len(dsk), minimum=PROGRESS_AFTER_S)
        try:
            with dask_callback(bar):
                return get(dsk, keys)
        finally:
            bar.close()
    futures = scheduler.get(dsk, keys, sync=False)
    if progress:
        # Only the row blocks' results are futures here: the share of blocks done.
        bar = Progress(len(futures), minimum=PROGRESS_AFTER_S)
        try:
            wait_for_futures(futures, bar)
        finally:
            bar.close()
    return scheduler.gather(futures)


#: Scenarios revalued at once on the fused path: Black-Scholes is a score of
#: NumPy passes over [scenarios x options] arrays, which stay in L2 at this
#: size (twice as fast as passes over a whole chunk in main memory; the same
#: elementwise operations, so the same numbers).
REVALUE_BLOCK = 512


def _revalue_chunk(priced, scenarios, backend_name, start, stop, transposed):
    b = get_backend(backend_name)
    shock, vol_shock = scenarios.draw(start, stop, b)
    if transposed:  # the fused kernel streams column rows: [columns x scenarios]
        out = None
        for a in range(0, stop - start, REVALUE_BLOCK):
            part = np.asarray(exposure.revalue(b, priced, shock[a:a + REVALUE_BLOCK], vol_shock[a:a + REVALUE_BLOCK]))
            if out is None:
                out = np.empty((part.shape[1], stop - start))
            out[:, a:a + part.shape[0]] = part.T
        return out
    return exposure.revalue(b, priced, shock, vol_shock)


def _to_backend(book, backend_name):
    return exposure.to_backend(book, get_backend(backend_name))


def _fold_reference(state, holdings, pnl, m, backend_name):
    return tails.fold_chunk(get_backend(backend_name), state, holdings, pnl, m)


def _sparse_on(backend_name, holdings):
    """The holdings block as a sparse (dense for array-api-strict) matrix of the backend."""
    b = get_backend(backend_name)
    if b.name == "numpy":
        return holdings
    if b.name == "cupy":
        import cupyx.scipy.sparse as csp
        return csp.csr_matrix(holdings)
    if b.name == "jax":
        from jax.experimental import sparse as jsp
        return jsp.BCSR.from_scipy_sparse(holdings)
    return b.asarray(holdings.toarray())


def _fold_fused(state, holdings, pnl_t, m, backend_name, first=0):
    """Fold the chunk's scenarios from ``first`` on (after a pilot sample: its size) into ``state``."""
    from .kernels import fused as fastpath

    if state is None:
        state = fastpath.FastTail.empty(holdings.shape[0], m)
    fastpath.fold_chunk_fused_from(*fastpath.csr_arrays(holdings), pnl_t, state.values, state.count,
                                   state.threshold, m, fastpath.TILE, first)
    return state


def _pilot_state(holdings, pnl_t, m, pilot):
    """The tail state of a row block after its pilot sample, each row's threshold its pilot threshold.

    A row's pilot threshold is the j-th largest of its losses over the first
    ``sample`` scenarios; those losses are folded in with it, so the first
    chunk's fold starts after the sample.  A row with no holdings loses
    exactly 0 in every scenario: it gets no pilot (-inf), since no loss
    would beat a threshold of 0.
    """
    from .kernels import fused as fastpath

    sample, j = pilot
    indptr, indices, data = fastpath.csr_arrays(holdings)
    state = fastpath.FastTail.empty(holdings.shape[0], m)
    fastpath.pilot_fold(indptr, indices, data, pnl_t, state.values, state.count, state.threshold, m, sample, j,
                        fastpath.TILE, PILOT_ROWS)
    return state


def _finish(state, holdings, pnl, sizes, backend_name="numpy", fused=True):
    """(var, es, rows recomputed) of a row block from its final tail state.

    VaR and ES are [rows x len(sizes)].  On the fused path, rows that kept
    fewer than m losses (a pilot threshold above their m-th largest, rare by
    design) are folded again over every chunk with no threshold: exact.
    """
    m = max(sizes)
    if fused:
        from .kernels import fused as fastpath

        top = np.empty((state.values.shape[0], m))
        fastpath.top_m(state.values, state.count, m, top)   # the state is spent: it reorders the held losses
        short = np.flatnonzero(state.count < m)
        if short.size:
            again, rows = None, holdings[short]
            for p in pnl:
                again = _fold_fused(again, rows, p, m, backend_name)
            top[short] = again.top()
    else:
        top = np.asarray(get_backend(backend_name).to_numpy(state), dtype=np.float64)
        short = ()
    ordered = np.sort(top[:, :m], axis=1)
    var = np.empty((ordered.shape[0], len(sizes)))
    es = np.empty_like(var)
    for j, k in enumerate(sizes):
        var[:, j], es[:, j] = tails.var_es(ordered, k)
    return var, es, len(short)
