"""The book: instruments, market, positions, collateral and margin groups.

A :class:`Book` holds validated, normalised tables (pandas DataFrames) with
the columns of the input data contract (docs/architecture.md, "Inputs").
Loaders (:mod:`mcmargin.inputs.files`) and the synthetic exchange
(:mod:`mcmargin.inputs.synthetic`) both produce a Book; the engine consumes it.

Normalised columns and dtypes
-----------------------------
instruments
    ``instrument`` (str, unique), ``kind`` (str: spot | perpetual | future |
    option), ``underlying`` (str, a market asset), ``settle`` (str, a market
    asset), ``inverse`` (bool), ``contract_size`` (float64 > 0), ``expiry``
    (datetime64[ns], NaT for spot/perpetual), ``strike`` (float64, NaN unless
    option), ``option_type`` (str: call | put, "" unless option), ``vol``
    (float64, NaN when the market vol applies), ``spread`` (float64 >= 0,
    relative bid-ask spread, of the price for linear contracts and of the
    premium for options; NaN when not given).
market
    ``asset`` (str, unique), ``price`` (float64 > 0, USD), ``vol`` (float64
    >= 0, annualised implied vol; 0 for cash), ``haircut`` (float64 in [0, 1]),
    ``adv`` (float64 > 0, average daily volume in units of the asset; NaN
    when not given).
positions
    ``account`` (str), ``instrument`` (str), ``quantity`` (float64, signed).
collateral
    ``account`` (str), ``asset`` (str), ``amount`` (float64).
accounts
    ``account`` (str, unique), ``group`` (str, "" when the account is its own
    group).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

import numpy as np
import pandas as pd

from ..instruments import KINDS as INSTRUMENT_KINDS  # noqa: E402  (every family's kinds)
from ..instruments.options import OPTION_TYPES  # noqa: E402

INSTRUMENT_COLUMNS = ("instrument", "kind", "underlying", "settle", "inverse", "contract_size",
                      "expiry", "strike", "option_type", "vol", "spread")
MARKET_COLUMNS = ("asset", "price", "vol", "haircut", "adv")
POSITION_COLUMNS = ("account", "instrument", "quantity")
COLLATERAL_COLUMNS = ("account", "asset", "amount")
ACCOUNT_COLUMNS = ("account", "group")
ACCOUNT_TABLES = ("positions", "collateral", "accounts")     # the tables with an account column


@dataclasses.dataclass(frozen=True)
class Book:
    """A validated book of one exchange on one valuation date."""

    instruments: pd.DataFrame
    market: pd.DataFrame
    positions: pd.DataFrame
    collateral: pd.DataFrame
    accounts: pd.DataFrame
    valuation_date: dt.date
    sources: dict = dataclasses.field(default_factory=dict)
    """Table name -> file it came from, for messages."""

    # ----------------------------------------------------------------- labels
    @property
    def assets(self) -> np.ndarray:
        """Market assets, in market-table order."""
        return self.market["asset"].to_numpy(dtype=object)

    @functools.cached_property
    def _account_index(self) -> tuple:
        """(ids, {table: rows}): every account id sorted, and each table row's index into the ids.

        Loaders that have coded the columns already set it (:func:`account_index`).
        """
        return account_index({t: (None, getattr(self, t)["account"].to_numpy(dtype=object)) for t in ACCOUNT_TABLES})

    @property
    def account_ids(self) -> np.ndarray:
        """Every account in positions, collateral or accounts, sorted."""
        return self._account_index[0]

    def account_rows(self, table: str) -> np.ndarray:
        """Index into :attr:`account_ids` of each row of ``table`` (positions, collateral or accounts)."""
        return self._account_index[1][table]

    def account_groups(self) -> pd.Series:
        """Margin-group label of every account (its own id when it has none)."""
        ids = self.account_ids
        labels = ids.copy()
        group = self.accounts["group"].to_numpy(dtype=object)
        named = group != ""
        labels[self.account_rows("accounts")[named]] = group[named]
        return pd.Series(labels, index=pd.Index(ids, name="account", dtype=object), name="group", dtype=object)

    def risky_assets(self) -> list[str]:
        """Assets that move in scenarios: every market asset with vol > 0."""
        m = self.market
        return list(m.loc[m["vol"] > 0, "asset"])

    def source(self, table: str) -> str:
        return self.sources.get(table, table)


def account_index(columns: dict) -> tuple:
    """``(ids, {table: rows})`` of :attr:`Book.account_ids` and :meth:`Book.account_rows`.

    Parameters
    ----------
    columns : dict
        Table -> ``(codes, distinct)``: the table's account column is
        ``distinct[codes]`` (``codes`` None: ``distinct`` is the column itself).

    One hash of the tables' distinct ids at once: at a million accounts
    each pass over string ids costs most of a second.
    """
    parts = list(columns.values())
    codes, uniques = pd.factorize(np.concatenate([np.asarray(d, dtype=object) for _, d in parts]))
    order = np.argsort(uniques.astype(str))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    offset = np.cumsum([0] + [len(d) for _, d in parts])
    rows = {}
    for (table, (at, _)), start, stop in zip(columns.items(), offset[:-1], offset[1:]):
        distinct_rank = rank[codes[start:stop]]
        rows[table] = distinct_rank if at is None else distinct_rank[at]
    ids = uniques[order]
    if pd.api.types.infer_dtype(ids, skipna=False) != "string":     # a hand-built book's ids: as text
        ids = ids.astype(str).astype(object)
    return ids, rows
