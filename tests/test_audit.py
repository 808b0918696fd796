"""The audit trail every dataset carries (mcmargin/common/audit.py): checksums, code, config, timings."""

import hashlib
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, stress_config
from mcmargin.common import audit


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_common(ds, job):
    for key in audit.AUDIT_ATTRS:
        assert key in ds.attrs, key
        assert isinstance(ds.attrs[key], (str, int)), key        # netCDF takes strings and numbers only
    assert ds.attrs["job"] == job
    versions = json.loads(ds.attrs["versions"])
    import numpy
    import xarray

    assert versions["numpy"] == numpy.__version__ and versions["xarray"] == xarray.__version__
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert ds.attrs["git_commit"] == (head.stdout.strip() if head.returncode == 0 else "")
    assert ds.attrs["git_dirty"] in (0, 1)
    timings = json.loads(ds.attrs["timings"])
    assert timings["load_inputs_s"] >= 0 and timings["job_s"] >= timings["load_inputs_s"]
    assert yaml.safe_load(ds.attrs["config"])          # the resolved config, as YAML


def test_synthetic_book_records_no_input_and_every_audit_attribute():
    from jobs.stress import run

    ds = run(stress_config())
    _check_common(ds, "jobs.stress")
    # The built-in stress files are code (named by the git commit), not inputs: the mapping is empty.
    assert json.loads(ds.attrs["input_sha256"]) == {}
    assert ds.attrs["seed"] == 20261125 and ds.attrs["backend"] == "numpy" and ds.attrs["device"]
    assert yaml.safe_load(ds.attrs["config"])["scenarios"]["n"] == 1000
    assert {"compile_book_s", "compute_s", "margin_s", "total_s"} <= set(json.loads(ds.attrs["timings"]))


def test_files_book_records_every_file_read_with_its_sha256(exported_book, tmp_path):
    from jobs.stress import run

    stress = tmp_path / "my_stress.yaml"
    stress.write_text("description: d\nsource: s\nreturns: {BTC: -0.3}\nvol_changes: {}\n"
                      "others: {return: -0.1, vol_change: 0.0}\n")
    ds = run(stress_config("portfolio=files", f"portfolio.dir={exported_book}",
                           f"stress_tests.names=[crash_2022_11,{stress}]"))
    got = json.loads(ds.attrs["input_sha256"])
    want = {str(f.resolve()): _sha(f) for f in exported_book.iterdir() if f.suffix == ".csv"}
    want[str(stress.resolve())] = _sha(stress)
    assert got == want


def test_calibration_records_its_history(tmp_path):
    from hydra import compose, initialize_config_dir
    from jobs.calibrate import run

    rng = np.random.default_rng(0)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (120, 2)), axis=0))
    hist = tmp_path / "hist.csv"
    pd.DataFrame(prices, columns=["A", "B"]).assign(date=pd.date_range("2024-01-01", periods=120)
                                                    ).to_csv(hist, index=False)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="calibrate", overrides=[f"history={hist}", "fit_dof=false", "lookback=100"])
    ds = run(cfg)
    _check_common(ds, "jobs.calibrate")
    assert json.loads(ds.attrs["input_sha256"]) == {str(hist.resolve()): _sha(hist)}
    assert ds.attrs["seed"] == -1


def test_sha256_of_a_directory_covers_names_and_contents(tmp_path):
    d = tmp_path / "ds.zarr"
    (d / "x").mkdir(parents=True)
    (d / "x" / "a").write_bytes(b"1")
    (d / "b").write_bytes(b"22")
    first = audit.sha256_of(d)
    h = hashlib.sha256()
    for rel, data in (("b", b"22"), ("x/a", b"1")):      # sorted relative paths, independently hashed
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    assert first == h.hexdigest()
    (d / "x" / "a").rename(d / "x" / "c")
    assert audit.sha256_of(d) != first


def test_record_input_outside_a_recording_costs_nothing(tmp_path, monkeypatch):
    f = tmp_path / "f.csv"
    f.write_text("a\n")
    monkeypatch.setattr(audit, "sha256_of", lambda p: pytest.fail("hashed outside a recording"))
    audit.record_input(f)
    with audit.recording() as outer:
        monkeypatch.undo()
        audit.record_input(f)
        with audit.recording() as inner:
            audit.record_input(f)
    assert outer == inner == {str(f.resolve()): _sha(f)}


def test_run_table_reads_the_audit_attributes():
    from mcmargin.output.summary import run_table
    import xarray as xr

    ds = xr.Dataset(attrs={"seed": 7, "backend": "numpy", "device": "cpu", "code_version": "0.1.0",
                           "git_commit": "abcdef1234567890", "git_dirty": 1,
                           "input_sha256": json.dumps({"/a.csv": "0" * 64, "/b.csv": "1" * 64}),
                           "timings": json.dumps({"load_inputs_s": 0.25, "compute_s": 1.5, "job_s": 2.0,
                                                  "n_tasks": 7})})
    lines = run_table(ds).splitlines()
    assert lines[0].split()[0] == "run" and set(lines[1].strip()) == {"-"}
    rows = {ln[:28].strip(): ln[28:].strip() for ln in lines[2:]}
    assert rows == {"seed": "7", "backend": "numpy on cpu", "code": "mcmargin 0.1.0, abcdef123456 (with local changes)",
                    "input files": "2 (sha256 in input_sha256)", "load inputs": "0.250 s", "tails (engine)": "1.500 s",
                    "whole job (before writing)": "2.000 s"}
