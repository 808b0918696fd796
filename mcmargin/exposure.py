"""The book compiled to arrays: instrument columns and sparse holdings.

Revaluation produces a P&L matrix ``pnl[scenario, column]`` per unit held,
with one column per instrument and one per collateral asset.  Columns are
ordered by pricing rule (linear, inverse, option, collateral) so that each
rule prices one contiguous block with no scatter, which the array API
lacks.  Every loss is then a sparse product: ``loss = -(H @ pnl.T)`` with
``H`` the holdings of a row (docs/architecture.md, "Revaluation").

Rows of ``H`` are, in order: the accounts, the margin groups with more than
one member (sum of their members' holdings), and a long and a short unit
of every instrument (for standalone, isolated requirements).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import pricing
from .book import Book

DAYS_PER_YEAR_OPTIONS = 365.0  # option time: (expiry - valuation_date) in days / 365


@dataclasses.dataclass
class CompiledBook:
    """Arrays the kernels need, built once per run from a :class:`Book`."""

    assets: np.ndarray                # [A] market assets
    prices: np.ndarray                # [A] USD
    instruments: np.ndarray           # [I] ids, in column order
    instrument_column: dict           # instrument id -> column
    # pricing blocks (NumPy arrays; moved to the backend by ``to_backend``)
    lin_asset: np.ndarray
    lin_notional: np.ndarray          # contract_size * S0
    inv_asset: np.ndarray
    inv_face: np.ndarray
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
    accounts: np.ndarray              # [Na]
    account_group: np.ndarray         # [Na] group label of each account
    groups: np.ndarray                # [Ng] every group label (singletons included), sorted
    multi_groups: np.ndarray          # [Nm] groups with more than one member
    group_row: np.ndarray             # [Ng] row of H holding each group's losses

    @property
    def n_columns(self) -> int:
        return self.unit_value.size

    @property
    def n_instruments(self) -> int:
        return self.instruments.size

    def rows(self, kind: str) -> slice:
        """Row range of ``kind``: accounts, groups (multi-member), long, short."""
        na, nm, ni = self.accounts.size, self.multi_groups.size, self.instruments.size
        return {"accounts": slice(0, na), "groups": slice(na, na + nm),
                "long": slice(na + nm, na + nm + ni), "short": slice(na + nm + ni, na + nm + 2 * ni)}[kind]


def compile_book(book: Book, horizon_days: float, rate: float = 0.0) -> CompiledBook:
    """Build the arrays of ``book`` for shocks over ``horizon_days``."""
    from scipy.special import ndtr

    m = book.market
    assets = m["asset"].to_numpy(dtype=object)
    asset_index = {a: i for i, a in enumerate(assets)}
    prices = m["price"].to_numpy(dtype=float)
    market_vol = dict(zip(m["asset"], m["vol"]))

    ins = book.instruments
    kind = ins["kind"].to_numpy(dtype=object)
    inverse = ins["inverse"].to_numpy(dtype=bool)
    is_opt = kind == "option"
    is_inv = ~is_opt & inverse
    is_lin = ~is_opt & ~inverse
    order = np.concatenate([np.flatnonzero(is_lin), np.flatnonzero(is_inv), np.flatnonzero(is_opt)])
    ins = ins.iloc[order].reset_index(drop=True)
    ids = ins["instrument"].to_numpy(dtype=object)
    u = np.array([asset_index[a] for a in ins["underlying"]], dtype=np.int64)
    size = ins["contract_size"].to_numpy(dtype=float)
    s0 = prices[u]
    nl, ni = int(is_lin.sum()), int(is_inv.sum())
    lin, inv, opt = slice(0, nl), slice(nl, nl + ni), slice(nl + ni, len(ids))

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
    holdings = sp.vstack([holdings_acc, holdings_grp, units, -units], format="csr")
    holdings.sort_indices()

    # Row of every group: its member's row if single, else its pooled row.
    first_member = np.full(groups.size, -1)
    first_member[members[::-1]] = np.arange(accounts.size)[::-1]
    group_row = first_member.copy()
    group_row[multi] = accounts.size + np.arange(multi.size)

    return CompiledBook(
        assets=assets, prices=prices, instruments=ids, instrument_column={k: i for i, k in enumerate(ids)},
        lin_asset=u[lin], lin_notional=(size * s0)[lin], inv_asset=u[inv], inv_face=size[inv],
        opt_asset=u[opt], opt_spot=s0[opt], opt_strike=ins["strike"].to_numpy(dtype=float)[opt],
        opt_expiry=t0, opt_expiry_after=t0 - float(horizon_days) / DAYS_PER_YEAR_OPTIONS,
        opt_vol=vol.astype(float), opt_is_call=is_call, opt_size=size[opt], opt_value=opt_value, rate=float(rate),
        unit_value=unit_value, holdings=holdings, accounts=accounts, account_group=labels,
        groups=groups, multi_groups=groups[multi], group_row=group_row)


def _account_holdings(book, accounts, instruments, assets):
    """Sparse [account x column] holdings: positions, then collateral columns."""
    pos, col = book.positions, book.collateral
    rows = pd.Index(accounts)
    r = np.concatenate([rows.get_indexer(pos["account"]), rows.get_indexer(col["account"])])
    c = np.concatenate([pd.Index(instruments).get_indexer(pos["instrument"]),
                        instruments.size + pd.Index(assets).get_indexer(col["asset"])])
    v = np.concatenate([pos["quantity"].to_numpy(dtype=float), col["amount"].to_numpy(dtype=float)])
    h = sp.csr_matrix((v, (r, c)), shape=(accounts.size, instruments.size + assets.size))
    h.sum_duplicates()
    return h


def revalue(backend, cb: "BackendBook", shock, vol_shock):
    """P&L per unit of every column, ``[scenario x column]`` in USD (array API)."""
    xp = backend.xp
    lin = pricing.linear_pnl(xp, cb.lin_notional, xp.take(shock, cb.lin_asset, axis=1))
    inv = pricing.inverse_pnl(xp, cb.inv_face, xp.take(shock, cb.inv_asset, axis=1))
    spot = cb.opt_spot * xp.exp(xp.take(shock, cb.opt_asset, axis=1))
    vol = cb.opt_vol * xp.exp(xp.take(vol_shock, cb.opt_asset, axis=1))
    value = pricing.black_scholes(xp, backend.norm_cdf, spot, cb.opt_strike, cb.opt_expiry_after, vol,
                                  cb.opt_is_call, cb.rate)
    opt = cb.opt_size * (value - cb.opt_value)
    coll = cb.prices * xp.expm1(shock)
    return xp.concat([lin, inv, opt, coll], axis=1)


@dataclasses.dataclass
class BackendBook:
    """The pricing arrays of a :class:`CompiledBook` on one backend."""

    lin_asset: object
    lin_notional: object
    inv_asset: object
    inv_face: object
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
        lin_asset=idx(book.lin_asset), lin_notional=f(book.lin_notional), inv_asset=idx(book.inv_asset),
        inv_face=f(book.inv_face), opt_asset=idx(book.opt_asset), opt_spot=f(book.opt_spot),
        opt_strike=f(book.opt_strike), opt_expiry_after=f(book.opt_expiry_after), opt_vol=f(book.opt_vol),
        opt_is_call=f(book.opt_is_call.astype(float)) > 0.5, opt_size=f(book.opt_size),
        opt_value=f(book.opt_value), prices=f(book.prices), rate=book.rate)
