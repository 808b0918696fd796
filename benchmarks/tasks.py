"""Where the engine's time goes: summed time of each kind of task.

    python -m benchmarks.tasks --accounts 100000 --scenarios 100000 [--threads 2]
    python -m benchmarks.tasks --job portfolio.n_accounts=100000 scenarios.n=100000

Without ``--job``: runs :func:`mcmargin.engine.compute_tails` on a benchmark
book (see :mod:`benchmarks.workload`) twice, the first time as a warm-up at
3,000 scenarios.  With ``--job``: the stress job's own run
(:func:`mcmargin.pipeline.job.run`) on its own synthetic exchange, with the
Hydra overrides given, after a small warm-up run, with freed memory
kept as the job keeps it (:func:`mcmargin.common.allocator.keep_freed_memory`);
the attribution's tail sums and the kernel's final cut are timed too, and
times are thread CPU seconds.  Every task function (draws and revaluation,
pilot, fold, VaR/ES) is timed by wrapping it; task times are summed over
threads, so with two threads they add up to about twice the wall time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import threading
import time


@contextlib.contextmanager
def timed_tasks(names: dict, clock=time.perf_counter):
    """Wrap each ``(owner, attribute)`` of ``names`` so that its calls add their ``clock`` time to the yielded
    dict under its label; everything is put back on exit (this runs inside tests too)."""
    spent = collections.defaultdict(float)
    lock = threading.Lock()

    def timed(name, f):
        @functools.wraps(f)
        def g(*a, **k):
            t = clock()
            try:
                return f(*a, **k)
            finally:
                with lock:
                    spent[name] += clock() - t
        return g

    original = {key: getattr(*key) for key in names}
    try:
        for key, f in original.items():
            setattr(*key, timed(names[key], f))
        yield spent
    finally:
        for key, f in original.items():
            setattr(*key, f)


def _task_names(job: bool) -> dict:
    from mcmargin.engine import graph as engine
    from mcmargin.engine.kernels.fused import FusedKernel
    from mcmargin.engine.kernels.reference import ReferenceKernel

    # (owner, attribute) -> label: the scheduler's task functions and the kernels' methods.
    names = {(engine, "_revalue_chunk"): "draws + revaluation", (FusedKernel, "start"): "pilot",
             (FusedKernel, "fold"): "fold (fused)", (ReferenceKernel, "fold"): "fold (reference)",
             (engine, "_finish"): "VaR/ES (+ recomputes)"}
    if job:
        from mcmargin.engine import attribution

        names.update({(FusedKernel, "finish"): "  of which final cut", (attribution, "add_chunk"):
                      "  of which attribution's tail sums", (attribution, "by_scenario"): "  of which tails by scenario"})
    return names


def _report(title, spent, unit):
    """The title, then each task's time, largest first; the parts of the blocks' finish ("  of which ...")
    under it."""
    print(title)
    main = {k: v for k, v in spent.items() if not k.startswith(" ")}
    parts = {k: v for k, v in spent.items() if k.startswith(" ")}
    total = sum(main.values())
    for name, s in sorted(main.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<36} {s:7.2f} s {unit} ({s / total:.0%})")
        if name.startswith("VaR/ES"):
            for part, p in sorted(parts.items(), key=lambda kv: -kv[1]):
                print(f"  {part:<36} {p:7.2f} s {unit} ({p / total:.0%})")


def run_job(overrides) -> None:
    """The ``--job`` mode: the stress job's run on its own book, task by task (thread CPU seconds)."""
    import os

    from hydra import compose, initialize_config_dir

    from mcmargin.common.allocator import keep_freed_memory
    from mcmargin.pipeline.job import run

    keep_freed_memory()
    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        warm = compose("stress", overrides=["engine.progress=false", "portfolio.n_accounts=200", "scenarios.n=4096"])
        cfg = compose("stress", overrides=["engine.progress=false", *overrides])
    run(warm)
    with timed_tasks(_task_names(job=True), clock=time.thread_time) as spent:
        t = time.perf_counter()
        run(cfg)
        wall = time.perf_counter() - t
    _report(f"jobs.stress {' '.join(overrides) or '(defaults)'}: run(cfg) wall {wall:.2f} s (no imports, "
            "no writing)", spent, "thread CPU")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=20_000)
    ap.add_argument("--scenarios", type=int, default=100_000)
    ap.add_argument("--instruments", type=int, default=60)
    ap.add_argument("--threads", type=int, default=0, help="0 = dask's default")
    ap.add_argument("--job", nargs="*", metavar="OVERRIDE",
                    help="time the stress job's own run instead, with these Hydra overrides")
    args = ap.parse_args(argv)
    if args.job is not None:
        run_job(args.job)
        return

    import dask

    from benchmarks.workload import make_book, scenario_config
    from mcmargin import build_scenarios
    from mcmargin.engine import graph as engine
    from mcmargin.aggregation import compile_book

    book = make_book(args.accounts, args.instruments)
    vol = book.market["vol"].to_numpy()
    compiled = compile_book(book, 2)
    engine.compute_tails(compiled, build_scenarios(scenario_config(3000), book.assets, vol), [0.99, 0.995])
    scenarios = build_scenarios(scenario_config(args.scenarios), book.assets, vol)
    with timed_tasks(_task_names(job=False)) as spent:
        with dask.config.set(num_workers=args.threads or None):
            t = time.perf_counter()
            result = engine.compute_tails(compiled, scenarios, [0.99, 0.995])
            wall = time.perf_counter() - t
            threads = engine.scheduler_threads(None)
    # _finish also folds recomputed rows: that time shows under both.
    _report(f"{args.accounts:,} accounts x {args.scenarios:,} scenarios x {args.instruments} instruments, "
            f"threads {threads}: wall {wall:.2f} s, rows recomputed "
            f"{result.timings['rows_recomputed']}, blocks in flight {result.timings['blocks_in_flight']}",
            dict(spent), "task time")


if __name__ == "__main__":
    main()
