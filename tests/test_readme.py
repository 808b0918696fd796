"""The README's Python snippets run as written against a dataset the job wrote."""

import re

import numpy as np
import pytest

from conftest import ROOT, stress_config


def _snippets():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture
def written(tmp_path, monkeypatch):
    """out/stress.zarr (and out/run.nc) under a fresh working directory, as `make run` leaves them."""
    from jobs.stress import run
    from mcmargin.output.store import write_dataset

    ds = run(stress_config("portfolio.n_accounts=200", "scenarios.n=500"))
    write_dataset(ds, tmp_path / "out" / "stress.zarr")
    write_dataset(ds, tmp_path / "out" / "run.nc")
    monkeypatch.chdir(tmp_path)
    return ds


def test_readme_has_the_snippets():
    snippets = _snippets()
    assert len(snippets) >= 2 and any("open_zarr" in s for s in snippets)


def test_reading_snippet_runs_and_its_idioms_give_strings(written):
    code = next(s for s in _snippets() if "open_zarr" in s)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert all(isinstance(a, str) for a in scope["accounts"]) and len(scope["accounts"]) == 200
    assert all(isinstance(a, str) for a in scope["labels"])
    assert list(scope["labels"]) == list(written["account"].values)
    assert set(scope["pooled"].index) == set(
        np.asarray(written["account"].values)[written["account_group"].values != written["account"].values])
    # The README's warning is about what this stack does: say so if it stops being true.
    ds = scope["ds"]
    if ds["account"].dtype.kind == "T":
        with pytest.raises(TypeError):
            ds["account"].values.astype(str)


def test_reading_snippet_works_on_netcdf_too(written):
    code = next(s for s in _snippets() if "open_zarr" in s)
    code = code.replace('xr.open_zarr("out/stress.zarr")', 'xr.open_dataset("out/run.nc")')
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert len(scope["accounts"]) == 200


@pytest.mark.slow
def test_python_api_snippet_runs():
    code = next(s for s in _snippets() if "run_stress" in s)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    ds = scope["ds"]
    assert ds.sizes["account"] == 1000 and float(ds["im"].sum()) > 0
