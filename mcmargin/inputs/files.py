"""Loading, validating and writing the input tables of a book.

Five tables make a book (design.md, "Input data contract"): ``instruments``,
``market``, ``positions``, ``collateral`` and the optional ``accounts``.  Each
comes as CSV or Parquet; columns are found by name and extra columns are
ignored.  Every table goes through the same normalisation and validation
whether it was read from a file (:func:`load_book`, :func:`load_book_dir`) or
built in memory (:func:`book_from_frames`, used by :mod:`mcmargin.synthetic`),
so the engine only ever sees tables with the columns and dtypes documented in
:mod:`mcmargin.inputs.book`.

Every problem is reported as an :class:`~mcmargin.errors.InputError` naming the
file, the row as a spreadsheet shows it (header = row 1, first record = row 2)
and the column.  Nothing is silently dropped: the only rows skipped are CSV
lines whose cells are all empty (blank lines, trailing ``,,,`` lines that
spreadsheets write), which hold no record at all.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .book import (ACCOUNT_COLUMNS, COLLATERAL_COLUMNS, INSTRUMENT_COLUMNS, INSTRUMENT_KINDS, MARKET_COLUMNS, POSITION_COLUMNS, Book,
                   account_index)
from ..common.dates import iso as _iso
from .. import instruments as instrument_families
from ..common.audit import record_input
from ..common.identity import object_addresses
from ..errors import InputError

__all__ = ["TABLES", "REQUIRED_TABLES", "read_table", "load_book", "load_book_dir", "book_from_frames",
           "validate_book", "write_book"]

TABLES = ("instruments", "market", "positions", "collateral", "accounts")
REQUIRED_TABLES = ("instruments", "market", "positions", "collateral")

REQUIRED_COLUMNS = {
    "instruments": ("instrument", "kind", "underlying", "settle", "inverse", "contract_size"),
    "market": ("asset", "price", "vol"),
    "positions": ("account", "instrument", "quantity"),
    "collateral": ("account", "asset", "amount"),
    "accounts": ("account", "group"),
}
"""Columns every file of a table must have; others are optional or needed only by some rows."""

#: File that marks a directory as written by :func:`write_book` (so a later export may replace it).
EXPORT_MARKER = ".mcmargin-export"

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")

_TRUE_WORDS = ("true", "t", "yes", "y", "1", "1.0")
_FALSE_WORDS = ("false", "f", "no", "n", "0", "0.0")
_BOOL_WORDS = {**dict.fromkeys(_TRUE_WORDS, True), **dict.fromkeys(_FALSE_WORDS, False)}

#: Columns of a backtest's portfolios file (mcmargin/inputs/portfolios.py).
PORTFOLIO_COLUMNS = ("portfolio", "asset", "quantity")

_NORMALISED_COLUMNS = {
    "instruments": INSTRUMENT_COLUMNS, "market": MARKET_COLUMNS, "positions": POSITION_COLUMNS,
    "collateral": COLLATERAL_COLUMNS, "accounts": ACCOUNT_COLUMNS, "portfolios": PORTFOLIO_COLUMNS,
}


# ============================================================================ reading files
def read_table(path: str | os.PathLike, table: str) -> pd.DataFrame:
    """Read one input table from a ``.csv`` or ``.parquet``/``.pq`` file, unvalidated.

    Parameters
    ----------
    path : str or path-like
        The file; its suffix (case-insensitive) picks the format.
    table : str
        Table name (``instruments``, ``market``, ...), for messages.

    Returns
    -------
    pandas.DataFrame
        The raw cells, with column names stripped of surrounding whitespace.
        CSV cells are all strings (so ids such as ``"001"`` keep their zeros;
        numbers are parsed during validation, where a bad one can be reported
        by row).  The index is the row each record has in a spreadsheet:
        header = row 1, first record = row 2.

    Raises
    ------
    InputError
        Unknown suffix, missing file, or a file the reader cannot parse.
    """
    path = Path(path)
    name = str(path)
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise InputError(name, f"unsupported file type {suffix or '(none)'!r} for the {table} table; "
                               f"use .csv or .parquet")
    if not path.is_file():
        raise InputError(name, f"{table} file not found")
    record_input(path)
    if suffix in CSV_SUFFIXES:
        _check_header(path, _csv_header(path), table)   # before pandas renames a repeated column "x.1"
        frame = _read_csv(path)
    else:
        frame = _read_parquet(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_header(path, list(frame.columns), table)
    return frame


def _csv_header(path: Path) -> list[str]:
    """The first record of a CSV, as the csv module reads it ([] when it cannot)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error, OSError):
        return []


