"""mcmargin.common.lazy_dask: xarray tests for dask arrays without importing dask.array, and still finds them.

Each check runs in a fresh interpreter: the setting is process-wide, and
the test session has imported dask.array long before.
"""

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_datasets_from_numpy_leave_dask_array_unimported():
    out = _run("""
        import sys
        from mcmargin.common.lazy_dask import check_dask_arrays_lazily
        assert check_dask_arrays_lazily()
        assert not check_dask_arrays_lazily()          # once only: the cache holds dask now
        import numpy as np, xarray as xr
        ds = xr.Dataset({"im": ("account", np.arange(3.0))}, coords={"account": ["A1", "A2", "A3"]})
        ds = ds.assign(es=ds.im * 2)
        print("dask.array" in sys.modules, float(ds.es.sum()))
    """)
    assert out == "False 6.0"


def test_dask_arrays_made_later_are_still_recognised():
    out = _run("""
        from mcmargin.common.lazy_dask import DaskArray, check_dask_arrays_lazily
        assert check_dask_arrays_lazily()
        import numpy as np, xarray as xr
        xr.Variable("x", np.arange(3))
        assert not isinstance(np.arange(3), DaskArray)
        import dask.array as da
        from xarray.namedarray.pycompat import array_type
        lazy = da.ones(4, chunks=2)
        assert isinstance(lazy, array_type("dask")) and issubclass(type(lazy), DaskArray)
        v = xr.DataArray(lazy, dims="x")
        print(v.chunks, type(v.data).__module__.split(".")[0], float(v.sum().compute()))
        masked = da.ma.masked_array(da.arange(4, chunks=2), mask=[False, True, False, False])
        print(float(xr.DataArray(masked, dims="x").sum().compute()))
    """)
    assert out.splitlines() == ["((2, 2),) dask 4.0", "5.0"]


def test_nothing_changes_once_xarray_has_looked_dask_up():
    out = _run("""
        import numpy as np, xarray as xr
        from xarray.namedarray.pycompat import array_type
        xr.DataArray(np.arange(2.0))                    # xarray looks dask up (and imports dask.array)
        from mcmargin.common.lazy_dask import check_dask_arrays_lazily
        import dask.array as da
        print(check_dask_arrays_lazily(), array_type("dask") == (da.Array,))
    """)
    assert out == "False True"
