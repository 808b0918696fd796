"""Kernels compiled ahead of the first run (mcmargin.warmup) serve the job from numba's disk cache."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_after_warm_up_a_job_compiles_nothing(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_DEBUG_CACHE="1")
    p = subprocess.run([sys.executable, "-m", "mcmargin.pipeline.warmup"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "data saved" in p.stdout + p.stderr           # it did compile into the fresh cache
    p = subprocess.run([sys.executable, "-m", "jobs.stress", "portfolio.n_accounts=300", "scenarios.n=30000",
                        f"output.path={tmp_path / 'o.zarr'}"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    log = p.stdout + p.stderr
    assert "data loaded" in log and "data saved" not in log
