"""GPU backends run the same kernels as the CPU (``pytest -m gpu`` on a GPU machine with ``mcmargin[gpu]``).

Skipped only where the machine has no CUDA device (asked of the driver by
``conftest.cuda_device_present``, never inferred from a failed import).  On
a machine with a device, a CuPy or JAX-CUDA install that is missing, does
not import, or imports but cannot run fails these tests.

Tolerance: a GPU run and a CPU run of the same seed agree to 1e-9 relative
(relative to max(|x|, 1e-6 max|x|)); the draws are the same threefry bits,
and transcendental functions differ by a few ulps between devices.
"""

import datetime as dt

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import ndtr

from conftest import cuda_device_present
from mcmargin import Chunking, build_scenarios, run_stress
from mcmargin.inputs.synthetic import synthetic_book

HAS_DEVICE = cuda_device_present()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAS_DEVICE, reason="no CUDA device on this machine")]
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


@pytest.fixture(scope="module")
def cupy_backend():
    import cupy as cp  # a device without a working CuPy fails here: the [gpu] extra is required on a GPU machine
    from mcmargin.backend import _cuda_usable, get_backend
    assert cp.cuda.runtime.getDeviceCount() > 0
    assert _cuda_usable(), "CuPy imports but the library cannot use the device"
    return get_backend("cupy")


def test_cuda_is_usable_and_auto_picks_a_gpu(cupy_backend):
    from mcmargin.backend import resolve
    assert resolve("auto") in ("cupy", "jax")
    assert cupy_backend.device.startswith("cuda:")


def test_jax_sees_the_gpu():
    import jax
    from mcmargin.backend import _jax_has_gpu
    assert jax.devices("gpu"), "JAX-CUDA imports but sees no GPU"
    assert _jax_has_gpu()


def test_cupy_top_k_is_the_k_largest(cupy_backend):
    import cupy as cp
    x = np.random.default_rng(1).standard_t(3, size=(37, 1001))
    for k in (1, 10, 1001, 2000):
        got = cp.asnumpy(cupy_backend.top_k(cp.asarray(x), k))
        want = -np.sort(-x, axis=1)[:, :min(k, x.shape[1])]
        np.testing.assert_array_equal(-np.sort(-got, axis=1), want)


def test_cupy_ndtr_matches_scipy(cupy_backend):
    import cupy as cp
    x = np.linspace(-38, 9, 20001)
    got = cp.asnumpy(cupy_backend.norm_cdf(cp.asarray(x)))
    np.testing.assert_allclose(got, ndtr(x), rtol=1e-13, atol=1e-300)


def test_dlpack_hands_jax_draws_to_cupy_without_a_copy(cupy_backend):
    import cupy as cp
    import jax
    import jax.numpy as jnp
    gpu = jax.devices("gpu")[0]
    a = jax.device_put(jnp.arange(12.0, dtype=jnp.float64).reshape(3, 4), gpu)
    b = cupy_backend.asarray(a)
    assert isinstance(b, cp.ndarray) and b.dtype == cp.float64
    assert b.data.ptr == a.unsafe_buffer_pointer()              # zero-copy: the same device memory
    np.testing.assert_array_equal(cp.asnumpy(b), np.asarray(a))
    host = cupy_backend.asarray(np.ones(3))                     # a host array is copied in
    assert isinstance(host, cp.ndarray) and float(host.sum()) == 3.0


def test_cupy_sparse_products_match_scipy(cupy_backend):
    import cupy as cp
    from mcmargin.engine.kernels.reference import ReferenceKernel
    rng = np.random.default_rng(2)
    h = sp.random(300, 40, density=0.1, random_state=rng, format="csr")
    pnl = rng.standard_normal((500, 40))
    on = ReferenceKernel("cupy").prepare(h)
    got = cp.asnumpy(on @ cp.asarray(pnl).T)
    np.testing.assert_allclose(got, h @ pnl.T, rtol=1e-12, atol=1e-12)
    tail = cp.asnumpy(cupy_backend.top_k(-(on @ cp.asarray(pnl).T), 5))
    np.testing.assert_allclose(-np.sort(-tail, axis=1), -np.sort(h @ pnl.T, axis=1)[:, :5], rtol=1e-12, atol=1e-12)


def test_cupy_matches_cpu(case, cupy_backend):
    book, scen, ref = case
    got = run_stress(book, scen, backend="cupy", chunking=Chunking(2048, 256))
    assert got.attrs["backend"] == "cupy"
    for v in FIGURES:
        assert rel_close(got[v], ref[v]), v


def test_jax_gpu_matches_cpu(case):
    import jax
    assert jax.devices("gpu")
    book, scen, ref = case
    got = run_stress(book, scen, backend="jax", chunking=Chunking(2048, 256))
    assert got.attrs["device"].startswith("gpu")
    for v in FIGURES:
        assert rel_close(got[v], ref[v]), v
