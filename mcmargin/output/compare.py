"""Are two datasets the same numbers, bit for bit?  And where not, by how much?

Used by :mod:`jobs.reproduce` (a dataset against its rerun) and the resume
and concurrency tests.  Every data variable and coordinate is compared by
dims, dtype and bytes (so NaN equals NaN and -0.0 differs from 0.0), and
every attribute except those that describe the run rather than its figures
(:data:`RUN_ATTRS`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

#: Attributes that differ between two runs of the same figures (when and where they ran, how long).
RUN_ATTRS = frozenset({"timings", "created", "versions", "config", "working_directory", "code_version",
                       "git_commit", "git_dirty", "created_by", "input_sha256", "job"})


@dataclasses.dataclass(frozen=True)
class Difference:
    """One variable, coordinate or attribute that differs.

    ``count`` values of ``size`` differ; for numbers, ``max_abs`` is the
    largest absolute difference and ``max_rel`` the largest relative one
    (``|a - b| / max(|a|, |b|)``), NaN where they cannot be formed (shapes
    or types differ, or a value is NaN on one side only).
    """

    name: str
    what: str
    count: int = 0
    size: int = 0
    max_abs: float = float("nan")
    max_rel: float = float("nan")

    def __str__(self) -> str:
        if self.what != "values":
            return f"{self.name}: {self.what}"
        out = f"{self.name}: {self.count:,} of {self.size:,} values differ"
        if self.max_abs == self.max_abs:
            out += f", max |difference| {self.max_abs:.6g}, max relative {self.max_rel:.3g}"
        return out


def _values(v) -> np.ndarray:
    a = np.asarray(v.values)
    if a.dtype.kind not in "biufcmM":
        return np.asarray([str(x) for x in a.ravel()], dtype=object).reshape(a.shape)
    return a


def differences(a: xr.Dataset, b: xr.Dataset) -> list[Difference]:
    """Every variable, coordinate and (non-run) attribute in which ``a`` and ``b`` differ; empty when identical."""
    out = []
    for name in sorted(set(map(str, a.variables)) | set(map(str, b.variables))):
        if name not in a.variables or name not in b.variables:
            out.append(Difference(name, f"only in the {'first' if name in a.variables else 'second'} dataset"))
            continue
        va, vb = a[name], b[name]
        if va.dims != vb.dims or va.shape != vb.shape:
            out.append(Difference(name, f"dims {va.dims}{va.shape} vs {vb.dims}{vb.shape}"))
            continue
        xa, xb = _values(va), _values(vb)
        if xa.dtype.kind in "biufc" and xb.dtype.kind in "biufc":
            if xa.dtype != xb.dtype:
                out.append(Difference(name, f"dtype {xa.dtype} vs {xb.dtype}"))
                continue
            fa, fb = np.ascontiguousarray(xa).reshape(-1), np.ascontiguousarray(xb).reshape(-1)
            if fa.size == 0:
                continue
            differ = (fa.view(np.uint8).reshape(fa.size, -1) != fb.view(np.uint8).reshape(fb.size, -1)).any(axis=1)
            if differ.any():
                fa, fb = fa[differ].astype(float), fb[differ].astype(float)
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    gap = np.abs(fa - fb)
                    rel = gap / np.maximum(np.abs(fa), np.abs(fb))
                big = float(np.max(gap)) if np.isfinite(gap).all() else float("nan")
                out.append(Difference(name, "values", int(differ.sum()), int(xa.size), big,
                                      float(np.nanmax(rel)) if big == big else float("nan")))
        else:
            differ = np.asarray(xa != xb)
            if differ.any():
                out.append(Difference(name, "values", int(differ.sum()), int(xa.size)))
    for key in sorted((set(a.attrs) | set(b.attrs)) - RUN_ATTRS):
        x, y = a.attrs.get(key), b.attrs.get(key)
        same = (np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
                if isinstance(x, (float, np.floating)) and isinstance(y, (float, np.floating)) else x == y)
        if not np.all(same):
            out.append(Difference(f"attrs[{key!r}]", f"{x!r} vs {y!r}"))
    return out
