"""The book compiled to arrays: positions, risk factors and sparse holdings.

Positions live in *columns*: one per instrument and one per collateral
asset, ordered linear instruments, options, collateral.
``holdings`` [rows x columns] holds quantities and amounts; it values
equity and identifies positions.

Risk lives in *factors*.  The USD P&L of every non-option column is its
USD notional times expm1(shock) of one asset: spot and linear contracts
(size S), inverse contracts (face value), collateral (price).  So all of a
row's linear exposure to an asset nets into one number, its delta in USD,
and revaluation produces ``pnl[scenario, factor]`` with one factor per
market asset (expm1 of its shock; cash never moves and gets no entry) and
one per option (P&L of one contract).  Every loss is a sparse product
``loss = -(E @ pnl.T)`` with ``E = holdings @ to_factors`` the row's factor
exposures (docs/architecture.md, "Revaluation").  Netting linear columns
first halves the work on a typical book and is exact up to rounding
(the sum is regrouped, never approximated).

Rows are blocks of :data:`ROW_KINDS`, in that order, each present only
when the run's margin models ask for it (:class:`~mcmargin.margin.MarginModel`):
the accounts (always), the margin groups with more than one member (sum
of their members' holdings), a long and a short unit of every instrument
(for standalone, isolated requirements), and a long and a short unit of
every market asset held as collateral (for ``collateral_im``, the
collateral margined alone).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..common.identity import positions_in
from ..inputs.book import Book
from ..instruments import linear, options as option_family

#: Blocks of holdings rows, in row order: what a margin model may ask the engine to take tails of.
ROW_KINDS = ("accounts", "groups", "long", "short", "collateral_long", "collateral_short")


@dataclasses.dataclass
class CompiledBook:
    """Arrays the kernels need, built once per run from a :class:`Book`."""

    assets: np.ndarray                # [A] market assets
    prices: np.ndarray                # [A] USD
    instruments: np.ndarray           # [I] ids, in column order
    instrument_column: dict           # instrument id -> column
    options: option_family.OptionBlock  # pricing arrays of the options (moved to a backend by revaluation)
    unit_value: np.ndarray            # [C] USD value of one unit of each column today
    holdings: sp.csr_matrix           # [R x C] rows: accounts, multi groups, +unit, -unit
    to_factors: sp.csr_matrix         # [C x F] USD exposure of one unit of a column to each factor
    exposures: sp.csr_matrix          # [R x F] holdings @ to_factors: what the tails are taken of
    accounts: np.ndarray              # [Na]
    account_group: np.ndarray         # [Na] group label of each account
    groups: np.ndarray                # [Ng] every group label (singletons included), sorted
    multi_groups: np.ndarray          # [Nm] groups with more than one member
    group_row: np.ndarray             # [Ng] row of H holding each group's losses
    group_of_account: np.ndarray      # [Na] index into ``groups`` of each account's group
    row_kinds: tuple = ROW_KINDS      # the blocks of rows present, in order

    @property
    def n_columns(self) -> int:
        return self.unit_value.size

    @property
    def n_factors(self) -> int:
        return self.to_factors.shape[1]

    @property
    def n_instruments(self) -> int:
        return self.instruments.size

    def rows(self, kind: str) -> slice:
        """Row range of ``kind`` (one of :data:`ROW_KINDS`); an empty slice if the block was not built."""
        if kind not in ROW_KINDS:
            raise KeyError(f"unknown row kind {kind!r}; known: {', '.join(ROW_KINDS)}")
        start = 0
        for k in ROW_KINDS:
            size = self._block_size(k) if k in self.row_kinds else 0
            if k == kind:
                return slice(start, start + size)
            start += size

    def _block_size(self, kind: str) -> int:
        return {"accounts": self.accounts.size, "groups": self.multi_groups.size,
                "long": self.instruments.size, "short": self.instruments.size,
                "collateral_long": self.assets.size, "collateral_short": self.assets.size}[kind]


def compile_book(book: Book, horizon_days: float, rate: float = 0.0, row_kinds=ROW_KINDS) -> CompiledBook:
    """Build the arrays of ``book`` for shocks over ``horizon_days``.

    ``row_kinds`` names the blocks of rows to build (accounts are always
    built; the order is always that of :data:`ROW_KINDS`).
    """
    row_kinds = tuple(k for k in ROW_KINDS if k in set(row_kinds) | {"accounts"})
    m = book.market
    assets = m["asset"].to_numpy(dtype=object)
    asset_index = {a: i for i, a in enumerate(assets)}
    prices = m["price"].to_numpy(dtype=float)
    market_vol = dict(zip(m["asset"], m["vol"]))

    # Instruments in column order: the linear ones (spot, perpetuals, futures), then the options.
    ins = book.instruments
    is_opt = ins["kind"].to_numpy(dtype=object) == "option"
    ins = ins.iloc[np.concatenate([np.flatnonzero(~is_opt), np.flatnonzero(is_opt)])].reset_index(drop=True)
    ids = ins["instrument"].to_numpy(dtype=object)
    u = np.array([asset_index[a] for a in ins["underlying"]], dtype=np.int64)
    size = ins["contract_size"].to_numpy(dtype=float)
    s0 = prices[u]
    n_linear = int((~is_opt).sum())
    lin, opt = slice(0, n_linear), slice(n_linear, len(ids))
    notional = linear.usd_notional(size, s0, ins["inverse"].to_numpy(dtype=bool))[lin]

    days = (ins["expiry"] - pd.Timestamp(book.valuation_date)).dt.days.to_numpy(dtype=float)
    vol_override = ins["vol"].to_numpy(dtype=float)[opt]
    vol = np.where(np.isnan(vol_override), [market_vol[a] for a in ins["underlying"][opt]], vol_override)
    options = option_family.compile_options(
        u[opt], s0[opt], ins["strike"].to_numpy(dtype=float)[opt], days[opt], vol.astype(float),
        ins["option_type"].to_numpy(dtype=object)[opt] == "call", size[opt], horizon_days, rate)

    # What one unit of each column is worth today: linear contracts by their
    # family's rule, options their premium, collateral its price.
    unit_value = np.zeros(len(ids) + len(assets))
    unit_value[lin] = linear.unit_value(ins["kind"].to_numpy(dtype=object)[lin], size[lin], s0[lin])
    unit_value[opt] = size[opt] * options.value
    unit_value[len(ids):] = prices

    accounts = book.account_ids
    labels = book.account_groups().to_numpy(dtype=object)
    holdings_acc = _account_holdings(book, accounts, ids, assets)
    groups, members = _sorted_unique(labels)
    counts = np.bincount(members, minlength=groups.size)
    multi = np.flatnonzero(counts > 1)
    pick = sp.csr_matrix((np.ones(accounts.size), (members, np.arange(accounts.size))),
                         shape=(groups.size, accounts.size))[multi]
    holdings_grp = pick @ holdings_acc
    units = sp.identity(len(ids), format="csr")
    units = sp.hstack([units, sp.csr_matrix((len(ids), len(assets)))], format="csr")
    # One unit of each market asset as collateral, long and short (a negative amount is a loan).
    coll = sp.hstack([sp.csr_matrix((len(assets), len(ids))), sp.identity(len(assets), format="csr")],
                     format="csr")
    blocks = {"accounts": holdings_acc, "groups": holdings_grp, "long": units, "short": -units,
              "collateral_long": coll, "collateral_short": -coll}
    holdings = sp.vstack([blocks[k] for k in row_kinds], format="csr")
    holdings.sort_indices()

    to_factors = _factor_map(u[lin], notional, len(ids) - n_linear, prices, m["vol"].to_numpy(dtype=float))
    exposures = holdings @ to_factors
    exposures.eliminate_zeros()        # a hedge that nets to exactly zero costs nothing
    exposures.sort_indices()

    # Row of every group: its member's row if single, else its pooled row.
    first_member = np.full(groups.size, -1)
    first_member[members[::-1]] = np.arange(accounts.size)[::-1]
    group_row = first_member.copy()
    group_row[multi] = accounts.size + np.arange(multi.size)
    if "groups" not in row_kinds:
        group_row[multi] = -1          # pooled groups have no row of their own in this layout

    return CompiledBook(
        assets=assets, prices=prices, instruments=ids, instrument_column={k: i for i, k in enumerate(ids)},
        options=options, unit_value=unit_value, holdings=holdings, to_factors=to_factors, exposures=exposures,
        accounts=accounts, account_group=labels,
        groups=groups, multi_groups=groups[multi], group_row=group_row, group_of_account=members,
        row_kinds=row_kinds)


def _sorted_unique(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(labels, return_inverse=True)`` of an object array of str: hashed, then only the distinct
    labels sorted, as NumPy unicode (an object sort compares Python strings: 0.6 s a million accounts)."""
    codes, distinct = pd.factorize(labels)
    distinct = np.asarray(distinct, dtype=object)
    order = np.argsort(distinct.astype(str), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return distinct[order], rank[codes]


def _factor_map(linear_asset, linear_notional, n_options, prices, market_vol):
    """[columns x factors]: factors are the market assets (expm1 of the shock), then the options.

    Columns: linear instruments (their USD notional on their asset), options
    (one contract each), collateral (the asset's price).  Cash assets (market
    vol 0) never move: their factor gets no entries.
    """
    n_linear, a = linear_asset.size, prices.size
    moves = np.flatnonzero(market_vol > 0)
    rows = np.concatenate([np.arange(n_linear), n_linear + np.arange(n_options), n_linear + n_options + moves])
    cols = np.concatenate([linear_asset, a + np.arange(n_options), moves])
    vals = np.concatenate([linear_notional, np.ones(n_options), prices[moves]])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_linear + n_options + a, a + n_options))


def column_pnl(book: "CompiledBook", factor_pnl: np.ndarray) -> np.ndarray:
    """P&L per unit of every position column, [scenario x column], from factor P&L."""
    return np.asarray((book.to_factors @ np.asarray(factor_pnl).T).T)


def _account_holdings(book, accounts, instruments, assets):
    """Sparse [account x column] holdings: positions, then collateral columns."""
    pos, col = book.positions, book.collateral
    r = np.concatenate([book.account_rows("positions"), book.account_rows("collateral")])
    c = np.concatenate([positions_in(pd.Index(instruments, dtype=object), pos["instrument"].to_numpy(dtype=object)),
                        instruments.size + positions_in(pd.Index(assets, dtype=object),
                                                        col["asset"].to_numpy(dtype=object))])
    v = np.concatenate([pos["quantity"].to_numpy(dtype=float), col["amount"].to_numpy(dtype=float)])
    h = sp.csr_matrix((v, (r, c)), shape=(accounts.size, instruments.size + assets.size))
    h.sum_duplicates()
    return h
