"""The NumPy threefry draws against JAX itself (mcmargin.scenarios.rng, .threefry)."""

import numpy as np
import pytest

from mcmargin.scenarios import rng, threefry

jax = pytest.importorskip("jax")


def _bits(a):
    return np.asarray(a, dtype=np.float64).view(np.uint64)


@pytest.mark.parametrize("seed", [0, 1, 7, 20261125, 123456789, 2**32 - 1])
@pytest.mark.parametrize("stream", [rng.NORMAL, rng.MIXING, rng.BOOTSTRAP])
def test_normals_equal_jax_bit_for_bit(seed, stream):
    # Offsets inside a block, across blocks and past 2**31; odd and even dims.
    for start, stop, dim in [(0, 4096, 8), (4000, 4200, 3), (40_960, 45_000, 10), (2**31 - 5, 2**31 + 50, 7)]:
        ours = rng.standard_normals(seed, start, stop, dim, stream=stream)
        theirs = np.asarray(rng.jax_standard_normals(seed, start, stop, dim, stream=stream))
        assert ours.shape == theirs.shape == (stop - start, dim)
        assert ours.dtype == np.float64
        assert (_bits(ours) == _bits(theirs)).all(), (seed, stream, start, dim)


def test_erfinv_equals_xla_in_every_branch():
    from jax._src.lax import special

    rng.enable_x64()
    g = np.random.default_rng(3)
    # w = -log1p(-u^2) < 6.25, < 16 and beyond; both log1p branches (|u^2| below and above sqrt(2) - 1).
    u = np.concatenate([g.uniform(-1, 1, 200_000), 1 - 10 ** g.uniform(-16, -1, 50_000),
                        -(1 - 10 ** g.uniform(-16, -1, 50_000)), [0.0, 1.0, -1.0, np.nextafter(-1.0, 0.0)]])
    theirs = np.asarray(jax.jit(lambda v: np.sqrt(2) * special.erf_inv(v))(u))
    out = np.empty_like(u)
    threefry._get_kernels()[1](u, out)
    assert (_bits(out) == _bits(theirs)).all()


def test_uniform_and_fold_in_equal_jax():
    rng.enable_x64()
    import jax.numpy as jnp

    idx = np.arange(0, 5000, 7, dtype=np.uint32)
    keys = threefry.fold_in(threefry.fold_in(threefry.seed_key(99), 2), idx)
    base = jax.random.fold_in(jax.random.key(jnp.uint32(99)), 2)
    jkeys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(idx))
    data = np.asarray(jax.random.key_data(jkeys))
    assert (data[:, 0] == keys[0]).all() and (data[:, 1] == keys[1]).all()
    u = threefry.uniform(keys, 5, -0.5, 2.0)
    ju = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (5,), jnp.float64, -0.5, 2.0))(jkeys))
    assert (_bits(u) == _bits(ju)).all()


def test_draws_do_not_depend_on_chunking():
    whole = rng.standard_normals(5, 0, 9000, 4)
    parts = np.concatenate([rng.standard_normals(5, a, b, 4) for a, b in [(0, 1), (1, 4097), (4097, 9000)]])
    assert (_bits(whole) == _bits(parts)).all()
    assert not np.array_equal(whole, rng.standard_normals(6, 0, 9000, 4))


def test_default_run_does_not_import_jax():
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys; from jobs.stress import run; from conftest import stress_config; "
            "run(stress_config()); print('jax' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tests", capture_output=True, text=True,
                       env={**__import__('os').environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False"
