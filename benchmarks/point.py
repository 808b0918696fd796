"""One size point of the benchmark, in its own process.

``python -m benchmarks.point --accounts A --scenarios N [--instruments K] --out FILE``

1. Warm-up: a tiny ``run_stress`` (loads the compiled kernels, starts the
   thread pool) and a tiny ``revalue``, so compile time is never timed.
2. Build the book and the scenario model (timed apart).
3. ``run_stress(book, scenarios)`` with its defaults (NumPy backend, fused
   kernel, local threads): wall time, its own ``timings`` attribute, and the
   peak RSS of the process right after it returns (``ru_maxrss``: nothing
   that runs later can raise the figure recorded for the engine).
4. On the same book and scenarios: ``revalue`` alone over every chunk
   (sequential and on all cores), reference (a) on every account (or on a
   strided sample, extrapolated linearly, when accounts x scenarios exceeds
   ``--analyst-budget``), the equality check of ES / VaR / IM against (a),
   and reference (b) on the first scenarios (extrapolated linearly).

Writes one JSON object to ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time

import numpy as np

CONFIDENCE = 0.99   # the margin confidence (MarginParams default)
TOLERANCE = 1e-9


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def warm_up():
    from mcmargin import run_stress
    from . import workload

    book = workload.make_book(60, 60)
    scen = workload.make_scenarios(book, 2000)
    run_stress(book, scen)


def run_point(accounts: int, scenarios: int, instruments, *, analyst_budget: float, ql_budget_s: float,
              profile: str | None = None) -> dict:
    from mcmargin import MarginParams, run_stress, tail_size
    from mcmargin.aggregation import column_pnl, compile_book

    from . import references as ref
    from . import workload

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    out = {"accounts_requested": accounts, "scenarios": scenarios, "instruments_requested": instruments,
           "threads": threads, "pid": os.getpid(), "load_before": _loadavg()}
    t = time.perf_counter()
    warm_up()
    out["warm_up_s"] = time.perf_counter() - t

    t = time.perf_counter()
    book = workload.make_book(accounts, instruments)
    out["book_s"] = time.perf_counter() - t
    scen = workload.make_scenarios(book, scenarios)
    gc.collect()
    out["rss_before_mb"] = _rss_mb()

    profiler = None
    if profile:
        from pyinstrument import Profiler
        profiler = Profiler()
        profiler.start()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    ds = run_stress(book, scen, scheduler="sync" if profile else None)
    out["run_stress_wall_s"] = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    out["run_stress_cpu_s"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    out["peak_rss_mb"] = _peak_rss_mb()
    if profiler is not None:
        profiler.stop()
        with open(profile, "w") as f:
            f.write(profiler.output_text(unicode=False, color=False, show_all=False))
    out["load_after"] = _loadavg()
    try:
        out["timings"] = json.loads(ds.attrs.get("timings", "{}"))
    except (TypeError, ValueError):
        out["timings"] = {}
    out["compute_s"] = float(out["timings"].get("compute_s", out["run_stress_wall_s"]))
    out["total_s"] = float(out["timings"].get("total_s", out["run_stress_wall_s"]))
    out["kernel"] = str(ds.attrs.get("kernel", ""))
    chunk = int(ds.attrs.get("chunk_scenarios", 0) or 0) or min(scenarios, 16384)
    out["chunk_scenarios"] = chunk
    margin = MarginParams()
    qs = np.asarray(ds["confidence"].values, dtype=float)
    k = int(np.argmin(np.abs(qs - CONFIDENCE)))
    eng_es = np.asarray(ds["es"].values)[:, k].copy()
    eng_var = np.asarray(ds["var"].values)[:, k].copy()
    eng_im = np.asarray(ds["im"].values).copy()
    del ds
    gc.collect()

    # ---------------------------------------------------------------- the same book, compiled for the references
    # the horizon run_stress compiles with (calendar days for history models)
    compiled = compile_book(book, getattr(scen, "horizon_calendar_days", scen.horizon_days))
    h = compiled.holdings
    acc_rows = compiled.rows("accounts")
    h_acc = h[acc_rows]
    out.update(accounts=int(compiled.accounts.size), instruments=int(compiled.n_instruments),
               options=int(np.asarray(compiled.options.strike).size), columns=int(compiled.n_columns),
               rows=int(h.shape[0]), nnz=int(h.nnz), account_nnz=int(h_acc.nnz),
               factor_nnz=int(compiled.exposures.nnz),
               positions=int(h_acc[:, :compiled.n_instruments].nnz))
    out["positions_per_account"] = out["positions"] / max(out["accounts"], 1)
    m = tail_size(scenarios, CONFIDENCE)
    out["m"] = m

    chunks = ref.draw_chunks(scen, chunk)
    factor_pnl, seq, par = ref.time_revalue(compiled, chunks, threads)
    out["revalue_seq_s"], out["revalue_par_s"] = seq, par
    # The analyst works per position: P&L per unit of every position column.
    pnl = column_pnl(compiled, factor_pnl)
    del factor_pnl
    shock = np.concatenate([c[0] for c in chunks], axis=0)
    vol_shock = np.concatenate([c[1] for c in chunks], axis=0)
    del chunks

    # ---------------------------------------------------------------- (a) the analyst's loop
    pnl_t = np.ascontiguousarray(pnl.T)
    rows, sampled = ref.sample_rows(out["accounts"], scenarios, analyst_budget)
    gc.collect()
    t = time.perf_counter()
    a_var, a_es = ref.analyst_tails(h_acc, pnl_t, rows, m)
    a_s = time.perf_counter() - t
    a_im = np.maximum(0.0, a_es) * (1.0 + margin.buffer)
    out["analyst"] = {
        "rows_timed": int(rows.size), "sampled": bool(sampled), "seconds_timed": a_s,
        "seconds": a_s * out["accounts"] / rows.size,
        "s_per_1e9": a_s / (rows.size * scenarios) * 1e9,
        "es_rel_err": ref.relative_error(eng_es[rows], a_es),
        "var_rel_err": ref.relative_error(eng_var[rows], a_var),
        "im_rel_err": ref.relative_error(eng_im[rows], a_im),
    }
    worst = max(out["analyst"][k] for k in ("es_rel_err", "var_rel_err", "im_rel_err"))
    out["analyst"]["pass"] = bool(worst <= TOLERANCE)
    del pnl_t

    # ---------------------------------------------------------------- (b) QuantLib, one option at a time
    qlr = ref.quantlib_revaluation(compiled, book.valuation_date, shock, vol_shock, budget_s=ql_budget_s)
    n_opt = qlr["n_options"]
    if n_opt:
        opt_cols = slice(compiled.n_instruments - n_opt, compiled.n_instruments)
        mine = pnl[:qlr["scenarios"], opt_cols]
        ql_err = float(np.max(np.abs(qlr["pnl"] - mine)) / max(np.max(np.abs(mine)), 1e-300))
    else:
        ql_err = 0.0
    out["quantlib"] = {
        "options": n_opt, "scenarios_timed": qlr["scenarios"], "seconds_timed": qlr["seconds"],
        "per_pricing_us": qlr["per_pricing_s"] * 1e6,
        "seconds": qlr["per_pricing_s"] * n_opt * scenarios if n_opt else 0.0,
        "max_abs_diff_rel_to_max": ql_err, "expiry_day_rounding": qlr["day_error"],
    }
    out["process_peak_rss_mb"] = _peak_rss_mb()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--accounts", type=int, required=True)
    p.add_argument("--scenarios", type=int, required=True)
    p.add_argument("--instruments", type=int, default=None, help="keep the K most traded (default: all)")
    p.add_argument("--analyst-budget", type=float, default=1e9,
                   help="accounts x scenarios that (a) runs before it samples accounts")
    p.add_argument("--ql-budget", type=float, default=1.0, help="seconds of QuantLib repricing to time")
    p.add_argument("--profile", default=None, help="write a pyinstrument profile of run_stress here "
                   "(runs dask's synchronous scheduler: the split, not the parallel time)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    res = run_point(args.accounts, args.scenarios, args.instruments, analyst_budget=args.analyst_budget,
                    ql_budget_s=args.ql_budget, profile=args.profile)
    with open(args.out, "w") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
