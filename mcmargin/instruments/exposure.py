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

Rows are, in order: the accounts, the margin groups with more than one
member (sum of their members' holdings), a long and a short unit of
every instrument (for standalone, isolated requirements), and a long and
a short unit of every market asset held as collateral (for
``collateral_im``, the collateral margined alone).  The collateral rows
come last, so adding them moved no other row's figures.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import black_scholes as pricing
from ..inputs.book import Book

DAYS_PER_YEAR_OPTIONS = 365.0  # option time: (expiry - valuation_date) in days / 365


@dataclasses.dataclass
class CompiledBook:
    """Arrays the kernels need, built once per run from a :class:`Book`."""

    assets: np.ndarray                # [A] market assets
    prices: np.ndarray                # [A] USD
    instruments: np.ndarray           # [I] ids, in column order
    instrument_column: dict           # instrument id -> column
    # pricing blocks (NumPy arrays; moved to the backend by ``to_backend``)
    opt_asset: np.ndarray
    opt_spot: np.ndarray
    opt_strike: np.ndarray
    opt_expiry: np.ndarray            # T in years, before the horizon
    opt_expiry_after: np.ndarray      # T' = T - horizon / 365
    opt_vol: np.ndarray
    opt_is_call: np.ndarray
    opt_size: np.ndarray
    opt_value: np.ndarray             # BS at valuation, per unit of underlying
    rate: float
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
        """Row range of ``kind``: accounts, groups (multi-member), long, short,
        collateral_long, collateral_short (one unit of each market asset)."""
        na, nm, ni, nc = self.accounts.size, self.multi_groups.size, self.instruments.size, self.assets.size
        u = na + nm + 2 * ni
        return {"accounts": slice(0, na), "groups": slice(na, na + nm),
                "long": slice(na + nm, na + nm + ni), "short": slice(na + nm + ni, u),
                "collateral_long": slice(u, u + nc), "collateral_short": slice(u + nc, u + 2 * nc)}[kind]


def compile_book(book: Book, horizon_days: float, rate: float = 0.0) -> CompiledBook:
    """Build the arrays of ``book`` for shocks over ``horizon_days``."""
    from scipy.special import ndtr

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
    # USD notional of one linear contract: size x S, or the face value of an inverse one.
    notional = np.where(ins["inverse"].to_numpy(dtype=bool), size, size * s0)[lin]

    days = (ins["expiry"] - pd.Timestamp(book.valuation_date)).dt.days.to_numpy(dtype=float)
    t0 = days[opt] / DAYS_PER_YEAR_OPTIONS
    vol_override = ins["vol"].to_numpy(dtype=float)[opt]
    vol = np.where(np.isnan(vol_override), [market_vol[a] for a in ins["underlying"][opt]], vol_override)
    is_call = (ins["option_type"].to_numpy(dtype=object)[opt] == "call")
    opt_value = pricing.black_scholes(np, ndtr, s0[opt], ins["strike"].to_numpy(dtype=float)[opt], t0,
                                      vol.astype(float), is_call, rate)

    # What one unit of each column is worth today: spot its price, settled
    # futures and perpetuals nothing, options their premium, collateral its price.
    unit_value = np.zeros(len(ids) + len(assets))
    is_spot = (ins["kind"].to_numpy(dtype=object) == "spot")
    unit_value[:len(ids)][is_spot] = (size * s0)[is_spot]
    unit_value[opt] = size[opt] * opt_value
    unit_value[len(ids):] = prices

    accounts = book.account_ids
    labels = book.account_groups().to_numpy(dtype=object)
    holdings_acc = _account_holdings(book, accounts, ids, assets)
    groups, members = np.unique(labels, return_inverse=True)
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
    holdings = sp.vstack([holdings_acc, holdings_grp, units, -units, coll, -coll], format="csr")
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

    return CompiledBook(
        assets=assets, prices=prices, instruments=ids, instrument_column={k: i for i, k in enumerate(ids)},
        opt_asset=u[opt], opt_spot=s0[opt], opt_strike=ins["strike"].to_numpy(dtype=float)[opt],
        opt_expiry=t0, opt_expiry_after=t0 - float(horizon_days) / DAYS_PER_YEAR_OPTIONS,
        opt_vol=vol.astype(float), opt_is_call=is_call, opt_size=size[opt], opt_value=opt_value, rate=float(rate),
        unit_value=unit_value, holdings=holdings, to_factors=to_factors, exposures=exposures,
        accounts=accounts, account_group=labels,
        groups=groups, multi_groups=groups[multi], group_row=group_row, group_of_account=members)


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
    c = np.concatenate([pd.Index(instruments).get_indexer(pos["instrument"]),
                        instruments.size + pd.Index(assets).get_indexer(col["asset"])])
    v = np.concatenate([pos["quantity"].to_numpy(dtype=float), col["amount"].to_numpy(dtype=float)])
    h = sp.csr_matrix((v, (r, c)), shape=(accounts.size, instruments.size + assets.size))
    h.sum_duplicates()
    return h


def revalue(backend, cb: "BackendBook", shock, vol_shock):
    """P&L of every factor, ``[scenario x factor]`` (array API).

    Asset factors: expm1(shock), the P&L of one USD of linear exposure.
    Option factors: USD P&L of one contract.
    """
    xp = backend.xp
    spot = cb.opt_spot * xp.exp(xp.take(shock, cb.opt_asset, axis=1))
    vol = cb.opt_vol * xp.exp(xp.take(vol_shock, cb.opt_asset, axis=1))
    value = pricing.black_scholes(xp, backend.norm_cdf, spot, cb.opt_strike, cb.opt_expiry_after, vol,
                                  cb.opt_is_call, cb.rate)
    opt = cb.opt_size * (value - cb.opt_value)
    return xp.concat([xp.expm1(shock), opt], axis=1)


@dataclasses.dataclass
class BackendBook:
    """The pricing arrays of a :class:`CompiledBook` on one backend."""

    opt_asset: object
    opt_spot: object
    opt_strike: object
    opt_expiry_after: object
    opt_vol: object
    opt_is_call: object
    opt_size: object
    opt_value: object
    prices: object
    rate: float


def to_backend(book: CompiledBook, backend) -> BackendBook:
    xp = backend.xp
    f = backend.asarray

    def idx(a):
        return xp.asarray(f(a), dtype=xp.int64) if a.size else xp.zeros((0,), dtype=xp.int64)

    return BackendBook(
        opt_asset=idx(book.opt_asset), opt_spot=f(book.opt_spot),
        opt_strike=f(book.opt_strike), opt_expiry_after=f(book.opt_expiry_after), opt_vol=f(book.opt_vol),
        opt_is_call=f(book.opt_is_call.astype(float)) > 0.5, opt_size=f(book.opt_size),
        opt_value=f(book.opt_value), prices=f(book.prices), rate=book.rate)
