"""Why a pool's margin is what it is: Euler allocation of its ES, and its worst scenarios.

docs/methodology.md, section 16.  With N scenarios and q = ``margin.confidence``
a pool's ES is the mean of its m = ``tail_size(N, q)`` largest losses
(:mod:`mcmargin.tails`), over its *tail scenarios* T (ranked by loss, equal
losses by the lower scenario index first).  The pool's loss in scenario s is
the sum of its holdings' losses, so

    ES = sum over holdings h of  c_h,   c_h = -(1/m) sum over s in T of pnl_h(s),

the Euler allocation (ES is positively homogeneous; c_h is its derivative in
the holding's size times the size, the tail held fixed).  A holding's P&L is
its quantity x its column's USD exposure to one risk factor x that factor's
P&L, so only the sums of factor P&L over T are needed; the engine takes them
in the pass that finds T (:mod:`mcmargin.engine.attribution`,
``TailResult.tail_sums``).

Functions, for the nightly dataset and for callers with their own loss
vectors (a what-if on stored factor P&L):

- :func:`request`: what to ask the engine to keep (:class:`~mcmargin.tails.TailAttribution`);
- :func:`holdings`: the pools' holdings in the dataset's ``holding`` order;
- :func:`holding_contributions`, :func:`factor_contributions`, :func:`tail_scenarios`: from a run's tails;
- :func:`contributions_from_pnl`: the same allocation from a pool's holdings and a full factor P&L matrix;
- :func:`dataset_variables`: ``es_contribution``, ``factor_contribution``, ``tail_scenarios`` and coordinates.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError
from ..tails import TailAttribution, TailResult, rank_order, tail_size
from ..output.zarr_strings import object_strings

#: Worst scenarios reported per pool by default (``output.tail_scenarios``).
TAIL_SCENARIOS = 5

METHODOLOGY = ("Euler allocation of group_es at margin.confidence: minus the mean of the holding's P&L over the "
               "pool's tail scenarios (docs/methodology.md section 16)")


@dataclasses.dataclass(frozen=True)
class Holdings:
    """Every nonzero position and collateral amount of every account, ordered by pool, account, column.

    Attributes
    ----------
    group, account, column : numpy.ndarray of int64 [H]
        Index of the pool (into ``book.groups``), of the account, of the column
        (instruments first, then collateral assets).
    quantity : numpy.ndarray [H]
        Contracts or collateral amount.
    factor : numpy.ndarray of int64 [H]
        The risk factor the column loads on (-1: none, e.g. cash collateral).
    weight : numpy.ndarray [H]
        USD exposure of one unit of the column to that factor.
    asset : numpy.ndarray of int64 [H]
        Market asset the holding is attributed to (the underlying; the collateral's asset).
    """

    group: np.ndarray
    account: np.ndarray
    column: np.ndarray
    quantity: np.ndarray
    factor: np.ndarray
    weight: np.ndarray
    asset: np.ndarray


def column_factors(book):
    """``(factor, weight)`` per column: the one factor each column loads on (-1: none) and its USD exposure."""
    tf = book.to_factors.tocsr()
    counts = np.diff(tf.indptr)
    if (counts > 1).any():
        raise ValueError("a column loads on more than one risk factor: the attribution assumes one")
    factor = np.full(tf.shape[0], -1, dtype=np.int64)
    weight = np.zeros(tf.shape[0])
    has = counts == 1
    factor[has] = tf.indices[tf.indptr[:-1][has]]
    weight[has] = tf.data[tf.indptr[:-1][has]]
    return factor, weight


def factor_assets(book) -> np.ndarray:
    """Market asset of every risk factor: the asset itself, or an option's underlying."""
    n_assets = book.assets.size
    return np.concatenate([np.arange(n_assets), np.asarray(book.options.asset, dtype=np.int64)])


def holdings(book) -> Holdings:
    """The accounts' nonzero holdings, ordered by pool, then account, then column (the ``holding`` dimension)."""
    h = book.holdings[book.rows("accounts")].tocsr()
    if not h.has_sorted_indices:
        h = h.copy()
        h.sort_indices()
    # Accounts in pool order (by account within a pool), each with its row of columns: a gather of whole
    # CSR rows, not a sort of every holding.
    by_pool = np.argsort(book.group_of_account, kind="stable")
    counts = np.diff(h.indptr)[by_pool]
    first = np.repeat(h.indptr[:-1][by_pool] - (np.cumsum(counts) - counts), counts)
    at = first + np.arange(first.size)
    account, column, quantity = np.repeat(by_pool, counts).astype(np.int64), h.indices[at].astype(np.int64), h.data[at]
    nonzero = quantity != 0
    account, column, quantity = account[nonzero], column[nonzero], quantity[nonzero]
    group = book.group_of_account[account].astype(np.int64)
    col_factor, col_weight = column_factors(book)
    factor = col_factor[column]
    n_ins = book.n_instruments
    asset = np.where(column >= n_ins, column - n_ins, 0)
    held = factor >= 0
    asset[held] = factor_assets(book)[factor[held]]
    positions = (column < n_ins) & ~held              # an instrument on no factor: none today; kept for safety
    if positions.any():
        raise ValueError("an instrument column loads on no risk factor")
    return Holdings(group, account, column, quantity, factor, col_weight[column], asset)


def request(book, confidence: float, top: int = TAIL_SCENARIOS, n_scenarios: int | None = None,
            hold: Holdings | None = None) -> TailAttribution:
    """The :class:`~mcmargin.tails.TailAttribution` of every pool's row at ``confidence``.

    Each pool row's pattern is the set of factors its members' holdings load
    on (before netting: a hedge that nets to zero exposure still has two
    holdings to attribute).  With ``n_scenarios``, ``top`` is checked
    against it (``output.tail_scenarios``; it may exceed the tail size m:
    the engine then keeps that many worst losses per row).
    """
    if n_scenarios is not None and top > n_scenarios:
        raise ConfigError("output.tail_scenarios", f"{top} exceeds the run's {n_scenarios:,} scenarios")
    n_rows, n_factors = book.exposures.shape
    hold = holdings(book) if hold is None else hold
    loads = hold.factor >= 0
    rows = book.group_row[hold.group[loads]]
    pattern = sp.csr_matrix((np.ones(int(loads.sum())), (rows, hold.factor[loads])), shape=(n_rows, n_factors))
    pattern.sum_duplicates()
    pattern.sort_indices()
    pattern.data[:] = 1.0
    explained = np.zeros(n_rows, dtype=bool)
    explained[book.group_row] = True
    return TailAttribution(float(confidence), explained, pattern, int(top))


def _tail_means(book, result: TailResult, hold: Holdings) -> np.ndarray:
    """Per holding: the mean over its pool's tail scenarios of its factor's P&L (0 for a holding on no factor)."""
    spec = result.attribution
    pattern = spec.pattern
    m = tail_size(result.n_scenarios, spec.confidence)
    n_factors = pattern.shape[1]
    keys = np.repeat(np.arange(pattern.shape[0], dtype=np.int64), np.diff(pattern.indptr)) * n_factors
    keys += pattern.indices
    loads = hold.factor >= 0
    want = book.group_row[hold.group[loads]].astype(np.int64) * n_factors + hold.factor[loads]
    at = np.searchsorted(keys, want)
    if not (at < keys.size).all() or not (keys[np.minimum(at, keys.size - 1)] == want).all():
        raise ValueError("the run's attribution pattern does not cover this book's holdings")
    out = np.zeros(hold.group.size)
    out[loads] = result.tail_sums[at] / m
    return out


def holding_contributions(book, result: TailResult, hold: Holdings | None = None) -> np.ndarray:
    """Euler contribution of each holding (:func:`holdings` order) to its pool's ES at the explained confidence.

    ``c_h = -(quantity x weight) x mean over the pool's tail of the factor's P&L`` (USD, positive = adds to ES).
    """
    hold = holdings(book) if hold is None else hold
    return -(hold.quantity * hold.weight) * _tail_means(book, result, hold) + 0.0     # + 0.0: no -0.0 for cash


def factor_contributions(book, contributions: np.ndarray, hold: Holdings) -> np.ndarray:
    """``[group x asset]``: the holdings' contributions summed per pool and market asset."""
    n_assets = book.assets.size
    flat = np.bincount(hold.group * n_assets + hold.asset, weights=contributions,
                       minlength=book.groups.size * n_assets)
    return flat.reshape(book.groups.size, n_assets)


def tail_scenarios(book, result: TailResult) -> np.ndarray:
    """``[group x top]`` int64: each pool's worst scenarios in rank order (worst first)."""
    return result.tail_top[book.group_row]


def contributions_from_pnl(exposure_holdings, quantity, weight, factor, factor_pnl, confidence: float,
                           top: int = TAIL_SCENARIOS):
    """The allocation of one pool's ES from a full factor P&L matrix (e.g. stored scenario P&L and a what-if book).

    Parameters
    ----------
    exposure_holdings : scipy.sparse matrix or array [1 x factors]
        The pool's factor exposures (USD per unit of factor P&L); its loss is ``-(E @ pnl.T)``.
    quantity, weight : numpy.ndarray [H]
        Each holding's quantity and its column's USD exposure to its factor (:func:`column_factors`).
    factor : numpy.ndarray of int64 [H]
        Each holding's factor (-1: none).
    factor_pnl : numpy.ndarray [scenarios x factors]
    confidence : float

    Returns
    -------
    (es, contributions [H], tail_top [top])
        The pool's ES (mean of its m largest losses), each holding's
        contribution, and its ``top`` worst scenarios in rank order.
    """
    pnl = np.asarray(factor_pnl, dtype=float)
    loss = -np.asarray(sp.csr_matrix(exposure_holdings) @ pnl.T).ravel()
    m = tail_size(loss.size, confidence)
    tail = rank_order(loss, m)
    es = np.sort(loss[tail]).sum() / m
    means = np.zeros(len(quantity))
    loads = np.asarray(factor) >= 0
    means[loads] = pnl[np.sort(tail)][:, np.asarray(factor)[loads]].sum(axis=0) / m
    return es, -(np.asarray(quantity) * np.asarray(weight)) * means, tail[:top]


def dataset_variables(book, result: TailResult, hold: Holdings | None = None) -> tuple[dict, dict]:
    """``(variables, coords)`` of the attribution for the dataset (README "Outputs"; methodology section 16);
    ``hold``: :func:`holdings` of ``book``, if the caller has them already."""
    hold = holdings(book) if hold is None else hold
    contributions = holding_contributions(book, result, hold)
    spec = result.attribution
    # The holding labels are gathered as objects (one pointer each, shared with the book's ids): as NumPy
    # unicode they would be 1.4 GB of fresh memory at a million accounts; the writer encodes each shared
    # object once (mcmargin.output.zarr_strings.RunCoded).
    groups, accounts = np.asarray(book.groups, dtype=object), np.asarray(book.accounts, dtype=object)
    n_ins = book.n_instruments
    column_label = np.concatenate([book.instruments, book.assets]).astype(object)
    kind_label = np.array(["position", "collateral"], dtype=object)
    q = {"confidence": spec.confidence}
    variables = {
        "es_contribution": (("holding",), contributions, {
            "long_name": "Euler contribution of the holding to its pool's group_es at margin.confidence: minus the "
                         "mean of its P&L over the pool's tail scenarios (sums to group_es)",
            "units": "USD", "methodology": METHODOLOGY, **q}),
        "factor_contribution": (("group", "asset"), factor_contributions(book, contributions, hold), {
            "long_name": "es_contribution of the pool's holdings summed per market asset (options: their "
                         "underlying; collateral: its asset)", "units": "USD", "methodology": METHODOLOGY, **q}),
        "tail_scenarios": (("group", "tail_rank"), tail_scenarios(book, result), {
            "long_name": "index of the pool's worst scenarios (tail_rank 1 = largest loss; equal losses by the "
                         "lower index first)", "units": "1", **q}),
    }
    coords = {
        "holding": ("holding", np.arange(hold.group.size),
                    {"long_name": "holding: one position or collateral amount of one account", "units": "1"}),
        "holding_group": object_strings("holding", groups[hold.group], {"long_name": "pool (margin group) of the holding",
                                                          "units": "1"}),
        "holding_account": object_strings("holding", accounts[hold.account], {"long_name": "account of the holding", "units": "1"}),
        "holding_instrument": object_strings("holding", column_label[hold.column],
                               {"long_name": "instrument of the position, or asset of the collateral", "units": "1"}),
        "holding_kind": object_strings("holding", kind_label[(hold.column >= n_ins).view(np.uint8)],
                         {"long_name": "position or collateral", "units": "1"}),
        "holding_quantity": ("holding", hold.quantity, {"long_name": "contracts held, or collateral amount",
                                                         "units": "contracts or units of the asset"}),
        "tail_rank": ("tail_rank", np.arange(1, spec.top + 1),
                      {"long_name": "rank of a tail scenario (1 = worst)", "units": "1"}),
    }
    return variables, coords
