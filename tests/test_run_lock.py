"""Only complete output: one run per output path (mcmargin/output/store.py run_lock), two runs at once."""

import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from mcmargin.errors import ConfigError
from mcmargin.output.store import open_dataset, run_lock, written_by_mcmargin


def test_second_holder_fails_with_the_first_named_or_waits(tmp_path):
    target = tmp_path / "out" / "run.zarr"
    with run_lock(target):
        lock = tmp_path / "out" / ".run.zarr.lock"
        assert lock.is_file() and f"pid {os.getpid()}" in lock.read_text()
        with pytest.raises(ConfigError, match=rf"output.path: .*run.zarr is being written by another run \(pid "
                                              rf"{os.getpid()} on .*nothing was done"):
            with run_lock(target):
                pass
    assert not lock.exists()                       # removed when the run ends

    order = []
    held = threading.Event()

    def first():
        with run_lock(target):
            held.set()
            time.sleep(0.6)
            order.append("first done")

    t = threading.Thread(target=first)
    t.start()
    held.wait()
    with run_lock(target, wait=30):                # waits for the first, then holds the path
        order.append("second holds")
    t.join()
    assert order == ["first done", "second holds"]


def _job(out, *overrides):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "jobs.stress", "portfolio.n_accounts=3000", "scenarios.n=20000",
                             "backend=numpy", "stress_tests.names=[]", "engine.progress=false",
                             f"output.path={out}", *overrides], cwd=out.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_concurrent_runs_on_one_path(tmp_path):
    out = tmp_path / "run.zarr"
    lock = tmp_path / ".run.zarr.lock"
    a = _job(out)
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text()) and a.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.poll() is None, "the first run ended before the second could start: make it larger"
    b = _job(out, "scenarios.n=1000")                       # no wait: refused, naming the first run
    c = _job(out, "scenarios.seed=1", "output.lock_wait=300")   # waits, then replaces the first's dataset
    _, b_err = b.communicate(timeout=300)
    assert b.returncode == 2, b_err[-2000:]
    assert f"being written by another run (pid {a.pid} on" in b_err and "Traceback" not in b_err
    assert a.poll() is None, "the refused run must not have waited for the first"
    _, a_err = a.communicate(timeout=600)
    _, c_err = c.communicate(timeout=600)
    assert a.returncode == 0 and c.returncode == 0, a_err[-2000:] + c_err[-2000:]
    assert written_by_mcmargin(out)
    with open_dataset(out) as ds:
        ds = ds.load()
    # The dataset there is one run's, complete: the waiting run's, which went second.
    assert ds.attrs["seed"] == 1 and ds.sizes["account"] == 3000 and ds.attrs["n_scenarios"] == 20000
    # no lock, no temporary store left: the dataset and its report only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.html", "run.zarr"]


# ----------------------------------------------------------------------------- backtest and buffer calibration
@pytest.mark.parametrize("job, args", [
    ("jobs.backtest", ["history=nothing.csv", "portfolios=nothing.csv"]),
    ("jobs.calibrate_buffer", ["backtest_path=nothing.zarr"]),
])
def test_backtest_and_calibration_refuse_a_path_another_run_writes(tmp_path, job, args):
    from conftest import run_job

    out = tmp_path / "out.zarr"
    with run_lock(out):        # this process is "the other run"
        p = run_job(job, *args, f"output.path={out}", cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    # refused before its inputs were read (they do not exist), naming the run that holds the path
    assert f"being written by another run (pid {os.getpid()} on" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_backtest_waits_lock_wait_for_the_other_run(tmp_path):
    import numpy as np
    import pandas as pd

    from conftest import run_job

    prices = 100 * np.exp(np.cumsum(np.random.default_rng(4).normal(0, 0.02, (280, 2)), axis=0))
    pd.DataFrame(prices, columns=["A", "B"]).assign(date=pd.date_range("2023-01-02", periods=280)
                                                    ).to_csv(tmp_path / "h.csv", index=False)
    (tmp_path / "p.csv").write_text("portfolio,asset,quantity\nlong,A,3\nlong,B,1\n")
    out = tmp_path / "bt.zarr"
    held = threading.Event()
    released = []

    def other():
        with run_lock(out):
            held.set()
            time.sleep(3)
            released.append(time.monotonic())

    t = threading.Thread(target=other)
    t.start()
    held.wait()
    p = run_job("jobs.backtest", "history=h.csv", "portfolios=p.csv", f"output.path={out}", "scenarios.n=100",
                "scenarios.lookback=250", "backtest.plots=false", "output.report=false", "output.lock_wait=120",
                cwd=tmp_path)
    done = time.monotonic()
    t.join()
    assert p.returncode == 0, p.stderr[-2000:]
    assert released and done > released[0] and written_by_mcmargin(out)
