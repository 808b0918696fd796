"""jobs.reproduce: rerun a dataset's recorded run, report differences; exit 0 / 1 / 2."""

import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import run_job
from mcmargin.common.audit import sha256_of
from mcmargin.output.compare import differences
from mcmargin.output.store import open_dataset, write_dataset

SMALL = ("scenarios.n=1000", "backend=numpy", "stress_tests.names=[crash_2022_11]")


@pytest.fixture(scope="module")
def files_run(exported_book, tmp_path_factory):
    """A stress run on a copy of the exported book (a copy: tests change its files)."""
    root = tmp_path_factory.mktemp("reproduce")
    book = root / "book"
    shutil.copytree(exported_book, book)
    out = root / "run.zarr"
    p = run_job("jobs.stress", "portfolio=files", "portfolio.dir=book", f"output.path={out}", *SMALL, cwd=root)
    assert p.returncode == 0, p.stderr[-2000:]
    return root, book, out


def test_untouched_dataset_reproduces_bit_for_bit_and_is_not_written(files_run, tmp_path):
    root, book, out = files_run
    before = sha256_of(out)
    # Run from elsewhere: the relative portfolio.dir resolves in the recorded working directory.
    p = run_job("jobs.reproduce", f"dataset={out}", f"work_dir={tmp_path}", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    assert "reproduced bit for bit" in p.stdout
    assert sha256_of(out) == before
    assert list(tmp_path.iterdir()) == []                 # the rerun's temporary directory is gone


def test_changed_input_exits_2_naming_the_file(files_run, tmp_path):
    root, book, out = files_run
    positions = book / "positions.csv"
    saved = positions.read_bytes()
    try:
        frame = pd.read_csv(positions, dtype=str)
        frame.loc[0, "quantity"] = str(float(frame.loc[0, "quantity"]) * 2)
        frame.to_csv(positions, index=False)
        p = run_job("jobs.reproduce", f"dataset={out}", cwd=tmp_path)
        assert p.returncode == 2, p.stdout + p.stderr[-2000:]
        assert str(positions.resolve()) in p.stderr and "input changed" in p.stderr and "Traceback" not in p.stderr
        positions.unlink()
        p = run_job("jobs.reproduce", f"dataset={out}", cwd=tmp_path)
        assert p.returncode == 2 and "is missing" in p.stderr and str(positions.resolve()) in p.stderr
    finally:
        positions.write_bytes(saved)


def test_changed_figures_exit_1_with_each_variable_and_by_how_much(files_run, tmp_path):
    root, book, out = files_run
    with open_dataset(out) as ds:
        ds = ds.load()
    ds["im"].values[3] += 1.5
    ds["group_im"].values[:] = np.nextafter(ds["group_im"].values, np.inf)   # one ulp each: still a difference
    tampered = tmp_path / "tampered.zarr"
    write_dataset(ds, tampered)
    p = run_job("jobs.reproduce", f"dataset={tampered}", cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr[-2000:]
    lines = [x for x in p.stdout.splitlines() if x.startswith("differs:")]
    im = next(x for x in lines if x.startswith("differs: im:"))
    assert "1 of" in im and "max |difference| 1.5," in im
    gim = next(x for x in lines if x.startswith("differs: group_im:"))
    n = ds.sizes["group"]
    assert f"{n:,} of {n:,} values differ" in gim
    assert len(lines) == 2 and "NOT reproduced" in p.stdout


def test_dataset_without_audit_trail_or_missing_exits_2(tmp_path):
    import xarray as xr

    old = tmp_path / "old.zarr"
    write_dataset(xr.Dataset({"x": (("a",), [1.0], {"long_name": "x", "units": "1"})}), old)
    p = run_job("jobs.reproduce", f"dataset={old}", cwd=tmp_path)
    assert p.returncode == 2 and "no audit trail" in p.stderr and "Traceback" not in p.stderr
    p = run_job("jobs.reproduce", f"dataset={tmp_path / 'nothing.zarr'}", cwd=tmp_path)
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_calibration_dataset_reproduces(tmp_path):
    rng = np.random.default_rng(1)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (150, 2)), axis=0))
    pd.DataFrame(prices, columns=["A", "B"]).assign(date=pd.date_range("2024-01-01", periods=150)
                                                    ).to_csv(tmp_path / "h.csv", index=False)
    p = run_job("jobs.calibrate", "history=h.csv", "output.path=params.nc", "output.plots=false", "fit_dof=false",
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    p = run_job("jobs.reproduce", "dataset=params.nc", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]


def test_differences_by_hand():
    import xarray as xr

    a = xr.Dataset({"v": (("i",), np.array([1.0, np.nan, 0.0, 4.0])), "s": (("i",), ["a", "b", "c", "d"])})
    b = a.copy(deep=True)
    assert differences(a, b) == []                          # NaN equals NaN bit for bit
    b["v"].values[2] = -0.0                                 # a sign bit is a difference
    b["v"].values[3] = 5.0
    b["s"].values[0] = "z"
    b.attrs["kernel"] = "other"
    found = {d.name: d for d in differences(a, b)}
    assert found["v"].count == 2 and found["v"].max_abs == 1.0 and found["v"].max_rel == pytest.approx(0.2)
    assert found["s"].count == 1 and "attrs['kernel']" in found


# ----------------------------------------------------------------------------- backtest and buffer calibration
BT_SMALL = ("scenarios.n=200", "scenarios.lookback=250", "scenarios.horizon_days=1", "backtest.plots=false",
            "output.report=false")


@pytest.fixture(scope="module")
def backtest_run(tmp_path_factory):
    """A small backtest and a buffer calibration of it, on files of their own (tests change them)."""
    import json

    root = tmp_path_factory.mktemp("reproduce_backtest")
    rng = np.random.default_rng(3)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (300, 2)), axis=0))
    pd.DataFrame(prices, columns=["A", "B"]).assign(date=pd.date_range("2023-01-02", periods=300)
                                                    ).to_csv(root / "h.csv", index=False)
    (root / "p.csv").write_text("portfolio,asset,quantity\nlong,A,3\nlong,B,1\nhedge,A,1\nhedge,B,-0.5\n")
    p = run_job("jobs.backtest", "history=h.csv", "portfolios=p.csv", "output.path=bt.zarr", *BT_SMALL,
                "logging.format=json", cwd=root)
    assert p.returncode == 0, p.stderr[-2000:]
    stages = [json.loads(x) for x in p.stderr.splitlines() if x.startswith("{") and '"stage"' in x]
    assert [s["stage"] for s in stages] == ["load_inputs", "backtest", "write"]
    assert all(s["seconds"] >= 0 for s in stages)
    p = run_job("jobs.calibrate_buffer", "backtest_path=bt.zarr", "buffer.grid=[0,0.1,0.5]", "output.path=cal.nc",
                "output.plots=false", "logging.format=json", cwd=root)
    assert p.returncode == 0, p.stderr[-2000:]
    stages = [json.loads(x)["stage"] for x in p.stderr.splitlines() if x.startswith("{") and '"stage"' in x]
    assert stages == ["backtest", "sweep", "write", "report"]
    return root


