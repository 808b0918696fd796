"""The shared fuzz harness: malformed tables, files and configs for every loader.

A loader passes when, for every input the strategies make, it either
returns a correct result (the test checks what "correct" means for it) or
raises an :class:`~mcmargin.errors.McMarginError` that names the file (and
the row and column, or the key, where one is at fault): the error a job
prints on one line before exiting 2, having written nothing.  Any other
exception is a traceback, and fails the test with the input that caused it
(hypothesis shrinks it to a minimal example).

Profiles (``settings.register_profile``), chosen by ``MCMARGIN_FUZZ``:

- ``ci`` (the default, ``make test``): :data:`CI_EXAMPLES` examples per
  loader, derandomized so CI is repeatable;
- ``full`` (``make fuzz``): :data:`FULL_EXAMPLES` per loader, random, at
  least 10,000 over the whole suite;
- ``dev``: a handful, to iterate on a strategy.

Plugging a loader in (tests/test_fuzz_NAME.py)::

    from fuzz import FUZZ, Table, check_loader, write_table, table_edits, in_temp_dir

    BASE = Table(["date", "BTC"], [["2024-01-01", "100"], ["2024-01-02", "101"]])

    @FUZZ
    @given(edit=table_edits(BASE, values={"BTC": prices()}), fmt=file_formats())
    def test_my_loader(edit, fmt):
        with in_temp_dir() as d:
            path = write_table(edit, d / "prices", fmt)
            result = check_loader(lambda: my_loader(path), files=[path])
            if not isinstance(result, McMarginError):
                ...  # what a correct result is
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mcmargin.errors import ConfigError, InputError, McMarginError

#: Examples per loader in the CI profile, and in ``make fuzz``.
CI_EXAMPLES, FULL_EXAMPLES = 150, 1500

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                      HealthCheck.function_scoped_fixture])
settings.register_profile("mcmargin-fuzz-ci", max_examples=CI_EXAMPLES, derandomize=True, **_COMMON)
settings.register_profile("mcmargin-fuzz-full", max_examples=FULL_EXAMPLES, **_COMMON)
settings.register_profile("mcmargin-fuzz-dev", max_examples=10, **_COMMON)

#: The profile of this session (``MCMARGIN_FUZZ=ci|full|dev``).
PROFILE = f"mcmargin-fuzz-{os.environ.get('MCMARGIN_FUZZ', 'ci')}"
#: Decorator of every fuzz test: the session's profile (``@FUZZ`` above ``@given``).
FUZZ = settings(settings.get_profile(PROFILE))


def examples(share: float = 1.0) -> settings:
    """The session's profile with ``share`` of its examples (for a loader much slower than the others)."""
    p = settings.get_profile(PROFILE)
    return settings(p, max_examples=max(5, int(p.max_examples * share)))


# ----------------------------------------------------------------------------- outcomes
def check_loader(call, files=(), keys=()):
    """``call()``'s result, or the :class:`McMarginError` it raised; any other exception fails the test.

    Parameters
    ----------
    call : callable
        Runs the loader.
    files : sequence of path
        Files the loader reads: an :class:`InputError` must name one of them.
    keys : sequence of str
        Config key prefixes: a :class:`ConfigError` must name a key under one
        of them (any key when empty).
    """
    try:
        return call()
    except InputError as exc:
        names = {str(f) for f in files} | {os.path.basename(str(f)) for f in files}
        assert not files or exc.file in names or any(str(f) in exc.file for f in files), \
            f"error names {exc.file!r}, not the file read ({sorted(names)}): {exc}"
        assert exc.reason and "\n" not in str(exc).strip(), f"not a one-line message: {exc!r}"
        _check_row(exc)
        return exc
    except ConfigError as exc:
        assert exc.key and (not keys or any(exc.key.startswith(k) for k in keys)), f"unexpected key: {exc}"
        assert exc.reason and "\n" not in str(exc).strip(), f"not a one-line message: {exc!r}"
        return exc
    except McMarginError as exc:
        return exc


