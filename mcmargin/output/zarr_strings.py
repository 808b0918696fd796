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

Object arrays of ``str`` (labels gathered from a short list of ids, as the
attribution's holding coordinates are) take a path of their own: runs of
the same object are found by address, each distinct string is encoded
once, and one compiled pass repeats the bytes (:class:`RunCoded`).

The chunk is checked against the array's own metadata (data type, one
chunk, codecs, chunk key); an array whose metadata is not the expected
one is written by zarr-python instead, so the result is always the store
zarr-python itself would have written.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from ..common.identity import factorize_addresses, object_addresses

#: String variables with at least this many strings take the fast path (shorter ones are cheap anyway).
LONG = 10_000

#: Strings encoded per slice: bounds the temporary [strings x (4 + width)] bytes.
SLICE = 1 << 20


class RunCoded(NamedTuple):
    """A 1-D array of strings as runs: run ``r`` is ``run_length[r]`` copies of ``distinct[run_code[r]]``."""

    run_code: np.ndarray      # int64 [runs]
    run_length: np.ndarray    # int64 [runs], all >= 1
    distinct: np.ndarray      # object [distinct], each a str

    @property
    def size(self) -> int:
        return int(self.run_length.sum())

    def values(self) -> np.ndarray:
        """The strings, one object per element."""
        return self.distinct[np.repeat(self.run_code, self.run_length)]


def object_strings(dims, values: np.ndarray, attrs: dict | None = None) -> xr.Variable:
    """A variable holding the object array ``values`` (of ``str``) as it is.

    xarray passes object arrays through pandas to convert dates, and pandas
    3 turns strings into its own string type and back: a new object per
    element (4 s for a million accounts' holdings), which also defeats
    :func:`run_coded`.  Strings need no conversion, so the array is kept.
    """
    return xr.Variable(dims, np.asarray(values, dtype=object), attrs, fastpath=True)


