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

from .. import tails
from ..aggregation import CompiledBook
from ..backend import get_backend
from ..common.allocator import with_huge_pages
from ..instruments import revaluation
from ..tails import TailResult
from .kernels import TailKernel, select_kernel
from .kernels.reference import ReferenceKernel

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
                budget: int = TASK_BUDGET, row_bytes=None) -> "Chunking":
        """Concrete sizes from the problem size and a memory budget per task.

        A revaluation task holds a few [chunk x columns] float64 arrays; a
        fold task holds its block's tails (about [rows x 2m] with the staged
        candidates) and, on the reference path, the block's losses
        [rows x chunk]: ``row_bytes(chunk)``, a kernel's
        :meth:`~.kernels.TailKernel.row_bytes`, says how much a row of a block
        holds (default: the reference kernel's).  Never depends on the workers.
        """
        s = self.scenarios or _clamp(budget // (8 * 8 * max(n_columns, 1)), 1024, 16384)
        s = min(s, n_scenarios)
        per_row = row_bytes(s) if row_bytes is not None else ReferenceKernel.row_bytes(m, s)
        r = self.rows or _clamp(budget // max(int(per_row), 1), 256, 4096)
        return Chunking(int(s), int(min(r, max(n_rows, 1))))


def _clamp(x, lo, hi):
    return int(max(lo, min(hi, x)))


@with_huge_pages      # its random reads of P&L and exposures gain from them (mcmargin.common.allocator)
def compute_tails(book: CompiledBook, scenarios, confidences, *, backend: str = "numpy",
                  fast_path: bool = True, chunking: Chunking = Chunking(), scheduler=None,
                  budget: int = TASK_BUDGET, progress: bool = False, blocks_in_flight: int = 0,
                  limits: tails.Limits | None = None, attribution: tails.TailAttribution | None = None,
                  keep_dir=None) -> TailResult:
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
        On the numpy backend, use the fused compiled kernel instead of the
        array-API reference (:func:`~.kernels.select_kernel`).
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
    limits : Limits, optional
        Loss limits whose exceedances are counted in the same pass
        (``TailResult.hits`` and ``excess``, one column per limit: the fixed
        ones, then those from the tails).
    attribution : TailAttribution, optional
        Rows whose tail scenarios and tail sums of factor P&L are kept
        (``TailResult.tail_top`` and ``tail_sums``; :mod:`.attribution`).
    keep_dir : path, optional
        Resume directory (:func:`block_signature`): each row block's result
        is kept there when its last task ends, and a block whose result is
        there already is loaded instead of computed.  Results are the same
        bit for bit either way.
    """
    t0 = time.perf_counter()
    b = get_backend(backend)
    kernel = select_kernel(b.name, fast_path)
    n = scenarios.n
    n_rows = book.exposures.shape[0]
    confidences = [float(q) for q in confidences]
    sizes = [tails.tail_size(n, q) for q in confidences]
    # Each row keeps its m worst losses (and, explained, at least its `top` worst scenarios).
    m = max(sizes + ([] if attribution is None else [min(attribution.top, n),
                                                     tails.tail_size(n, attribution.confidence)]))
    ch = chunking.resolve(n, n_rows, book.n_factors, m, budget, lambda chunk: kernel.row_bytes(m, chunk))
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
                        min(s + ch.scenarios, n), kernel.transposed)
    plan = kernel.plan(m, n, ch.scenarios, book.exposures)
    limits = limits or tails.Limits()
    index = {q: j for j, q in enumerate(confidences)}
    from_tails = [(index[float(q)], float(scale), np.asarray(offset, dtype=float))
                  for q, scale, offset in limits.from_tails]
    lanes = blocks_in_flight or 2 * scheduler_threads(scheduler)
    explain, by_scenario = None, []
    if attribution is not None:
        explain = (tails.tail_size(n, attribution.confidence), attribution.top)
        # Attribution reads each chunk's P&L scenario-major ([chunk x factors]): the reference's is, the
        # fused kernel's gets a copy once per chunk (engine/attribution.py).
        by_scenario = pnl
        if kernel.transposed:
            by_scenario = [f"by-scenario-{k}" for k in pnl]
            dsk.update({b: (_scenario_major, k) for b, k in zip(by_scenario, pnl)})
    kept = None if keep_dir is None else _kept_blocks(keep_dir, book, n, sizes, ch, kernel, b.name, limits,
                                                       attribution)
    resumed = 0
    out = []              # each block's result key, in the order the blocks start
    # The last block first: it holds the rows of one position per instrument and side (the long, short and
    # collateral rows), whose finish lists every column's worst scenarios (0.26 s at 100,000 x 100,000),
    # once per run; last, it ran alone while the other threads had nothing left to do.
    order = blocks[-1:] + blocks[:-1]
    for i, r0 in enumerate(order):
        # Block i starts once block i - lanes is done: only `lanes` tails are
        # alive at a time, and a finished block's memory (warm, already
        # mapped) serves the next one.
        r1 = r0 + ch.rows
        if kept is not None and kept(r0).is_file():       # done before the run was stopped: load it
            dsk[f"kept-{run}-{r0}"] = (_load_block, str(kept(r0)))
            out.append(f"kept-{run}-{r0}")
            resumed += 1
            continue
        out.append(_block_tasks(dsk, kernel, book.exposures[r0:r1], starts, pnl, m, sizes, plan,
                                f"{run}-{r0}", out[i - lanes] if i >= lanes else None,
                                None if limits.fixed is None else limits.fixed[r0:r1],
                                [(k, scale, offset[r0:r1]) for k, scale, offset in from_tails],
                                None if explain is None else (attribution.rows[r0:r1], attribution.pattern[r0:r1],
                                                              *explain), by_scenario))
        if kept is not None:
            dsk[f"keep-{run}-{r0}"] = (_keep_block, str(kept(r0)), out[-1])
            out[-1] = f"keep-{run}-{r0}"
    if resumed:
        log.info("resumed %d of %d row blocks from %s", resumed, len(blocks), keep_dir)
    by_row = dict(zip(order, out))
    t1 = time.perf_counter()
    results = _run_graph(dsk, [by_row[r0] for r0 in blocks], scheduler, progress)
    var = np.concatenate([r[0] for r in results], axis=0)
    es = np.concatenate([r[1] for r in results], axis=0)
    redone = sum(r[2] for r in results)
    hits = np.concatenate([r[3] for r in results], axis=0)
    excess = np.concatenate([r[4] for r in results], axis=0)
    top = None if explain is None else np.concatenate([r[5] for r in results], axis=0)
    sums = None if explain is None else np.concatenate([r[6] for r in results])
    if redone:
        log.debug("%d row(s) fell below their pilot threshold and were recomputed without it", redone)
    t2 = time.perf_counter()
    return TailResult(book, confidences, var, es, n, m, ch,
                      {"graph_s": t1 - t0, "compute_s": t2 - t1, "n_tasks": len(dsk),
                       "blocks_in_flight": min(lanes, len(blocks)),
                       "pilot": list((plan or {}).get("pilot") or ()), "rows_recomputed": int(redone),
                       "blocks": len(blocks),
                       "blocks_resumed": resumed}, hits, excess, attribution, top, sums)


def _kept_blocks(keep_dir, book, n, sizes, ch, kernel, backend_name, limits, attribution=None):
    """``path(r0)``: where row block ``r0``'s result is kept, under a signature of everything it depends on.

    The run directory is already keyed by the config and the inputs
    (:mod:`jobs.stress`); the signature adds what the engine derived from
    them (holdings, chunking, tail sizes, kernel, limits), so two passes of
    one run (the tails, then the exceedances of late models) never share a
    file, and nothing stale is ever loaded.
    """
    import hashlib
    from pathlib import Path

    h = hashlib.sha256(repr((n, list(sizes), ch.scenarios, ch.rows, kernel.label, backend_name,
                             book.exposures.shape)).encode())
    e = book.exposures.tocsr() if hasattr(book.exposures, "tocsr") else np.asarray(book.exposures)
    for a in ((e.data, e.indices, e.indptr) if hasattr(e, "indptr") else (e,)):
        h.update(np.ascontiguousarray(a).tobytes())
    if limits.fixed is not None:
        h.update(np.ascontiguousarray(limits.fixed, dtype=float).tobytes())
    for q, scale, offset in limits.from_tails:
        h.update(repr((float(q), float(scale))).encode() + np.ascontiguousarray(offset, dtype=float).tobytes())
    if attribution is not None:          # a block's result then carries its tail scenarios and tail sums too
        h.update(repr((float(attribution.confidence), int(attribution.top))).encode())
        pattern = attribution.pattern.tocsr()
        for a in (attribution.rows, pattern.indptr, pattern.indices):
            h.update(np.ascontiguousarray(a).tobytes())
    sig = h.hexdigest()[:16]
    root = Path(keep_dir)
    return lambda r0: root / f"block-{sig}-{r0}.pkl"


def _keep_block(path, result):
    """Keep a finished row block's ``result`` at ``path`` (atomically: whole or absent), and pass it on."""
    import os
    import pickle

    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with open(tmp, "wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return result


def _load_block(path):
    """A row block's result kept by :func:`_keep_block` (a file this run's own earlier attempt wrote)."""
    import pickle

    with open(path, "rb") as f:
        return pickle.load(f)


def _block_tasks(dsk, kernel: TailKernel, h, starts, pnl, m, sizes, plan, key, after=None, limits=None,
                 from_tails=(), explain=None, by_scenario=()):
    """Add one row block's tasks to ``dsk``: prepare, start (e.g. a pilot), the chain of folds, VaR/ES.

    ``limits`` [block rows x K1] and ``from_tails`` (confidence index, scale,
    offset [block rows]) are counted in the last task (:func:`_finish`).
    ``explain`` (rows, pattern, m, top) of the block and ``by_scenario`` (every chunk's P&L,
    scenario-major): see :func:`_finish`.
    Returns the key of the block's (var, es, rows recomputed, hits, excess, tail top, tail sums).
    """
    if after is not None:
        dsk[f"lane-{key}"] = (_after, h, after)
        h = f"lane-{key}"
    # The block's holdings in the kernel's form (on the device) once, not once per chunk.
    dsk[f"holdings-{key}"] = (kernel.prepare, h)
    h = f"holdings-{key}"
    state = f"start-{key}"
    dsk[state] = (kernel.start, h, pnl[0], m, plan, limits)
    for s, p in zip(starts, pnl):
        dsk[f"fold-{key}-{s}"] = (kernel.fold, state, h, p, m)
        state = f"fold-{key}-{s}"
    dsk[f"tail-{key}"] = (_finish, kernel, state, h, list(pnl), sizes, limits, list(from_tails), explain,
                          list(by_scenario))
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
    on a terminal, a few plain lines otherwise (:mod:`mcmargin.engine.progress`).
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
            part = np.asarray(revaluation.revalue(b, priced, shock[a:a + REVALUE_BLOCK], vol_shock[a:a + REVALUE_BLOCK]))
            if out is None:
                out = np.empty((part.shape[1], stop - start))
            out[:, a:a + part.shape[0]] = part.T
        return out
    return revaluation.revalue(b, priced, shock, vol_shock)


def _scenario_major(pnl_t):
    from .attribution import scenario_major        # numba: imported by the step that needs it

    return scenario_major(pnl_t)


def _to_backend(book, backend_name):
    return revaluation.to_backend(book, get_backend(backend_name))


def _finish(kernel: TailKernel, state, holdings, pnl, sizes, limits=None, from_tails=(), explain=None,
            by_scenario=()):
    """(var, es, rows recomputed, hits, excess, tail top, tail sums) of a row block from its final tail state.

    VaR and ES are [rows x len(sizes)], by the definitions of :mod:`mcmargin.tails`.
    hits and excess [rows x limits], for ``limits`` [rows x K1] and then the
    limits ``from_tails`` (:class:`mcmargin.tails.Limits`): counted from each
    row's kept worst losses where the limit is at least the smallest of them
    (every loss above it was kept: exact); the few rows whose limit lies
    lower (a pool margined below its VaR) are counted by the kernel over
    every chunk again, rows only.
    ``explain`` = (rows [block], pattern [block x factors], m at the explained
    confidence, top): the explained rows' ``top`` worst scenarios and the sums of
    their pattern factors' P&L over their tails (:func:`.attribution.explain_block`,
    from ``by_scenario``, every chunk's P&L scenario-major); None for both when not asked.
    """
    m = max(sizes)
    top, scenario, recomputed = kernel.finish(state, holdings, pnl, state.m)
    explained = (None, None)
    if explain is not None:
        from .attribution import explain_block        # numba: imported by the step that needs it

        explained = explain_block(top, scenario, *explain, by_scenario)
    ordered = kernel.sort_rows(top)            # every kept loss (at least m): VaR/ES read the last m
    var = np.empty((ordered.shape[0], len(sizes)))
    es = np.empty_like(var)
    for j, k in enumerate(sizes):
        var[:, j], es[:, j] = tails.var_es(ordered, k)
    columns = [] if limits is None else [limits[:, j] for j in range(limits.shape[1])]
    columns += [scale * np.maximum(0.0, es[:, k]) + offset for k, scale, offset in from_tails]
    if not columns:
        return var, es, recomputed, np.zeros((ordered.shape[0], 0)), np.zeros((ordered.shape[0], 0)), *explained
    limit = np.stack(columns, axis=1)
    hits, excess, exact = tails.exceedances_from_tail(ordered, limit)
    counted = getattr(state, "counting", None)
    if counted is not None and counted.any():      # counted in the folds (limits below the pilot threshold)
        k = state.limits.shape[1]
        done = ~np.isnan(state.limits)
        hits[:, :k] = np.where(done, state.hits, hits[:, :k])
        excess[:, :k] = np.where(done, state.excess, excess[:, :k])
        exact[:, :k] |= done
    again = np.flatnonzero(~exact.all(axis=1))
    if again.size:
        hits[again], excess[again] = kernel.count(holdings, again, pnl, limit[again])
    return var, es, recomputed, hits, excess, *explained
