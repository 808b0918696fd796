"""Counter-based random numbers keyed by (seed, stream, scenario index).

Scenario ``i`` of a run draws from the key ``fold_in(fold_in(key(seed),
stream), i)`` of JAX's threefry generator, so its numbers do not depend on
how scenarios are chunked, on the worker that draws them, or on the order
of work.

Normal draws (every parametric model, and the vol shocks of the history
models) are computed by :mod:`.threefry`, a NumPy re-implementation that
gives JAX's float64 numbers bit for bit (``tests/test_rng.py`` checks it
against JAX), so the default run never imports JAX (about 2 s) nor compiles
a draw (about 0.6 s).  The chi-square mixing variable of Student-t models
and the bootstrap integers are drawn by JAX itself, imported on first use,
on the device at hand (64-bit floats); every draw is handed to other array
libraries through :func:`mcmargin.backend.asarray`.

Streams keep independent uses of one seed apart: ``NORMAL`` for the Gaussian
innovations of returns and vols, ``MIXING`` for the chi-square mixing
variable of Student-t models, ``BOOTSTRAP`` for resampling history rows.
"""

from __future__ import annotations

import functools

import numpy as np

from ..backend import jax_x64
from . import threefry

NORMAL, MIXING, BOOTSTRAP = 0, 1, 2


def _jax():
    """JAX with 64-bit floats (money and tails in float64, design.md), imported on first use."""
    return jax_x64()


def enable_x64():
    """Import JAX with 64-bit floats enabled (for backends that compute in JAX)."""
    jax_x64()


@functools.cache
def _programs():
    jax = _jax()
    import jax.numpy as jnp

    def scenario_keys(seed, stream, start, count):
        base = jax.random.fold_in(jax.random.key(seed), stream)
        index = start + jnp.arange(count, dtype=jnp.uint32)
        return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)

    @functools.partial(jax.jit, static_argnames=("stream", "count", "dim"))
    def normals(seed, start, *, stream, count, dim):
        keys = scenario_keys(seed, stream, start, count)
        return jax.vmap(lambda k: jax.random.normal(k, (dim,), dtype=jnp.float64))(keys)

    @functools.partial(jax.jit, static_argnames=("stream", "count"))
    def chi2(seed, start, dof, *, stream, count):
        keys = scenario_keys(seed, stream, start, count)
        return jax.vmap(lambda k: 2.0 * jax.random.gamma(k, dof / 2.0, dtype=jnp.float64))(keys)

    @functools.partial(jax.jit, static_argnames=("stream", "count"))
    def chi2_keyed(words, start, dof, *, stream, count):
        # The same draw under a given key (its two uint32 words) instead of key(seed).
        base = jax.random.fold_in(jax.random.wrap_key_data(words, impl="threefry2x32"), stream)
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(start + jnp.arange(count, dtype=jnp.uint32))
        return jax.vmap(lambda k: 2.0 * jax.random.gamma(k, dof / 2.0, dtype=jnp.float64))(keys)

    @functools.partial(jax.jit, static_argnames=("stream", "count", "dim"))
    def integers(seed, start, high, *, stream, count, dim):
        keys = scenario_keys(seed, stream, start, count)
        return jax.vmap(lambda k: jax.random.randint(k, (dim,), 0, high, dtype=jnp.int64))(keys)

    return jnp, normals, chi2, integers, chi2_keyed


#: JAX draws are made in aligned blocks of this many scenarios, so one compiled
#: program serves every chunk size (scenario i's numbers never depend on it).
BLOCK = 4096


def _blocked(draw, start: int, stop: int):
    jnp = _programs()[0]
    first = start - start % BLOCK
    parts = [draw(b) for b in range(first, stop, BLOCK)]
    out = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
    return out[start - first:stop - first]


def standard_normals(seed: int, start: int, stop: int, dim: int, stream: int = NORMAL, *, key=None):
    """Independent N(0, 1) draws, shape ``(stop - start, dim)``, float64 (a NumPy array).

    The numbers of ``jax.random.normal`` under the scenario keys, computed
    without JAX (:mod:`.threefry`).  ``key`` (two uint32 words), when given,
    replaces ``key(seed)`` as the root (the backtest keys each date's draws
    by (seed, date): docs/methodology.md, section 13); ``key=(0, seed)`` is
    ``key(seed)`` itself.
    """
    root = threefry.seed_key(seed) if key is None else (np.uint32(key[0]), np.uint32(key[1]))
    base = threefry.fold_in(root, stream)
    keys = threefry.fold_in(base, np.arange(start, stop, dtype=np.int64).astype(np.uint32))
    return threefry.normal(keys, dim)


def jax_standard_normals(seed: int, start: int, stop: int, dim: int, stream: int = NORMAL):
    """:func:`standard_normals` drawn by JAX itself (a JAX array): the reference of the tests."""
    jnp, normals, _, _, _ = _programs()
    return _blocked(lambda b: normals(jnp.uint32(seed), jnp.uint32(b), stream=stream, count=BLOCK, dim=dim),
                    start, stop)


def chi_square(seed: int, start: int, stop: int, dof: float, stream: int = MIXING, *, key=None):
    """One chi-square(dof) draw per scenario, shape ``(stop - start,)``, float64 (JAX).

    ``key`` (two uint32 words) replaces ``key(seed)`` as the root, as in
    :func:`standard_normals`.
    """
    jnp, _, chi2, _, chi2_keyed = _programs()
    if key is not None:
        words = jnp.asarray([int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF], dtype=jnp.uint32)
        return _blocked(lambda b: chi2_keyed(words, jnp.uint32(b), jnp.float64(dof), stream=stream, count=BLOCK),
                        start, stop)
    return _blocked(lambda b: chi2(jnp.uint32(seed), jnp.uint32(b), jnp.float64(dof), stream=stream,
                                   count=BLOCK), start, stop)


def integers(seed: int, start: int, stop: int, high: int, dim: int = 1, stream: int = BOOTSTRAP):
    """Uniform integers in ``[0, high)``, shape ``(stop - start, dim)``, int64 (JAX)."""
    jnp, _, _, ints, _ = _programs()
    return _blocked(lambda b: ints(jnp.uint32(seed), jnp.uint32(b), jnp.int64(high), stream=stream,
                                   count=BLOCK, dim=dim), start, stop)
