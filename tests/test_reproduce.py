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
