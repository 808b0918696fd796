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
the same formulas.  ``margin.mc_es.liquidation_price: true`` (default false)
adds liquidation prices against ``group_mm`` (docs/methodology.md, section 7).
"""

from __future__ import annotations

import numpy as np

from ..common.settings import flag
from .base import ROUNDING_FLOOR, MarginInputs, MarginModel, MarginParams, Requirement, _da, margin_saving, register

METHODOLOGY = "mc_es: Monte Carlo expected shortfall (docs/methodology.md section 5)"

__all__ = ["METHODOLOGY", "ROUNDING_FLOOR", "MarginParams", "McEs", "margin_saving"]


@register("mc_es")
class McEs(MarginModel):
    """Monte Carlo expected shortfall of every account and pool; standalone requirements from unit tails."""

    rows = ("accounts", "groups", "long", "short", "collateral_long", "collateral_short")
    reduction = "tail"
    variables = ("collateral_im", "unit_es", "collateral_unit_es")
    methodology = METHODOLOGY

    @classmethod
    def from_config(cls, params, own):
        own = dict(own)
        liquidation = flag(own.pop("liquidation_price", False), "margin.mc_es.liquidation_price")
        model = super().from_config(params, own)          # refuses any other key
        model.liquidation_price = liquidation
        return model

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
        im = np.maximum(0.0, es[acc, k]) * scale

        # Standalone requirement per unit, long and short, then per position.
        unit_es = np.stack([es[rows("long"), k], es[rows("short"), k]], axis=1)     # [instrument x side]
        positions = account_holdings[:, :book.n_instruments].tocoo()
        side = (positions.data < 0).astype(int)
        per_position = np.abs(positions.data) * np.maximum(0.0, unit_es[positions.col, side])
        isolated = np.bincount(positions.row, weights=per_position, minlength=book.accounts.size) * scale

        # The collateral alone, from one long / short unit of each asset (ES is positively homogeneous).
        unit_coll = np.stack([es[rows("collateral_long"), k], es[rows("collateral_short"), k]], axis=1)
        coll = account_holdings[:, book.n_instruments:].tocoo()
        cside = (coll.data < 0).astype(int)
        per_asset = np.abs(coll.data) * np.maximum(0.0, unit_coll[coll.col, cside])
        collateral_im = np.bincount(coll.row, weights=per_asset, minlength=book.accounts.size) * scale

        group_im = np.maximum(0.0, es[grp, k]) * scale
        variables = {
            "collateral_im": _da(collateral_im, ("account",),
                                 "initial margin of the account's collateral margined alone (positions excluded)"),
            "unit_es": _da(unit_es, ("instrument", "side"), "standalone ES of one contract at margin.confidence"),
            "collateral_unit_es": _da(unit_coll, ("asset", "side"),
                                      "standalone ES of one unit of the asset held as collateral at margin.confidence"),
        }
        return Requirement(im, group_im, isolated_im=isolated, variables=variables,
                           coords={"side": np.array(["long", "short"])})
