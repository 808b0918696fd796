"""Benchmarks of the stress engine (``make bench`` = ``python -m benchmarks.run``).

Modules
-------
:mod:`benchmarks.run`
    The driver: measures the machine's rates, runs every size point in a
    fresh subprocess, prints the tables and appends them to
    ``benchmarks/RESULTS.md``.
:mod:`benchmarks.point`
    One size point (one subprocess): the engine run (``run_stress``), then,
    on the same book and scenarios, the two references and the revaluation
    timings.
:mod:`benchmarks.references`
    (a) the analyst's loop (per account: add up the positions' scenario P&L
    vectors with NumPy, then ``np.partition``); (b) QuantLib repricing every
    option one by one.
:mod:`benchmarks.machine`
    Machine description and the rates of the floor model (BLAS multiply-add
    rate, vectorised comparison rate).
:mod:`benchmarks.workload`
    The books (synthetic exchange, optionally restricted to its K most
    traded instruments) and scenarios (``conf/scenarios/gaussian.yaml``).
:mod:`benchmarks.floor`
    The floor model on this machine and its prediction for an H100.
"""
