"""The floor model: the least time this machine needs for a stress run's work.

For a run with ``R`` holdings rows (accounts, margin groups, a long and a
short unit of each instrument), ``nnz`` holdings entries and ``N`` scenarios::

    floor = nnz * N / FMA_rate          one multiply-add per (holding, scenario)
          + R * N / compare_rate        one comparison per (row, scenario) loss
          + revaluation time            every instrument column once per scenario

``FMA_rate`` is the measured multiply-add rate of a large float64 matmul on
all cores (the best of the OpenBLAS kernels tried), ``compare_rate`` the
measured rate of ``np.greater`` against a threshold on blocks that stay in
cache, on all cores (the loss matrix need never travel through main memory),
and the revaluation time that of ``mcmargin.instruments.revaluation.revalue`` alone over
every chunk (draws excluded) measured at each point, the faster of one
thread and one thread per core.  Memory traffic is not
counted: the floor is what arithmetic alone costs.

The same model with H100 (SXM) datasheet rates gives a *predicted, not
measured* GPU time: FP64 67 TFLOP/s on tensor cores (a dense product
``[R x columns] @ [columns x N]``) or 34 TFLOP/s otherwise (the sparse
product, one multiply-add per holding), the faster of the two; comparisons
at 34e12/s; revaluation at ~200 FP64 operations per option and ~20 per other
column, or the HBM traffic of writing and reading the P&L matrix at
3.35 TB/s, whichever is slower; plus writing the kept tails (``R x m``
float64) to HBM.  Host transfers are not counted.
"""

from __future__ import annotations

H100 = {
    "fp64_tensor_flops": 67e12,
    "fp64_flops": 34e12,
    "hbm_bytes_per_s": 3.35e12,
    "flops_per_option": 200.0,
    "flops_per_other_column": 20.0,
}


def cpu_floor(point: dict, fma_rate: float, compare_rate: float) -> dict:
    n = point["scenarios"]
    fma = point["nnz"] * n / fma_rate
    cmp_ = point["rows"] * n / compare_rate
    reval = min(point["revalue_par_s"], point["revalue_seq_s"])
    return {"fma_s": fma, "compare_s": cmp_, "revalue_s": reval, "floor_s": fma + cmp_ + reval}


def h100_floor(point: dict) -> dict:
    g = H100
    n = point["scenarios"]
    rows, cols, nnz = point["rows"], point["columns"], point["nnz"]
    sparse = nnz * n / (g["fp64_flops"] / 2)
    dense = rows * cols * n / (g["fp64_tensor_flops"] / 2)
    fma = min(sparse, dense)
    cmp_ = rows * n / g["fp64_flops"]
    flops = n * (point["options"] * g["flops_per_option"] + (cols - point["options"]) * g["flops_per_other_column"])
    reval = max(flops / g["fp64_flops"], 2 * n * cols * 8 / g["hbm_bytes_per_s"])
    tails = rows * point.get("m", 0) * 8 / g["hbm_bytes_per_s"]
    return {"fma_s": fma, "fma_path": "sparse (34 TF)" if sparse <= dense else "dense tensor (67 TF)",
            "compare_s": cmp_, "revalue_s": reval, "tails_s": tails, "floor_s": fma + cmp_ + reval + tails}
