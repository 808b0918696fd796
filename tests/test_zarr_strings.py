"""Long string variables written by array operations (mcmargin/output/zarr_strings.py) read back as written."""

from __future__ import annotations

import json

import numcodecs
import numpy as np
import pytest
import xarray as xr

from mcmargin.output import zarr_strings
from mcmargin.output.store import write_dataset

TEXTS = ["abc", "", "A000001", "x" * 40, "mid\x00nul", "ETH-20270223-2700-P", " lead", "trail "]
UNICODE = ["é", "中文", "pool 🙂", "Zürich-7"]


@pytest.mark.parametrize("texts", [TEXTS, TEXTS + UNICODE, [""], ["", ""], ["a"]], ids=["ascii", "unicode",
                                                                                    "one-empty", "empties", "one"])
def test_encoding_is_numcodecs_vlen_utf8_byte_for_byte(texts):
    rng = np.random.default_rng(3)
    values = np.array(texts, dtype=str)[rng.integers(0, len(texts), 3 * zarr_strings.SLICE // 1024 + 7)]
    assert zarr_strings.vlen_utf8(values) == numcodecs.VLenUTF8().encode(values.astype(object))


def test_slices_join_into_one_encoding(monkeypatch):
    values = np.array([f"A{i:06d}" + "é" * (i % 3) for i in range(1000)])
    whole = zarr_strings.vlen_utf8(values)
    monkeypatch.setattr(zarr_strings, "SLICE", 7)
    assert zarr_strings.vlen_utf8(values) == whole == numcodecs.VLenUTF8().encode(values.astype(object))


@pytest.mark.parametrize("texts", [TEXTS, TEXTS + UNICODE, [""], ["a"], TEXTS + ["nul at the end\x00"]],
                         ids=["ascii", "unicode", "one-empty", "one", "trailing-nul"])
def test_object_strings_encode_as_numcodecs_byte_for_byte(texts):
    """Object arrays: runs of one object, equal strings in different objects, both in any order."""
    rng = np.random.default_rng(4)
    shared = np.array(texts, dtype=object)
    values = shared[np.sort(rng.integers(0, len(texts), 5000))]                 # long runs of shared objects
    values[rng.integers(0, values.size, 300)] = shared[rng.integers(0, len(texts), 300)]     # broken up
    copies = rng.integers(0, values.size, 200)
    values[copies] = [("" + str(values[i]) + ".")[:-1] for i in copies]         # equal text, new objects
    coded = zarr_strings.run_coded(values)
    assert coded.size == values.size and coded.values().tolist() == values.tolist()
    assert zarr_strings.vlen_utf8(coded) == numcodecs.VLenUTF8().encode(values)


@pytest.mark.parametrize("cell", [None, 1.5, b"bytes"], ids=["none", "float", "bytes"])
def test_object_arrays_with_a_non_string_are_left_to_xarray(cell):
    values = np.array(["a", "b"] * 10, dtype=object)
    values[7] = cell
    assert zarr_strings.run_coded(values) is None


def _dataset(n, texts):
    rng = np.random.default_rng(1)
    pick = np.array(texts, dtype=str)
    ds = xr.Dataset(
        {"amount": ("holding", rng.standard_normal(n), {"long_name": "an amount", "units": "USD"}),
         "label": ("holding", pick[rng.integers(0, len(pick), n)], {"long_name": "a label", "units": "1"}),
         "short": ("asset", np.array(["BTC", "ETH"]))},
        coords={"holding": np.arange(n),
                "holding_account": ("holding", np.array([f"A{i:07d}" for i in rng.integers(0, 10**6, n)])),
                "account": ("account", np.array([f"acct-{i}" for i in range(n)])),
                "asset": ["BTC", "ETH"]})
    ds.attrs["title"] = "strings"
    return ds


@pytest.mark.parametrize("as_objects", [False, True], ids=["unicode-arrays", "object-arrays"])
@pytest.mark.parametrize("texts", [TEXTS, TEXTS + UNICODE], ids=["ascii", "unicode"])
def test_a_dataset_with_long_strings_reads_back_identical(tmp_path, texts, as_objects):
    n = zarr_strings.LONG + 13
    ds = _dataset(n, texts)
    if as_objects:
        ds = ds.assign(label=ds["label"].astype(object)).assign_coords(
            holding_account=ds["holding_account"].astype(object))
        deferred = zarr_strings.defer_long_strings(ds)[2]
        assert all(isinstance(deferred[k], zarr_strings.RunCoded) for k in ("label", "holding_account"))
    write_dataset(ds, tmp_path / "d.zarr")
    back = xr.open_zarr(tmp_path / "d.zarr").load()
    for name, v in ds.variables.items():
        got = back[name].values
        if v.dtype.kind in "UO":
            assert [str(x) for x in got.ravel().tolist()] == v.values.ravel().tolist(), name
        else:
            np.testing.assert_array_equal(got, v.values, err_msg=name)
        assert back[name].attrs == v.attrs
    assert set(back.coords) == set(ds.coords) and back.attrs["title"] == "strings"
    # The fast path was taken (one chunk per long string variable) and the codecs are zarr's defaults.
    for name in ("label", "holding_account", "account"):
        meta = json.loads((tmp_path / "d.zarr" / name / "zarr.json").read_text())
        assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [n]
        assert [c["name"] for c in meta["codecs"]] == ["vlen-utf8", "zstd"]
        assert (tmp_path / "d.zarr" / name / "c" / "0").is_file()


def test_unexpected_metadata_is_written_by_zarr_itself(tmp_path, monkeypatch):
    """An array whose metadata is not the one-chunk layout gets its strings from zarr-python."""
    n = zarr_strings.LONG + 1
    ds = _dataset(n, TEXTS)
    monkeypatch.setattr(zarr_strings, "_chunk_key", lambda meta, size: None)
    write_dataset(ds, tmp_path / "d.zarr")
    back = xr.open_zarr(tmp_path / "d.zarr").load()
    assert [str(x) for x in back["label"].values.tolist()] == ds["label"].values.tolist()


def test_bytes_encoded_ahead_are_used_only_for_the_codecs_they_were_made_with(tmp_path, monkeypatch):
    """encode_ahead compresses before the metadata exists; were zarr's default codecs others, those bytes
    would not be readable: they are then made again for the array's own codecs."""
    n = zarr_strings.LONG + 5
    ds = _dataset(n, TEXTS)
    monkeypatch.setattr(zarr_strings, "DEFAULT_STRING_CODECS", [])          # ahead: vlen bytes, no zstd
    write_dataset(ds, tmp_path / "d.zarr")
    meta = json.loads((tmp_path / "d.zarr" / "label" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["vlen-utf8", "zstd"]
    back = xr.open_zarr(tmp_path / "d.zarr").load()
    for name in ("label", "holding_account", "account"):
        assert [str(x) for x in back[name].values.tolist()] == ds[name].values.tolist(), name
