"""Fuzzing the other file loaders: price history, stress files, SPAN and calibration parameter files."""

import math

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from fuzz import (FUZZ, Table, check_loader, dates, document_edits, examples, file_bytes, file_forms, in_temp_dir,
                  numbers,
                  positive_numbers, table_edits, write_table, yaml_texts)
from mcmargin.errors import McMarginError

# ----------------------------------------------------------------------------- history
_rng = np.random.default_rng(5)
_prices = 100 * np.exp(np.cumsum(_rng.normal(0, 0.03, (12, 2)), axis=0))
HISTORY = Table(["date", "BTC", "ETH"], [[d.date().isoformat(), repr(float(a)), repr(float(b))] for d, (a, b) in
                                         zip(pd.date_range("2026-10-01", periods=12), _prices)])


@examples(0.6)
@given(edit=table_edits(HISTORY, {"date": dates("2026-10-06"), "BTC": positive_numbers(), "ETH": positive_numbers()}),
       form=file_forms())
def test_fuzz_history(edit, form):
    from mcmargin.inputs.history import load_history

    with in_temp_dir() as d:
        path = write_table(edit, d / "history", form)
        h = check_loader(lambda: load_history(path), files=[path])
    if isinstance(h, McMarginError):
        return
    assert isinstance(h.index, pd.DatetimeIndex) and h.index.is_unique and h.index.is_monotonic_increasing
    values = h.to_numpy(dtype=float)
    assert not np.isinf(values).any() and (values[~np.isnan(values)] > 0).all()
    # A row with no price at all is dropped (a date-only history has no price columns: its callers refuse it).
    assert values.shape[1] == 0 or not np.isnan(values).all(axis=1).any()


# ----------------------------------------------------------------------------- stress files
STRESS = {"description": "d", "source": "s", "returns": {"BTC": -0.25, "ETH": -0.3}, "vol_changes": {"BTC": 0.4},
          "others": {"return": -0.2, "vol_change": 0.3}}
MOVES = {k: numbers(-5, 5) for k in ("BTC", "ETH", "return", "vol_change")}


@FUZZ
@given(text=file_bytes(yaml_texts(document_edits(STRESS, MOVES))))
def test_fuzz_stress_file(text):
    from mcmargin.scenarios.named import load_stress

    with in_temp_dir() as d:
        path = d / "my_stress.yaml"
        path.write_bytes(text)
        s = check_loader(lambda: load_stress(path), files=[path])
    if isinstance(s, McMarginError):
        return
    moves = [*s.returns.values(), *s.vol_changes.values(), s.other_return, s.other_vol_change]
    assert all(isinstance(x, float) and math.isfinite(x) for x in moves)


# ----------------------------------------------------------------------------- SPAN parameter file
SPAN = {"underlyings": {"BTC": {"price_scan_range": 0.09, "vol_scan_range": 0.17, "tiers": [31, 92, 183],
                                "intra_rate": 0.02},
                        "ETH": {"price_scan_range": 0.12, "vol_scan_range": 0.2}},
        "inter_commodity": [{"legs": ["BTC", "ETH"], "delta_ratio": [1.0, 0.75], "credit_rate": 0.6, "priority": 1}]}
SPAN_VALUES = {k: numbers(-2, 6) for k in ("price_scan_range", "vol_scan_range", "intra_rate", "credit_rate",
                                           "short_option_minimum", "cover_fraction")}


@FUZZ
@given(text=file_bytes(yaml_texts(document_edits(SPAN, SPAN_VALUES))))
def test_fuzz_span_params(text):
    from mcmargin.margin.span import DEFAULTS, load_params

    with in_temp_dir() as d:
        path = d / "span.yaml"
        path.write_bytes(text)
        p = check_loader(lambda: load_params(str(path), DEFAULTS), files=[path])
    if isinstance(p, McMarginError):
        return
    for u in p["underlyings"].values():
        assert 0 < u.price_scan_range <= 5 and 0 <= u.vol_scan_range <= 5
        assert all(math.isfinite(t) and t > 0 for t in u.tiers) and list(u.tiers) == sorted(u.tiers)
        assert 0 <= u.intra_rate <= 1 and 0 <= u.cover_fraction <= 1
    for pair in p["pairs"]:
        assert set(pair.legs) <= set(p["underlyings"]) and 0 <= pair.credit_rate <= 1


# ----------------------------------------------------------------------------- calibration parameter dataset
@st.composite
def calibration_datasets(draw):
    import xarray as xr

    n = draw(st.integers(1, 4))
    assets = [f"A{i}" for i in range(n)]
    vol = np.array([draw(st.floats(0, 3)) for _ in assets])
    a = np.array(draw(st.lists(st.lists(st.floats(-1, 1), min_size=n, max_size=n), min_size=n, max_size=n)))
    corr = (a + a.T) / 2
    np.fill_diagonal(corr, 1.0)                      # symmetric, unit diagonal, often not PSD
    edit = draw(st.sampled_from(["none", "none", "vol", "corr_cell", "asym", "diag", "drop", "coords", "dims"]))
    bad = draw(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e300, -1e-300, 2.0]))
    i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
    if edit == "vol":
        vol[i] = bad
    elif edit == "corr_cell":
        corr[i, j] = corr[j, i] = bad
    elif edit == "asym" and i != j:
        corr[i, j] = corr[j, i] + 0.5
    elif edit == "diag":
        corr[i, i] = bad
    ds = xr.Dataset({"vol": (("asset",), vol), "correlation": (("asset", "asset_b"), corr)},
                    coords={"asset": assets, "asset_b": assets})
    if edit == "drop":
        ds = ds.drop_vars(draw(st.sampled_from(["vol", "correlation"])))
    elif edit == "coords":
        ds = ds.assign_coords(asset_b=assets[::-1])
    elif edit == "dims":
        ds = ds.assign(vol=(("asset_b",), vol))
    return ds


@examples(0.4)
@given(ds=calibration_datasets())
def test_fuzz_calibration_params(ds):
    from mcmargin.calibration import load_params

    with in_temp_dir() as d:
        path = d / "params.nc"
        ds.to_netcdf(path)
        p = check_loader(lambda: load_params(path), files=[path])
    if isinstance(p, McMarginError):
        return
    c = p["correlation"].values
    assert np.isfinite(p["vol"].values).all() and (p["vol"].values >= 0).all()
    assert np.allclose(c, c.T) and np.allclose(np.diag(c), 1.0)
    assert np.linalg.eigvalsh(c).min() >= -1e-10                  # repaired to a correlation matrix when not PSD
