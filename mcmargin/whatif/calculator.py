"""What-if margin from the night's cube: a pool's loss vector plus the trades, then the margin model's formula.

A pool's losses are ``loss = -(E @ pnl.T)`` with ``E`` the sum of its
members' factor exposures (docs/architecture.md, "Revaluation"); adding
``q`` units of position column ``c`` adds ``q x u_c`` to its P&L, with
``u_c = to_factors[c] @ pnl.T`` the column's P&L per unit.  So a what-if is

    loss_after = loss_before - sum_k q_k u_{c_k}          O(scenarios x trades)

and then the tail definitions of :mod:`mcmargin.tails` (one compare with the
smallest loss, after the trade, of the m scenarios of the tail before it,
which bounds the new m-th largest from below; one ``np.argpartition`` of the
few losses above that bound; a sort of the m worst; :func:`~mcmargin.tails.var_es`)
and the ``mc_es`` requirement (:meth:`~mcmargin.margin.mc_es.McEs.im_from_es`).
Loss vectors of the pools and accounts asked about are cached (LRU), so a
request never forms ``E @ pnl.T`` twice.

A trade adds a position and nothing else, exactly as a row added to the
positions file of the nightly run: its value today (``unit_value x q``: a
spot price, an option premium; nothing for a perpetual or a future) enters
equity.  A premium or a spot price paid in cash is a collateral change and
not part of the trade.

Attribution (``GET /account``, ``GET /group``) is the Euler allocation of
ES: over the row's m tail scenarios (the m largest losses, equal losses
ordered by the lower scenario index), each holding's contribution is minus
the mean of its P&L, and the contributions sum to ES.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time

import numba
import numpy as np
import scipy.sparse as sp
import xarray as xr

from ..aggregation import compile_book
from ..backend import get_backend
from ..instruments import options as option_family
from ..margin import MarginParams
from ..margin.mc_es import McEs
from ..tails import tail_size, var_es
from .cube import REVALUE_BLOCK, instruments_book, strings

#: Largest |quantity| of one trade, in contracts (a larger one is refused as a slip).
MAX_QUANTITY = 1e12
#: Intraday prices (USD) and vols of risky assets a re-pricing accepts.
PRICE_RANGE, VOL_RANGE = (1e-8, 1e12), (1e-4, 10.0)
#: Scenarios whose losses after a trade set the first bound of the tail.
PILOT_SAMPLE = 2048
#: Worst scenarios reported as drivers.
DRIVERS = 5


class UnknownName(LookupError):
    """An account, group, instrument or asset the cube does not hold."""

    def __init__(self, what: str, name):
        super().__init__(f"unknown {what} {name!r}")
        self.what, self.name = what, name


class BadRequest(ValueError):
    """A request the calculator cannot answer (a quantity out of range, a bad price), with a one-line reason."""


@dataclasses.dataclass(frozen=True)
class Pricing:
    """What a re-pricing replaces: the factor P&L, the column map and today's unit values."""

    pnl_t: np.ndarray            # [factor x scenario], C order: a factor's scenarios are contiguous
    to_factors: sp.csr_matrix    # [column x factor]
    unit_value: np.ndarray       # [column]
    prices: np.ndarray           # [asset]
    vols: np.ndarray             # [asset]
    marks: str                   # "night" or "intraday"


@dataclasses.dataclass(frozen=True)
class RowFigures:
    """A row's tail figures at ``margin.confidence`` (and its whole loss vector when it is a cached row)."""

    var: float
    es: float
    im: float
    tail: np.ndarray             # the m worst scenarios, worst first (equal losses: the lower index first)
    tail_loss: np.ndarray        # their losses
    loss: np.ndarray | None = None


