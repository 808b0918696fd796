"""Counter-based random numbers keyed by (seed, stream, scenario index).

Scenario ``i`` of a run draws from the key ``fold_in(fold_in(key(seed),
stream), i)`` of JAX's threefry generator, so its numbers do not depend on
how scenarios are chunked, on the worker that draws them, or on the order
of work.  Draws are produced by JAX on the device at hand (64-bit floats)
and handed to other array libraries through :func:`mcmargin.backend.asarray`.

Streams keep independent uses of one seed apart: ``NORMAL`` for the Gaussian
innovations of returns and vols, ``MIXING`` for the chi-square mixing
variable of Student-t models, ``BOOTSTRAP`` for resampling history rows.
"""

from __future__ import annotations

import functools

import jax

jax.config.update("jax_enable_x64", True)  # money and tails in float64 (design.md)

import jax.numpy as jnp  # noqa: E402

NORMAL, MIXING, BOOTSTRAP = 0, 1, 2


def _scenario_keys(seed: int, stream: int, start: int, count: int):
    base = jax.random.fold_in(jax.random.key(seed), stream)
    index = start + jnp.arange(count, dtype=jnp.uint32)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


@functools.partial(jax.jit, static_argnames=("stream", "count", "dim"))
def _normals(seed, start, *, stream, count, dim):
    keys = _scenario_keys(seed, stream, start, count)
    return jax.vmap(lambda k: jax.random.normal(k, (dim,), dtype=jnp.float64))(keys)


@functools.partial(jax.jit, static_argnames=("stream", "count"))
def _chi2(seed, start, dof, *, stream, count):
    keys = _scenario_keys(seed, stream, start, count)
    return jax.vmap(lambda k: 2.0 * jax.random.gamma(k, dof / 2.0, dtype=jnp.float64))(keys)


@functools.partial(jax.jit, static_argnames=("stream", "count", "dim"))
def _integers(seed, start, high, *, stream, count, dim):
    keys = _scenario_keys(seed, stream, start, count)
    return jax.vmap(lambda k: jax.random.randint(k, (dim,), 0, high, dtype=jnp.int64))(keys)


#: Draws are made in aligned blocks of this many scenarios, so one compiled
#: program serves every chunk size (scenario i's numbers never depend on it).
BLOCK = 4096


def _blocked(draw, start: int, stop: int):
    first = start - start % BLOCK
    parts = [draw(b) for b in range(first, stop, BLOCK)]
    out = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
    return out[start - first:stop - first]


def standard_normals(seed: int, start: int, stop: int, dim: int, stream: int = NORMAL):
    """Independent N(0, 1) draws, shape ``(stop - start, dim)``, float64 (a JAX array)."""
    return _blocked(lambda b: _normals(jnp.uint32(seed), jnp.uint32(b), stream=stream, count=BLOCK, dim=dim),
                    start, stop)


def chi_square(seed: int, start: int, stop: int, dof: float, stream: int = MIXING):
    """One chi-square(dof) draw per scenario, shape ``(stop - start,)``, float64."""
    return _blocked(lambda b: _chi2(jnp.uint32(seed), jnp.uint32(b), jnp.float64(dof), stream=stream,
                                    count=BLOCK), start, stop)


def integers(seed: int, start: int, stop: int, high: int, dim: int = 1, stream: int = BOOTSTRAP):
    """Uniform integers in ``[0, high)``, shape ``(stop - start, dim)``, int64."""
    return _blocked(lambda b: _integers(jnp.uint32(seed), jnp.uint32(b), jnp.int64(high), stream=stream,
                                        count=BLOCK, dim=dim), start, stop)