def _check_row(exc: InputError) -> None:
    assert exc.row is None or (isinstance(exc.row, int) and exc.row >= 1), f"row {exc.row!r}: {exc}"


# ----------------------------------------------------------------------------- tables
@dataclasses.dataclass(frozen=True)
class Table:
    """A table as text cells: the header and the records (spreadsheet row of record i: i + 2)."""

    header: list
    rows: list

    def column(self, name) -> int:
        return self.header.index(name)


@dataclasses.dataclass(frozen=True)
class FileForm:
    """How a table is written: format and the byte-level noise around the cells."""

    fmt: str = "csv"            # csv | parquet | empty (a zero-byte .csv) | utf16 (a .csv in UTF-16) | binary (junk)
    bom: bool = False
    crlf: bool = False
    blank_lines: bool = False
    header_space: bool = False


def file_forms(parquet: bool = True):
    """Strategy: a :class:`FileForm` (mostly CSV; some Parquet, some zero-byte files)."""
    fmts = ["csv"] * 8 + (["parquet"] * 2 if parquet else []) + ["empty", "utf16", "binary"]
    return st.builds(FileForm, fmt=st.sampled_from(fmts), bom=st.booleans(), crlf=st.booleans(),
                     blank_lines=st.booleans(), header_space=st.booleans())


def write_table(table: Table, stem: Path, form: FileForm = FileForm()) -> Path:
    """Write ``table`` as ``stem.csv`` or ``stem.parquet`` in the given form; returns the path."""
    stem = Path(stem)
    if form.fmt == "empty":
        path = stem.with_suffix(".csv")
        path.write_bytes(b"")
        return path
    header = [f"  {h} " if form.header_space else h for h in table.header]
    if form.fmt == "parquet":
        import pandas as pd

        path = stem.with_suffix(".parquet")
        width = len(header)
        rows = [list(r[:width]) + [""] * (width - len(r)) for r in table.rows]
        names = _distinct(header)
        pd.DataFrame(rows, columns=names, dtype=object).to_parquet(path)
        return path
    path = stem.with_suffix(".csv")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n" if form.crlf else "\n")
    writer.writerow(header)
    for i, r in enumerate(table.rows):
        writer.writerow(r)
        if form.blank_lines and i % 3 == 1:
            buf.write("\r\n" if form.crlf else "\n")
    if form.fmt == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x80" + buf.getvalue().encode("utf-8")[:40])
    else:
        path.write_text(("\ufeff" if form.bom else "") + buf.getvalue(),
                        encoding="utf-16" if form.fmt == "utf16" else "utf-8")
    return path


def _distinct(names):
    """Parquet needs distinct column names: a duplicate gets a suffix (the CSV keeps it duplicated)."""
    out, seen = [], set()
    for n in names:
        m = n
        while m in seen:
            m += "_"
        seen.add(m)
        out.append(m)
    return out


@contextlib.contextmanager
def in_temp_dir():
    """A fresh temporary directory (hypothesis runs many examples per test: no function fixture)."""
    with tempfile.TemporaryDirectory(prefix="mcmargin-fuzz-") as d:
        yield Path(d)


# ----------------------------------------------------------------------------- cell values
#: Words that break parsers: empties, non-finite spellings, signs, separators, overflow, BOMs.
NASTY = ["", " ", "  ", "\t", "nan", "NaN", "NAN", "inf", "-inf", "+inf", "Infinity", "-Infinity", "null", "None",
         "NA", "n/a", "-", "+", ".", "e", "1e", "1e400", "-1e400", "1e308", "-1e308", "1e-320", "5e-324", "0",
         "-0", "0.0", "-1", "1,5", "1_000", "0x10", "1 000", " 7 ", "\t3\t", "\ufeff1", "1\ufeff", "True", "false",
         "yes", "abc", "é", "💥", "\x00", '"', "'", "1" * 40, "9" * 400, "2026-13-40", "2026-02-30", "1900-01-01",
         "9999-12-31", "2026-11-25", "2026-11-24", "2026-11-26", "25/11/2026"]


