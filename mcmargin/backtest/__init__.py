"""The margin backtest (docs/methodology.md, section 13): decades of daily margins against realised losses.

- :mod:`.run`: settings, the causal vol filter, date blocks on dask, the dataset and its tests;
- :mod:`.kernels`: compiled per-date draws, revaluation and exact VaR/ES (NumPy, the default);
- :mod:`.arrays`: the same blocks on any array backend (CuPy, JAX, the strict array API);
- :mod:`.parametric`: the parametric models (gaussian, student_t, t_copula) fitted as of each date, on any backend;
- :mod:`.plots`: one PNG per portfolio (margin vs realised loss, exceedances, traffic light).

The coverage statistics themselves live in :mod:`mcmargin.stats.coverage`.
"""
