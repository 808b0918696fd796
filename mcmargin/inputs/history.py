"""Price history: loading, validation and gap reporting.

A history file (CSV or Parquet) has one ``date`` column and one price
column per asset (docs/architecture.md, input data contract).  Loading it
(:func:`load_history`) gives a :class:`pandas.DataFrame` indexed by date
(``DatetimeIndex`` named ``date``, strictly increasing), one float64 column
per asset, missing prices as NaN, with a :class:`HistoryReport` attached as
``df.attrs["report"]`` (and ``df.attrs["file"]``).

Validation (each error names the file, the row as a spreadsheet shows it --
header row 1, first record row 2 -- and the column):

- a ``date`` column must exist (matched case-insensitively);
- every date parses (ISO 8601), none is missing, none repeats, and dates
  increase down the file;
- every price is a number, finite and > 0 (log returns need positive
  prices); an empty cell or one of ``NA``, ``N/A``, ``NaN``, ``null``,
  ``#N/A``, ``.``, ``-`` means "no price that day".

Gaps (docs/methodology-history.md, section H.1) are never filled:

- a row where no asset has a price (a holiday) is dropped;
- an asset with no price before some date *starts late*; it has no returns
  before its first price;
- an asset missing inside its life has a gap; no return is made up for the
  gap's rows (NaN, never a zero return).  With ``gaps="span"`` (the default)
  the move across the gap counts once, at the row where trading resumes,
  measured from the last price before the gap; with ``gaps="drop"`` returns
  that touch a missing price are NaN.

All of it is logged and kept in the report, so a run can say which data it
used.  Returns and look-back windows over a loaded history are in
:mod:`mcmargin.stats.returns`.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import logging
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from ..common.dates import iso as _iso
from ..common.audit import record_input
from ..errors import InputError

log = logging.getLogger(__name__)

#: Cell values that mean "no price on this row" (compared case-insensitively).
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "#n/a", ".", "-"})

GAP_POLICIES = ("span", "drop")


# --------------------------------------------------------------------------- report
@dataclasses.dataclass(frozen=True)
class AssetCoverage:
    """Where one asset has prices.

    ``first_row``/``last_row`` are file rows (header = 1).  ``gaps`` lists the
    runs of missing prices inside the asset's life as ``(first missing date,
    last missing date, rows)``.
    """

    asset: str
    first_date: str | None
    last_date: str | None
    first_row: int | None
    last_row: int | None
    prices: int
    missing_inside: int
    gaps: tuple
    constant: bool


@dataclasses.dataclass(frozen=True)
class HistoryReport:
    """What :func:`load_history` found: coverage, gaps and dropped rows."""

    file: str
    rows: int
    first_date: str | None
    last_date: str | None
    dropped_rows: tuple
    """File rows dropped because no asset had a price (holidays)."""
    calendar_gaps: tuple
    """``(previous date, next date, missing days)`` where the calendar skips more than usual."""
    assets: dict
    """asset -> :class:`AssetCoverage`."""
    file_rows: tuple = ()
    """File row of each kept row, in order (for messages)."""

    def __deepcopy__(self, memo):  # immutable: pandas deep-copies attrs on every operation
        return self

    def file_row(self, position: int) -> int | None:
        """File row of the kept row at ``position`` (None when unknown)."""
        if 0 <= position < len(self.file_rows):
            return int(self.file_rows[position])
        return None

    def late_starters(self) -> dict:
        """asset -> first date, for assets that start after the first row."""
        return {a: c.first_date for a, c in self.assets.items()
                if c.first_date is not None and c.first_date != self.first_date}

    def lines(self) -> list[str]:
        """Human-readable summary, one finding per line."""
        out = [f"history {self.file}: {self.rows} rows, {self.first_date} .. {self.last_date}, "
               f"{len(self.assets)} asset column(s)"]
        if self.dropped_rows:
            out.append(f"{len(self.dropped_rows)} row(s) without any price dropped (holidays), file rows "
                       + _short(self.dropped_rows))
        for a, c in self.assets.items():
            if c.prices == 0:
                out.append(f"{a}: no prices at all")
                continue
            if c.first_date != self.first_date:
                out.append(f"{a}: starts late, first price {c.first_date} (row {c.first_row}); "
                           "no returns before it")
            if c.last_date != self.last_date:
                out.append(f"{a}: last price {c.last_date} (row {c.last_row}); no returns after it")
            if c.missing_inside:
                spans = ", ".join(f"{g[0]}..{g[1]} ({g[2]} rows)" for g in c.gaps[:5])
                more = f" and {len(c.gaps) - 5} more" if len(c.gaps) > 5 else ""
                out.append(f"{a}: {c.missing_inside} missing price(s) inside its life in {len(c.gaps)} gap(s): "
                           f"{spans}{more}; not filled")
            if c.constant:
                out.append(f"{a}: constant price (cash or stablecoin): zero returns")
        if self.calendar_gaps:
            spans = ", ".join(f"{g[0]}..{g[1]}" for g in self.calendar_gaps[:5])
            more = f" and {len(self.calendar_gaps) - 5} more" if len(self.calendar_gaps) > 5 else ""
            out.append(f"{len(self.calendar_gaps)} calendar gap(s) longer than usual: {spans}{more}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict:
        """JSON-able summary (for dataset attrs)."""
        return {"file": self.file, "rows": self.rows, "first_date": self.first_date,
                "last_date": self.last_date, "dropped_rows": list(self.dropped_rows),
                "calendar_gaps": [list(g) for g in self.calendar_gaps],
                "assets": {a: {k: (list(map(list, v)) if k == "gaps" else v)
                               for k, v in dataclasses.asdict(c).items() if k != "asset"}
                           for a, c in self.assets.items()}}


def _short(items: Sequence, n: int = 8) -> str:
    s = ", ".join(str(x) for x in list(items)[:n])
    return s + (f" ... ({len(items)} in all)" if len(items) > n else "")


# --------------------------------------------------------------------------- loading
def load_history(path, *, assets: Iterable[str] | None = None, valuation_date=None,
                 date_column: str = "date") -> pd.DataFrame:
    """Load and validate a price history file (module docstring).

    Parameters
    ----------
    path : str or path-like
        A ``.csv`` (optionally compressed, e.g. ``.csv.gz``) or ``.parquet`` file.
    assets : iterable of str, optional
        Price columns to keep (others are ignored, unvalidated); each must exist.
        Default: every column except the date.
    valuation_date : date-like, optional
        Stored as ``df.attrs["valuation_date"]``; history-based scenario models
        use only rows up to it (the look-back ends at the last row on or
        before it).  Rows after it are kept.
    date_column : str
        Name of the date column (matched case-insensitively).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``date``; float64 price columns; ``attrs["report"]`` is a
        :class:`HistoryReport`, ``attrs["file"]`` the path.
    """
    file = os.fspath(path)
    if not os.path.exists(file):
        raise InputError(file, "history file does not exist")
    record_input(file)
    lower = file.lower()
    if lower.endswith((".parquet", ".pq")):
        try:
            raw = pd.read_parquet(file)
        except Exception as exc:  # pyarrow raises many types for a bad file
            raise InputError(file, f"cannot read Parquet file: {exc}") from None
        if not isinstance(raw.index, pd.RangeIndex):
            raw = raw.reset_index()
    else:
        header = _csv_header(file)
        _check_header(file, header)
        try:
            raw = pd.read_csv(file, dtype=str, keep_default_na=False, na_filter=False,
                              skip_blank_lines=False)
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(file, f"cannot parse CSV: {exc}") from None
    return validate_history(raw, file=file, assets=assets, valuation_date=valuation_date,
                            date_column=date_column)


def _csv_header(file: str) -> list[str]:
    import gzip
    import bz2
    import lzma
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(os.path.splitext(file)[1].lower(), open)
    try:
        with opener(file, "rt", newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(file, f"cannot read CSV header: {exc}") from None


def _check_header(file: str, header: list[str]) -> None:
    if not header:
        raise InputError(file, "file is empty (expected a header row with a 'date' column)", row=1)
    seen = {}
    for i, name in enumerate(header):
        name = name.strip()
        if not name:
            raise InputError(file, f"column {i + 1} of the header has no name", row=1)
        if name in seen:
            raise InputError(file, f"duplicate column name (also column {seen[name] + 1})", row=1, column=name)
        seen[name] = i


def validate_history(raw: pd.DataFrame, *, file: str = "<history>", assets: Iterable[str] | None = None,
                     valuation_date=None, date_column: str = "date") -> pd.DataFrame:
    """Validate an in-memory history table (same rules and result as :func:`load_history`).

    ``raw`` has a ``date`` column (or a ``DatetimeIndex``) and price columns,
    as strings or numbers; its rows are taken as file rows 2, 3, ...
    """
    if isinstance(raw.index, pd.DatetimeIndex) and not any(str(c).strip().lower() == date_column.lower()
                                                            for c in raw.columns):
        raw = raw.rename_axis(date_column).reset_index()
    raw = raw.copy()
    raw.columns = [str(c).strip() for c in raw.columns]
    if len(set(raw.columns)) != len(raw.columns):
        dup = next(c for c in raw.columns if list(raw.columns).count(c) > 1)
        raise InputError(file, "duplicate column name", row=1, column=dup)
    dcol = next((c for c in raw.columns if c.lower() == date_column.lower()), None)
    if dcol is None:
        raise InputError(file, f"no {date_column!r} column; columns are: {', '.join(raw.columns) or '(none)'}",
                         row=1)
    price_cols = [c for c in raw.columns if c != dcol]
    if assets is not None:
        wanted = [str(a) for a in assets]
        missing = [a for a in wanted if a not in price_cols]
        if missing:
            raise InputError(file, f"no price column for asset(s) {', '.join(missing)}; "
                                   f"columns are: {', '.join(price_cols)}", row=1)
        price_cols = wanted
    for c in price_cols:
        if not c:
            raise InputError(file, "a price column has no name", row=1)
    file_rows = np.arange(len(raw), dtype=np.int64) + 2

    # Blank lines (every cell empty) are not records.
    blank = _missing_mask(raw[dcol])
    if blank.any():
        rows = np.nonzero(blank)[0]
        for c in price_cols:
            blank[rows] &= _missing_mask(raw[c].iloc[rows])
    if blank.any():
        raw, file_rows = raw.loc[~blank].reset_index(drop=True), file_rows[~blank]

    dates = _parse_dates(raw[dcol], file, dcol, file_rows)
    prices = {c: _parse_prices(raw[c], file, c, file_rows) for c in price_cols}
    frame = pd.DataFrame(prices, index=pd.DatetimeIndex(dates, name="date"), columns=price_cols, dtype=np.float64)

    # Rows with no price at all (holidays in a merged calendar) carry nothing.
    if price_cols:
        empty = frame.isna().all(axis=1).to_numpy()
    else:
        empty = np.zeros(len(frame), dtype=bool)
    dropped = tuple(int(r) for r in file_rows[empty])
    if empty.any():
        frame, file_rows = frame.loc[~empty], file_rows[~empty]
    if len(frame) == 0:
        raise InputError(file, "history has no rows with a price", row=2 if not dropped else dropped[0])

    report = _build_report(frame, file, file_rows, dropped)
    frame.attrs["file"] = file
    frame.attrs["report"] = report
    if valuation_date is not None:
        frame.attrs["valuation_date"] = pd.Timestamp(valuation_date)
    log.info("%s", report.lines()[0])
    if report.calendar_gaps:
        log.info("history %s: %d calendar gap(s) longer than usual (first %s..%s)", file,
                 len(report.calendar_gaps), *report.calendar_gaps[0][:2])
    return frame


def _missing_mask(s: pd.Series) -> np.ndarray:
    """Cells that are empty (NaN/None or blank text)."""
    if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
        return s.isna().to_numpy()
    txt = s.astype("string")
    return (txt.isna() | (txt.str.strip() == "")).to_numpy(dtype=bool, na_value=True)


def _parse_dates(col: pd.Series, file: str, name: str, rows: np.ndarray) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        parsed = pd.to_datetime(col)
        bad = parsed.isna().to_numpy()
        if bad.any():
            raise InputError(file, "missing date", row=int(rows[bad.argmax()]), column=name)
    else:
        obj = col.astype(object)
        txt = pd.Series([("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip())
                         for v in obj], dtype=object)
        empty = (txt == "").to_numpy()
        if empty.any():
            raise InputError(file, "missing date", row=int(rows[empty.argmax()]), column=name)
        if all(isinstance(v, (dt.date, pd.Timestamp)) for v in obj):
            parsed = pd.to_datetime(pd.Series(list(obj)), errors="coerce")
        else:
            parsed = pd.to_datetime(txt, errors="coerce", format="ISO8601", utc=True)
        bad = parsed.isna().to_numpy()
        if bad.any():
            i = int(bad.argmax())
            raise InputError(file, f"cannot parse date {txt.iloc[i]!r} (expected ISO 8601, e.g. 2024-01-31)",
                             row=int(rows[i]), column=name)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    values = parsed.to_numpy(dtype="datetime64[ns]")
    # Duplicates, then order: name the offending row and the row it clashes with.
    dup = pd.Index(values).duplicated()
    if dup.any():
        i = int(dup.argmax())
        j = int(np.nonzero(values == values[i])[0][0])
        raise InputError(file, f"duplicate date {_iso(values[i])} (first on row {rows[j]})",
                         row=int(rows[i]), column=name)
    if len(values) > 1:
        back = np.nonzero(values[1:] < values[:-1])[0]
        if back.size:
            i = int(back[0]) + 1
            raise InputError(file, f"dates must increase down the file: {_iso(values[i])} comes after "
                                   f"{_iso(values[i - 1])} (row {rows[i - 1]})", row=int(rows[i]), column=name)
    return values


def _parse_prices(col: pd.Series, file: str, name: str, rows: np.ndarray) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col.dtype):
        raise InputError(file, "prices must be numbers, got booleans", row=int(rows[0]) if len(rows) else None,
                         column=name)
    if pd.api.types.is_numeric_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        obj = col.astype(object)
        values = pd.to_numeric(obj, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        # Only cells that did not parse need a closer look: missing or bad.
        for i in np.nonzero(np.isnan(values))[0]:
            v = obj.iloc[i]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            s = str(v).strip()
            if s.lower() in MISSING_TOKENS:
                continue
            try:
                values[i] = float(s)
            except ValueError:
                raise InputError(file, f"price {s!r} is not a number", row=int(rows[i]), column=name) from None
    inf = np.isinf(values)
    if inf.any():
        i = int(inf.argmax())
        raise InputError(file, f"price {values[i]} is not finite", row=int(rows[i]), column=name)
    bad = ~np.isnan(values) & (values <= 0)
    if bad.any():
        i = int(bad.argmax())
        what = "zero" if values[i] == 0 else "negative"
        raise InputError(file, f"price {values[i]:g} is {what}; prices must be > 0 (returns are log returns)",
                         row=int(rows[i]), column=name)
    return values


def _build_report(frame: pd.DataFrame, file: str, file_rows: np.ndarray, dropped: tuple) -> HistoryReport:
    idx = frame.index
    first, last = _iso(idx[0]), _iso(idx[-1])
    cover = {}
    for a in frame.columns:
        v = frame[a].to_numpy()
        ok = ~np.isnan(v)
        if not ok.any():
            cover[a] = AssetCoverage(a, None, None, None, None, 0, 0, (), False)
            log.warning("history %s: column %r has no prices", file, a)
            continue
        i0, i1 = int(ok.argmax()), len(v) - 1 - int(ok[::-1].argmax())
        inside = ~ok[i0:i1 + 1]
        gaps = []
        if inside.any():
            pos = np.nonzero(inside)[0] + i0
            starts = np.r_[pos[0], pos[1:][np.diff(pos) > 1]]
            ends = np.r_[pos[:-1][np.diff(pos) > 1], pos[-1]]
            gaps = [(_iso(idx[s]), _iso(idx[e]), int(e - s + 1)) for s, e in zip(starts, ends)]
        live = v[ok]
        cover[a] = AssetCoverage(a, _iso(idx[i0]), _iso(idx[i1]), int(file_rows[i0]), int(file_rows[i1]),
                                 int(ok.sum()), int(inside.sum()), tuple(gaps),
                                 bool(live.size > 1 and np.all(live == live[0])))
    report = HistoryReport(file, len(frame), first, last, dropped, _calendar_gaps(idx), cover,
                           tuple(int(r) for r in file_rows))
    holes = [f"{a} ({c.missing_inside} in {len(c.gaps)} gap(s))" for a, c in cover.items() if c.missing_inside]
    if holes:
        log.warning("history %s: missing prices inside the life of %d asset(s), not filled: %s", file, len(holes),
                    _short(holes))
    late = [f"{a} ({c.first_date}, row {c.first_row})" for a, c in cover.items()
            if c.prices and c.first_date != first]
    if late:
        log.warning("history %s: %d asset(s) start late (first price): %s", file, len(late), _short(late))
    if dropped:
        log.warning("history %s: dropped %d row(s) without any price (file rows %s)", file, len(dropped),
                    _short(dropped))
    return report


def _calendar_gaps(idx: pd.DatetimeIndex) -> tuple:
    """Intervals where the calendar skips more than its usual pattern."""
    if len(idx) < 3:
        return ()
    days = idx.normalize().to_numpy().astype("datetime64[D]")
    step = np.diff(days).astype(np.int64)
    if np.median(step) >= 5:           # weekly or monthly data: flag steps > 1.5x the usual
        flag = step > 1.5 * np.median(step)
        missing = step
    elif np.mean(np.isin(pd.DatetimeIndex(days).day_of_week, (5, 6))) > 0.05:   # 7-day calendar
        missing = step - 1
        flag = missing > 0
    else:                              # business days: one missing weekday is a holiday
        missing = np.busday_count(days[:-1], days[1:]) - 1
        flag = missing > 1
    out = tuple((_iso(idx[i]), _iso(idx[i + 1]), int(missing[i])) for i in np.nonzero(flag)[0])
    return out


def as_history(history, *, file: str | None = None) -> pd.DataFrame:
    """``history`` validated (a no-op for a frame from :func:`load_history`)."""
    if isinstance(history, pd.DataFrame) and isinstance(history.attrs.get("report"), HistoryReport) \
            and isinstance(history.index, pd.DatetimeIndex):
        return history
    if isinstance(history, (str, os.PathLike)):
        return load_history(history)
    if not isinstance(history, pd.DataFrame):
        raise TypeError(f"history must be a DataFrame or a path, got {type(history).__name__}")
    attrs = dict(history.attrs)
    out = validate_history(history, file=file or attrs.get("file", "<history>"))
    if "valuation_date" in attrs:
        out.attrs["valuation_date"] = pd.Timestamp(attrs["valuation_date"])
    return out


def history_file(history: pd.DataFrame) -> str:
    """The file a history came from (for messages)."""
    return str(history.attrs.get("file", "<history>"))
