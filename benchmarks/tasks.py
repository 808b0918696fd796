"""Where the engine's time goes: summed wall time of each kind of task.

    python -m benchmarks.tasks --accounts 100000 --scenarios 100000 [--threads 2]

Runs :func:`mcmargin.engine.compute_tails` on a benchmark book (see
:mod:`benchmarks.workload`) twice, the first time as a warm-up at 3,000
scenarios, and times every task function (draws and revaluation, pilot,
fold, VaR/ES) by wrapping it.  Task times are summed over threads, so with
two threads they add up to about twice the wall time.
"""

from __future__ import annotations

import argparse
import collections
import functools
import threading
import time


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=20_000)
    ap.add_argument("--scenarios", type=int, default=100_000)
    ap.add_argument("--instruments", type=int, default=60)
    ap.add_argument("--threads", type=int, default=0, help="0 = dask's default")
    args = ap.parse_args(argv)

    import dask

    from benchmarks.workload import make_book, scenario_config
    from mcmargin import build_scenarios
    from mcmargin.engine import graph as engine
    from mcmargin.aggregation import compile_book

    book = make_book(args.accounts, args.instruments)
    vol = book.market["vol"].to_numpy()
    compiled = compile_book(book, 2)
    engine.compute_tails(compiled, build_scenarios(scenario_config(3000), book.assets, vol), [0.99, 0.995])

    spent = collections.defaultdict(float)
    lock = threading.Lock()

    def timed(name, f):
        @functools.wraps(f)
        def g(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                with lock:
                    spent[name] += time.perf_counter() - t
        return g

    from mcmargin.engine.kernels.fused import FusedKernel
    from mcmargin.engine.kernels.reference import ReferenceKernel

    # (owner, attribute) -> label: the scheduler's task functions and the kernels' methods.
    names = {(engine, "_revalue_chunk"): "draws + revaluation", (FusedKernel, "start"): "pilot",
             (FusedKernel, "fold"): "fold (fused)", (ReferenceKernel, "fold"): "fold (reference)",
             (engine, "_finish"): "VaR/ES (+ recomputes)"}
    original = {key: getattr(*key) for key in names}
    scenarios = build_scenarios(scenario_config(args.scenarios), book.assets, vol)
    try:
        for key, f in original.items():
            setattr(*key, timed(names[key], f))
        with dask.config.set(num_workers=args.threads or None):
            t = time.perf_counter()
            result = engine.compute_tails(compiled, scenarios, [0.99, 0.995])
            wall = time.perf_counter() - t
            threads = engine.scheduler_threads(None)
    finally:                       # the engine is left as it was (this runs inside tests too)
        for key, f in original.items():
            setattr(*key, f)
    # _finish also folds recomputed rows: that time shows under both.
    print(f"{args.accounts:,} accounts x {args.scenarios:,} scenarios x {args.instruments} instruments, "
          f"threads {threads}: wall {wall:.2f} s, rows recomputed "
          f"{result.timings['rows_recomputed']}, blocks in flight {result.timings['blocks_in_flight']}")
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {s:7.2f} s task time ({s / sum(spent.values()):.0%})")


if __name__ == "__main__":
    main()
