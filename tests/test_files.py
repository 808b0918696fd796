"""Loading, validating and writing input tables (mcmargin.io)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mcmargin.inputs.book import (ACCOUNT_COLUMNS, COLLATERAL_COLUMNS, INSTRUMENT_COLUMNS, MARKET_COLUMNS, POSITION_COLUMNS, Book)
from mcmargin.errors import InputError
from mcmargin.inputs.files import book_from_frames, load_book, load_book_dir, read_table, validate_book, write_book

VALUATION = dt.date(2025, 1, 10)


@pytest.fixture(autouse=True, params=["cell by cell", "by distinct text"])
def text_path(request, monkeypatch):
    """Every test runs twice: long text columns are normalised through their distinct values
    (the path a book of millions of rows takes), so that path must accept and reject exactly
    what the cell-by-cell path does, with the same file, row, column and message."""
    from mcmargin.inputs import files

    monkeypatch.setattr(files, "_DISTINCT_TEXT_MIN", 10**12 if request.param == "cell by cell" else 0)
    return request.param

# A small valid book.  Comments give the spreadsheet row of each record.
BASE = {
    "market": (
        "asset,price,vol,haircut\n"
        "BTC,90000,0.55,0.1\n"        # 2
        "ETH,3000,0.7,0.15\n"         # 3
        "USDT,1,0,0\n"                # 4
    ),
    "instruments": (
        "instrument,kind,underlying,settle,inverse,contract_size,expiry,strike,option_type\n"
        "BTC-USDT,spot,BTC,USDT,false,1,,,\n"                     # 2
        "BTC-PERP,perpetual,BTC,USDT,false,0.01,,,\n"             # 3
        "BTC-INV-PERP,perpetual,BTC,BTC,true,100,,,\n"            # 4
        "BTC-FUT,future,BTC,USDT,false,0.01,2025-03-28,,\n"       # 5
        "BTC-C,option,BTC,USDT,,1,2025-03-28,90000,call\n"        # 6
        "ETH-P-INV,option,ETH,ETH,true,1,2025-03-28,3000,put\n"   # 7
    ),
    "positions": (
        "account,instrument,quantity\n"
        "001,BTC-PERP,1.5\n"          # 2
        "001,BTC-C,-2\n"              # 3
        "002,BTC-USDT,0\n"            # 4
    ),
    "collateral": (
        "account,asset,amount\n"
        "001,USDT,10000\n"            # 2
        "002,BTC,0.5\n"               # 3
    ),
    "accounts": (
        "account,group\n"
        "001,G1\n"                    # 2
        "002,G1\n"                    # 3
        "003,\n"                      # 4
    ),
}

EXPECTED_DTYPES = {
    "instruments": dict(instrument=object, kind=object, underlying=object, settle=object, inverse=bool,
                        contract_size=np.float64, expiry="datetime64[ns]", strike=np.float64, option_type=object,
                        vol=np.float64),
    "market": dict(asset=object, price=np.float64, vol=np.float64, haircut=np.float64),
    "positions": dict(account=object, instrument=object, quantity=np.float64),
    "collateral": dict(account=object, asset=object, amount=np.float64),
    "accounts": dict(account=object, group=object),
}
COLUMNS = {"instruments": INSTRUMENT_COLUMNS, "market": MARKET_COLUMNS, "positions": POSITION_COLUMNS,
           "collateral": COLLATERAL_COLUMNS, "accounts": ACCOUNT_COLUMNS}


# ----------------------------------------------------------------------------- helpers
def set_cell(text: str, row: int, column: str, value: str) -> str:
    """Set one cell of a CSV (no quoting in these fixtures); row as a spreadsheet counts."""
    lines = text.splitlines()
    header = lines[0].split(",")
    cells = lines[row - 1].split(",")
    cells[header.index(column)] = value
    lines[row - 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def add_row(text: str, line: str) -> str:
    return text + line + "\n"


def drop_column(text: str, column: str) -> str:
    lines = [line.split(",") for line in text.splitlines()]
    j = lines[0].index(column)
    return "\n".join(",".join(c for k, c in enumerate(cells) if k != j) for cells in lines) + "\n"


def write_dir(path, **tables) -> object:
    """Write BASE with some tables replaced (a None table is left out) as CSV files under ``path``."""
    texts = {**BASE, **tables}
    for name, text in texts.items():
        if text is not None:
            (path / f"{name}.csv").write_text(text)
    return path


def load(path, **tables) -> Book:
    return load_book_dir(write_dir(path, **tables), VALUATION)


def expect_error(path, file: str, row: int | None, column: str, fragment: str = "", **tables) -> InputError:
    with pytest.raises(InputError) as info:
        load(path, **tables)
    return check_error(info.value, file, row, column, fragment)


def check_error(err: InputError, file: str, row: int | None, column: str, fragment: str = "") -> InputError:
    message = str(err)
    assert file in message, message
    assert err.row == row, message
    if row is not None:
        assert f"row {row}" in message, message
    assert err.column == column, message
    assert repr(column) in message, message
    assert fragment.lower() in message.lower(), message
    return err


def assert_normalised(book: Book) -> None:
    for name, dtypes in EXPECTED_DTYPES.items():
        frame = getattr(book, name)
        assert tuple(frame.columns) == COLUMNS[name], name
        for column, dtype in dtypes.items():
            assert frame[column].dtype == np.dtype(dtype), (name, column, frame[column].dtype)
        assert isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0, name


def assert_books_equal(a: Book, b: Book) -> None:
    for name in EXPECTED_DTYPES:
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True, obj=name)
    assert a.valuation_date == b.valuation_date


# ----------------------------------------------------------------------------- valid input
def test_base_book_loads_normalised(tmp_path):
    book = load(tmp_path)
    assert_normalised(book)
    assert list(book.positions["account"]) == ["001", "001", "002"]        # zeros kept: ids are text
    assert list(book.positions["quantity"]) == [1.5, -2.0, 0.0]           # quantity 0 is kept
    ins = book.instruments.set_index("instrument")
    assert list(ins["inverse"]) == [False, False, True, False, False, True]
    assert ins.loc["BTC-C", "expiry"] == pd.Timestamp("2025-03-28")
    assert pd.isna(ins.loc["BTC-PERP", "expiry"]) and np.isnan(ins.loc["BTC-PERP", "strike"])
    assert ins.loc["BTC-PERP", "option_type"] == "" and ins.loc["BTC-C", "option_type"] == "call"
    assert ins["vol"].isna().all()
    assert list(book.accounts["group"]) == ["G1", "G1", ""]
    assert book.sources["positions"].endswith("positions.csv")
    assert list(book.account_groups()) == ["G1", "G1", "003"]


@pytest.mark.parametrize("word,value", [("true", True), ("FALSE", False), ("T", True), ("f", False), ("Yes", True),
                                        ("no", False), ("Y", True), ("N", False), ("1", True), ("0", False),
                                        ("1.0", True), ("0.0", False), (" True ", True)])
def test_inverse_words(tmp_path, word, value):
    settle = "BTC" if value else "USDT"
    text = set_cell(set_cell(BASE["instruments"], 3, "inverse", word), 3, "settle", settle)
    book = load(tmp_path, instruments=text)
    assert book.instruments.loc[1, "inverse"] == value


def test_case_whitespace_and_extra_columns(tmp_path):
    instruments = BASE["instruments"].replace("perpetual", "PERPETUAL").replace("call", " Call ")
    instruments = instruments.replace("instrument,kind", "instrument,notes,kind", 1)
    instruments = "\n".join(line if i == 0 else line.replace(",", ",anything,", 1)
                            for i, line in enumerate(instruments.splitlines())) + "\n"
    positions = "account , instrument,quantity,comment\n 001 , BTC-PERP ,1.5,x\n001,BTC-C,-2,y\n002,BTC-USDT,0.25,\n"
    book = load(tmp_path, instruments=instruments, positions=positions)
    assert_normalised(book)
    assert set(book.instruments["kind"]) == {"spot", "perpetual", "future", "option"}
    assert book.instruments.loc[4, "option_type"] == "call"
    assert list(book.positions["account"]) == ["001", "001", "002"]
    assert book.positions.loc[0, "instrument"] == "BTC-PERP"


def test_optional_tables_and_columns(tmp_path):
    market = drop_column(BASE["market"], "haircut")
    instruments = ("instrument,kind,underlying,settle,inverse,contract_size\n"
                   "BTC-USDT,spot,BTC,USDT,,1\nBTC-PERP,perpetual,BTC,USDT,0,0.01\n")
    positions = "account,instrument,quantity\n001,BTC-PERP,1.5\n"
    book = load(tmp_path, market=market, instruments=instruments, positions=positions, accounts=None)
    assert_normalised(book)
    assert (book.market["haircut"] == 0).all()
    assert len(book.accounts) == 0
    assert book.instruments["expiry"].isna().all() and (book.instruments["option_type"] == "").all()


def test_instrument_vol_override_and_fractional_quantities(tmp_path):
    market = set_cell(BASE["market"], 3, "vol", "0")
    instruments = BASE["instruments"].replace("option_type\n", "option_type,vol\n", 1)
    instruments = "\n".join(line if i == 0 else line + ("," if i != 6 else ",0.8")
                            for i, line in enumerate(instruments.splitlines())) + "\n"
    positions = set_cell(BASE["positions"], 2, "quantity", "0.0001")
    book = load(tmp_path, market=market, instruments=instruments, positions=positions)
    assert book.instruments.loc[5, "vol"] == 0.8 and np.isnan(book.instruments.loc[4, "vol"])
    assert book.positions.loc[0, "quantity"] == 0.0001


def test_blank_lines_keep_line_numbers(tmp_path):
    positions = "account,instrument,quantity\n001,BTC-PERP,1\n\n,,\n002,BTC-C,oops\n"
    expect_error(tmp_path, "positions.csv", 5, "quantity", "not a number", positions=positions)


def test_group_may_be_labelled_by_a_member(tmp_path):
    book = load(tmp_path, accounts="account,group\n001,001\n002,001\n003,\n")
    assert list(book.account_groups()) == ["001", "001", "003"]


def test_load_book_with_paths_and_no_accounts(tmp_path):
    write_dir(tmp_path, accounts=None)
    paths = {name: tmp_path / f"{name}.csv" for name in ("instruments", "market", "positions", "collateral")}
    book = load_book({**paths, "accounts": None}, VALUATION)
    assert len(book.accounts) == 0 and "accounts" not in book.sources
    assert_normalised(book)


def test_valuation_date_forms(tmp_path):
    write_dir(tmp_path)
    for value in (VALUATION, dt.datetime(2025, 1, 10, 12), "2025-01-10", pd.Timestamp("2025-01-10")):
        assert load_book_dir(tmp_path, value).valuation_date == VALUATION


# ----------------------------------------------------------------------------- files and formats
def test_read_table_rejects_unknown_suffix(tmp_path):
    (tmp_path / "market.xlsx").write_text("x")
    with pytest.raises(InputError, match="unsupported file type"):
        read_table(tmp_path / "market.xlsx", "market")


def test_read_table_missing_and_empty_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_table(tmp_path / "market.csv", "market")
    (tmp_path / "market.csv").write_text("")
    with pytest.raises(InputError, match="empty file"):
        read_table(tmp_path / "market.csv", "market")


def test_read_table_indexes_by_spreadsheet_row(tmp_path):
    (tmp_path / "p.csv").write_text("account,instrument,quantity\n001,X,1\n\n002,Y,2\n")
    frame = read_table(tmp_path / "p.csv", "positions")
    assert list(frame.index) == [2, 4] and list(frame["account"]) == ["001", "002"]


def test_load_book_dir_missing_required_table(tmp_path):
    with pytest.raises(InputError) as info:
        load(tmp_path, collateral=None)
    assert "collateral" in str(info.value)


def test_load_book_dir_both_formats(tmp_path):
    write_dir(tmp_path)
    pd.DataFrame({"asset": ["BTC"], "price": [1.0], "vol": [0.5]}).to_parquet(tmp_path / "market.parquet")
    with pytest.raises(InputError, match="market.csv, market.parquet"):
        load_book_dir(tmp_path, VALUATION)


def test_load_book_requires_tables(tmp_path):
    write_dir(tmp_path)
    with pytest.raises(InputError, match="required positions table"):
        load_book({"instruments": tmp_path / "instruments.csv", "market": tmp_path / "market.csv",
                   "collateral": tmp_path / "collateral.csv"}, VALUATION)


# ----------------------------------------------------------------------------- validation errors
@pytest.mark.parametrize("table,column", [
    ("instruments", "instrument"), ("instruments", "kind"), ("instruments", "underlying"), ("instruments", "settle"),
    ("instruments", "inverse"), ("instruments", "contract_size"),
    ("market", "asset"), ("market", "price"), ("market", "vol"),
    ("positions", "account"), ("positions", "instrument"), ("positions", "quantity"),
    ("collateral", "account"), ("collateral", "asset"), ("collateral", "amount"),
    ("accounts", "account"), ("accounts", "group"),
])
def test_missing_required_column(tmp_path, table, column):
    expect_error(tmp_path, f"{table}.csv", None, column, "missing required column",
                 **{table: drop_column(BASE[table], column)})


@pytest.mark.parametrize("column,needed_row", [("expiry", 5), ("strike", 6), ("option_type", 6)])
def test_missing_column_needed_by_some_rows(tmp_path, column, needed_row):
    expect_error(tmp_path, "instruments.csv", needed_row, column, "missing column",
                 instruments=drop_column(BASE["instruments"], column))


# (table, row, column, new cell value, expected message fragment)
BAD_CELLS = [
    # numbers
    ("positions", 3, "quantity", "abc", "not a number"),
    ("positions", 3, "quantity", "", "missing or nan"),
    ("positions", 2, "quantity", "NaN", "missing or nan"),
    ("positions", 2, "quantity", "inf", "finite"),
    ("collateral", 3, "amount", "-inf", "finite"),
    ("collateral", 2, "amount", "1e3x", "not a number"),
    ("instruments", 3, "contract_size", "ten", "not a number"),
    ("instruments", 6, "strike", "high", "not a number"),
    # ids
    ("positions", 3, "account", " ", "empty account"),
    ("positions", 4, "instrument", "", "empty instrument"),
    ("instruments", 4, "instrument", "", "empty instrument"),
    ("collateral", 2, "asset", "", "empty asset"),
    ("market", 3, "asset", "", "empty asset"),
    ("accounts", 3, "account", "", "empty account"),
    ("instruments", 2, "underlying", "", "empty underlying"),
    # categories
    ("instruments", 3, "kind", "swap", "unknown kind"),
    ("instruments", 3, "kind", "", "unknown kind"),
    ("instruments", 6, "option_type", "straddle", "unknown option_type"),
    ("instruments", 6, "option_type", "", "unknown option_type"),
    ("instruments", 3, "inverse", "maybe", "not a true/false"),
    # references
    ("instruments", 3, "underlying", "XRP", "not an asset of the market"),
    ("instruments", 3, "settle", "USDC", "not an asset of the market"),
    ("collateral", 3, "asset", "USDC", "not an asset of the market"),
    ("positions", 3, "instrument", "NOPE", "not an instrument"),
    # market values
    ("market", 3, "price", "", "missing or nan"),
    ("market", 3, "price", "nan", "missing or nan"),
    ("market", 2, "price", "0", "price must be > 0"),
    ("market", 4, "price", "-1", "price must be > 0"),
    ("market", 3, "vol", "-0.1", "vol must be >= 0"),
    ("market", 3, "vol", "", "missing or nan"),
    ("market", 2, "haircut", "1.5", "haircut must be in [0, 1]"),
    ("market", 3, "haircut", "-0.1", "haircut must be in [0, 1]"),
    # instrument terms
    ("instruments", 3, "contract_size", "0", "contract_size must be > 0"),
    ("instruments", 5, "contract_size", "-1", "contract_size must be > 0"),
    ("instruments", 6, "strike", "", "needs a strike"),
    ("instruments", 7, "strike", "0", "needs a strike"),
    ("instruments", 6, "expiry", "", "needs an expiry"),
    ("instruments", 5, "expiry", "", "needs an expiry"),
    ("instruments", 5, "expiry", "2025-13-45", "not an iso date"),
    ("instruments", 5, "expiry", "2025-01-10", "expired"),
    ("instruments", 6, "expiry", "2024-12-31", "expired"),
    ("instruments", 4, "settle", "USDT", "settles in its underlying"),
    ("instruments", 7, "settle", "USDT", "settles in its underlying"),
    ("instruments", 2, "inverse", "true", "spot instrument cannot be inverse"),
    ("instruments", 3, "inverse", "", "empty inverse"),
    ("instruments", 5, "inverse", " ", "empty inverse"),
]


@pytest.mark.parametrize("table,row,column,value,fragment", BAD_CELLS,
                         ids=[f"{t}-{c}-{v or 'empty'}" for t, _, c, v, _ in BAD_CELLS])
def test_bad_cell(tmp_path, table, row, column, value, fragment):
    expect_error(tmp_path, f"{table}.csv", row, column, fragment, **{table: set_cell(BASE[table], row, column, value)})


@pytest.mark.parametrize("table,line,row,column", [
    ("instruments", "BTC-PERP,perpetual,BTC,USDT,false,0.01,,,", 8, "instrument"),
    ("instruments", " BTC-PERP ,future,BTC,USDT,false,0.01,2025-06-27,,", 8, "instrument"),
    ("market", "BTC,1,0.5,0", 5, "asset"),
    ("positions", "001,BTC-PERP,2", 5, "instrument"),
    ("collateral", "001,USDT,5", 4, "asset"),
    ("accounts", "001,G2", 5, "account"),
])
def test_duplicates_point_at_second_occurrence(tmp_path, table, line, row, column):
    err = expect_error(tmp_path, f"{table}.csv", row, column, "duplicate", **{table: add_row(BASE[table], line)})
    assert "first on row" in str(err)


def test_option_without_volatility(tmp_path):
    market = set_cell(BASE["market"], 3, "vol", "0")      # ETH, underlying of the option on row 7
    expect_error(tmp_path, "instruments.csv", 7, "vol", "no volatility", market=market)


def test_option_with_zero_vol_override(tmp_path):
    instruments = BASE["instruments"].replace("option_type\n", "option_type,vol\n", 1)
    instruments = "\n".join(line if i == 0 else line + ("," if i != 5 else ",0")
                            for i, line in enumerate(instruments.splitlines())) + "\n"
    expect_error(tmp_path, "instruments.csv", 6, "vol", "no volatility", instruments=instruments)


def test_negative_instrument_vol(tmp_path):
    instruments = BASE["instruments"].replace("option_type\n", "option_type,vol\n", 1)
    instruments = "\n".join(line if i == 0 else line + ("," if i != 3 else ",-1")
                            for i, line in enumerate(instruments.splitlines())) + "\n"
    expect_error(tmp_path, "instruments.csv", 4, "vol", "vol must be >= 0", instruments=instruments)


@pytest.mark.parametrize("accounts,row", [
    ("account,group\n001,G1\n002,G1\n003,002\n", 4),      # 002 is in G1: "002" would name two pools
    ("account,group\n001,G1\n002,\n003,002\n", 4),        # 002 is its own group
    ("account,group\n001,004\n002,\n", 2),                # 004 holds only collateral, no accounts row
])
def test_group_label_collides_with_account_id(tmp_path, accounts, row):
    collateral = add_row(BASE["collateral"], "004,USDT,1")
    expect_error(tmp_path, "accounts.csv", row, "group", "collide", accounts=accounts, collateral=collateral)


# ----------------------------------------------------------------------------- parquet
def parquet_frames() -> dict[str, pd.DataFrame]:
    """The base book as typed frames, the way a Parquet producer would write it."""
    return {
        "market": pd.DataFrame({"asset": ["BTC", "ETH", "USDT"], "price": [90000.0, 3000.0, 1.0],
                                "vol": [0.55, 0.7, 0.0], "haircut": [0.1, 0.15, 0.0]}),
        "instruments": pd.DataFrame({
            "instrument": ["BTC-PERP", "BTC-C"], "kind": ["perpetual", "option"], "underlying": ["BTC", "BTC"],
            "settle": ["USDT", "USDT"], "inverse": [False, False], "contract_size": [0.01, 1.0],
            "expiry": pd.to_datetime([None, "2025-03-28"]), "strike": [np.nan, 90000.0],
            "option_type": [None, "call"]}),
        "positions": pd.DataFrame({"account": [1, 1, 2], "instrument": ["BTC-PERP", "BTC-C", "BTC-PERP"],
                                   "quantity": [1.5, -2.0, 3.0]}),
        "collateral": pd.DataFrame({"account": [1, 2], "asset": ["USDT", "BTC"], "amount": [1e4, 0.5]}),
    }


def write_parquet(path, frames):
    for name, frame in frames.items():
        frame.to_parquet(path / f"{name}.parquet", index=False)
    return path


def test_parquet_typed_columns(tmp_path):
    book = load_book_dir(write_parquet(tmp_path, parquet_frames()), VALUATION)
    assert_normalised(book)
    assert list(book.positions["account"]) == ["1", "1", "2"]
    assert book.instruments.loc[1, "expiry"] == pd.Timestamp("2025-03-28")
    assert book.sources["market"].endswith("market.parquet")


def test_parquet_errors_name_row_and_column(tmp_path):
    frames = parquet_frames()
    frames["market"].loc[1, "price"] = -3.0
    with pytest.raises(InputError) as info:
        load_book_dir(write_parquet(tmp_path, frames), VALUATION)
    check_error(info.value, "market.parquet", 3, "price", "price must be > 0")


def test_parquet_duplicate_position(tmp_path):
    frames = parquet_frames()
    frames["positions"].loc[2, "account"] = 1
    with pytest.raises(InputError) as info:
        load_book_dir(write_parquet(tmp_path, frames), VALUATION)
    check_error(info.value, "positions.parquet", 4, "instrument", "duplicate")


def test_parquet_nan_quantity_and_expired_option(tmp_path):
    frames = parquet_frames()
    frames["positions"].loc[0, "quantity"] = np.nan
    with pytest.raises(InputError) as info:
        load_book_dir(write_parquet(tmp_path, frames), VALUATION)
    check_error(info.value, "positions.parquet", 2, "quantity", "missing or nan")
    frames = parquet_frames()
    frames["instruments"]["expiry"] = pd.to_datetime([None, "2025-01-09"])
    with pytest.raises(InputError) as info:
        load_book_dir(write_parquet(tmp_path, frames), VALUATION)
    check_error(info.value, "instruments.parquet", 3, "expiry", "expired")


# ----------------------------------------------------------------------------- in memory
def test_book_from_frames_reports_positions_as_rows(tmp_path):
    frames = parquet_frames()
    frames["positions"].index = [10, 20, 30]          # the index is ignored: rows are positions + 2
    frames["positions"].loc[30, "instrument"] = "NOPE"
    with pytest.raises(InputError) as info:
        book_from_frames(frames["instruments"], frames["market"], frames["positions"], frames["collateral"], None,
                         VALUATION, sources={"positions": "generated positions"})
    check_error(info.value, "generated positions", 4, "instrument", "not an instrument")


def test_validate_book_is_idempotent(tmp_path):
    book = load(tmp_path)
    again = validate_book(book)
    assert_books_equal(book, again)
    assert again.sources == book.sources


def test_validate_book_catches_edits(tmp_path):
    book = load(tmp_path)
    market = book.market.copy()
    market.loc[0, "price"] = np.nan
    with pytest.raises(InputError) as info:
        validate_book(Book(book.instruments, market, book.positions, book.collateral, book.accounts,
                           book.valuation_date, book.sources))
    check_error(info.value, "market.csv", 2, "price", "missing or nan")


# ----------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip(tmp_path, fmt):
    instruments = BASE["instruments"].replace("option_type\n", "option_type,vol\n", 1)
    instruments = "\n".join(line if i == 0 else line + ("," if i != 6 else ",0.123456789012345")
                            for i, line in enumerate(instruments.splitlines())) + "\n"
    positions = add_row(BASE["positions"], "003,BTC-FUT,0.1") + "003,ETH-P-INV,-1.234567890123e-7\n"
    (tmp_path / "in").mkdir()
    book = load(tmp_path / "in", instruments=instruments, positions=positions)
    written = write_book(book, tmp_path / "out", fmt)
    assert sorted(p.name for p in written.values()) == sorted(f"{t}.{fmt}" for t in EXPECTED_DTYPES)
    again = load_book_dir(tmp_path / "out", VALUATION)
    assert_normalised(again)
    assert_books_equal(book, again)


def test_round_trip_empty_accounts_and_format_switch(tmp_path):
    (tmp_path / "in").mkdir()
    write_dir(tmp_path / "in", accounts=None)
    book = load_book_dir(tmp_path / "in", VALUATION)
    write_book(book, tmp_path / "out", "parquet")
    write_book(book, tmp_path / "out", "csv")          # replaces the Parquet files rather than adding to them
    assert not list((tmp_path / "out").glob("*.parquet"))
    assert_books_equal(book, load_book_dir(tmp_path / "out", VALUATION))


def test_written_csv_is_plain(tmp_path):
    book = load(tmp_path)
    write_book(book, tmp_path / "out")
    text = (tmp_path / "out" / "instruments.csv").read_text().splitlines()
    assert text[0] == ",".join(INSTRUMENT_COLUMNS)
    assert text[1] == "BTC-USDT,spot,BTC,USDT,false,1.0,,,,,"      # vol and spread empty: none given
    assert text[5] == "BTC-C,option,BTC,USDT,false,1.0,2025-03-28,90000.0,call,,"


def test_csv_record_with_too_many_cells(tmp_path):
    positions = "account,instrument,quantity\n001,BTC-PERP,1.5\n001,BTC-C,-2,7\n"
    with pytest.raises(InputError) as info:
        load(tmp_path, positions=positions)
    assert info.value.row == 3 and "positions.csv" in str(info.value) and "header has 3" in str(info.value)


def test_csv_quoted_cells(tmp_path):
    positions = 'account,instrument,quantity\n"0,01",BTC-PERP,1.5\n"001",BTC-C,"-2"\n'
    book = load(tmp_path, positions=positions)
    assert list(book.positions["account"]) == ["0,01", "001"]
    assert list(book.positions["quantity"]) == [1.5, -2.0]


def test_book_from_frames_requires_tables():
    frames = parquet_frames()
    with pytest.raises(InputError, match="required collateral table"):
        book_from_frames(frames["instruments"], frames["market"], frames["positions"], None, None, VALUATION)


# ----------------------------------------------------------------------------- overflow, empty books, haircuts
@pytest.mark.parametrize("quantity", ["1e308", "-1e308", "2e12"])
def test_position_notional_beyond_float_safety_is_an_input_error(tmp_path, quantity):
    # 2e12 BTC-PERP x 0.01 x 90,000 = 1.8e15 USD: finite, but past the stated bound of 1e15 USD.
    positions = set_cell(BASE["positions"], 2, "quantity", quantity)
    expect_error(tmp_path, "positions.csv", 2, "quantity", "notional", positions=positions)


def test_inverse_notional_counts_usd_face_value(tmp_path):
    # An inverse perpetual's contract_size is USD face value: 1e13 contracts x 100 USD = 1e15 USD.
    positions = add_row(BASE["positions"], "003,BTC-INV-PERP,1e13")
    expect_error(tmp_path, "positions.csv", 5, "quantity", "notional", positions=positions)
    load(tmp_path, positions=add_row(BASE["positions"], "003,BTC-INV-PERP,9e12"))


def test_option_notional_counts_a_strike_above_the_price(tmp_path):
    # A deep put is worth up to its strike, so the strike bounds the notional too; BTC-C (row 6) is
    # held -2 on positions row 3: 2 x 1 x 1e15 USD.
    instruments = set_cell(BASE["instruments"], 6, "strike", "5e14")
    expect_error(tmp_path, "positions.csv", 3, "quantity", "notional", instruments=instruments)


def test_collateral_value_beyond_float_safety_is_an_input_error(tmp_path):
    collateral = set_cell(BASE["collateral"], 3, "amount", "1e11")   # 1e11 BTC x 90,000 USD
    expect_error(tmp_path, "collateral.csv", 3, "amount", "collateral value", collateral=collateral)


def test_header_only_book_has_nothing_to_margin(tmp_path):
    with pytest.raises(InputError, match="nothing to margin") as info:
        load(tmp_path, positions="account,instrument,quantity\n", collateral="account,asset,amount\n",
             accounts="account,group\n")
    assert "positions.csv" in str(info.value)


def test_collateral_only_book_is_a_book(tmp_path):
    book = load(tmp_path, positions="account,instrument,quantity\n", accounts=None)
    assert sorted(book.collateral["account"]) == ["001", "002"]


@pytest.mark.parametrize("value", ["", "nan", "NaN"])
def test_empty_or_nan_haircut_is_an_error(tmp_path, value):
    market = set_cell(BASE["market"], 3, "haircut", value)
    expect_error(tmp_path, "market.csv", 3, "haircut", "haircut", market=market)


def test_market_without_haircut_column_means_no_haircut(tmp_path):
    book = load(tmp_path, market=drop_column(BASE["market"], "haircut"))
    assert (book.market["haircut"] == 0).all()


def test_export_never_overwrites_a_book_it_did_not_write(tmp_path, small_book):
    (tmp_path / "mine").mkdir()
    mine = write_dir(tmp_path / "mine")
    before = {f.name: f.read_bytes() for f in mine.iterdir()}
    with pytest.raises(InputError, match="not written by an mcmargin export"):
        write_book(small_book, mine, "parquet")
    assert {f.name: f.read_bytes() for f in mine.iterdir()} == before
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_book(small_book, tmp_path / "afile")


def test_export_replaces_its_own_export(tmp_path, small_book):
    write_book(small_book, tmp_path / "out", "csv")
    write_book(small_book, tmp_path / "out", "csv")
    assert (tmp_path / "out" / ".mcmargin-export").is_file()


def test_optional_adv_and_spread_are_read_checked_and_written_back(tmp_path):
    from conftest import small_frames_data

    ins, mkt, pos, col, acc = small_frames_data()
    mkt = mkt.assign(adv=[25_000.0, np.nan, 1e9])
    ins = ins.assign(spread=[0.0002, np.nan, 0.05, 0.08, 0.001, 0.0005, 0.2])
    book = book_from_frames(ins, mkt, pos, col, acc, VALUATION)
    assert book.market["adv"].iloc[0] == 25_000.0 and np.isnan(book.market["adv"].iloc[1])
    assert book.instruments.set_index("instrument").loc["BTC-C", "spread"] == 0.05
    write_book(book, tmp_path / "out")
    again = load_book_dir(tmp_path / "out", VALUATION)
    np.testing.assert_array_equal(again.market["adv"].to_numpy(), book.market["adv"].to_numpy())
    np.testing.assert_array_equal(again.instruments["spread"].to_numpy(), book.instruments["spread"].to_numpy())
    with pytest.raises(InputError, match="adv") as info:
        book_from_frames(ins, mkt.assign(adv=[25_000.0, 0.0, 1.0]), pos, col, acc, VALUATION)
    assert info.value.column == "adv" and info.value.row is not None
    with pytest.raises(InputError, match="spread"):
        book_from_frames(ins.assign(spread=[0.0, -0.1, 0, 0, 0, 0, 0]), mkt, pos, col, acc, VALUATION)


def _error_or_book(frames):
    try:
        return book_from_frames(*(frames[t] for t in ("instruments", "market", "positions", "collateral",
                                                        "accounts")), VALUATION, {})
    except InputError as exc:
        return (exc.file, exc.row, exc.column, str(exc))


@pytest.mark.parametrize("case", ["valid", "padded ids", "empty account", "missing account", "unknown instrument",
                                  "duplicate position", "unknown asset", "duplicate collateral", "group collides",
                                  "group named after a member", "duplicate account", "integer ids"])
def test_distinct_text_path_on_a_long_book(monkeypatch, case, text_path):
    """Tables of tens of thousands of rows (past the threshold of the distinct-text path): the same book or
    the same error (file, row, column, message) with both paths."""
    from mcmargin.inputs import files
    from mcmargin.inputs.synthetic import synthetic_book

    book = synthetic_book(3000, seed=5, valuation_date=VALUATION)
    frames = {t: getattr(book, t).copy() for t in ("instruments", "market", "positions", "collateral", "accounts")}
    pos, col, acc = frames["positions"], frames["collateral"], frames["accounts"]
    assert len(pos) > 10_000 and len(acc) < 10_000
    if case == "padded ids":
        pos["account"] = " " + pos["account"] + "\t"
        pos["instrument"] = pos["instrument"] + " "
    elif case == "empty account":
        pos.loc[12_345, "account"] = "  "
    elif case == "missing account":
        pos.loc[9_000, "account"] = None
    elif case == "unknown instrument":
        pos.loc[11_000, "instrument"] = "NOPE-PERP"
    elif case == "duplicate position":
        frames["positions"] = pd.concat([pos, pos.iloc[[4_321]]], ignore_index=True)
        frames["positions"].loc[len(pos), "account"] = " " + pos.loc[4_321, "account"]
    elif case == "unknown asset":
        col.loc[len(col) - 1, "asset"] = "DOGE"
    elif case == "duplicate collateral":
        frames["collateral"] = pd.concat([col.iloc[[7]], col], ignore_index=True)
    elif case == "group collides":
        acc.loc[10, "group"] = acc.loc[20, "account"]
    elif case == "group named after a member":
        acc.loc[[10, 11], "group"] = acc.loc[10, "account"]
    elif case == "duplicate account":
        frames["accounts"] = pd.concat([acc, acc.iloc[[2_999]]], ignore_index=True)
    elif case == "integer ids":    # not all strings: cell by cell, whatever the length
        ids = {a: i for i, a in enumerate(acc["account"], start=1)}
        for frame in (pos, col, acc):
            frame["account"] = pd.Series([ids[a] for a in frame["account"]], dtype=object)
        acc["group"] = ""
    got = {}
    for path, threshold in (("cell by cell", 10**12), ("by distinct text", files._DISTINCT_TEXT_MIN)):
        monkeypatch.setattr(files, "_DISTINCT_TEXT_MIN", threshold)
        got[path] = _error_or_book({k: v.copy() for k, v in frames.items()})
    if isinstance(got["cell by cell"], Book):
        assert case in ("valid", "padded ids", "group named after a member", "integer ids")
        assert_books_equal(got["cell by cell"], got["by distinct text"])
    else:
        assert case not in ("valid", "padded ids", "group named after a member", "integer ids")
        assert got["cell by cell"] == got["by distinct text"]