def _check_header(path: Path, header, table: str) -> None:
    """A contract column named twice (after stripping spaces) is ambiguous: which one holds the data?"""
    names = [str(c).strip() for c in header]
    for column in _NORMALISED_COLUMNS.get(table, ()):
        where = [i + 1 for i, n in enumerate(names) if n == column]
        if len(where) > 1:
            raise InputError(str(path), f"column {column!r} appears {len(where)} times in the header (columns "
                                        f"{', '.join(map(str, where))}); keep one", row=1, column=column)


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV as strings, indexed by line number, without its all-empty lines."""
    try:
        with warnings.catch_warnings():
            # pandas only warns when a record has more cells than the header, and drops
            # the extra cells: that is malformed input, not something to skip quietly.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # dtype=str and no NA words: "001" stays "001", "NA" stays a string and every
            # cell is parsed (and reported) by our own code.  Blank lines are kept while
            # reading so that position + 2 is the line number, then dropped below.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], skip_blank_lines=False,
                                index_col=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise InputError(str(path), "empty file: expected a header row") from None
    except (pd.errors.ParserWarning, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise _csv_error(path, exc) from None
    frame.index = pd.RangeIndex(2, 2 + len(frame))
    return frame.loc[~_all_empty_rows(frame)]


def _csv_error(path: Path, exc: Exception) -> InputError:
    """Say where a CSV is malformed: most often a record with more cells than the header."""
    # pandas names the line only for some of these errors, so look for the record
    # ourselves (a rare path: the plain csv module is fast enough).
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            for record in reader:
                if len(record) > len(header):
                    return InputError(str(path), f"{len(record)} cells but the header has {len(header)} columns",
                                      row=reader.line_num)
    except (UnicodeDecodeError, csv.Error):
        pass
    line = re.search(r"line (\d+)", str(exc))
    return InputError(str(path), f"cannot parse CSV: {str(exc).strip()}", row=int(line.group(1)) if line else None)


def _all_empty_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose cells are all empty or whitespace."""
    empty = np.ones(len(frame), dtype=bool)
    for column in frame.columns:
        # Only rows still empty so far are looked at: after the first (id) column
        # almost none are left, so this stays cheap on millions of rows.
        candidates = np.flatnonzero(empty)
        if candidates.size == 0:
            break
        cells = frame[column].iloc[candidates]
        empty[candidates] = (cells.isna() | (cells.astype("str").str.strip() == "")).to_numpy(dtype=bool)
    return empty


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise InputError(str(path), f"cannot read Parquet: {exc}") from None
    frame.index = pd.RangeIndex(2, 2 + len(frame))
    return frame


# ============================================================================ loading books
def load_book(paths: Mapping[str, str | os.PathLike | None], valuation_date: dt.date) -> Book:
    """Load and validate a book from one file per table.

    Parameters
    ----------
    paths : mapping
        Table name -> file.  ``instruments``, ``market``, ``positions`` and
        ``collateral`` are required; ``accounts`` may be missing or None (every
        account is then its own margin group).
    valuation_date : datetime.date
        Date the book is valued on; futures and options must expire after it.

    Returns
    -------
    Book
        With ``sources`` mapping each table read to its file path.

    Raises
    ------
    InputError
        For any unreadable file or invalid cell (see :func:`book_from_frames`).
    """
    unknown = sorted(set(paths) - set(TABLES))
    if unknown:
        raise InputError(str(paths[unknown[0]]), f"unknown table {unknown[0]!r}; expected one of {', '.join(TABLES)}")
    tables = {}
    for name in TABLES:
        path = paths.get(name)
        if path is None:
            if name in REQUIRED_TABLES:
                raise InputError(name, f"no file given for the required {name} table")
            continue
        frame = read_table(path, name)
        tables[name] = _Table(name, frame, frame.index.to_numpy(dtype=np.int64), str(path))
    return _build_book(tables, _as_date(valuation_date))


