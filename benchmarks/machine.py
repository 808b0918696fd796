"""The machine and the rates of the floor model.

Run as ``python -m benchmarks.machine [--blas-n N]``: prints one JSON object
with

- ``cpu``, ``cores``, ``ram_gb``;
- ``blas``: OpenBLAS's core kernel and the float64 multiply-add rate of a
  large matmul (``n^3 / t``, i.e. flops / 2 per second, all cores, best of
  three);
- ``compare``: elements per second of ``np.greater(x, threshold)`` on all
  cores at once (one thread each; NumPy releases the GIL in ufunc loops),
  once on blocks that stay in L2 cache and once on arrays far larger than
  the last-level cache (main-memory bound).

The driver runs it with the environment as given and with
``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` removed (those variables pin
OpenBLAS to a kernel and a blocking that may not be this CPU's best), each
on all cores and on one thread (``OPENBLAS_NUM_THREADS=1``): on a shared
machine a one-thread rate times the number of cores is the more robust
estimate of what the cores can do, as other jobs rarely leave every core
free.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import ctypes
import json
import os
import platform
import time

import numpy as np


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [x for x in ("avx2", "fma", "avx512f") if x in flags]
    except OSError:
        pass
    return []


def ram_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return float("nan")


def n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def blas_kernel() -> dict:
    """Which OpenBLAS core kernel runs: threadpoolctl if installed, else OpenBLAS itself."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        pass
    else:
        info = [d for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
        if info:
            return {"source": "threadpoolctl", "kernel": info[0].get("architecture"),
                    "library": info[0].get("internal_api"), "threads": info[0].get("num_threads"),
                    "version": info[0].get("version")}
    # threadpoolctl is not installed: ask the loaded OpenBLAS, as threadpoolctl would.
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        paths = set()
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                core = getattr(lib, f"{prefix}get_corename{suffix}", None)
                threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if core is not None:
                    core.restype = ctypes.c_char_p
                    return {"source": "threadpoolctl not installed; openblas_get_corename() via ctypes",
                            "kernel": core().decode(), "library": os.path.basename(path),
                            "threads": int(threads()) if threads is not None else None}
    return {"source": "unknown", "kernel": None}


def blas_fma_rate(n: int = 4000, reps: int = 3) -> float:
    """float64 multiply-adds per second of an n x n matmul (best of ``reps``)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n))
    b = rng.standard_normal((n, n))
    c = np.empty((n, n))
    np.matmul(a, b, out=c)  # warm-up: threads, pages
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return n ** 3 / best


def _compare_loop(x, thr, out, repeat):
    t = time.perf_counter()
    for _ in range(repeat):
        np.greater(x, thr, out=out)
    return time.perf_counter() - t


def compare_rate(threads: int, size: int, total: float) -> float:
    """Elements per second of np.greater(x, scalar) on ``threads`` threads at once."""
    repeat = max(1, int(total / size))
    xs = [np.random.default_rng(i).standard_normal(size) for i in range(threads)]
    outs = [np.empty(size, dtype=bool) for _ in range(threads)]
    with cf.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: _compare_loop(xs[i], 0.5, outs[i], 2), range(threads)))  # warm-up
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            list(pool.map(lambda i: _compare_loop(xs[i], 0.5, outs[i], repeat), range(threads)))
            best = min(best, time.perf_counter() - t)
    return threads * repeat * size / best


def measure(blas_n: int = 4000, quick: bool = False) -> dict:
    cores = n_cores()
    kernel = blas_kernel()
    fma = blas_fma_rate(blas_n, 2 if quick else 3)
    kernel = blas_kernel() if kernel.get("kernel") is None else kernel  # the library loads lazily
    total = 2e8 if quick else 6e8
    return {
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": cores, "ram_gb": ram_gb(),
        "numpy": np.__version__,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                                               "OPENBLAS_NUM_THREADS")},
        "blas": {**kernel, "n": blas_n, "fma_per_s": fma},
        "compare": {"in_cache_per_s": compare_rate(cores, 1 << 15, total / 2),
                    "in_cache_one_thread_per_s": compare_rate(1, 1 << 15, total / 4),
                    "main_memory_per_s": compare_rate(cores, 1 << 24, total / 2),
                    "threads": cores},
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blas-n", type=int, default=4000)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    print(json.dumps(measure(args.blas_n, args.quick)))


if __name__ == "__main__":
    main()