@numba.njit(cache=True, nogil=True)
def _losses_above(loss, pnl_t, factors, weights, bound):  # pragma: no cover - compiled
    """Scenarios (ascending) and losses of ``loss - sum_j weights[j] pnl_t[factors[j]]`` that are >= ``bound``.

    One pass over the scenarios, nothing of size N written but the few
    losses kept: the what-if's only O(scenarios x trades) step.
    """
    n = loss.size
    index = np.empty(n, np.int64)
    value = np.empty(n, np.float64)
    k = 0
    for s in range(n):
        x = loss[s]
        for j in range(factors.size):
            x -= weights[j] * pnl_t[factors[j], s]
        if x >= bound:
            index[k] = s
            value[k] = x
            k += 1
    return index[:k].copy(), value[:k].copy()


@numba.njit(cache=True, nogil=True)
def _pair_above(loss_a, loss_b, pnl_t, factors, weights, bound_a, bound_b):  # pragma: no cover - compiled
    """:func:`_losses_above` of two rows under the same trades in one pass (each factor row read once)."""
    n = loss_a.size
    index_a, value_a = np.empty(n, np.int64), np.empty(n, np.float64)
    index_b, value_b = np.empty(n, np.int64), np.empty(n, np.float64)
    ka = kb = 0
    for s in range(n):
        xa, xb = loss_a[s], loss_b[s]
        for j in range(factors.size):
            d = weights[j] * pnl_t[factors[j], s]
            xa -= d
            xb -= d
        if xa >= bound_a:
            index_a[ka] = s
            value_a[ka] = xa
            ka += 1
        if xb >= bound_b:
            index_b[kb] = s
            value_b[kb] = xb
            kb += 1
    return index_a[:ka].copy(), value_a[:ka].copy(), index_b[:kb].copy(), value_b[:kb].copy()


@numba.njit(cache=True, nogil=True)
def _losses_at(loss, pnl_t, factors, weights, scenarios):  # pragma: no cover - compiled
    """The same losses as :func:`_losses_above` (same order of operations, so the same bits) at ``scenarios``."""
    out = np.empty(scenarios.size, np.float64)
    for i in range(scenarios.size):
        s = scenarios[i]
        x = loss[s]
        for j in range(factors.size):
            x -= weights[j] * pnl_t[factors[j], s]
        out[i] = x
    return out