def load_book_dir(directory: str | os.PathLike, valuation_date: dt.date) -> Book:
    """Load the book whose tables are ``<table>.csv`` or ``<table>.parquet`` files in ``directory``.

    Parameters
    ----------
    directory : str or path-like
        Holds ``instruments``, ``market``, ``positions``, ``collateral`` and
        optionally ``accounts``, each as ``.csv``, ``.parquet`` or ``.pq``.
    valuation_date : datetime.date
        See :func:`load_book`.

    Raises
    ------
    InputError
        A required table has no file, or one table has files in two formats
        (which one is meant is ambiguous), or any error of :func:`load_book`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(str(directory), "not a directory")
    paths: dict[str, Path | None] = {}
    for name in TABLES:
        found = [directory / f"{name}{suffix}" for suffix in CSV_SUFFIXES + PARQUET_SUFFIXES
                 if (directory / f"{name}{suffix}").is_file()]
        if len(found) > 1:
            raise InputError(str(found[0]), f"the {name} table has several files ({', '.join(p.name for p in found)}); "
                                            f"keep one")
        if not found and name in REQUIRED_TABLES:
            raise InputError(str(directory / f"{name}.csv"),
                             f"missing required {name} table: expected {name}.csv or {name}.parquet in {directory}")
        paths[name] = found[0] if found else None
    return load_book(paths, valuation_date)


def book_from_frames(instruments: pd.DataFrame, market: pd.DataFrame, positions: pd.DataFrame,
                     collateral: pd.DataFrame, accounts: pd.DataFrame | None, valuation_date: dt.date,
                     sources: Mapping[str, str] | None = None) -> Book:
    """Validate and normalise in-memory tables into a :class:`Book`.

    The same rules apply as for files: see the module docstring and
    :mod:`mcmargin.inputs.book`.  Rows are reported as if the frame were written to
    a file (first record = row 2), whatever its index.

    Parameters
    ----------
    instruments, market, positions, collateral : pandas.DataFrame
        Tables with (at least) the contract's columns.
    accounts : pandas.DataFrame or None
        Margin groups; None means every account is its own group.
    valuation_date : datetime.date
        See :func:`load_book`.
    sources : mapping, optional
        Table -> name used in messages (defaults to the table name).

    Returns
    -------
    Book
    """
    sources = dict(sources or {})
    frames = dict(instruments=instruments, market=market, positions=positions, collateral=collateral,
                  accounts=accounts)
    for name in REQUIRED_TABLES:
        if frames[name] is None:
            raise InputError(str(sources.get(name, name)), f"the required {name} table is missing")
    tables = {name: _Table(name, frame.reset_index(drop=True), np.arange(2, 2 + len(frame), dtype=np.int64),
                           str(sources.get(name, name)))
              for name, frame in frames.items() if frame is not None}
    return _build_book(tables, _as_date(valuation_date), sources)


def validate_book(book: Book) -> Book:
    """Validate a book's tables again and return the normalised book.

    Use it on a :class:`Book` whose tables were built or edited by hand.
    """
    return book_from_frames(book.instruments, book.market, book.positions, book.collateral, book.accounts,
                            book.valuation_date, book.sources)


def _build_book(tables: dict[str, _Table], valuation_date: dt.date, sources: Mapping[str, str] | None = None
                ) -> Book:
    """Normalise the tables in dependency order: market, instruments, positions, collateral, accounts."""
    for name, table in tables.items():
        _require_columns(table, REQUIRED_COLUMNS[name])
    market = _normalise_market(tables["market"])
    instruments = _normalise_instruments(tables["instruments"], market, valuation_date)
    # Each account column also as (codes, distinct ids): the book's account index is built from those.
    positions, held, coded = _normalise_holdings(tables["positions"], "instrument", "quantity",
                                                 instruments["instrument"], "an instrument of the instruments table",
                                                 "position")
    collateral, held_asset, coded_collateral = _normalise_holdings(tables["collateral"], "asset", "amount",
                                                                   market["asset"], "an asset of the market table",
                                                                   "collateral row")
    coded = {"positions": coded, "collateral": coded_collateral}
    if positions.empty and collateral.empty:
        raise tables["positions"].error(None, None, "no positions and no collateral: the book has no account, "
                                                    "nothing to margin")
    _check_notional(tables["positions"], positions, instruments, market, held)
    _check_collateral_value(tables["collateral"], collateral, market, held_asset)
    if "accounts" in tables:
        accounts, coded["accounts"] = _normalise_accounts(tables["accounts"], [d for _, d in coded.values()])
    else:
        accounts = _frame({"account": np.array([], dtype=object), "group": np.array([], dtype=object)})
        coded["accounts"] = (None, accounts["account"].to_numpy(dtype=object))
    names = {name: table.file for name, table in tables.items()}
    names.update({k: str(v) for k, v in (sources or {}).items()})
    book = Book(instruments=instruments, market=market, positions=positions, collateral=collateral,
                accounts=accounts, valuation_date=valuation_date, sources=names)
    # What Book._account_index would compute from the columns, from their distinct ids instead (a cached
    # property: a frozen dataclass's own cache entry).
    book.__dict__["_account_index"] = account_index(coded)
    return book


def _as_date(value) -> dt.date:
    """A valuation date from a date, datetime, Timestamp, numpy datetime64 or ISO string."""
    if isinstance(value, dt.datetime):  # before date: datetime (and Timestamp) are dates too
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return dt.date.fromisoformat(value.strip())
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).date()
    raise TypeError(f"valuation_date must be a date, got {type(value).__name__}")


# ============================================================================ tables and checks
@dataclasses.dataclass(frozen=True)
class _Table:
    """A raw table on its way to validation."""

    name: str
    frame: pd.DataFrame
    rows: np.ndarray
    """Spreadsheet row of each record, by position."""
    file: str

    def has(self, column: str) -> bool:
        return column in self.frame.columns

    def cell(self, i: int, column: str):
        """The raw cell at position ``i``, as a plain Python value for messages."""
        if not self.has(column):
            return None
        value = self.frame[column].iloc[i]
        return value.item() if isinstance(value, np.generic) else value

    def error(self, i: int | None, column: str | None, message: str) -> InputError:
        return InputError(self.file, message, row=None if i is None else int(self.rows[i]), column=column)


def _check(table: _Table, bad, column: str, message: str | Callable[[int], str]) -> None:
    """Raise an InputError at the first record where ``bad`` is true.

    ``message`` is either a callable of the record's position, or a string in
    which ``{value}`` is replaced by the raw cell.
    """
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        i = int(np.argmax(bad))
        text = message(i) if callable(message) else message.format(value=_show(table.cell(i, column)))
        raise table.error(i, column, text)


def _show(value) -> str:
    """A cell as it should appear in a message: strings quoted, missing values as 'empty'."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return "empty"
    return repr(value.strip() if isinstance(value, str) else value)


