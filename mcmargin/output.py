"""Writing result datasets atomically (Zarr, or netCDF for a ``.nc`` path).

The dataset is written beside the target under a temporary name and moved
into place only when complete, so a failed or interrupted run never leaves
a half-written dataset at ``output.path``.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from pathlib import Path

import xarray as xr


def write_dataset(ds: xr.Dataset, path) -> Path:
    """Write ``ds`` to ``path`` atomically; Zarr unless the suffix is ``.nc``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        if path.suffix == ".nc":
            ds.to_netcdf(tmp)
        else:
            # Variable-length strings have a Zarr v3 data type; fixed-width
            # NumPy unicode does not (zarr warns it may become unreadable).
            with warnings.catch_warnings():
                # Consolidated metadata is what xarray readers look for first;
                # zarr notes it is not yet in the v3 spec.
                warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
                ds.pipe(_variable_length_strings).to_zarr(tmp, mode="w", consolidated=True)
        _replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)
    return path


def _variable_length_strings(ds: xr.Dataset) -> xr.Dataset:
    fixed = [k for k, v in ds.variables.items() if v.dtype.kind == "U"]
    return ds.assign({k: ds[k].astype(object) for k in fixed if k in ds.data_vars}).assign_coords(
        {k: ds[k].astype(object) for k in fixed if k in ds.coords})


def _replace(new: Path, target: Path) -> None:
    if new.is_file() or not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    os.replace(new, target)
    _remove(old)


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def open_dataset(path) -> xr.Dataset:
    """Open a dataset written by :func:`write_dataset`."""
    path = str(path)
    return xr.open_dataset(path) if path.endswith(".nc") else xr.open_zarr(path)
