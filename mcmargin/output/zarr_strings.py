"""Long string variables written to Zarr without a Python object per string.

Zarr stores variable-length strings with the ``vlen-utf8`` codec: a chunk
is the count of strings, then each string's UTF-8 length and bytes
(little-endian ``uint32`` counts).  zarr-python encodes it one Python
``str`` at a time, after xarray has turned the NumPy unicode array into
objects: about 0.7 us a string, 10 s for the holdings of a million-account
run.  Here the same bytes are built by array operations over the NumPy
unicode array (for ASCII text, which account, group and instrument IDs
almost always are, one compiled pass, :mod:`._vlen`; other text is encoded
by NumPy's UTF-8 codec) and
written as the variable's one chunk, after xarray has written everything
else, metadata included, with an empty placeholder in its place.

The chunk is checked against the array's own metadata (data type, one
chunk, codecs, chunk key); an array whose metadata is not the expected
one is written by zarr-python instead, so the result is always the store
zarr-python itself would have written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

#: String variables with at least this many strings take the fast path (shorter ones are cheap anyway).
LONG = 10_000

#: Strings encoded per slice: bounds the temporary [strings x (4 + width)] bytes.
SLICE = 1 << 20


def defer_long_strings(ds: xr.Dataset) -> tuple[xr.Dataset, dict, dict]:
    """``(dataset, encoding, deferred)``: ``ds`` with each long 1-D unicode variable replaced by empty strings.

    ``encoding`` keeps each placeholder in one chunk that zarr does not
    write (all of it equals the fill value ""); ``deferred`` maps the
    variables' names to their real values, for :func:`write_deferred`.
    """
    deferred = {k: np.asarray(v.values) for k, v in ds.variables.items()
                if v.dtype.kind == "U" and v.ndim == 1 and v.size >= LONG}
    if not deferred:
        return ds, {}, {}
    # A new StringDType array holds empty strings: nothing to fill.
    empty = {k: (ds[k].dims, np.empty(v.size, dtype=np.dtypes.StringDType()), ds[k].attrs)
             for k, v in deferred.items()}
    out = ds.assign({k: e for k, e in empty.items() if k in ds.data_vars})
    out = out.assign_coords({k: e for k, e in empty.items() if k in ds.coords})
    encoding = {k: {"chunks": (v.size,), "write_empty_chunks": False} for k, v in deferred.items()}
    return out, encoding, deferred


def write_deferred(store: Path, deferred: dict) -> None:
    """Write each deferred variable's strings as the one chunk of its array in the directory store ``store``."""
    for name, values in deferred.items():
        meta = json.loads((store / name / "zarr.json").read_text())
        key = _chunk_key(meta, values.size)
        if key is None:
            _write_with_zarr(store / name, values)
            continue
        path = store / name / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_compressed(meta, vlen_utf8(values)))


def vlen_utf8(values: np.ndarray) -> bytes:
    """The ``vlen-utf8`` encoding of a 1-D array of strings (numcodecs' ``VLenUTF8``, byte for byte)."""
    values = np.asarray(values, dtype=str)
    n = values.size
    codes = values.view(np.uint32).reshape(n, -1) if values.dtype.itemsize else np.zeros((n, 0), np.uint32)
    if codes.size == 0 or codes.max() < 128:       # ASCII: a code point is its UTF-8 byte, in one compiled pass
        from ._vlen import ascii_vlen

        return ascii_vlen(codes).tobytes()
    encoded = np.char.encode(values, "utf-8")      # not ASCII: NumPy's UTF-8 codec, then the same layout
    raw = encoded.view(np.uint8).reshape(n, encoded.dtype.itemsize)
    lengths = np.char.str_len(encoded).astype("<u4")
    width = raw.shape[1]
    parts = [np.array([n], dtype="<u4").tobytes()]
    columns = np.arange(width)
    for a in range(0, n, SLICE):
        z = slice(a, min(n, a + SLICE))
        k = z.stop - z.start
        rows = np.empty((k, 4 + width), np.uint8)
        rows[:, :4] = lengths[z].view(np.uint8).reshape(k, 4)
        rows[:, 4:] = raw[z]
        keep = np.ones((k, 4 + width), bool)
        keep[:, 4:] = columns < lengths[z, None]
        parts.append(rows[keep].tobytes())
    return b"".join(parts)


def _chunk_key(meta: dict, size: int) -> str | None:
    """The key of the one chunk of a 1-D string array of ``size`` as zarr-python wrote its metadata; None if
    the metadata is not the layout this module writes (then zarr-python writes the strings)."""
    codecs = [c.get("name") for c in meta.get("codecs", [])]
    grid = meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    encoding = meta.get("chunk_key_encoding", {})
    if (meta.get("zarr_format") != 3 or meta.get("data_type") != "string" or meta.get("shape") != [size]
            or grid != [size] or codecs not in (["vlen-utf8"], ["vlen-utf8", "zstd"])
            or encoding.get("name") != "default"):
        return None
    separator = encoding.get("configuration", {}).get("separator", "/")
    return f"c{separator}0"


def _compressed(meta: dict, data: bytes) -> bytes:
    """``data`` through the array's bytes-to-bytes codecs (none, or zstd with its level and checksum)."""
    for codec in meta["codecs"][1:]:
        from numcodecs import Zstd

        config = codec.get("configuration", {})
        data = Zstd(level=int(config.get("level", 0)), checksum=bool(config.get("checksum", False))).encode(data)
    return data


def _write_with_zarr(path: Path, values: np.ndarray) -> None:
    import zarr

    zarr.open_array(str(path), mode="r+")[:] = values.astype(object)