class _Lru(collections.OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        if len(self) > self.size:
            self.popitem(last=False)
        return value


class Calculator:
    """What-if, max size, attribution and re-pricing on a loaded cube (:func:`~mcmargin.whatif.cube.load_cube`).

    Parameters
    ----------
    cube : xarray.Dataset
    cache_rows : int
        Pool and account loss vectors kept (each ``8 x n_scenarios`` bytes).
    """

    def __init__(self, cube: xr.Dataset, cache_rows: int = 256):
        self.cube = cube
        a = cube.attrs
        self.model = McEs(MarginParams(confidence=a["margin_confidence"], buffer=a["margin_buffer"],
                                       maintenance_ratio=a["maintenance_ratio"]))
        self.n = cube.sizes["scenario"]
        self.m = tail_size(self.n, self.model.params.confidence)
        self.accounts = strings(cube["account"])
        self.groups = strings(cube["group"])
        self.instruments = strings(cube["instrument"])
        self.assets = strings(cube["asset"])
        self.account_index = {k: i for i, k in enumerate(self.accounts)}
        self.group_index = {k: i for i, k in enumerate(self.groups)}
        self.column_index = {k: i for i, k in enumerate(self.instruments)}
        self.factors = strings(cube["factor"])
        self.columns = strings(cube["column"])
        self.group_of_account = np.searchsorted(self.groups, strings(cube["account_group"]))
        order = np.argsort(self.group_of_account, kind="stable")
        bounds = np.searchsorted(self.group_of_account[order], np.arange(self.groups.size + 1))
        self.members = [order[bounds[g]:bounds[g + 1]] for g in range(self.groups.size)]   # accounts in id order
        self.holdings = sp.csr_matrix(
            (cube["holding_quantity"].to_numpy(), (cube["holding_account"].to_numpy(),
                                                   cube["holding_column"].to_numpy())),
            shape=(self.accounts.size, self.columns.size))
        self.holdings.sort_indices()
        to_factors = sp.csr_matrix(
            (cube["to_factors_exposure"].to_numpy(), (cube["to_factors_column"].to_numpy(),
                                                      cube["to_factors_factor"].to_numpy())),
            shape=(self.columns.size, self.factors.size))
        to_factors.sort_indices()
        self.pricing = Pricing(pnl_t=np.ascontiguousarray(cube["factor_pnl"].to_numpy().astype(np.float64).T),
                               to_factors=to_factors, unit_value=cube["unit_value"].to_numpy().astype(np.float64),
                               prices=cube["price"].to_numpy().astype(np.float64),
                               vols=cube["vol"].to_numpy().astype(np.float64), marks="night")
        self._night_pnl_t = self.pricing.pnl_t               # never written: re-pricing copies it
        self._cache_rows = cache_rows
        self._reset_caches()
        # Scenarios of the pilot sample (strided: draws are independent of their index) and the rank in it
        # above which about 1.6 m of all scenarios are expected (docs/architecture.md, "What-if service").
        self._sample = np.arange(0, self.n, max(1, self.n // PILOT_SAMPLE), dtype=np.int64)
        self._sample_rank = max(1, math.ceil(1.6 * self.m * self._sample.size / self.n))
        # Compile (or load from numba's cache) the kernels now, not on the first request.
        zero = np.zeros(self.n)
        self.after_pair(((zero, None), (zero, None)), np.zeros(1, np.int64), np.zeros(1))

    # ------------------------------------------------------------------ rows
    def _reset_caches(self):
        self._pools = _Lru(self._cache_rows)
        self._accounts = _Lru(self._cache_rows)
        p = self.pricing
        self.equity = np.asarray(self.holdings @ p.unit_value)
        self.group_equity = np.bincount(self.group_of_account, weights=self.equity, minlength=self.groups.size)

    def figures(self, loss: np.ndarray, near: np.ndarray | None = None) -> RowFigures:
        """VaR, ES and ``im`` of a loss vector by :mod:`mcmargin.tails`' definitions (:meth:`after` with no trade)."""
        return self.after(loss, np.zeros(0, np.int64), np.zeros(0), near, keep=True)

    def after(self, loss, factors, weights, near=None, keep: bool = False) -> RowFigures:
        """Tail figures of ``loss - sum_j weights[j] x factor_pnl[:, factors[j]]``.

        The tail is the m largest losses; among losses equal to the m-th,
        the lower scenario indices (so drivers and attribution never depend on
        how a partition broke ties).  ``near``: m scenarios (the tail before
        the trade), whose smallest loss after it bounds the new m-th largest
        from below.  Only the losses at or above a bound are kept and
        partitioned: exact whenever at least m are, as every loss of the tail
        is then at least the bound.
        """
        m, pnl_t = self.m, self.pricing.pnl_t
        guess, safe = self._bounds(loss, factors, weights, near)
        index, values = _losses_above(loss, pnl_t, factors, weights, max(guess, safe))
        out = self._select(loss, factors, weights, index, values, safe)
        if keep:
            full = loss if factors.size == 0 else loss - np.asarray(weights) @ pnl_t[factors]
            out = dataclasses.replace(out, loss=full)
        return out

    def after_pair(self, rows, factors, weights):
        """:meth:`after` of two rows ``((loss, near), (loss, near))`` under the same trades, in one pass."""
        (loss_a, near_a), (loss_b, near_b) = rows
        ga, sa = self._bounds(loss_a, factors, weights, near_a)
        gb, sb = self._bounds(loss_b, factors, weights, near_b)
        ia, va, ib, vb = _pair_above(loss_a, loss_b, self.pricing.pnl_t, factors, weights, max(ga, sa), max(gb, sb))
        return (self._select(loss_a, factors, weights, ia, va, sa),
                self._select(loss_b, factors, weights, ib, vb, sb))

    def _bounds(self, loss, factors, weights, near):
        """``(guess, safe)`` lower bounds of the m-th largest loss after the trades.

        Any bound with at least m losses at or above it keeps the whole tail
        (the m-th largest is at least the bound), so a bound is tried and the
        count checked: first the loss a strided sample puts about 1.6 m
        scenarios above (``guess``), raised to ``safe``, the smallest loss after
        the trades of the m scenarios ``near`` (the tail before them), which
        always holds.
        """
        pnl_t, sample = self.pricing.pnl_t, self._sample
        got = _losses_at(loss, pnl_t, factors, weights, sample)
        j = min(sample.size, self._sample_rank)
        guess = got[np.argpartition(got, sample.size - j)[sample.size - j:]].min()
        safe = (_losses_at(loss, pnl_t, factors, weights, near).min() if near is not None and near.size == self.m
                else -np.inf)
        return guess, safe

    def _select(self, loss, factors, weights, index, values, safe) -> RowFigures:
        """The row's figures from the losses kept above a bound; the bound lowered where fewer than m were kept."""
        m, pnl_t = self.m, self.pricing.pnl_t
        if index.size < m:
            index, values = _losses_above(loss, pnl_t, factors, weights, safe)
        if index.size < m:                                   # only if rounding moved a loss across the bound
            index, values = _losses_above(loss, pnl_t, factors, weights, -np.inf)
        threshold = values[np.argpartition(values, values.size - m)[values.size - m:]].min()
        above = values > threshold
        at = np.flatnonzero(values == threshold)[:m - int(above.sum())]
        pick = np.concatenate([np.flatnonzero(above), at])
        tail, tail_loss = index[pick], values[pick]
        order = np.lexsort((tail, -tail_loss))                 # worst first; ties: lower index first
        tail, tail_loss = tail[order], tail_loss[order]
        var, es = var_es(tail_loss[::-1][None, :], m)
        es = float(es[0])
        return RowFigures(float(var[0]), es, float(self.model.im_from_es(es)), tail, tail_loss)

    def trade_factors(self, legs):
        """``(factors, weights)`` of trades ``[(column, quantity)]``: a unit's factor exposures times the quantity."""
        tf = self.pricing.to_factors
        factors, weights = [], []
        for c, q in legs:
            lo, hi = tf.indptr[c], tf.indptr[c + 1]
            factors.append(tf.indices[lo:hi])
            weights.append(q * tf.data[lo:hi])
        return (np.concatenate(factors).astype(np.int64) if factors else np.zeros(0, np.int64),
                np.concatenate(weights).astype(np.float64) if weights else np.zeros(0))

    def _loss_of(self, holdings: sp.csr_matrix) -> np.ndarray:
        exposure = holdings @ self.pricing.to_factors          # netted to one delta per factor first, as the engine
        exposure.eliminate_zeros()
        return -np.asarray(exposure @ self.pricing.pnl_t).ravel() + 0.0

    def account_row(self, a: int) -> RowFigures:
        return self._accounts.get_or(a, lambda: self.figures(self._loss_of(self.holdings[a])))

    def pool_row(self, g: int) -> RowFigures:
        """The pool's losses and figures (a singleton pool is its account's row)."""
        members = self.members[g]
        if members.size == 1:
            return self.account_row(int(members[0]))

        def rebuild():
            pick = sp.csr_matrix((np.ones(members.size), (np.zeros(members.size, dtype=int), members)),
                                 shape=(1, self.accounts.size))
            return self.figures(self._loss_of(pick @ self.holdings))

        return self._pools.get_or(g, rebuild)

    def column_pnl(self, c: int) -> np.ndarray:
        """P&L of one unit of position column ``c`` in every scenario."""
        return np.asarray(self.pricing.to_factors[c] @ self.pricing.pnl_t).ravel()

    # --------------------------------------------------------------- lookups
    def account_of(self, account=None, group=None) -> int:
        """Index of ``account``, or of ``group``'s first member (in account id order)."""
        if (account is None) == (group is None):
            raise BadRequest("give exactly one of account and group")
        if account is not None:
            if account not in self.account_index:
                raise UnknownName("account", account)
            return self.account_index[account]
        if group not in self.group_index:
            raise UnknownName("group", group)
        return int(self.members[self.group_index[group]][0])

    def instrument_column(self, instrument) -> int:
        if instrument not in self.column_index:
            raise UnknownName("instrument", instrument)
        return self.column_index[instrument]

    @staticmethod
    def check_quantity(q, where: str = "quantity") -> float:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q):
            raise BadRequest(f"{where} must be a finite number, got {q!r}")
        if abs(q) > MAX_QUANTITY:
            raise BadRequest(f"{where} {q:g} is larger than {MAX_QUANTITY:g} contracts in size")
        return float(q)

    # ---------------------------------------------------------------- what-if
    def whatif(self, trades, account=None, group=None) -> dict:
        """The account's and its pool's figures before and after ``trades`` ((instrument, quantity) pairs)."""
        a = self.account_of(account, group)
        g = int(self.group_of_account[a])
        if not trades:
            raise BadRequest("trades is empty: give at least one {instrument, quantity}")
        legs = [(self.instrument_column(i), self.check_quantity(q, f"trades[{k}].quantity"))
                for k, (i, q) in enumerate(trades)]
        value = sum(q * self.pricing.unit_value[c] for c, q in legs)
        factors, weights = self.trade_factors(legs)
        acc, pool = self.account_row(a), self.pool_row(g)
        if self.members[g].size == 1:
            acc_after = pool_after = self.after(acc.loss, factors, weights, acc.tail)
        else:
            acc_after, pool_after = self.after_pair(((acc.loss, acc.tail), (pool.loss, pool.tail)), factors, weights)
        mr = self.model.params.maintenance_ratio
        equity_after, group_equity_after = self.equity[a] + value, self.group_equity[g] + value
        return {
            "account": str(self.accounts[a]), "group": str(self.groups[g]), "marks": self.pricing.marks,
            "equity_before": float(self.equity[a]), "equity_after": float(equity_after),
            "es_before": acc.es, "es_after": acc_after.es,
            "im_before": acc.im, "im_after": acc_after.im, "mm_after": acc_after.im * mr,
            "margin_call_after": max(0.0, acc_after.im - equity_after),
            "group_equity_after": float(group_equity_after),
            "group_es_before": pool.es, "group_es_after": pool_after.es,
            "group_im_before": pool.im, "group_im_after": pool_after.im, "group_mm_after": pool_after.im * mr,
            "group_margin_call_after": max(0.0, pool_after.im - group_equity_after),
            "marginal_im": pool_after.im - pool.im,
            "drivers": self.drivers(pool_after),
        }

    def drivers(self, row: RowFigures, k: int = DRIVERS) -> list:
        """The ``k`` worst scenarios of a row, worst first (equal losses: the lower scenario index first)."""
        return [{"scenario": int(i), "loss": float(x)} for i, x in zip(row.tail[:k], row.tail_loss[:k])]

    def max_size(self, instrument, side: str, account=None, group=None, lot: float = 1.0) -> dict:
        """The largest number of lots of ``instrument`` the account can ``side`` before its pool's ``im`` exceeds
        its equity (bisection on the exact requirement: ``max_quantity`` lots keep the pool out of a call, one lot
        more puts it in one)."""
        if side not in ("buy", "sell"):
            raise BadRequest(f"side must be 'buy' or 'sell', got {side!r}")
        lot = self.check_quantity(lot, "lot")
        if lot <= 0:
            raise BadRequest(f"lot must be positive, got {lot:g}")
        a = self.account_of(account, group)
        g = int(self.group_of_account[a])
        c = self.instrument_column(instrument)
        step = lot if side == "buy" else -lot
        factors, weights = self.trade_factors([(c, step)])
        v = step * self.pricing.unit_value[c]
        pool = self.pool_row(g)
        equity = self.group_equity[g]

        def state(k):
            im = self.after(pool.loss, factors, k * weights, pool.tail).im if k else pool.im
            return im, equity + k * v

        def in_call(k):
            im, eq = state(k)
            return im > eq

        out = {"account": str(self.accounts[a]), "group": str(self.groups[g]), "instrument": instrument, "side": side,
               "lot": lot, "marks": self.pricing.marks}
        if in_call(0):
            im, eq = state(0)
            return {**out, "max_quantity": 0.0, "bounded": True, "already_in_call": True,
                    "group_im_at_max": im, "group_equity_at_max": eq, "group_im_one_more": None}
        lo, hi = 0, 1
        limit = int(MAX_QUANTITY // lot)
        while not in_call(hi):
            lo = hi
            if hi >= limit:
                im, eq = state(lo)
                return {**out, "max_quantity": lo * lot, "bounded": False, "already_in_call": False,
                        "group_im_at_max": im, "group_equity_at_max": eq, "group_im_one_more": None}
            hi = min(2 * hi, limit)
        while hi - lo > 1:                 # invariant: lo keeps the pool out of a call, hi puts it in one
            mid = (lo + hi) // 2
            if in_call(mid):
                hi = mid
            else:
                lo = mid
        im, eq = state(lo)
        return {**out, "max_quantity": lo * lot, "bounded": True, "already_in_call": False,
                "group_im_at_max": im, "group_equity_at_max": eq, "group_im_one_more": state(lo + 1)[0]}

    # ------------------------------------------------------------ attribution
    def _attribution(self, row: RowFigures, holdings: sp.csr_matrix, owners: np.ndarray) -> dict:
        """Euler allocation of ES over the row's m tail scenarios (equal losses: the lower index first)."""
        tail = row.tail
        factor_mean = self.pricing.pnl_t[:, tail].mean(axis=1)              # [factor]
        column_mean = np.asarray(self.pricing.to_factors @ factor_mean)     # [column]
        h = holdings.tocoo()
        contrib = -h.data * column_mean[h.col]
        exposure = np.asarray((holdings.sum(axis=0) @ self.pricing.to_factors)).ravel()
        factor_contrib = -exposure * factor_mean
        kinds = np.where(h.col < self.instruments.size, "instrument", "collateral")
        return {
            "es": row.es,
            "es_contribution": [{"account": self.accounts[owners[r]], "kind": k, "name": self.columns[c],
                                 "quantity": float(q), "contribution": float(x)}
                                for r, c, q, x, k in zip(h.row, h.col, h.data, contrib, kinds)],
            "factor_contribution": [{"factor": self.factors[f], "contribution": float(factor_contrib[f])}
                                    for f in np.flatnonzero(exposure)],
            "tail_scenarios": self.drivers(row),
        }

    def _night(self, prefix: str, i: int, dim: str) -> dict:
        out = {}
        for name in self.cube.data_vars:
            if name.startswith(f"night_{prefix}") and self.cube[name].dims == (dim,):
                key = name[len("night_"):]
                if prefix == "" and key.startswith("group_"):
                    continue
                out[key] = float(self.cube[name].values[i])
        return out

    def account(self, account) -> dict:
        """The night's figures of ``account`` (from the cube), its figures now, and the attribution of its ES."""
        if account not in self.account_index:
            raise UnknownName("account", account)
        a = self.account_index[account]
        row = self.account_row(a)
        return {"account": account, "group": self.groups[self.group_of_account[a]], "marks": self.pricing.marks,
                "night": self._night("", a, "account"),
                "now": {"equity": float(self.equity[a]), "var": row.var, "es": row.es, "im": row.im,
                        "mm": row.im * self.model.params.maintenance_ratio,
                        "margin_call": max(0.0, row.im - float(self.equity[a]))},
                "attribution": self._attribution(row, self.holdings[a], np.array([a]))}

    def group(self, group) -> dict:
        """The night's figures of ``group``, its figures now, and the attribution of its ES to every holding."""
        if group not in self.group_index:
            raise UnknownName("group", group)
        g = self.group_index[group]
        members = self.members[g]
        row = self.pool_row(g)
        eq = float(self.group_equity[g])
        return {"group": group, "members": [self.accounts[i] for i in members], "marks": self.pricing.marks,
                "night": self._night("group_", g, "group"),
                "now": {"equity": eq, "var": row.var, "es": row.es, "im": row.im,
                        "mm": row.im * self.model.params.maintenance_ratio, "margin_call": max(0.0, row.im - eq)},
                "attribution": self._attribution(row, self.holdings[members], members)}

    # ------------------------------------------------------------- re-pricing
    def reprice(self, prices=None, vols=None) -> dict:
        """Re-centre on intraday marks: revalue every instrument on the stored shocks at these prices and vols.

        ``prices`` and ``vols`` map assets to their intraday price (USD, > 0)
        and implied vol; assets left out keep the night's marks, so ``{}``
        returns to the night.  An asset's vol cannot move between zero (cash:
        no risk factor) and positive.  Returns the time the re-pricing took.
        """
        t0 = time.perf_counter()
        night_p, night_v = self.cube["price"].to_numpy(), self.cube["vol"].to_numpy()
        p, v = night_p.astype(float).copy(), night_v.astype(float).copy()
        index = {k: i for i, k in enumerate(self.assets)}
        for name, given, target, positive in (("prices", prices, p, True), ("vols", vols, v, False)):
            for asset, x in (given or {}).items():
                if asset not in index:
                    raise UnknownName("asset", asset)
                x = self.check_quantity(x, f"{name}[{asset}]")
                low = PRICE_RANGE[0] if positive else (VOL_RANGE[0] if night_v[index[asset]] > 0 else 0.0)
                high = PRICE_RANGE[1] if positive else VOL_RANGE[1]
                if not low <= x <= high:
                    raise BadRequest(f"{name}[{asset}] = {x:g} is out of range ({low:g} to {high:g})")
                if not positive and (x > 0) != (night_v[index[asset]] > 0):
                    raise BadRequest(f"vols[{asset}] = {x:g}: a cash asset (vol 0) stays cash and a risky one "
                                     "stays risky (the factor map would change)")
                target[index[asset]] = x
        marks = "night" if np.array_equal(p, night_p) and np.array_equal(v, night_v) else "intraday"
        compiled = compile_book(instruments_book(self.cube, p, v), self.cube.attrs["horizon_calendar_days"],
                                self.cube.attrs["pricing_rate"], row_kinds=("accounts",))
        if not np.array_equal(compiled.instruments.astype(str), self.instruments):
            raise RuntimeError("re-pricing reordered the instruments")     # compile_book's order is fixed: a bug
        now = self.pricing
        if marks == "night":
            pnl_t = self._night_pnl_t                        # the cube's own factor P&L, as loaded
        else:
            # Asset factors (expm1 of the shock) never change; an option is priced again only if its
            # underlying's price or vol moved since the marks in force.
            moved = np.flatnonzero((p != now.prices) | (v != now.vols))
            o = compiled.options
            redo = np.flatnonzero(np.isin(o.asset, moved))
            pnl_t = now.pnl_t.copy()
            if redo.size:
                sub = dataclasses.replace(o, **{f: getattr(o, f)[redo] for f in (
                    "asset", "spot", "strike", "expiry", "expiry_after", "vol", "is_call", "size", "value")})
                nb = get_backend("numpy")
                priced = sub.on(nb)
                shock, vol_shock = self.cube["shock"].to_numpy(), self.cube["vol_shock"].to_numpy()
                rows = self.assets.size + redo
                for s in range(0, self.n, REVALUE_BLOCK):
                    part = np.asarray(option_family.revalue(nb, priced, shock[s:s + REVALUE_BLOCK],
                                                            vol_shock[s:s + REVALUE_BLOCK]))
                    pnl_t[rows, s:s + part.shape[0]] = part.T
        self.pricing = Pricing(pnl_t=pnl_t, to_factors=compiled.to_factors, unit_value=compiled.unit_value,
                               prices=p, vols=v, marks=marks)
        self._reset_caches()
        return {"marks": marks, "prices": dict(zip(self.assets.tolist(), p.tolist())),
                "vols": dict(zip(self.assets.tolist(), v.tolist())), "n_scenarios": self.n,
                "n_options": int(compiled.options.n), "options_repriced": int(redo.size) if marks != "night" else 0,
                "latency_ms": 1e3 * (time.perf_counter() - t0)}
