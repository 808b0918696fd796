"""Margin rules of the ``mc_es`` model (docs/methodology.md, section 5).

Per account, at confidence q = ``margin.confidence``:

- ``im = max(0, ES_q) x (1 + buffer)``, ``mm = im x maintenance_ratio``;
- ``isolated_im = (1 + buffer) x sum over positions of max(0, ES_q of the
  position alone)``, collateral excluded; a position's ES is |qty| times
  the ES of one long or one short unit (ES is positively homogeneous);
- ``collateral_im = (1 + buffer) x sum over collateral assets of
  max(0, ES_q of the amount alone)``, from the ES of one unit of the asset
  held long (or short, for a negative amount): the requirement the
  collateral would carry if it were margined as a position.  ``im`` is
  taken of positions *and* collateral together, ``isolated_im`` of
  positions only, so an account whose collateral is risky (BTC rather
  than USDT) can have ``im > isolated_im``: a negative ``netting_benefit``
  that is collateral risk, not a failure of netting;
- ``equity`` = collateral at market value (no haircut: collateral risk is
  in the simulation, as in OCC STANS) + value of positions;
- ``margin_call = max(0, im - equity)``.

A margin group's loss is the sum of its members' losses; its figures follow
the same formulas.

Add-ons, each off by default and each its own variable (docs/methodology.md,
section 6): a liquidity / concentration add-on, a bid-ask close-out cost
and a cap on the diversification benefit; ``im`` (and ``group_im``) is the
ES requirement plus the add-ons that are on.  ``margin.mc_es.liquidation_price:
true`` (default false) adds liquidation prices against ``group_mm``
(docs/methodology.md, section 10).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from ..common.settings import flag, real_number
from ..instruments.black_scholes import black_scholes_delta
from .base import ROUNDING_FLOOR, MarginInputs, MarginModel, MarginParams, Requirement, _da, margin_saving, register

METHODOLOGY = "mc_es: Monte Carlo expected shortfall (docs/methodology.md section 5)"

__all__ = ["METHODOLOGY", "ROUNDING_FLOOR", "MarginParams", "McEs", "margin_saving"]


@dataclasses.dataclass(frozen=True)
class AddOns:
    """The ``mc_es`` add-ons (docs/methodology.md, section 6); all off by default."""

    liquidity: bool = False              # margin.mc_es.liquidity_addon
    liquidity_coefficient: float = 0.1   # k: cost of closing one ADV beyond the free part, as a share of price
    liquidity_free_fraction: float = 0.1  # f: the share of ADV closed at no extra cost
    closeout: bool = False               # margin.mc_es.closeout_cost
    max_netting: float | None = None     # share of isolated_im - im cross-margin may save (None: no cap)

    @classmethod
    def from_config(cls, own: dict) -> "AddOns":
        """Reads (and removes) the add-on keys of ``margin.mc_es``."""
        key = "margin.mc_es."
        out = cls(
            liquidity=flag(own.pop("liquidity_addon", False), key + "liquidity_addon"),
            liquidity_coefficient=real_number(own.pop("liquidity_coefficient", 0.1), key + "liquidity_coefficient",
                                              0.0),
            liquidity_free_fraction=real_number(own.pop("liquidity_free_fraction", 0.1),
                                                key + "liquidity_free_fraction", 0.0),
            closeout=flag(own.pop("closeout_cost", False), key + "closeout_cost"),
            max_netting=real_number(own.pop("max_netting", None), key + "max_netting", 0.0, 1.0, allow_none=True))
        return out


@register("mc_es")
class McEs(MarginModel):
    """Monte Carlo expected shortfall of every account and pool; standalone requirements from unit tails."""

    def __init__(self, params: MarginParams = MarginParams(), add_ons: AddOns = AddOns()):
        super().__init__(params)
        self.add_ons = add_ons

    @classmethod
    def from_config(cls, params, own):
        own = dict(own)
        add_ons = AddOns.from_config(own)
        liquidation = flag(own.pop("liquidation_price", False), "margin.mc_es.liquidation_price")
        super().from_config(params, own)          # refuses any key left
        model = cls(params, add_ons)
        model.liquidation_price = liquidation
        return model

    rows = ("accounts", "groups", "long", "short", "collateral_long", "collateral_short")
    reduction = "tail"
    variables = ("collateral_im", "unit_es", "collateral_unit_es")
    methodology = METHODOLOGY

    def requirements(self, inputs: MarginInputs) -> Requirement:
        book, result, params = inputs.book, inputs.tails, self.params
        confidences = list(result.confidences)
        if params.confidence not in confidences:
            raise ValueError("the tails were not computed at margin.confidence")
        k = confidences.index(params.confidence)
        es = result.es
        rows = book.rows
        acc, grp = rows("accounts"), book.group_row
        scale = 1.0 + params.buffer
        account_holdings = book.holdings[acc]
        im = self.im_from_es(es[acc, k])

        # Standalone requirement per unit, long and short, then per position.
        unit_es = np.stack([es[rows("long"), k], es[rows("short"), k]], axis=1)     # [instrument x side]
        # Entries in row order, columns ascending within a row (as the column slices' COO would give them,
        # without slicing a million-row matrix by columns twice).
        held = account_holdings.tocoo()
        position = held.col < book.n_instruments
        row, col, amount = held.row[position], held.col[position], held.data[position]
        side = (amount < 0).astype(int)
        per_position = np.abs(amount) * np.maximum(0.0, unit_es[col, side])
        isolated = np.bincount(row, weights=per_position, minlength=book.accounts.size) * scale

        # The collateral alone, from one long / short unit of each asset (ES is positively homogeneous).
        unit_coll = np.stack([es[rows("collateral_long"), k], es[rows("collateral_short"), k]], axis=1)
        row, col, amount = held.row[~position], held.col[~position] - book.n_instruments, held.data[~position]
        cside = (amount < 0).astype(int)
        per_asset = np.abs(amount) * np.maximum(0.0, unit_coll[col, cside])
        collateral_im = np.bincount(row, weights=per_asset, minlength=book.accounts.size) * scale

        group_im = self.im_from_es(es[grp, k])
        variables = {
            "collateral_im": _da(collateral_im, ("account",),
                                 "initial margin of the account's collateral margined alone (positions excluded)"),
            "unit_es": _da(unit_es, ("instrument", "side"), "standalone ES of one contract at margin.confidence"),
            "collateral_unit_es": _da(unit_coll, ("asset", "side"),
                                      "standalone ES of one unit of the asset held as collateral at margin.confidence"),
        }
        im, group_im = self._add_ons(inputs, im, group_im, isolated, variables)
        return Requirement(im, group_im, isolated_im=isolated, variables=variables,
                           coords={"side": np.array(["long", "short"])})

    def im_from_es(self, es):
        """The ES requirement of rows from their ES at ``margin.confidence``: ``max(0, ES_q) x (1 + buffer)``
        (before add-ons; the what-if service applies it to a pool's rebuilt losses)."""
        return np.maximum(0.0, es) * (1.0 + self.params.buffer)

    def pool_limit_from_tails(self, inputs: MarginInputs):
        """group_im = (1 + buffer) max(0, ES_q) + the add-ons known from the book (none with a netting cap,
        which depends on other rows' tails)."""
        if self.add_ons.max_netting is not None:
            return None
        return (self.params.confidence, 1.0 + self.params.buffer,
                self._book_add_ons(inputs)[inputs.book.group_row])

    #: The add-ons that depend on the book alone: variable name -> long_name.
    BOOK_ADD_ONS = {
        "mc_es_liquidity_addon": "liquidity / concentration add-on: square-root cost of the net delta beyond a "
                                 "free share of average daily volume",
        "mc_es_closeout_cost": "bid-ask close-out cost: half the relative spread of each net position's value",
    }

    def _book_add_on_parts(self, inputs) -> dict:
        """Per holdings row, each add-on that is on and depends on the book alone (liquidity, close-out)."""
        a, book = self.add_ons, inputs.book
        parts = {}
        if a.liquidity:
            parts["mc_es_liquidity_addon"] = liquidity_addon(book, inputs.portfolio, a.liquidity_coefficient,
                                                             a.liquidity_free_fraction)
        if a.closeout:
            parts["mc_es_closeout_cost"] = closeout_cost(book, inputs.portfolio)
        return parts

    def _book_add_ons(self, inputs) -> np.ndarray:
        """Per holdings row, the sum of :meth:`_book_add_on_parts`."""
        return sum(self._book_add_on_parts(inputs).values(), np.zeros(inputs.book.exposures.shape[0]))

    def _add_ons(self, inputs, im, group_im, isolated, variables):
        """``im`` and ``group_im`` plus the add-ons that are on; each add-on is also written as a variable."""
        a, book = self.add_ons, inputs.book
        rows = {"": book.rows("accounts"), "group_": book.group_row}
        dims = {"": ("account",), "group_": ("group",)}
        extra = {"": np.zeros_like(im), "group_": np.zeros_like(group_im)}
        if a.max_netting is not None:
            group_isolated = np.bincount(book.group_of_account, weights=isolated, minlength=book.groups.size)
            for p, (iso, base) in {"": (isolated, im), "group_": (group_isolated, group_im)}.items():
                cap = np.maximum(0.0, (1.0 - a.max_netting) * (iso - base))
                variables[f"{p}mc_es_netting_cap"] = _da(cap, dims[p], "add-on capping the netting benefit at "
                                                         "margin.mc_es.max_netting of isolated_im - im")
                extra[p] += cap
        for name, cost in self._book_add_on_parts(inputs).items():
            for p, r in rows.items():
                variables[f"{p}{name}"] = _da(cost[r], dims[p], self.BOOK_ADD_ONS[name])
                extra[p] += cost[r]
        return im + extra[""], group_im + extra["group_"]


def usd_delta(book) -> sp.csr_matrix:
    """[rows x assets] USD delta of every holdings row: linear exposure plus options' Black-Scholes deltas."""
    n_assets = book.assets.size
    o = book.options
    if o.n:
        from scipy.special import ndtr

        per_contract = o.size * o.spot * black_scholes_delta(np, ndtr, o.spot, o.strike, o.expiry, o.vol, o.is_call,
                                                             o.rate)
        to_asset = sp.csr_matrix((per_contract, (np.arange(o.n), o.asset)), shape=(o.n, n_assets))
        return (book.exposures[:, :n_assets] + book.exposures[:, n_assets:] @ to_asset).tocsr()
    return book.exposures[:, :n_assets].tocsr()


def liquidity_addon(book, portfolio, coefficient: float, free_fraction: float) -> np.ndarray:
    """Per holdings row: sum over assets with an ``adv`` of ``k S e sqrt(e / ADV)``, ``e = max(0, |Q| - f ADV)``.

    Q is the row's net delta-equivalent position in units of the asset (USD
    delta / price), collateral included (it is sold or bought back with the
    rest); assets without an average daily volume in the market file
    carry no add-on.
    """
    adv = portfolio.market["adv"].to_numpy(dtype=float) if "adv" in portfolio.market else np.full(book.assets.size,
                                                                                                 np.nan)
    known = np.isfinite(adv)
    if not known.any():
        return np.zeros(book.exposures.shape[0])
    q = np.abs(usd_delta(book)[:, known].toarray()) / book.prices[known]
    excess = np.maximum(0.0, q - free_fraction * adv[known])
    return (coefficient * book.prices[known] * excess * np.sqrt(excess / adv[known])).sum(axis=1)


def closeout_cost(book, portfolio) -> np.ndarray:
    """Per holdings row: sum over instruments of ``|net quantity| x contract value x spread / 2``.

    The contract value is the USD notional of a linear contract (size x S,
    or its face value) and the premium of an option; instruments without a
    ``spread`` carry no cost.
    """
    spread = (portfolio.instruments.set_index("instrument")["spread"].reindex(book.instruments).to_numpy(dtype=float)
              if "spread" in portfolio.instruments else np.full(book.n_instruments, np.nan))
    n_linear = book.n_instruments - book.options.n
    value = np.empty(book.n_instruments)
    value[:n_linear] = np.abs(book.to_factors[:n_linear].toarray()).sum(axis=1)
    value[n_linear:] = np.abs(book.unit_value[n_linear:book.n_instruments])
    per_contract = np.where(np.isfinite(spread), value * spread / 2.0, 0.0)
    return abs(book.holdings[:, :book.n_instruments]) @ per_contract