def nasty():
    """Strategy: a cell value chosen to break a parser."""
    return st.sampled_from(NASTY)


def numbers(low: float = -1e12, high: float = 1e12):
    """Strategy: a numeric cell, mostly reasonable, sometimes extreme or non-finite, spelled many ways."""
    finite = st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    extreme = st.sampled_from([0.0, -0.0, 1e-300, -1e-300, 5e-324, 1e300, -1e300, 1.7976931348623157e308,
                               float("nan"), float("inf"), float("-inf")])
    spelled = st.one_of(finite.map(repr), finite.map(lambda x: f"{x:.6g}"), finite.map(lambda x: f" {x} "),
                        finite.map(lambda x: f"{x:e}"), st.integers(-10**6, 10**6).map(str))
    return st.one_of(spelled, extreme.map(repr), nasty())


def positive_numbers(high: float = 1e7):
    """Strategy: mostly valid positive numbers, sometimes zero, negative, tiny, huge or not a number."""
    return st.one_of(st.floats(min_value=1e-6, max_value=high).map(repr), numbers())


def dates(valuation: str = "2026-11-25"):
    """Strategy: ISO dates around ``valuation`` (before it: expired), and malformed ones."""
    import datetime as dt

    v = dt.date.fromisoformat(valuation)
    near = st.integers(-400, 800).map(lambda d: (v + dt.timedelta(days=d)).isoformat())
    return st.one_of(near, near.map(lambda s: f" {s} "), near.map(lambda s: s + "T00:00:00"), nasty())


def ids(known, unknown=("ZZZ", "zz", "", " ", "BTC ", "btc", "a\u00a0")):
    """Strategy: an id among ``known`` (so duplicates arise), or an unknown / whitespace-padded one."""
    known = list(known)
    return st.one_of(st.sampled_from(known), st.sampled_from(known).map(lambda s: f" {s} "),
                     st.sampled_from(list(unknown)), nasty())


# ----------------------------------------------------------------------------- table edits
def table_edits(base: Table, values: dict | None = None, max_edits: int = 4):
    """Strategy: ``base`` with a few edits, each breaking one thing.

    Edits: a cell set to a value from ``values[column]`` (a strategy; default
    :func:`nasty`), a record duplicated, dropped or truncated, a column
    dropped, renamed or duplicated, records with extra cells, the records
    removed (header only), the rows shuffled.
    """
    values = values or {}

    @st.composite
    def edited(draw):
        header, rows = list(base.header), [list(r) for r in base.rows]
        for _ in range(draw(st.integers(0, max_edits))):
            op = draw(st.sampled_from(["cell"] * 6 + ["dup_row", "drop_row", "short_row", "long_row", "drop_col",
                                                       "rename_col", "dup_col", "header_only", "swap_rows"]))
            if op == "cell" and rows and header:
                r = draw(st.integers(0, len(rows) - 1))
                c = draw(st.integers(0, len(header) - 1))
                strategy = values.get(header[c], nasty())
                if c < len(rows[r]):
                    rows[r][c] = draw(st.one_of(strategy, nasty()) if header[c] in values else strategy)
            elif op == "dup_row" and rows:
                rows.append(list(rows[draw(st.integers(0, len(rows) - 1))]))
            elif op == "drop_row" and rows:
                rows.pop(draw(st.integers(0, len(rows) - 1)))
            elif op == "short_row" and rows:
                r = draw(st.integers(0, len(rows) - 1))
                rows[r] = rows[r][:draw(st.integers(0, max(0, len(rows[r]) - 1)))]
            elif op == "long_row" and rows:
                rows[draw(st.integers(0, len(rows) - 1))].append(draw(nasty()))
            elif op == "drop_col" and header:
                c = draw(st.integers(0, len(header) - 1))
                header.pop(c)
                for row in rows:
                    if c < len(row):
                        row.pop(c)
            elif op == "rename_col" and header:
                c = draw(st.integers(0, len(header) - 1))
                header[c] = draw(st.sampled_from([header[c].upper(), f" {header[c]}", header[c] + "x", "",
                                                  "\ufeff" + header[c], header[0]]))
            elif op == "dup_col" and header:
                c = draw(st.integers(0, len(header) - 1))
                header.append(header[c])
                for row in rows:
                    row.append(row[c] if c < len(row) else "")
            elif op == "header_only":
                rows = []
            elif op == "swap_rows" and len(rows) > 1:
                i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(rows) - 1))
                rows[i], rows[j] = rows[j], rows[i]
        return Table(header, rows)

    return edited()


