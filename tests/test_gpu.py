"""GPU backends run the same kernels as the CPU: skipped where no GPU is present.

Tolerance: a GPU run and a CPU run of the same seed agree to 1e-9 relative
(relative to max(|x|, 1e-6 max|x|)); the draws are the same threefry bits,
and transcendental functions differ by a few ulps between devices.
"""

import datetime as dt

import numpy as np
import pytest

from mcmargin import Chunking, build_scenarios, run_stress
from mcmargin.backend import _cuda_usable, _jax_has_gpu
from mcmargin.synthetic import synthetic_book

pytestmark = pytest.mark.gpu
FIGURES = ("equity", "im", "isolated_im", "margin_call", "var", "es", "group_im", "group_es", "unit_es")


def rel_close(a, b, tol=1e-9):
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = np.maximum(np.abs(b), 1e-6 * np.abs(b).max(initial=0.0))
    return np.all(np.abs(a - b) <= tol * np.maximum(scale, 1e-300))


@pytest.fixture(scope="module")
def case():
    from omegaconf import OmegaConf
    book = synthetic_book(n_accounts=500, seed=5, valuation_date=dt.date(2026, 11, 25))
    cfg = OmegaConf.to_container(OmegaConf.load("conf/scenarios/student_t.yaml"))
    cfg.pop("defaults", None)
    base = OmegaConf.to_container(OmegaConf.load("conf/scenarios/gaussian.yaml"))
    scen = build_scenarios(dict(base, **cfg, n=5000), book.assets, book.market["vol"].to_numpy())
    return book, scen, run_stress(book, scen)


@pytest.mark.skipif(not _cuda_usable(), reason="no CUDA device for CuPy")
def test_cupy_matches_cpu(case):
    book, scen, ref = case
    got = run_stress(book, scen, backend="cupy", chunking=Chunking(2048, 256))
    assert got.attrs["backend"] == "cupy"
    for v in FIGURES:
        assert rel_close(got[v], ref[v]), v


@pytest.mark.skipif(not _jax_has_gpu(), reason="JAX sees no GPU")
def test_jax_gpu_matches_cpu(case):
    book, scen, ref = case
    got = run_stress(book, scen, backend="jax", chunking=Chunking(2048, 256))
    assert got.attrs["device"].startswith("gpu")
    for v in FIGURES:
        assert rel_close(got[v], ref[v]), v