def _require_columns(table: _Table, columns) -> None:
    for column in columns:
        if list(table.frame.columns).count(column) > 1:       # an in-memory frame may repeat a column
            raise table.error(None, column, f"column {column!r} appears more than once in the {table.name} table")
        if not table.has(column):
            found = ", ".join(map(str, table.frame.columns)) or "none"
            raise table.error(None, column, f"missing required column {column!r} in the {table.name} table "
                                            f"(columns found: {found})")


def _require_column_where(table: _Table, column: str, needed: np.ndarray, why: str) -> None:
    """A column only some rows need (expiry, strike, option_type) must exist when such a row does."""
    if not table.has(column) and needed.any():
        i = int(np.argmax(needed))
        raise table.error(i, column, f"missing column {column!r}: {why}")


def _frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """A DataFrame keeping object (not inferred string) dtype for text columns.

    The arrays are the frame's own (no copy: each was built for it).
    """
    return pd.DataFrame({k: pd.Series(v, dtype=object if np.asarray(v).dtype == object else None, copy=False)
                         for k, v in columns.items()}, copy=False)


# ============================================================================ cell parsers
def _text(table: _Table, column: str, where: np.ndarray | None = None) -> np.ndarray:
    """Cells as stripped strings (object array), "" where empty; rows outside ``where`` are ""."""
    values = table.frame[column]
    if where is not None:
        out = np.full(len(values), "", dtype=object)
        out[where] = _as_text(values.iloc[np.flatnonzero(where)])
        return out
    return _as_text(values)


#: Text columns at least this long are normalised through their distinct values.
_DISTINCT_TEXT_MIN = 10_000


def _as_text(values: pd.Series) -> np.ndarray:
    # Parquet may hold ids as integers (account 1 -> "1") or flags as bools; str()
    # of each gives what a user would type.  Missing cells become "".
    return _coded_text(values)[0]


def _coded_text(values: pd.Series):
    """``(text, coded)``: :func:`_as_text` and, for long string columns, ``(codes, distinct)``.

    ``distinct`` is an object array of the distinct texts and ``text == distinct[codes]``;
    ``coded`` is None when the column was normalised cell by cell.
    """
    if len(values) >= _DISTINCT_TEXT_MIN and _all_strings(values):
        # Ids repeat (a million positions name a few hundred instruments, accounts
        # hold several positions): normalise each distinct string once and spread
        # the results back by code.  Only for strings, which are equal keys exactly
        # when they are equal text (1 and 1.0 would be one key with two texts);
        # missing cells (code -1) take the last slot, "".  Two raw strings may
        # normalise to one text (" A1" and "A1"), hence the second factorisation.
        categorical = isinstance(values.dtype, pd.CategoricalDtype)
        if categorical:   # already coded (e.g. by the synthetic exchange)
            raw, uniques = values.cat.codes.to_numpy(dtype=np.int64), values.cat.categories
        else:
            raw, uniques = pd.factorize(values)
        uniques = np.asarray(uniques, dtype=object)
        text = np.append(_plain_text(pd.Series(uniques, dtype=object)), "")
        if categorical and _unchanged(text[:-1], uniques) and not (text[:-1] == "").any():
            # Categories are distinct, and stripping changed none: they are the distinct texts already.
            same, distinct = np.arange(text.size), text
        else:
            same, distinct = pd.factorize(text)
            distinct = np.asarray(distinct, dtype=object)
        codes = same[raw]
        return distinct[codes], (codes, distinct)
    return _plain_text(values), None


def _unchanged(text: np.ndarray, values: np.ndarray) -> bool:
    """True when every element of ``text`` is the very object at the same place in ``values``."""
    return bool((object_addresses(text) == object_addresses(values)).all())


def _all_strings(values: pd.Series) -> bool:
    """True when every non-missing cell is a str (a string column, or an object column of str)."""
    if isinstance(values.dtype, pd.StringDtype):
        return True
    if isinstance(values.dtype, pd.CategoricalDtype):
        return pd.api.types.infer_dtype(values.cat.categories, skipna=True) == "string"
    return values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) == "string"


def _plain_text(values: pd.Series) -> np.ndarray:
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=False) == "string":
        # Python strings stripped one by one: an id without spaces is its own strip, the same object, whose
        # hash Python keeps (ids are hashed again by every table that names them).
        return _strip(values.to_numpy(dtype=object)).astype(object)
    text = values.astype("str").str.strip().fillna("")
    return text.to_numpy(dtype=object)


_strip = np.frompyfunc(str.strip, 1, 1)


def _ids(table: _Table, column: str) -> np.ndarray:
    """An id column: stripped strings, none empty."""
    return _coded_ids(table, column)[0]


def _coded_ids(table: _Table, column: str):
    """:func:`_ids` and, for long string columns, their ``(codes, distinct)`` (else None)."""
    ids, coded = _coded_text(table.frame[column])
    _check(table, ids == "", column, f"empty {column} id")
    return ids, coded


