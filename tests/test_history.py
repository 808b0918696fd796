"""Price-history loading: validation errors, gap handling and horizon returns."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcmargin.errors import ConfigError, InputError
from mcmargin.stats.returns import as_of, daily_returns, horizon_returns, infer_periods_per_year, spanning_returns
from mcmargin.inputs.history import load_history, validate_history
from mcmargin.scenarios.stress_periods import parse_period

GOOD = """date,BTC,ETH,USDT
2024-01-01,100,,1
2024-01-02,101,10,1

2024-01-03,NA,11,1
2024-01-04,103,,1
2024-01-05,,,
2024-01-06,104,12,1
"""


def write(tmp_path, text, name="h.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_load_csv_types_gaps_and_report(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mcmargin.inputs.history")
    h = load_history(write(tmp_path, GOOD))
    assert list(h.columns) == ["BTC", "ETH", "USDT"]
    assert h.index.name == "date" and isinstance(h.index, pd.DatetimeIndex)
    assert all(h.dtypes == np.float64)
    # the blank line is no record; 2024-01-05 has no price at all (holiday): dropped
    assert len(h) == 5 and pd.Timestamp("2024-01-05") not in h.index
    rep = h.attrs["report"]
    assert rep.dropped_rows == (7,)                 # header row 1, blank line is row 4
    assert rep.file_rows == (2, 3, 5, 6, 8)
    assert rep.late_starters() == {"ETH": "2024-01-02"}
    assert rep.assets["ETH"].first_row == 3
    assert rep.assets["BTC"].missing_inside == 1 and rep.assets["BTC"].gaps == (("2024-01-03", "2024-01-03", 1),)
    assert rep.assets["ETH"].missing_inside == 1
    assert rep.assets["USDT"].constant
    text = str(rep)
    assert "starts late" in text and "not filled" in text and "constant" in text
    json.dumps(rep.to_dict())
    assert "start late (first price): ETH (2024-01-02, row 3)" in caplog.text and "dropped 1 row" in caplog.text
    # the report survives pandas operations (attrs are copied) without being duplicated
    assert h.loc["2024-01-02":].attrs["report"] is rep


def test_parquet_and_in_memory_frames(tmp_path):
    idx = pd.date_range("2024-01-01", periods=4, freq="D")
    df = pd.DataFrame({"date": idx, "A": [1.0, 2.0, np.nan, 4.0], "B": [5, 6, 7, 8]})
    p = tmp_path / "h.parquet"
    df.to_parquet(p)
    h = load_history(p)
    assert list(h.columns) == ["A", "B"] and h["A"].isna().sum() == 1
    # a DatetimeIndex frame (no date column) validates the same way
    h2 = validate_history(df.set_index("date"), file="mem")
    assert h2.attrs["file"] == "mem" and h2.equals(h)
    with pytest.raises(InputError, match=r"row 3, column 'A'.*negative"):
        validate_history(pd.DataFrame({"date": idx[:2], "A": [1.0, -2.0]}), file="mem")


def test_assets_filter_and_valuation_date(tmp_path):
    h = load_history(write(tmp_path, GOOD), assets=["BTC"], valuation_date="2024-01-04")
    assert list(h.columns) == ["BTC"]
    assert list(as_of(h).index.strftime("%d")) == ["01", "02", "04"]
    with pytest.raises(InputError, match="no price column for asset"):
        load_history(write(tmp_path, GOOD), assets=["SOL"])
    with pytest.raises(InputError, match="after the valuation date"):
        as_of(h, "2023-12-01")


@pytest.mark.parametrize("text,row,column,what", [
    ("day,A\n2024-01-01,1\n", 1, None, "no 'date' column"),
    ("date,A\n2024-01-01,1\n2024-13-01,2\n", 3, "date", "cannot parse date '2024-13-01'"),
    ("date,A\n2024-01-01,1\n,2\n", 3, "date", "missing date"),
    ("date,A\n2024-01-01,1\n2024-01-02,2\n2024-01-01,3\n", 4, "date", r"duplicate date 2024-01-01 \(first on row 2\)"),
    ("date,A\n2024-01-02,1\n2024-01-01,2\n", 3, "date", "dates must increase"),
    ("date,A\n2024-01-01,1\n2024-01-02,abc\n", 3, "A", "'abc' is not a number"),
    ("date,A\n2024-01-01,1\n2024-01-02,-5\n", 3, "A", "negative"),
    ("date,A\n2024-01-01,0\n", 2, "A", "zero"),
    ("date,A\n2024-01-01,inf\n", 2, "A", "not finite"),
    ("date,A,A\n2024-01-01,1,2\n", 1, "A", "duplicate column"),
    ("date,,B\n2024-01-01,1,2\n", 1, None, "has no name"),
])
def test_errors_name_file_row_and_column(tmp_path, text, row, column, what):
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=what) as exc:
        load_history(path)
    e = exc.value
    assert e.file == path and e.row == row and e.column == column
    assert f"row {row}" in str(e) and path in str(e)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_history(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="empty"):
        load_history(write(tmp_path, ""))
    with pytest.raises(InputError, match="no rows with a price"):
        load_history(write(tmp_path, "date,A\n2024-01-01,\n"))


def test_missing_tokens_are_gaps_not_zero_returns(tmp_path):
    text = "date,A,B\n2024-01-01,100,1\n2024-01-02,.,2\n2024-01-03,#N/A,3\n2024-01-04,110,4\n"
    h = load_history(write(tmp_path, text))
    assert h["A"].isna().sum() == 2
    span = daily_returns(h)["A"]
    # the gap's rows have no return (never a made-up 0); the move counts once, when trading resumes
    assert span.isna().tolist() == [True, True, True, False]
    assert span.iloc[-1] == pytest.approx(np.log(1.1))
    assert daily_returns(h, gaps="drop")["A"].isna().all()
    assert spanning_returns(h)["A"] == 1
    assert not (daily_returns(h)["A"] == 0).any()


def test_horizon_returns_late_start_constant_and_windows():
    idx = pd.date_range("2024-01-01", periods=6, freq="D")
    p = pd.DataFrame({"A": [1.0, 2, 4, 8, 16, 32], "B": [np.nan, np.nan, 3, 3, 6, 6], "C": 1.0}, index=idx)
    r3 = horizon_returns(p, 3)
    assert r3["A"].iloc[3:].tolist() == pytest.approx([np.log(8)] * 3)
    assert r3["A"].iloc[:3].isna().all()
    # B starts on row 3: no return before it has a base price h rows back
    assert r3["B"].iloc[:5].isna().all() and r3["B"].iloc[5] == pytest.approx(np.log(2))
    assert (r3["C"].iloc[3:] == 0).all()
    with pytest.raises(ValueError):
        horizon_returns(p, 0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-0.2, 0.2), min_size=6, max_size=40), st.integers(1, 5))
def test_horizon_return_is_sum_of_daily_returns(rets, h):
    idx = pd.date_range("2024-01-01", periods=len(rets) + 1, freq="D")
    p = pd.DataFrame({"A": 100 * np.exp(np.r_[0.0, np.cumsum(rets)])}, index=idx)
    rh = horizon_returns(p, h)["A"].to_numpy()
    d = daily_returns(p)["A"].to_numpy()
    want = pd.Series(d).rolling(h).sum().to_numpy()
    assert np.allclose(rh[h:], want[h:], atol=1e-12)


def test_periods_per_year_and_calendar_gaps():
    crypto = pd.date_range("2024-01-01", periods=60, freq="D")
    bday = pd.bdate_range("2024-01-01", periods=60)
    assert infer_periods_per_year(crypto) == 365
    assert infer_periods_per_year(bday) == 252
    assert infer_periods_per_year(pd.date_range("2000-01-31", periods=24, freq="ME")) == pytest.approx(12, abs=0.5)
    # a week missing from a business-day calendar is reported; a single holiday is not
    days = bday.delete([5, 20, 21, 22, 23, 24])
    h = validate_history(pd.DataFrame({"date": days, "A": 1.0 + np.arange(len(days))}), file="mem")
    gaps = h.attrs["report"].calendar_gaps
    assert len(gaps) == 1 and gaps[0][2] == 5


def test_parse_period():
    t0, t1, label = parse_period("gfc")
    assert (t0, t1.normalize(), label) == (pd.Timestamp("2008-09-01"), pd.Timestamp("2009-03-31"), "gfc")
    t0, t1, _ = parse_period("2020-02..2020-04")
    assert t0 == pd.Timestamp("2020-02-01") and t1.normalize() == pd.Timestamp("2020-04-30")
    t0, t1, _ = parse_period({"start": "2022-05-09", "end": "2022-05-13"})
    assert t1.normalize() == pd.Timestamp("2022-05-13")
    for bad in ("crash", {"start": "2020-01"}, "2020-05..2020-01"):
        with pytest.raises(ConfigError, match="stress_period"):
            parse_period(bad)