def _recorded(path):
    import json

    with open_dataset(path) as ds:
        return ds.attrs["job"], json.loads(ds.attrs["input_sha256"]), ds.attrs


def test_backtest_dataset_records_its_inputs_and_reproduces(backtest_run, tmp_path):
    root = backtest_run
    job, inputs, attrs = _recorded(root / "bt.zarr")
    assert job == "jobs.backtest" and attrs["seed"] == 20261125 and "backtest_s" in attrs["timings"]
    assert inputs == {str((root / f).resolve()): sha256_of(root / f) for f in ("h.csv", "p.csv")}
    p = run_job("jobs.reproduce", f"dataset={root / 'bt.zarr'}", f"work_dir={tmp_path}", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    assert "reproduced bit for bit" in p.stdout


def test_buffer_calibration_records_the_backtest_dataset_and_reproduces(backtest_run, tmp_path):
    root = backtest_run
    job, inputs, attrs = _recorded(root / "cal.nc")
    assert job == "jobs.calibrate_buffer" and attrs["seed"] == -1
    assert inputs == {str((root / "bt.zarr").resolve()): sha256_of(root / "bt.zarr")}
    p = run_job("jobs.reproduce", f"dataset={root / 'cal.nc'}", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]


def test_backtest_and_calibration_with_a_changed_input_exit_2(backtest_run, tmp_path):
    root = backtest_run
    books = root / "p.csv"
    saved = books.read_bytes()
    try:
        books.write_text(saved.decode().replace("long,A,3", "long,A,4"))
        p = run_job("jobs.reproduce", f"dataset={root / 'bt.zarr'}", cwd=tmp_path)
        assert p.returncode == 2 and "input changed" in p.stderr and str(books.resolve()) in p.stderr, p.stderr
    finally:
        books.write_bytes(saved)
    # the calibration's input is the backtest dataset: a copy of the calibration over a changed one
    shutil.copytree(root / "bt.zarr", tmp_path / "bt.zarr")
    shutil.copy(root / "cal.nc", tmp_path / "cal.nc")
    p = run_job("jobs.calibrate_buffer", "backtest_path=bt.zarr", "buffer.grid=[0,0.1,0.5]", "output.path=cal.nc",
                "output.plots=false", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    with open_dataset(tmp_path / "bt.zarr") as ds:
        ds = ds.load()
    ds["im"].values[0, 0] *= 2
    shutil.rmtree(tmp_path / "bt.zarr")
    write_dataset(ds, tmp_path / "bt.zarr")
    p = run_job("jobs.reproduce", f"dataset={tmp_path / 'cal.nc'}", cwd=tmp_path)
    assert p.returncode == 2 and "input changed" in p.stderr and "bt.zarr" in p.stderr and "Traceback" not in p.stderr


def test_stress_run_records_the_buffer_calibration_it_reads(backtest_run, tmp_path):
    import json

    from mcmargin.calibration.buffer import resolve_buffer
    from mcmargin.common.audit import recording

    cal = backtest_run / "cal.nc"
    with open_dataset(cal) as ds:
        portfolio = next(str(p) for p, b in zip(ds["portfolio"].values, ds["required_buffer"].values)
                         if np.isfinite(b))
    with recording() as inputs:
        margin, attrs = resolve_buffer({"buffer": str(cal), "buffer_portfolio": portfolio})
    assert inputs == {str(cal.resolve()): sha256_of(cal)} and attrs["margin_buffer_source"] == str(cal)
    assert json.dumps(inputs)   # JSON-serialisable, as audit_attrs stores it


def test_report_of_the_backtest_logs_its_stages_and_checks_logging_format(backtest_run, tmp_path):
    import json

    page = tmp_path / "bt.html"
    p = run_job("jobs.report", f"dataset={backtest_run / 'bt.zarr'}", f"output.path={page}", "logging.format=json",
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    stages = [json.loads(x) for x in p.stderr.splitlines() if x.startswith("{") and '"stage"' in x]
    assert [s["stage"] for s in stages] == ["render", "write"] and page.stat().st_size > 1000
    p = run_job("jobs.report", f"dataset={backtest_run / 'bt.zarr'}", f"output.path={tmp_path / 'x.html'}",
                "logging.format=xml", cwd=tmp_path)
    assert p.returncode == 2 and "logging.format" in p.stderr and not (tmp_path / "x.html").exists()