def _numbers(table: _Table, column: str, default: float | None = None, where: np.ndarray | None = None
             ) -> np.ndarray:
    """A numeric column as float64.

    Parameters
    ----------
    default : float, optional
        Value of empty or NaN cells; when None such cells are an error.
    where : bool array, optional
        Rows to parse; others get ``default`` (NaN when None) without being looked at.
    """
    values = table.frame[column]
    if where is None and pd.api.types.is_float_dtype(values.dtype) and isinstance(values.dtype, np.dtype):
        # Every row of a float64/float32 column (the common case, and a million rows): no copies, one check each.
        parsed = values.to_numpy(dtype=np.float64)
        _check(table, np.isinf(parsed), column, f"{column} must be finite, got {{value}}")
        missing = np.isnan(parsed)
        if default is None:
            _check(table, missing, column, f"missing or NaN {column}")
        return np.where(missing, default, parsed) if missing.any() else parsed.copy()
    out = np.full(len(values), np.nan if default is None else default, dtype=np.float64)
    index = np.arange(len(values)) if where is None else np.flatnonzero(where)
    subset = values.iloc[index]
    if pd.api.types.is_numeric_dtype(subset.dtype) and not pd.api.types.is_bool_dtype(subset.dtype):
        parsed = subset.to_numpy(dtype=np.float64, na_value=np.nan)
        garbage = np.zeros(len(parsed), dtype=bool)
    else:
        text = _as_text(subset)
        parsed = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
        # An empty cell or the word NaN is a missing number; any other unparsed text is garbage.
        garbage = np.isnan(parsed)
        suspects = np.flatnonzero(garbage)
        garbage[suspects] = [t != "" and t.lower() != "nan" for t in text[suspects]]
    missing = np.isnan(parsed) & ~garbage

    def on_all_rows(mask: np.ndarray) -> np.ndarray:
        full = np.zeros(len(values), dtype=bool)
        full[index] = mask
        return full

    _check(table, on_all_rows(garbage), column, "not a number: {value}")
    _check(table, on_all_rows(np.isinf(parsed)), column, f"{column} must be finite, got {{value}}")
    if default is None:
        _check(table, on_all_rows(missing), column, f"missing or NaN {column}")
    out[index] = np.where(missing, out[index], parsed)
    return out


