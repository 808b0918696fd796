"""The jobs' exit statuses and messages for bad input (jobs._cli), end to end through the processes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import VALUATION, run_job, stress_config
from jobs._cli import EXIT_RESULT_CHECK, EXIT_USER_ERROR, user_errors
from mcmargin.errors import InputError, ResultError

TINY = ("portfolio.n_accounts=40", "scenarios.n=400", "backend=numpy", "engine.progress=false")


def assert_clean_failure(p, fragment: str, status: int = EXIT_USER_ERROR) -> None:
    assert p.returncode == status, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    assert fragment in p.stderr, p.stderr


@pytest.mark.parametrize("override, key", [
    ("scenarios.horizon_days=nan", "scenarios.horizon_days"),
    ("scenarios.n=1.5", "scenarios.n"),
    ("margin.confidence=null", "margin.confidence"),
    ("pricing.rate=abc", "pricing.rate"),
    ("cluster.n_workers=0", "cluster.n_workers"),
])
def test_bad_setting_exits_2_naming_the_key_and_writes_nothing(tmp_path, override, key):
    out = tmp_path / "out.zarr"
    p = run_job("jobs.stress", *TINY, override, f"output.path={out}", cwd=tmp_path)
    assert_clean_failure(p, f"config key {key}:")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override", ["no_such_key=1", "scenarios=no_such_model", "margin.no_such_key=2"])
def test_unknown_key_or_option_exits_2(tmp_path, override):
    p = run_job("jobs.stress", *TINY, override, f"output.path={tmp_path / 'o.zarr'}", cwd=tmp_path)
    assert_clean_failure(p, "")
    assert list(tmp_path.iterdir()) == []


def test_output_path_on_the_input_directory_deletes_nothing(tmp_path):
    p = run_job("jobs.stress", *TINY, "portfolio.export=book/", f"output.path={tmp_path / 'first.zarr'}",
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    before = {f.name: f.read_bytes() for f in (tmp_path / "book").iterdir()}
    p = run_job("jobs.stress", "portfolio=files", "portfolio.dir=book/", "output.path=book/", "scenarios.n=400",
                cwd=tmp_path)
    assert_clean_failure(p, "not a dataset written by mcmargin")
    assert {f.name: f.read_bytes() for f in (tmp_path / "book").iterdir()} == before


@pytest.mark.parametrize("path, fragment", [("", "is empty"), ("afile/out.zarr", "is a file, not a directory")])
def test_output_path_problems_exit_2_before_any_work(tmp_path, path, fragment):
    (tmp_path / "afile").write_text("x")
    p = run_job("jobs.stress", *TINY, f"output.path={path}", cwd=tmp_path)
    assert_clean_failure(p, fragment)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["afile"]


def test_huge_quantity_exits_2_naming_file_row_and_column(tmp_path):
    p = run_job("jobs.stress", *TINY, "portfolio.export=book/", f"output.path={tmp_path / 'first.zarr'}",
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    positions = pd.read_csv(tmp_path / "book" / "positions.csv", dtype=str)
    positions.loc[3, "quantity"] = "1e308"
    positions.to_csv(tmp_path / "book" / "positions.csv", index=False)
    p = run_job("jobs.stress", "portfolio=files", "portfolio.dir=book/", "scenarios.n=400",
                f"output.path={tmp_path / 'run.zarr'}", cwd=tmp_path)
    assert_clean_failure(p, "row 5, column 'quantity'")
    assert "positions.csv" in p.stderr and not (tmp_path / "run.zarr").exists()


def test_header_only_book_exits_2(tmp_path):
    book = tmp_path / "book"
    p = run_job("jobs.stress", *TINY, f"portfolio.export={book}", f"output.path={tmp_path / 'first.zarr'}",
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for table in ("positions", "collateral", "accounts"):
        path = book / f"{table}.csv"
        path.write_text(path.read_text().splitlines()[0] + "\n")
    p = run_job("jobs.stress", "portfolio=files", f"portfolio.dir={book}", "scenarios.n=400",
                f"output.path={tmp_path / 'run.zarr'}", cwd=tmp_path)
    assert_clean_failure(p, "nothing to margin")


def test_non_finite_figure_fails_the_run_before_writing(monkeypatch):
    import jobs.stress as job
    import mcmargin.pipeline.stress

    real = mcmargin.pipeline.stress.run_stress

    def overflowing(*args, **kwargs):
        ds = real(*args, **kwargs)
        ds["im"][7] = np.inf
        return ds

    monkeypatch.setattr(mcmargin.pipeline.stress, "run_stress", overflowing)
    with pytest.raises(ResultError, match="variable im at account"):
        job.run(stress_config())


@pytest.mark.parametrize("error, status", [(ResultError("im", "account 'a'", "inf"), EXIT_RESULT_CHECK),
                                           (InputError("f.csv", "bad", 2, "x"), EXIT_USER_ERROR)])
def test_user_errors_exit_statuses(error, status, capsys):
    with pytest.raises(SystemExit) as info, user_errors():
        raise error
    assert info.value.code == status
    assert capsys.readouterr().err.startswith("mcmargin: error: ")


# ----------------------------------------------------------------------------- no silent non-finite figure
def _frames(quantity: float, amount: float, price: float, strike_factor: float):
    ins = pd.DataFrame(dict(instrument=["X-PERP", "X-INV", "X-C", "X-P"], kind=["perpetual", "perpetual", "option",
                                                                              "option"],
                            underlying=["X"] * 4, settle=["USD", "X", "USD", "USD"],
                            inverse=["false", "true", "false", "false"], contract_size=[1.0, 10.0, 1.0, 1.0],
                            expiry=["", "", "2027-01-29", "2027-01-29"],
                            strike=[np.nan, np.nan, price * strike_factor, price * strike_factor],
                            option_type=["", "", "call", "put"]))
    mkt = pd.DataFrame(dict(asset=["X", "USD"], price=[price, 1.0], vol=[0.8, 0.0]))
    pos = pd.DataFrame(dict(account=["a", "a", "b", "c"], instrument=["X-PERP", "X-C", "X-INV", "X-P"],
                            quantity=[quantity, -quantity, quantity, -quantity]))
    col = pd.DataFrame(dict(account=["a", "b", "c"], asset=["X", "USD", "X"], amount=[amount, amount, -amount]))
    return ins, mkt, pos, col, None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quantity=st.floats(1e-300, 1e300), amount=st.floats(1e-300, 1e300), price=st.floats(1e-200, 1e200),
       strike_factor=st.floats(0.01, 100))
def test_inputs_that_pass_validation_give_finite_figures(quantity, amount, price, strike_factor):
    from mcmargin.inputs.files import book_from_frames
    from mcmargin.output.store import check_figures
    from mcmargin.scenarios import build_scenarios
    from mcmargin.pipeline.stress import run_stress

    try:
        book = book_from_frames(*_frames(quantity, amount, price, strike_factor), VALUATION)
    except InputError:
        return  # refused with a file, row and column: the clean outcome
    scen = build_scenarios(dict(model="gaussian", n=500, seed=3, horizon_days=2,
                                risk_factors={"X": {"vol": 0.8, "vol_of_vol": 1.0, "spot_vol_corr": -0.3}}),
                           book.assets, book.market["vol"].to_numpy())
    with np.errstate(over="raise", invalid="raise"):  # underflow to 0 is harmless
        ds = run_stress(book, scen)
    check_figures(ds)              # non-finite values only where a variable declares them (margin_ratio: mm = 0)
    assert all(np.isfinite(ds[v].values).all() for v in ds.data_vars
               if ds[v].dtype.kind == "f" and "nonfinite" not in ds[v].attrs)


# ----------------------------------------------------------------------------- the calibration job
@pytest.mark.parametrize("override, fragment", [("ewma_lambda=nan", "config key ewma_lambda:"),
                                                ("lookback=1.5", "config key lookback:"),
                                                ("output.plots=maybe", "config key output.plots:"),
                                                ("no_such_key=1", "")])
def test_calibrate_bad_setting_exits_2(tmp_path, override, fragment):
    (tmp_path / "h.csv").write_text("date,A\n2024-01-01,1\n2024-01-02,1.1\n")
    p = run_job("jobs.calibrate", f"history={tmp_path / 'h.csv'}", f"output.path={tmp_path / 'p.nc'}", override,
                cwd=tmp_path)
    assert_clean_failure(p, fragment)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["h.csv"]


def test_calibrate_refuses_to_replace_a_foreign_directory(tmp_path):
    (tmp_path / "h.csv").write_text("date,A\n2024-01-01,1\n2024-01-02,1.1\n")
    (tmp_path / "params.zarr").mkdir()
    (tmp_path / "params.zarr" / "mine.txt").write_text("keep")
    p = run_job("jobs.calibrate", f"history={tmp_path / 'h.csv'}", f"output.path={tmp_path / 'params.zarr'}",
                cwd=tmp_path)
    assert_clean_failure(p, "not a dataset written by mcmargin")
    assert (tmp_path / "params.zarr" / "mine.txt").read_text() == "keep"


def test_exit_without_teardown_still_does_what_an_exit_must(tmp_path):
    """Threads joined, atexit functions run, log files and stdout flushed, status 0 (jobs._cli.exit_without_teardown)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import atexit, logging, pathlib, sys, threading, time
        from jobs._cli import exit_without_teardown
        out = pathlib.Path({str(tmp_path)!r})
        atexit.register(lambda: (out / "atexit").write_text("ran"))
        threading.Thread(target=lambda: (time.sleep(0.3), (out / "thread").write_text("done"))).start()
        handler = logging.FileHandler(out / "job.log")
        logging.getLogger("job").addHandler(handler)
        logging.getLogger("job").warning("written before the exit")
        sys.stdout.write("summary without a newline")
        exit_without_teardown()
        (out / "after").write_text("never")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "summary without a newline"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "job.log").read_text() == "written before the exit\n"
    assert not (tmp_path / "after").exists()


