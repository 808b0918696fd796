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
"""

from __future__ import annotations

import numpy as np

from .base import MarginInputs, MarginModel, MarginParams, Requirement, _da, register

METHODOLOGY = "mc_es: Monte Carlo expected shortfall (docs/methodology.md section 5)"

__all__ = ["METHODOLOGY", "ROUNDING_FLOOR", "MarginParams", "McEs", "margin_saving"]


#: Relative size below which a difference of two margins is rounding, reported as exactly 0.
#: A single-position account's ``im`` (the ES of q x unit losses) and its ``isolated_im``
#: (|q| x the unit ES) are equal by definition but summed in another order, so they differ by
#: a few ulps (1e-16 relative); this floor keeps such exact cancellations exact, whatever the
#: chunking.  Real netting is many orders of magnitude larger.
ROUNDING_FLOOR = 1e-12


def margin_saving(apart, together):
    """``apart - together``, exactly 0 where the two differ by no more than rounding (ROUNDING_FLOOR)."""
    diff = apart - together
    scale = np.maximum(np.abs(apart), np.abs(together))
    return np.where(np.abs(diff) <= ROUNDING_FLOOR * scale, 0.0, diff)


@register("mc_es")
class McEs(MarginModel):
    """Monte Carlo expected shortfall of every account and pool; standalone requirements from unit tails."""

    rows = ("accounts", "groups", "long", "short", "collateral_long", "collateral_short")
    reduction = "tail"
    variables = ("isolated_im", "netting_benefit", "collateral_im", "group_isolated_im", "group_netting_benefit",
                 "unit_es", "collateral_unit_es")
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

        group_index = book.group_of_account
        group_im = np.maximum(0.0, es[grp, k]) * scale
        group_isolated = np.bincount(group_index, weights=isolated, minlength=book.groups.size)
        group_sum_im = np.bincount(group_index, weights=im, minlength=book.groups.size)
        variables = {
            "isolated_im": _da(isolated, ("account",), "initial margin of each position margined alone, summed"),
            "netting_benefit": _da(margin_saving(isolated, im), ("account",), "isolated_im minus im"),
            "collateral_im": _da(collateral_im, ("account",),
                                 "initial margin of the account's collateral margined alone (positions excluded)"),
            "group_isolated_im": _da(group_isolated, ("group",), "sum of member isolated_im"),
            "group_netting_benefit": _da(margin_saving(group_sum_im, group_im), ("group",),
                                         "sum of member im (margined apart) minus group_im (pooled)"),
            "unit_es": _da(unit_es, ("instrument", "side"), "standalone ES of one contract at margin.confidence"),
            "collateral_unit_es": _da(unit_coll, ("asset", "side"),
                                      "standalone ES of one unit of the asset held as collateral at margin.confidence"),
        }
        return Requirement(im, group_im, variables, {"side": np.array(["long", "short"])})
