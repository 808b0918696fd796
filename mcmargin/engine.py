"""The stress engine: scenarios -> revaluation -> aggregation -> exact tails.

Work is cut into scenario chunks and row blocks and scheduled with dask.
For each scenario chunk one task draws the shocks and revalues every
column once; for each row block a chain of tasks folds the chunks into
the block's tails in scenario order.  Each task is deterministic and the
chain order is fixed, so results do not depend on the scheduler or the
number of workers; changing chunk sizes changes only the rounding of the
loss sums in the reference path (never which scenarios are drawn).

Peak memory is O(rows x m) for the tails plus O(chunk) per task in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
import uuid

import dask
import numpy as np

from . import exposure, tails
from .backend import get_backend

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
        fold task holds its block's tails [rows x 2m] and, on the reference
        path, the block's losses [rows x chunk].  Never depends on workers.
        """
        s = self.scenarios or _clamp(budget // (8 * 8 * max(n_columns, 1)), 1024, 16384)
        s = min(s, n_scenarios)
        r = self.rows or _clamp(budget // (8 * (2 * m + s)), 256, 4096)
        return Chunking(int(s), int(min(r, max(n_rows, 1))))


def _clamp(x, lo, hi):
    return int(max(lo, min(hi, x)))


@dataclasses.dataclass
class TailResult:
    """VaR and ES of every row of the holdings at each confidence."""

    book: exposure.CompiledBook
    confidences: list
    var: np.ndarray              # [rows x confidence]
    es: np.ndarray               # [rows x confidence]
    n_scenarios: int
    tail_size: int               # m kept per row (the largest over the confidences)
    chunking: Chunking
    timings: dict


def compute_tails(book: exposure.CompiledBook, scenarios, confidences, *, backend: str = "numpy",
                  fast_path: bool = True, chunking: Chunking = Chunking(), scheduler=None,
                  budget: int = TASK_BUDGET, progress: bool = False) -> TailResult:
    """VaR and ES at each confidence of every row of ``book.holdings``.

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
        Passed to ``dask.compute``; default the local threaded scheduler.
    budget : int
        Memory budget of one task in bytes, for chunk sizes not set.
    progress : bool
        Show a progress bar on stderr once the run has taken a few seconds.
    """
    t0 = time.perf_counter()
    b = get_backend(backend)
    fused = fast_path and b.name == "numpy"
    n = scenarios.n
    n_rows = book.holdings.shape[0]
    confidences = [float(q) for q in confidences]
    sizes = [tails.tail_size(n, q) for q in confidences]
    m = max(sizes)
    ch = chunking.resolve(n, n_rows, book.n_columns, m, budget)
    starts = list(range(0, n, ch.scenarios))
    blocks = list(range(0, n_rows, ch.rows))

    # Keys are named, not hashed: tokenizing the book for every task is waste.
    run = uuid.uuid4().hex[:8]
    revalue_chunk = dask.delayed(_revalue_chunk, pure=False)
    fold = dask.delayed(_fold_fused if fused else _fold_reference, pure=False)
    finish = dask.delayed(_finish, pure=False)
    # The pricing arrays go to the backend (device) once, as a task of their own.
    priced = dask.delayed(_to_backend, pure=False)(book, b.name, dask_key_name=f"priced-{run}")
    scen_d = dask.delayed(scenarios, name=f"scenarios-{run}")
    pnl = [revalue_chunk(priced, scen_d, b.name, s, min(s + ch.scenarios, n), fused,
                         dask_key_name=f"revalue-{run}-{s}") for s in starts]
    out = []
    for r0 in blocks:
        h = book.holdings[r0:r0 + ch.rows]
        state = None
        for s, p in zip(starts, pnl):
            state = fold(state, h, p, m, b.name, dask_key_name=f"fold-{run}-{r0}-{s}")
        out.append(finish(state, fused, sizes, dask_key_name=f"tail-{run}-{r0}"))
    t1 = time.perf_counter()
    results = _run_graph(out, scheduler, progress)
    t2 = time.perf_counter()
    var = np.concatenate([r[0] for r in results], axis=0)
    es = np.concatenate([r[1] for r in results], axis=0)
    return TailResult(book, confidences, var, es, n, m, ch,
                      {"graph_s": t1 - t0, "compute_s": t2 - t1, "n_tasks": len(pnl) * (1 + len(blocks))})


def _run_graph(out, scheduler, progress):
    """Compute the graph on ``scheduler`` with a progress bar on long runs (stderr)."""
    if scheduler is None or isinstance(scheduler, str):
        from dask.diagnostics import ProgressBar

        bar = ProgressBar(minimum=PROGRESS_AFTER_S, dt=1.0, out=sys.stderr) if progress else contextlib.nullcontext()
        with bar:
            return dask.compute(*out, scheduler=scheduler or "threads")
    futures = scheduler.compute(list(out))
    if progress:
        from distributed import progress as show_progress

        show_progress(futures, notebook=False)
    return scheduler.gather(futures)


def _revalue_chunk(priced, scenarios, backend_name, start, stop, transposed):
    b = get_backend(backend_name)
    shock, vol_shock = scenarios.draw(start, stop, b)
    pnl = exposure.revalue(b, priced, shock, vol_shock)
    if transposed:  # the fused kernel streams column rows: [columns x scenarios]
        return np.ascontiguousarray(np.asarray(pnl).T)
    return pnl


def _to_backend(book, backend_name):
    return exposure.to_backend(book, get_backend(backend_name))


def _fold_reference(state, holdings, pnl, m, backend_name):
    b = get_backend(backend_name)
    h = _sparse_on(b, holdings)
    return tails.fold_chunk(b, state, h, pnl, m)


def _sparse_on(b, holdings):
    if b.name == "numpy":
        return holdings
    if b.name == "cupy":
        import cupyx.scipy.sparse as csp
        return csp.csr_matrix(holdings)
    if b.name == "jax":
        from jax.experimental import sparse as jsp
        return jsp.BCSR.from_scipy_sparse(holdings)
    return b.asarray(holdings.toarray())


def _fold_fused(state, holdings, pnl_t, m, backend_name):
    from . import fastpath

    if state is None:
        state = fastpath.FastTail.empty(holdings.shape[0], m)
    fastpath.fold_chunk_fused(holdings.indptr.astype(np.int64), holdings.indices.astype(np.int64),
                              holdings.data, pnl_t, state.values, state.count, state.threshold, m,
                              fastpath.TILE)
    return state


def _finish(state, fused, sizes):
    """VaR and ES [rows x len(sizes)] of a row block from its final tail state."""
    top = state.top() if fused else state
    ordered = tails.sorted_tail(get_backend("numpy").to_numpy(top) if not isinstance(top, np.ndarray) else top)
    var = np.empty((ordered.shape[0], len(sizes)))
    es = np.empty_like(var)
    for j, m in enumerate(sizes):
        var[:, j], es[:, j] = tails.var_es(ordered, m)
    return var, es