def test_under_a_profiler_the_exit_is_the_normal_one(tmp_path):
    """A profiler reports after the job returns: exit_without_teardown leaves the exit to Python then."""
    import subprocess
    import sys

    code = ("import sys; from jobs._cli import exit_without_teardown; sys.setprofile(lambda *a: None); "
            "exit_without_teardown(); sys.setprofile(None); print('returned')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout) == (0, "returned\n"), p.stderr


def test_a_reader_that_stops_early_costs_no_traceback(tmp_path):
    """``python -m jobs.stress ... | head -1``: the reader closes the pipe before the summary ends; the job
    has written everything by then, so it exits 0 with no traceback (jobs._cli.ReaderMayLeave)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "out.zarr"
    job = subprocess.Popen([sys.executable, "-m", "jobs.stress", *TINY, f"output.path={out}"], cwd=tmp_path,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    job.stdout.close()                       # gone before the summary (as `head` after its lines)
    stderr = job.stderr.read().decode()
    assert job.wait(timeout=300) == 0, stderr
    assert "Traceback" not in stderr and "Error executing job" not in stderr and "BrokenPipe" not in stderr
    assert (out / "zarr.json").is_file() and (tmp_path / "out.html").is_file()


_HUGE_PAGES_JOB = """
import sys
from jobs import _cli
from mcmargin.common.allocator import huge_pages
def switch():
    from numpy._core.multiarray import _set_madvise_hugepage as s
    previous = s(True); s(previous); return previous
def main():
    with _cli.user_errors():
        seen = [switch()]
        with huge_pages():
            seen.append(switch())
        print(seen)
_cli.launch(main, keep_memory=sys.argv[1] == "batch")
"""


@pytest.mark.parametrize("kind, want", [("batch", "[False, True]"), ("server", "[True, True]")])
def test_a_batch_job_asks_for_huge_pages_in_the_engine_only(kind, want):
    """From its start (user_errors) a batch job's NumPy asks for huge pages only within huge_pages (the
    engine); a server (keep_memory=False) keeps NumPy's default."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    run = subprocess.run([sys.executable, "-c", _HUGE_PAGES_JOB, kind], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == want
