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

import dataclasses

import numpy as np
import xarray as xr

from ..tails import TailResult
from ..common.settings import real_number

METHODOLOGY = "mc_es: Monte Carlo expected shortfall (docs/methodology.md section 5)"


@dataclasses.dataclass(frozen=True)
class MarginParams:
    """Parameters of the ``mc_es`` margin model."""

    confidence: float = 0.99
    buffer: float = 0.0
    maintenance_ratio: float = 0.75

    def __post_init__(self):
        # Parsed here too, so that the library used without Hydra gets the same checks (NaN fails them).
        checked = dict(confidence=real_number(self.confidence, "margin.confidence", 0.5, 1.0, low_open=True,
                                              high_open=True),
                       buffer=real_number(self.buffer, "margin.buffer", 0.0, 10.0),
                       maintenance_ratio=real_number(self.maintenance_ratio, "margin.maintenance_ratio", 0.0, 1.0,
                                                     low_open=True))
        for name, value in checked.items():
            object.__setattr__(self, name, value)


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


def _da(values, dims, long_name, units="USD", **attrs):
    return (dims, values, {"long_name": long_name, "units": units, **attrs})


def margin_dataset(result: TailResult, params: MarginParams) -> xr.Dataset:
    """The account, group and instrument figures of a run as an xarray Dataset."""
    book = result.book
    confidences = list(result.confidences)
    if params.confidence not in confidences:
        raise ValueError("the tails were not computed at margin.confidence")
    k = confidences.index(params.confidence)
    var, es = result.var, result.es
    rows = book.rows
    acc, grp = rows("accounts"), book.group_row
    scale = 1.0 + params.buffer

    account_holdings = book.holdings[acc]
    equity = account_holdings @ book.unit_value
    im = np.maximum(0.0, es[acc, k]) * scale

    # Standalone requirement per unit, long and short, then per position.
    unit_es = np.stack([es[rows("long"), k], es[rows("short"), k]], axis=1)     # [instrument x side]
    positions = account_holdings[:, :book.n_instruments].tocoo()
    side = (positions.data < 0).astype(int)
    per_position = np.abs(positions.data) * np.maximum(0.0, unit_es[positions.col, side])
    isolated = np.bincount(positions.row, weights=per_position, minlength=book.accounts.size) * scale

    # The collateral alone, from one long / short unit of each asset (ES is positively homogeneous).
    unit_coll = np.stack([es[rows("collateral_long"), k], es[rows("collateral_short"), k]], axis=1)  # [asset x side]
    coll = account_holdings[:, book.n_instruments:].tocoo()
    cside = (coll.data < 0).astype(int)
    per_asset = np.abs(coll.data) * np.maximum(0.0, unit_coll[coll.col, cside])
    collateral_im = np.bincount(coll.row, weights=per_asset, minlength=book.accounts.size) * scale

    group_index = book.group_of_account
    group_equity = np.bincount(group_index, weights=equity, minlength=book.groups.size)
    group_im = np.maximum(0.0, es[grp, k]) * scale
    members = np.bincount(group_index, minlength=book.groups.size)
    group_isolated = np.bincount(group_index, weights=isolated, minlength=book.groups.size)
    group_sum_im = np.bincount(group_index, weights=im, minlength=book.groups.size)

    mr = params.maintenance_ratio
    ds = xr.Dataset(
        {
            "equity": _da(equity, ("account",), "account equity: collateral plus position value"),
            "im": _da(im, ("account",), "initial margin requirement"),
            "mm": _da(im * mr, ("account",), "maintenance margin requirement"),
            "isolated_im": _da(isolated, ("account",), "initial margin of each position margined alone, summed"),
            "netting_benefit": _da(margin_saving(isolated, im), ("account",), "isolated_im minus im"),
            "collateral_im": _da(collateral_im, ("account",),
                                 "initial margin of the account's collateral margined alone (positions excluded)"),
            "margin_call": _da(np.maximum(0.0, im - equity), ("account",), "margin call: max(0, im - equity)"),
            "var": _da(var[acc], ("account", "confidence"), "value at risk: m-th largest loss"),
            "es": _da(es[acc], ("account", "confidence"), "expected shortfall: mean of the m largest losses"),
            "account_group": (("account",), book.account_group.astype(str),
                              {"long_name": "margin group of the account (its own id when it has none)",
                               "units": "1"}),
            "group_equity": _da(group_equity, ("group",), "sum of member equity"),
            "group_im": _da(group_im, ("group",), "initial margin of the pooled group"),
            "group_mm": _da(group_im * mr, ("group",), "maintenance margin of the pooled group"),
            "group_margin_call": _da(np.maximum(0.0, group_im - group_equity), ("group",),
                                     "group margin call: max(0, group_im - group_equity)"),
            "group_var": _da(var[grp], ("group", "confidence"), "value at risk of the pooled group"),
            "group_es": _da(es[grp], ("group", "confidence"), "expected shortfall of the pooled group"),
            "group_members": (("group",), members, {"long_name": "number of member accounts", "units": "1"}),
            "group_isolated_im": _da(group_isolated, ("group",), "sum of member isolated_im"),
            "group_netting_benefit": _da(margin_saving(group_sum_im, group_im), ("group",),
                                         "sum of member im (margined apart) minus group_im (pooled)"),
            "unit_es": _da(unit_es, ("instrument", "side"), "standalone ES of one contract at margin.confidence"),
            "collateral_unit_es": _da(unit_coll, ("asset", "side"),
                                      "standalone ES of one unit of the asset held as collateral at margin.confidence"),
        },
        coords={
            "account": book.accounts.astype(str),
            "group": book.groups.astype(str),
            "asset": book.assets.astype(str),
            "instrument": book.instruments.astype(str),
            "side": np.array(["long", "short"]),
            "confidence": ("confidence", np.array(confidences, dtype=float),
                           {"long_name": "confidence level q", "units": "1"}),
        },
    )
    ds["confidence"].attrs.update(long_name="confidence level q", units="1")
    ds.attrs.update(margin_model="mc_es", methodology=METHODOLOGY, margin_confidence=params.confidence,
                    margin_buffer=params.buffer, maintenance_ratio=params.maintenance_ratio,
                    n_scenarios=result.n_scenarios,
                    tail_definition="m = ceil(N (1 - q) - 1e-9); VaR = m-th largest loss; ES = mean of m largest")
    return ds
