"""xarray's check for dask arrays without importing ``dask.array`` first.

Every xarray variable made from a NumPy array asks whether the data is a
dask array (``isinstance(data, array_type("dask"))``), and the first time
it asks, xarray imports ``dask.array`` to get the class: 0.23 s of every job
on this project's machine, in runs that make no dask array.  No object can
be a ``dask.array.Array`` before ``dask.array`` is imported, so the same
answer comes from a class whose ``isinstance`` check looks for the module
in ``sys.modules`` first and asks the real class only once it is there.

:func:`check_dask_arrays_lazily` puts that class in xarray's cache of
duck-array modules (a private table, ``xarray.namedarray.pycompat``); where
that table is not what this module expects, or xarray has already looked
dask up, it changes nothing.  Every job calls it as it starts
(:func:`jobs._cli.user_errors`).  It changes no result: dask arrays made later
are recognised as before (``tests/test_lazy_dask.py``).
"""

from __future__ import annotations

import sys

__all__ = ["check_dask_arrays_lazily"]


class _LazyArrayCheck(type):
    """Metaclass: ``isinstance(x, DaskArray)`` is False until ``dask.array`` is imported, then the real test."""

    def __instancecheck__(cls, obj) -> bool:
        module = sys.modules.get("dask.array")
        return module is not None and isinstance(obj, module.Array)

    def __subclasscheck__(cls, sub) -> bool:
        module = sys.modules.get("dask.array")
        return module is not None and issubclass(sub, module.Array)


class DaskArray(metaclass=_LazyArrayCheck):
    """Stands for ``dask.array.Array`` in ``isinstance`` and ``issubclass`` checks."""


def check_dask_arrays_lazily() -> bool:
    """Let xarray test for dask arrays without importing ``dask.array``; True when the setting took effect.

    Does nothing (False) if dask is not installed, xarray has already
    looked dask up, or its private cache is not the expected one.
    """
    try:
        import dask
        from packaging.version import Version
        from xarray.namedarray import pycompat
    except ImportError:
        return False
    cache = getattr(pycompat, "_cached_duck_array_modules", None)
    module_class = getattr(pycompat, "DuckArrayModule", None)
    if not isinstance(cache, dict) or module_class is None or "dask" in cache:
        return False
    entry = module_class.__new__(module_class)      # filled in by hand: __init__ would import dask.array
    entry.module, entry.version, entry.type, entry.available = dask, Version(dask.__version__), (DaskArray,), True
    cache["dask"] = entry
    return True