def table_of(frame) -> Table:
    """A :class:`Table` of a pandas DataFrame's cells, as text (NaN as empty)."""
    def text(x):
        if isinstance(x, float) and math.isnan(x):
            return ""
        return str(x)

    return Table([str(c) for c in frame.columns], [[text(x) for x in row] for row in frame.itertuples(index=False)])


# ----------------------------------------------------------------------------- documents (YAML files, configs)
def scalars():
    """Strategy: any scalar a YAML file or a config override can hold, weighted towards trouble."""
    return st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 0.0, -0.0, 1e-300, 1e300]),
                     nasty(), st.text(max_size=6))


def anything(depth: int = 2):
    """Strategy: scalars, lists and mappings nested up to ``depth``."""
    return st.recursive(scalars(), lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                        max_leaves=6)


def _paths(doc, prefix=()):
    """Every path (tuple of keys / indices) into a nested document, the root included."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def document_edits(base, values: dict | None = None, max_edits: int = 3):
    """Strategy: the nested document ``base`` (dicts and lists) with a few values replaced, keys dropped or added.

    ``values`` maps a key name (the last key of a path) to a strategy of
    values that make sense there (e.g. numbers for a move); other values
    come from :func:`anything`.
    """
    import copy

    values = values or {}

    @st.composite
    def edited(draw):
        doc = copy.deepcopy(base)
        for _ in range(draw(st.integers(0, max_edits))):
            paths = list(_paths(doc))
            path = draw(st.sampled_from(paths))
            op = draw(st.sampled_from(["set", "set", "set", "drop", "add"]))
            if not path:
                if op == "set":
                    doc = draw(anything())
                continue
            parent = doc
            for k in path[:-1]:
                parent = parent[k]
            key = path[-1]
            if op == "set":
                strategy = values.get(key) if isinstance(key, str) else None
                parent[key] = draw(st.one_of(strategy, anything()) if strategy is not None else anything())
            elif op == "drop":
                parent.pop(key)
            elif isinstance(parent, dict):
                parent[draw(st.sampled_from(["extra", str(key).upper(), f" {key}", ""]))] = draw(anything())
            else:
                parent.append(draw(anything()))
        return doc

    return edited()


def file_bytes(texts):
    """Strategy: ``texts`` encoded as UTF-8, or as UTF-16 / Latin-1 (not UTF-8), or junk bytes."""
    return st.one_of(texts.map(lambda t: t.encode("utf-8")), texts.map(lambda t: t.encode("utf-16")),
                     texts.map(lambda t: (t + "é").encode("latin-1", errors="replace")), st.binary(max_size=40))


def yaml_texts(documents):
    """Strategy: ``documents`` dumped as YAML, sometimes with a BOM, whitespace, or replaced by broken text."""
    import yaml

    def dump(doc):
        try:
            return yaml.safe_dump(doc, allow_unicode=True)
        except yaml.YAMLError:
            return "{"

    broken = st.sampled_from(["", " ", "\n", "{", "[1, 2", "a: b: c", "- x\ny: 1", "\t- tab", "%%%", "...",
                              "\ufeff", "null", "42", "key: [unterminated"])
    return st.one_of(documents.map(dump), documents.map(lambda d: "\ufeff" + dump(d)),
                     documents.map(lambda d: dump(d).replace("\n", "  \n")), broken)
