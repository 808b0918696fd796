"""The portfolios file of a backtest: fixed quantities of history assets (docs/methodology.md, section 13).

A CSV or Parquet file with the columns ``portfolio`` (name), ``asset`` (a
price column of the history) and ``quantity`` (units of the asset, signed;
negative is short).  Extra columns are ignored.  A portfolio's value at date
t is ``V(t) = sum of quantity x price(t)`` over its rows.

Every cell is checked; a problem is an :class:`~mcmargin.errors.InputError`
naming the file, the row as a spreadsheet shows it (header = row 1) and
the column.  Nothing is dropped: a repeated (portfolio, asset) pair is an
error, not a sum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import pandas as pd

from ..errors import InputError
from .files import PORTFOLIO_COLUMNS, read_table

#: The columns read (a column named twice, after stripping spaces, is an error: which one holds the data?).
COLUMNS = PORTFOLIO_COLUMNS


@dataclasses.dataclass(frozen=True)
class Portfolios:
    """Validated portfolios: ``quantity[p, a]`` units of ``assets[a]`` held by ``names[p]``."""

    names: tuple
    assets: tuple
    quantity: np.ndarray
    file: str
    sha256: str


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes (recorded in the backtest's attrs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_portfolios(path, known_assets) -> Portfolios:
    """Read and validate a portfolios file against the history's price columns.

    Parameters
    ----------
    path : str or path-like
        ``.csv`` or ``.parquet``/``.pq``.
    known_assets : sequence of str
        The history's price columns; every ``asset`` must be one of them.

    Returns
    -------
    Portfolios
        Portfolios in order of first appearance; assets in the history's
        column order (only those held by some portfolio).

    Raises
    ------
    InputError
        Naming file, row and column: a missing column, an empty file, an
        empty name, an unknown asset, a quantity that is not a finite number,
        a repeated (portfolio, asset) pair.
    """
    file = os.fspath(path)
    try:
        frame = read_table(file, "portfolios")
    except InputError as exc:
        if "empty file" in exc.reason:
            raise InputError(file, "empty file: expected a header row portfolio,asset,quantity and one record "
                                   "per holding", row=1, column="portfolio") from None
        raise
    for c in COLUMNS:
        if c not in frame.columns:
            raise InputError(file, f"missing column {c!r} (columns: {', '.join(map(str, frame.columns)) or 'none'}); "
                                   "expected portfolio, asset, quantity", row=1, column=c)
    if len(frame) == 0:
        raise InputError(file, "no portfolios: the file has a header but no records", row=2, column="portfolio")
    rows = frame.index.to_numpy()
    names = _text(frame["portfolio"], file, "portfolio", rows)
    assets = _text(frame["asset"], file, "asset", rows)
    known = {str(a) for a in known_assets}
    unknown = np.array([a not in known for a in assets])
    if unknown.any():
        i = int(np.argmax(unknown))
        shown = ", ".join(list(map(str, known_assets))[:12])
        raise InputError(file, f"unknown asset {assets[i]!r}: not a price column of the history "
                               f"(columns: {shown or 'none'}{' ...' if len(known) > 12 else ''})", row=int(rows[i]),
                         column="asset")
    qty = frame["quantity"]
    values = pd.to_numeric(qty.astype(str).str.strip() if qty.dtype == object else qty, errors="coerce")
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(file, f"quantity {qty.iloc[i]!r} is not a finite number (NaN, empty or text)",
                         row=int(rows[i]), column="quantity")
    seen: dict = {}
    for i, key in enumerate(zip(names, assets)):
        if key in seen:
            raise InputError(file, f"portfolio {key[0]!r} holds {key[1]!r} twice (also row {seen[key]}): "
                                   "give one row per holding", row=int(rows[i]), column="asset")
        seen[key] = int(rows[i])
    order = tuple(dict.fromkeys(names))
    held = set(assets)
    asset_order = tuple(a for a in map(str, known_assets) if a in held)
    q = np.zeros((len(order), len(asset_order)))
    pi = {n: i for i, n in enumerate(order)}
    ai = {a: i for i, a in enumerate(asset_order)}
    for n, a, v in zip(names, assets, values):
        q[pi[n], ai[a]] = v
    return Portfolios(order, asset_order, q, file, file_sha256(file))


def _text(col: pd.Series, file: str, column: str, rows) -> list:
    out = []
    for i, v in enumerate(col.tolist()):
        s = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
        if not s:
            raise InputError(file, f"empty {column}", row=int(rows[i]), column=column)
        out.append(s)
    return out
