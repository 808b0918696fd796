"""Array backends: one kernel, many namespaces.

Kernels are written once against the Python array API: they take the array
namespace ``xp`` of their inputs (through ``array_api_compat``) and work for
NumPy, JAX, CuPy and the strict reference implementation alike.  The few
primitives the array API lacks live here, one small table per backend
(:class:`Backend`): the normal CDF, the m largest values along an axis, and
moving arrays in and out.

Backends
--------
``numpy``  the reference, on the CPU (with an optional compiled fast path,
           :mod:`mcmargin.engine.kernels.fused`, switched by ``engine.fast_path``).
``jax``    JAX with 64-bit floats, on its default device (GPU when present).
``cupy``   CuPy on the current CUDA device.
``array_api_strict``  the strict standard implementation; tests only: it
           catches NumPy-only behaviour that would break on CuPy or JAX.
``auto``   cupy if a CUDA device is usable, else jax if JAX sees a GPU,
           else numpy; always the same choice on the same machine.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable

import numpy as np

from .errors import ConfigError

BACKENDS = ("numpy", "jax", "cupy", "array_api_strict", "auto")


@dataclasses.dataclass(frozen=True)
class Backend:
    """An array namespace plus the primitives the array API does not have."""

    name: str
    xp: object
    device: str
    norm_cdf: Callable
    top_k: Callable
    """``top_k(x, k)``: the k largest values along the last axis (any order)."""
    asarray: Callable
    """Float64 array of this backend from a NumPy or JAX array."""
    to_numpy: Callable


def _numpy_backend() -> Backend:
    from scipy.special import ndtr

    def top_k(x, k):
        if k >= x.shape[-1]:
            return x
        return np.partition(x, x.shape[-1] - k, axis=-1)[..., x.shape[-1] - k:]

    return Backend("numpy", _compat("numpy"), "cpu", ndtr, top_k,
                   lambda a: np.asarray(a, dtype=np.float64), np.asarray)


@functools.cache
def jax_x64():
    """JAX with 64-bit floats (money and tails in float64), imported on first use; every JAX user goes through it."""
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _jax_backend() -> Backend:
    jax_x64()  # before any JAX array exists
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import ndtr

    def top_k(x, k):
        if k >= x.shape[-1]:
            return x
        return jax.lax.top_k(x, k)[0]

    dev = jax.devices()[0]
    return Backend("jax", _compat("jax"), f"{dev.platform}:{getattr(dev, 'device_kind', '')}".rstrip(":"),
                   ndtr, top_k, lambda a: jnp.asarray(a, dtype=jnp.float64), np.asarray)


def _cupy_backend() -> Backend:
    import cupy as cp
    from cupyx.scipy.special import ndtr

    def top_k(x, k):
        if k >= x.shape[-1]:
            return x
        return cp.partition(x, x.shape[-1] - k, axis=-1)[..., x.shape[-1] - k:]

    def asarray(a):
        # Zero-copy from a JAX array already on this GPU; anything on the host is copied in.
        if hasattr(a, "__dlpack__") and not isinstance(a, np.ndarray):
            try:
                return cp.from_dlpack(a).astype(cp.float64, copy=False)
            except Exception:  # a host (CPU) array cannot be imported as a CUDA one
                a = np.asarray(a)
        return cp.asarray(a, dtype=cp.float64)

    name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
    return Backend("cupy", _compat("cupy"), f"cuda:{name.decode() if isinstance(name, bytes) else name}",
                   ndtr, top_k, asarray, cp.asnumpy)


def _strict_backend() -> Backend:
    import array_api_strict as xps

    def norm_cdf(x):
        # Exact to double rounding via the erfc identity, evaluated in NumPy:
        # the strict namespace has no special functions.
        from scipy.special import ndtr
        return xps.asarray(ndtr(np.asarray(x)))

    def top_k(x, k):
        if k >= x.shape[-1]:
            return x
        return xps.sort(x, axis=-1)[..., x.shape[-1] - k:]

    return Backend("array_api_strict", xps, "cpu", norm_cdf, top_k,
                   lambda a: xps.asarray(np.asarray(a, dtype=np.float64)), lambda a: np.asarray(a))


def _compat(name: str):
    import array_api_compat

    if name == "numpy":
        return array_api_compat.array_namespace(np.empty(0))
    if name == "jax":
        import jax.numpy as jnp
        return array_api_compat.array_namespace(jnp.empty(0))
    import cupy as cp
    return array_api_compat.array_namespace(cp.empty(0))


def _cuda_usable() -> bool:
    try:
        import cupy as cp
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, or no device: not usable
        return False


def _jax_gpu_plugin_installed() -> bool:
    """Whether a JAX GPU plugin (CUDA or ROCm) is installed, found without importing JAX.

    Since JAX 0.4.30 (the oldest this package accepts) a GPU is reached only
    through such a plugin (``pip install 'jax[cuda12]'`` installs
    ``jax_cuda12_plugin`` and ``jax_plugins.xla_cuda12``); without one JAX
    sees only the CPU, and importing it (about 2 s) to find that out would
    double the start-up of a default run.
    """
    import importlib.util
    import pkgutil

    if any(re.fullmatch(r"jax_(cuda|rocm)\d*_plugin", m.name) for m in pkgutil.iter_modules()):
        return True
    try:
        spec = importlib.util.find_spec("jax_plugins")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(re.search(r"cuda|rocm|gpu", m.name) for m in pkgutil.iter_modules(spec.submodule_search_locations))


def _jax_has_gpu() -> bool:
    if not _jax_gpu_plugin_installed():
        return False
    try:
        import jax
        return any(d.platform == "gpu" for d in jax.devices())
    except Exception:  # JAX without a GPU plugin raises on some versions
        return False


def resolve(name: str) -> str:
    """The concrete backend ``auto`` stands for on this machine."""
    if name not in BACKENDS:
        raise ConfigError("backend", f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    if _cuda_usable():
        return "cupy"
    if _jax_has_gpu():
        return "jax"
    return "numpy"


@functools.cache
def get_backend(name: str = "numpy") -> Backend:
    """The :class:`Backend` called ``name`` (``auto`` resolved first)."""
    name = resolve(name)
    try:
        return {"numpy": _numpy_backend, "jax": _jax_backend, "cupy": _cupy_backend,
                "array_api_strict": _strict_backend}[name]()
    except ImportError as exc:
        raise ConfigError("backend", f"backend {name!r} needs a package that is not installed ({exc}); "
                          "install the GPU extra: pip install 'mcmargin[gpu]'") from None