def run_coded(values: np.ndarray) -> RunCoded | None:
    """:class:`RunCoded` of a 1-D object array whose elements are all ``str``; None if one is not.

    Equal addresses are the same object, hence the same string: runs and
    distinct objects are found over the addresses (integers), not by
    hashing or comparing strings.  Two equal strings held by different
    objects are simply encoded twice, which changes no byte.
    """
    values = np.ascontiguousarray(values, dtype=object)
    n = values.size
    if n == 0:
        return None
    address = object_addresses(values)
    start = np.flatnonzero(address[1:] != address[:-1]) + 1
    start = np.concatenate([[0], start])
    heads = address[start]
    # Runs of a few objects (instruments, kinds) are coded by object; runs that are mostly distinct objects
    # (accounts, pools) are each their own, without hashing a million addresses for nothing.
    sample = heads[:: max(1, heads.size // 4096)]
    if 2 * np.unique(sample).size > sample.size:
        run_code, first = np.arange(heads.size), start
    else:
        run_code, first_run = factorize_addresses(heads)
        first = start[first_run]
    distinct = values[first]
    if pd.api.types.infer_dtype(distinct, skipna=False) != "string":
        return None
    return RunCoded(run_code.astype(np.int64), np.diff(np.append(start, n)), distinct)


def defer_long_strings(ds: xr.Dataset) -> tuple[xr.Dataset, dict, dict]:
    """``(dataset, encoding, deferred)``: ``ds`` with each long 1-D string variable replaced by empty strings.

    String variables are NumPy unicode arrays, or object arrays of ``str``
    (any other object array is left to xarray).  ``encoding`` keeps each
    placeholder in one chunk that zarr does not write (all of it equals the
    fill value ""); ``deferred`` maps the variables' names to their real
    values (a unicode array or a :class:`RunCoded`), for :func:`write_deferred`.
    """
    deferred = {}
    for k, v in ds.variables.items():
        if v.ndim != 1 or v.size < LONG:
            continue
        if v.dtype.kind == "U":
            deferred[k] = np.asarray(v.values)
        elif v.dtype == object and (coded := run_coded(v.values)) is not None:
            deferred[k] = coded
    if not deferred:
        return ds, {}, {}
    empty = {k: (ds[k].dims, _placeholder(v.size, index=ds[k].dims == (k,)), ds[k].attrs) for k, v in deferred.items()}
    out = ds.assign({k: e for k, e in empty.items() if k in ds.data_vars})
    out = out.assign_coords({k: e for k, e in empty.items() if k in ds.coords})
    encoding = {k: {"chunks": (v.size,), "write_empty_chunks": False} for k, v in deferred.items()}
    return out, encoding, deferred


def _placeholder(size: int, index: bool):
    """``size`` empty strings: a new StringDType array (nothing to fill), or for a dimension coordinate an
    object index of one shared "" (pandas would turn StringDType into its own string type and back)."""
    if index:
        return pd.Index(np.full(size, "", dtype=object), dtype=object)
    return np.empty(size, dtype=np.dtypes.StringDType())


#: The bytes-to-bytes codecs zarr-python gives a string array by default: :func:`encode_ahead` compresses with
#: them before the array's metadata exists, and :func:`write_deferred` uses those bytes only if they match.
DEFAULT_STRING_CODECS = [{"name": "zstd", "configuration": {"level": 0, "checksum": False}}]


def encode_ahead(deferred: dict) -> tuple[ThreadPoolExecutor, dict]:
    """Start encoding and compressing each deferred variable (:data:`DEFAULT_STRING_CODECS`) on two threads.

    Returns the pool (shut it down after :func:`write_deferred`) and name -> future of the chunk's bytes.
    The compiled encoding and zstd run without the GIL, beside xarray writing the other variables.
    """
    pool = ThreadPoolExecutor(2)
    meta = {"codecs": [{"name": "vlen-utf8"}, *DEFAULT_STRING_CODECS]}
    # Largest first: the two threads finish together.
    names = sorted(deferred, key=lambda name: -deferred[name].size)
    return pool, {name: pool.submit(_chunk_bytes, meta, deferred[name]) for name in names}


def write_deferred(store: Path, deferred: dict, ahead: dict | None = None) -> None:
    """Write each deferred variable's strings as the one chunk of its array in the directory store ``store``.

    ``ahead``: futures of :func:`encode_ahead`, used where the array's codecs are the default ones.
    """
    ahead = ahead or {}
    fast = {}
    for name, values in deferred.items():
        meta = json.loads((store / name / "zarr.json").read_text())
        key = _chunk_key(meta, values.size)
        if key is None:
            _write_with_zarr(store / name, values)
        else:
            encoded = ahead.get(name) if meta["codecs"][1:] == DEFAULT_STRING_CODECS else None
            fast[store / name / key] = meta, values, encoded

    def write(path: Path, meta: dict, values, encoded) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded.result() if encoded is not None else _chunk_bytes(meta, values))

    # Two threads: the encoding (compiled, without the GIL) and zstd of one variable beside another's.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda item: write(item[0], *item[1]), fast.items()))


def _chunk_bytes(meta: dict, values):
    """The stored bytes of one string chunk: vlen-utf8, then the array's bytes-to-bytes codecs."""
    return _compressed(meta, _vlen(values))


def vlen_utf8(values: np.ndarray | RunCoded) -> bytes:
    """The ``vlen-utf8`` encoding of a 1-D array of strings (numcodecs' ``VLenUTF8``, byte for byte)."""
    return bytes(_vlen(values))


def _vlen(values: np.ndarray | RunCoded):
    """:func:`vlen_utf8` as bytes or a uint8 array (no copy of a compiled pass's output)."""
    if isinstance(values, RunCoded):
        return _run_coded_vlen(values)
    values = np.asarray(values, dtype=str)
    n = values.size
    codes = values.view(np.uint32).reshape(n, -1) if values.dtype.itemsize else np.zeros((n, 0), np.uint32)
    if codes.size == 0 or codes.max() < 128:       # ASCII: a code point is its UTF-8 byte, in one compiled pass
        from ._vlen import ascii_vlen

        return ascii_vlen(codes)
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


def _run_coded_vlen(coded: RunCoded) -> np.ndarray:
    from ._vlen import ascii_bytes, repeated_vlen

    text = coded.distinct.astype(str)
    codes = text.view(np.uint32).reshape(text.size, -1) if text.dtype.itemsize else np.zeros((text.size, 0), np.uint32)
    ascii = codes.size == 0 or codes.max() < 128
    if ascii:
        blob, offsets = ascii_bytes(codes)
        # NumPy's unicode drops trailing NULs: the lengths must add up to the strings' own.
        ascii = blob.size == sum(map(len, coded.distinct))
    if not ascii:                               # each distinct string through Python's UTF-8 codec
        encoded = [s.encode("utf-8") for s in coded.distinct]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return repeated_vlen(coded.run_code, coded.run_length, blob, offsets)


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

    zarr.open_array(str(path), mode="r+")[:] = values.values() if isinstance(values, RunCoded) else values.astype(object)