def _flags(table: _Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A boolean column from real bools or words (true/false/t/f/yes/no/y/n/1/0/1.0/0.0, any case).

    Returns
    -------
    values, missing : bool arrays
        ``values`` is False where the cell is empty; ``missing`` marks those.
    """
    values = table.frame[column]
    if pd.api.types.is_bool_dtype(values.dtype) and not values.isna().any():
        return values.to_numpy(dtype=bool), np.zeros(len(values), dtype=bool)
    text = pd.Series(_as_text(values), dtype=object).str.lower()
    mapped = text.map(_BOOL_WORDS)
    missing = (text == "").to_numpy(dtype=bool)
    _check(table, mapped.isna().to_numpy(dtype=bool) & ~missing, column,
           "not a true/false value: {value} (use true/false, yes/no, y/n, t/f or 1/0)")
    return mapped.fillna(False).to_numpy(dtype=bool), missing


def _dates(table: _Table, column: str, where: np.ndarray) -> np.ndarray:
    """An ISO-date column as datetime64[ns], NaT where empty or outside ``where``."""
    values = table.frame[column]
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    index = np.flatnonzero(where)
    subset = values.iloc[index]
    if pd.api.types.is_datetime64_any_dtype(subset.dtype):
        if getattr(subset.dt, "tz", None) is not None:  # an aware Parquet timestamp: keep its UTC wall time
            subset = subset.dt.tz_convert("UTC").dt.tz_localize(None)
        out[index] = subset.to_numpy(dtype="datetime64[ns]")
        return out
    text = _as_text(subset)
    parsed = pd.Series([_parse_date(t) for t in text], dtype="datetime64[ns]").to_numpy() if len(text) else \
        np.array([], dtype="datetime64[ns]")
    bad = np.zeros(len(values), dtype=bool)
    bad[index] = np.isnat(parsed) & (text != "")
    _check(table, bad, column, "not an ISO date (YYYY-MM-DD): {value}")
    out[index] = parsed
    return out


def _parse_date(text: str):
    """One ISO date or date-time; NaT when empty or unparseable (the caller reports which)."""
    if not text:
        return pd.NaT
    try:
        stamp = pd.Timestamp(dt.datetime.fromisoformat(text))
    except ValueError:
        return pd.NaT
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tz is not None else stamp


def _first_duplicates(*keys: np.ndarray, coded=None) -> np.ndarray:
    """True for every record whose key (tuple of columns) appeared on an earlier record.

    ``coded``: for each key, its ``(codes, distinct)`` from :func:`_coded_ids` or None.
    """
    if len(keys[0]) == 0:
        return np.zeros(0, dtype=bool)
    # Factorising each column to integer codes and combining them is much faster than
    # hashing tuples of Python strings, which matters for millions of positions.
    combined = np.zeros(len(keys[0]), dtype=np.int64)
    for key, known in zip(keys, coded or [None] * len(keys)):
        codes, uniques = known if known is not None else pd.factorize(key)
        combined = combined * (len(uniques) + 1) + codes
    if len(combined) > 1 and (combined[1:] > combined[:-1]).all():
        return np.zeros(len(combined), dtype=bool)   # strictly increasing (rows sorted by key): all distinct
    return pd.Series(combined).duplicated().to_numpy()


def _check_unique(table: _Table, keys: dict[str, np.ndarray], column: str, what: str, coded=None) -> None:
    """Raise at the second occurrence of a key, saying where the first was."""
    dup = _first_duplicates(*keys.values(), coded=coded)
    if dup.any():
        i = int(np.argmax(dup))
        same = np.ones(len(dup), dtype=bool)
        for key in keys.values():
            same &= key == key[i]
        first = int(table.rows[int(np.argmax(same))])
        shown = ", ".join(f"{name} {key[i]!r}" for name, key in keys.items())
        raise table.error(i, column, f"duplicate {what} ({shown}); first on row {first}")


def _check_known(table: _Table, ids: np.ndarray, known, column: str, what: str) -> None:
    """Every id must be one of ``known`` (another table's ids)."""
    unknown = ~pd.Series(ids, dtype=object).isin(pd.Index(known)).to_numpy(dtype=bool)
    _check(table, unknown, column, lambda i: f"{ids[i]!r} is not {what}")


# ============================================================================ tables
def _normalise_market(table: _Table) -> pd.DataFrame:
    asset = _ids(table, "asset")
    _check_unique(table, {"asset": asset}, "asset", "market asset")
    price = _numbers(table, "price")
    _check(table, price <= 0, "price", "price must be > 0, got {value}")
    vol = _numbers(table, "vol")
    _check(table, vol < 0, "vol", "vol must be >= 0, got {value}")
    # Haircuts are used only by margin models that value collateral with haircuts; a
    # market table without the column means "no haircut", but a column with an empty
    # cell is ambiguous (forgotten, or none?), so each row must say.
    haircut = _haircuts(table) if table.has("haircut") else np.zeros(len(asset))
    _check(table, (haircut < 0) | (haircut > 1), "haircut", "haircut must be in [0, 1], got {value}")
    # Average daily volume (units of the asset), for the liquidity add-on; an empty cell means none known.
    adv = _numbers(table, "adv", default=np.nan) if table.has("adv") else np.full(len(asset), np.nan)
    _check(table, adv <= 0, "adv", "adv (average daily volume) must be > 0, got {value}")
    return _frame({"asset": asset, "price": price, "vol": vol, "haircut": haircut, "adv": adv})


def _haircuts(table: _Table) -> np.ndarray:
    values = _numbers(table, "haircut", default=np.nan)
    _check(table, np.isnan(values), "haircut", "empty or NaN haircut: give a value in [0, 1] on every row "
                                               "(0 for none), or leave the haircut column out")
    return values


def _normalise_instruments(table: _Table, market: pd.DataFrame, valuation_date: dt.date) -> pd.DataFrame:
    n = len(table.frame)
    instrument = _ids(table, "instrument")
    _check_unique(table, {"instrument": instrument}, "instrument", "instrument id")

    kind = pd.Series(_text(table, "kind"), dtype=object).str.lower().to_numpy(dtype=object)
    _check(table, ~np.isin(kind, INSTRUMENT_KINDS), "kind",
           f"unknown kind {{value}}; expected one of {', '.join(INSTRUMENT_KINDS)}")
    option = kind == "option"
    dated = np.isin(kind, instrument_families.DATED)

    assets = market["asset"].to_numpy(dtype=object)
    underlying = _ids(table, "underlying")
    _check_known(table, underlying, assets, "underlying", "an asset of the market table")
    settle = _ids(table, "settle")
    _check_known(table, settle, assets, "settle", "an asset of the market table")

    inverse, no_inverse = _flags(table, "inverse")
    # Whether a perpetual or future is coin-margined changes its P&L completely, so it
    # must be said; spot can't be inverse and options default to the usual linear kind.
    for bad, column, message in instrument_families.linear.row_problems(kind, inverse, no_inverse):
        _check(table, bad, column, message)
    _check(table, inverse & (settle != underlying), "settle",
           lambda i: f"an inverse {kind[i]} settles in its underlying {underlying[i]!r}, not {settle[i]!r}")

    contract_size = _numbers(table, "contract_size")
    _check(table, contract_size <= 0, "contract_size", "contract_size must be > 0, got {value}")

    _require_column_where(table, "expiry", dated, "futures and options need an expiry")
    expiry = _dates(table, "expiry", dated) if table.has("expiry") else np.full(n, np.datetime64("NaT"), "M8[ns]")
    _check(table, dated & np.isnat(expiry), "expiry", lambda i: f"this {kind[i]} needs an expiry date")
    expired = dated & (expiry.astype("datetime64[D]") <= np.datetime64(valuation_date, "D"))
    _check(table, expired, "expiry",
           lambda i: f"expired: {kind[i]} expiry {_iso(expiry[i])} is on or before the valuation date "
                     f"{valuation_date.isoformat()}")

    _require_column_where(table, "strike", option, "options need a strike")
    strike = _numbers(table, "strike", default=np.nan, where=option) if table.has("strike") else np.full(n, np.nan)
    _require_column_where(table, "option_type", option, "options need an option_type (call or put)")
    option_type = (pd.Series(_text(table, "option_type", where=option), dtype=object).str.lower()
                   .to_numpy(dtype=object) if table.has("option_type") else np.full(n, "", dtype=object))
    vol = _numbers(table, "vol", default=np.nan) if table.has("vol") else np.full(n, np.nan)
    _check(table, vol < 0, "vol", "vol must be >= 0, got {value}")
    market_vol = pd.Series(market["vol"].to_numpy(), index=assets).reindex(underlying).to_numpy()
    effective_vol = np.where(np.isnan(vol), market_vol, vol)
    for bad, column, message in instrument_families.options.row_problems(option, strike, option_type, vol,
                                                                         effective_vol, underlying):
        _check(table, bad, column, message)

    # Relative bid-ask spread, for the close-out cost; an empty cell means none known.
    spread = _numbers(table, "spread", default=np.nan) if table.has("spread") else np.full(n, np.nan)
    _check(table, spread < 0, "spread", "spread (relative bid-ask spread) must be >= 0, got {value}")
    return _frame({"instrument": instrument, "kind": kind, "underlying": underlying, "settle": settle,
                   "inverse": inverse.astype(bool), "contract_size": contract_size, "expiry": expiry,
                   "strike": np.where(option, strike, np.nan), "option_type": option_type, "vol": vol,
                   "spread": spread})


def _normalise_holdings(table: _Table, item: str, amount: str, known, known_as: str, row_name: str):
    """Positions (account, instrument, quantity) or collateral (account, asset, amount): one account's
    holding of one known item per row.

    Returns the table, the position of each row's item in ``known``, and the account column as
    ``(codes, distinct)`` (:func:`_account_coding`).
    """
    account, account_coded = _coded_ids(table, "account")
    items, items_coded = _coded_ids(table, item)
    size = _numbers(table, amount)
    known = pd.Index(np.asarray(known, dtype=object))
    if items_coded is not None:   # the distinct items are looked up, not every row
        index = known.get_indexer(items_coded[1])[items_coded[0]]
    else:
        index = known.get_indexer(items)
    _check(table, index < 0, item, lambda i: f"{items[i]!r} is not {known_as}")
    _check_unique(table, {"account": account, item: items}, item, row_name, coded=[account_coded, items_coded])
    return _frame({"account": account, item: items, amount: size}), index, _account_coding(account, account_coded)


def _account_coding(account: np.ndarray, coded) -> tuple:
    """A validated account column as ``(codes, distinct)`` for :func:`mcmargin.inputs.book.account_index`:
    its coding when it has one, else ``(None, account)``."""
    if coded is None:
        return None, account
    codes, distinct = coded
    # Only the ids some row names: a categorical column may list categories no row uses, and
    # _coded_text keeps a slot for "" (missing cells), unused once every id is known not to be empty.
    used = np.bincount(codes, minlength=distinct.size) > 0
    if not used.all():
        codes = (np.cumsum(used) - 1)[codes]
        distinct = distinct[used]
    return codes, distinct


#: Largest USD notional one position or collateral row may have.  Far above any real holding, and
#: far enough below float64's range (1.8e308) that sums and products over a whole book cannot overflow.
MAX_NOTIONAL_USD = 1e15


def _check_notional(table: _Table, positions: pd.DataFrame, instruments: pd.DataFrame, market: pd.DataFrame,
                    held: np.ndarray | None = None) -> None:
    """|quantity x contract_size x price| (USD face value for inverse contracts) below MAX_NOTIONAL_USD.

    For an option the larger of the underlying's price and the strike counts,
    since a deep put is worth up to its strike.
    """
    # Per instrument first, then spread to the positions by index (every position's
    # instrument is known by now): no frame of a million rows is built.
    price = market.set_index("asset")["price"]
    if held is None:   # position -> row of its instrument in ``instruments``
        held = pd.Index(instruments["instrument"].to_numpy(dtype=object)).get_indexer(
            positions["instrument"].to_numpy(dtype=object))
    underlying_price = price.reindex(instruments["underlying"].to_numpy(dtype=object)).to_numpy(dtype=float)
    unit = np.where(instruments["inverse"].to_numpy(dtype=bool)[held], 1.0,
                    np.fmax(underlying_price[held], instruments["strike"].to_numpy(dtype=float)[held]))
    with np.errstate(over="ignore", invalid="ignore"):
        notional = np.abs(positions["quantity"].to_numpy(dtype=float)
                          * instruments["contract_size"].to_numpy(dtype=float)[held] * unit)
    _check(table, ~(notional < MAX_NOTIONAL_USD), "quantity",
           lambda i: f"position notional |quantity x contract_size x price| = {notional[i]:.3g} USD is not below "
                     f"{MAX_NOTIONAL_USD:.0e} USD (quantity {positions['quantity'].iloc[i]!r})")


def _check_collateral_value(table: _Table, collateral: pd.DataFrame, market: pd.DataFrame,
                            held: np.ndarray) -> None:
    """|amount x price| of every collateral row below MAX_NOTIONAL_USD (``held``: each row's market row)."""
    price = market["price"].to_numpy(dtype=float)[held]
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.abs(collateral["amount"].to_numpy(dtype=float) * price)
    _check(table, ~(value < MAX_NOTIONAL_USD), "amount",
           lambda i: f"collateral value |amount x price| = {value[i]:.3g} USD is not below {MAX_NOTIONAL_USD:.0e} "
                     f"USD (amount {collateral['amount'].iloc[i]!r})")


def _normalise_accounts(table: _Table, holders: list[np.ndarray]) -> tuple[pd.DataFrame, tuple]:
    """The accounts table, and its account column as ``(codes, distinct)``.

    ``holders``: the account ids of the positions and collateral tables (each id at least once).
    """
    account, account_coded = _coded_ids(table, "account")
    _check_unique(table, {"account": account}, "account", "account", coded=[account_coded])
    coding = _account_coding(account, account_coded)
    group = _text(table, "group")  # empty: the account is its own group, labelled by its id
    # A group label that is also the id of an account outside that group would name two
    # different margin pools (the group, and that account's singleton pool): refused.  A
    # group named after one of its own members is accepted (pools are often named after
    # their lead account): that member has no singleton pool, so the label is unique.
    # The distinct labels are looked up (a few per hundred accounts), not every row.
    labels = pd.unique(group[group != ""])
    named = [ids[pd.Series(ids, dtype=object).isin(labels).to_numpy(dtype=bool)]
             for ids in (coding[1], *holders)]
    named = np.concatenate(named)
    collides = np.zeros(len(group), dtype=bool)
    if named.size:
        suspect = (group != "") & pd.Series(group, dtype=object).isin(named).to_numpy(dtype=bool)
        own_group = np.full(len(group), "", dtype=object)
        own_group[suspect] = pd.Series(group, index=account).reindex(group[suspect]).fillna("").to_numpy(dtype=object)
        collides = suspect & (own_group != group)
    _check(table, collides, "group",
           lambda i: f"group {group[i]!r} is also the id of an account outside that group; its label would "
                     f"collide with that account's own margin-group label (rename the group)")
    return _frame({"account": account, "group": group}), coding


# ============================================================================ writing
def write_book(book: Book, directory: str | os.PathLike, fmt: str = "csv") -> dict[str, Path]:
    """Write the five tables of a book so that :func:`load_book_dir` reads back the same book.

    Parameters
    ----------
    book : Book
    directory : str or path-like
        Created if missing.  A file of the same table in the other format is
        removed, since :func:`load_book_dir` refuses a table with two files.
    fmt : {"csv", "parquet"}
        CSV writes dates as ISO strings, ``inverse`` as true/false and NaN
        as empty cells; floats are written with full round-trip precision.

    Returns
    -------
    dict
        Table -> path written.

    Raises
    ------
    InputError
        ``directory`` is a file, or holds a table file that no earlier
        export wrote (a book of the user's own is never overwritten or
        removed: exports mark their directory with ``.mcmargin-export``).
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(str(directory), "cannot export the book here: it is a file, not a directory")
    marker = directory / EXPORT_MARKER
    if not marker.is_file():
        for name in TABLES:
            for suffix in CSV_SUFFIXES + PARQUET_SUFFIXES:
                if (directory / f"{name}{suffix}").exists():
                    raise InputError(str(directory / f"{name}{suffix}"),
                                     "exists and was not written by an mcmargin export; refusing to overwrite it "
                                     "(export into an empty or new directory)")
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text("Input tables written by mcmargin's book export; a later export may replace them.\n")
    written = {}
    for name in TABLES:
        frame = getattr(book, name).loc[:, list(_NORMALISED_COLUMNS[name])]
        path = directory / f"{name}.{fmt}"
        for suffix in CSV_SUFFIXES + PARQUET_SUFFIXES:
            stale = directory / f"{name}{suffix}"
            if stale != path and stale.is_file():
                stale.unlink()
        if fmt == "csv":
            _csv_ready(frame).to_csv(path, index=False, na_rep="")
        else:
            frame.reset_index(drop=True).to_parquet(path, index=False)
        written[name] = path
    return written


def _csv_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Dates as ISO strings and flags as true/false, the way the CSV reader expects them."""
    frame = frame.copy()
    if "expiry" in frame:
        frame["expiry"] = pd.Series([_iso(v) if not np.isnat(v) else "" for v in frame["expiry"].to_numpy()],
                                    index=frame.index, dtype=object)
    if "inverse" in frame:
        frame["inverse"] = np.where(frame["inverse"].to_numpy(dtype=bool), "true", "false")
    return frame
