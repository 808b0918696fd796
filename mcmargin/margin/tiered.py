"""Margin rules of the ``tiered`` model: perpetual-exchange style (docs/methodology.md, section 9).

An initial margin fraction (IMF) by USD notional tier, rising with
position size, applied to each instrument's **net** position in an
account (in a pool: the sum of the members' quantities of that
instrument), then summed over instruments.  A gross sum is never tiered:
a long and a short of the same instrument net before the tier is read,
and notionals of different instruments are never added to choose a tier.

Tiers are marginal, like tax brackets (the Hyperliquid convention,
``notional x rate - deduction`` with the deduction that makes the margin a
continuous function of size): with lower bounds ``b_0 = 0 < b_1 < ...``
and fractions ``f_0 <= f_1 <= ...``,

    T(N) = sum_k f_k x max(0, min(N, b_{k+1}) - b_k) = N f_n - d_n,
    d_0 = 0, d_n = d_{n-1} + b_n (f_n - f_{n-1})   (n: the tier N falls in).

T is continuous, non-decreasing and convex in N, so a requirement never
drops when a position grows.

Per instrument, the notional N (USD) of a net quantity q is:

- spot, linear perpetual or future: ``|q x contract_size x S|``;
- inverse perpetual or future: the USD face value ``|q x contract_size|``;
- option: the delta-equivalent notional ``|q x contract_size x delta x S|``
  (Black-Scholes delta at today's spot, vol and expiry), and a net short
  option adds its premium ``|q| x contract_size x BS`` outside the tiers
  (what it would cost to buy the option back).

``im = (sum over instruments of T(N_i) + short premium) x (1 + buffer)``.
``mm = im x maintenance ratio``: ``margin.tiered.maintenance_fraction``
when set (dYdX v4: 0.6; Hyperliquid: 0.5), else the shared
``margin.maintenance_ratio``.  With marginal tiers and one ratio for every
tier, the venue's per-tier maintenance table is exactly that fraction of
the initial one.  ``isolated_im`` margins each position alone under the
same tiers; an account's positions are already net per instrument, so it
equals ``im`` (no netting across instruments is recognised).  Collateral
is valued at market in equity with no haircut and carries no requirement.
Liquidation prices (:mod:`.liquidation`) are on by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from ..common.settings import flag, real_number
from ..errors import ConfigError
from ..instruments.black_scholes import black_scholes_delta
from .base import MarginInputs, MarginModel, MarginParams, Requirement, _da, register

METHODOLOGY = "tiered: initial margin fraction by net notional tier per instrument (docs/methodology.md section 9)"

#: Default tier table (conf/margin_params/tiered.yaml): lower bounds of USD notional and their IMF.
DEFAULT_TIER_NOTIONAL = (0.0, 1_000_000.0, 5_000_000.0, 25_000_000.0)
DEFAULT_TIER_IMF = (0.05, 0.10, 0.20, 0.50)


@dataclasses.dataclass(frozen=True)
class TierTable:
    """Marginal notional tiers: ``floor`` (USD lower bounds, the first 0, rising) and their ``imf``."""

    floor: np.ndarray
    imf: np.ndarray

    @classmethod
    def from_lists(cls, floor: Sequence, imf: Sequence, key: str = "margin.tiered") -> "TierTable":
        """The table from two lists, checked (a bad entry raises ConfigError naming ``key``'s list and index)."""
        for name, values in (("tier_notional", floor), ("tier_imf", imf)):
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
                raise ConfigError(f"{key}.{name}", f"expected a non-empty list of numbers, got {values!r}")
        if len(floor) != len(imf):
            raise ConfigError(f"{key}.tier_imf", f"has {len(imf)} entries for {len(floor)} tiers of tier_notional")
        b = np.array([real_number(v, f"{key}.tier_notional[{i}]", 0.0) for i, v in enumerate(floor)])
        f = np.array([real_number(v, f"{key}.tier_imf[{i}]", 0.0, 1.0, low_open=True) for i, v in enumerate(imf)])
        if b[0] != 0.0:
            raise ConfigError(f"{key}.tier_notional[0]", f"the first tier must start at 0, got {floor[0]!r}")
        for i in range(1, b.size):
            if not b[i] > b[i - 1]:
                raise ConfigError(f"{key}.tier_notional[{i}]", f"lower bounds must rise, got {floor[i]!r} after "
                                                               f"{floor[i - 1]!r}")
            if not f[i] >= f[i - 1]:
                raise ConfigError(f"{key}.tier_imf[{i}]", f"fractions must not fall with size, got {imf[i]!r} after "
                                                          f"{imf[i - 1]!r}")
        return cls(b, f)

    @property
    def deduction(self) -> np.ndarray:
        """``d_n``: ``T(N) = N f_n - d_n`` in tier n (Hyperliquid's maintenance deduction, for initial margin)."""
        return np.concatenate([[0.0], np.cumsum(self.floor[1:] * np.diff(self.imf))])

    def tier(self, notional) -> np.ndarray:
        """Index of the tier each ``|notional|`` falls in (a bound belongs to the tier it starts)."""
        return np.searchsorted(self.floor, np.abs(notional), side="right") - 1

    def margin(self, notional) -> np.ndarray:
        """``T(|notional|)``: every slice of the notional at its own tier's fraction, summed."""
        n = np.abs(np.asarray(notional, dtype=float))
        k = self.tier(n)
        return n * self.imf[k] - self.deduction[k]


def unit_terms(book) -> tuple[np.ndarray, np.ndarray]:
    """Per instrument (column order): USD notional of one contract (signed) and the premium one short pays.

    Linear columns: their USD notional (``contract_size x S``, the face for
    inverse contracts; :func:`mcmargin.instruments.linear.usd_notional`).
    Options: ``contract_size x delta x S`` and ``contract_size x BS``, at
    today's spot, vol and expiry.
    """
    from scipy.special import ndtr

    n_ins, o = book.n_instruments, book.options
    n_lin = n_ins - o.n
    notional = np.zeros(n_ins)
    # Linear notional per contract: the entry of its column on its asset factor (0 rows: cash underlyings).
    notional[:n_lin] = np.asarray(book.to_factors[:n_lin].sum(axis=1)).ravel()
    premium = np.zeros(n_ins)
    if o.n:
        spot, strike, t, vol, is_call = (np.asarray(a, dtype=float) for a in (o.spot, o.strike, o.expiry, o.vol,
                                                                               o.is_call))
        is_call = is_call > 0.5
        delta = black_scholes_delta(np, ndtr, spot, strike, t, vol, is_call, o.rate)
        notional[n_lin:] = np.asarray(o.size, dtype=float) * delta * spot
        premium[n_lin:] = np.asarray(o.size, dtype=float) * np.asarray(o.value, dtype=float)
    return notional, premium


@register("tiered")
class Tiered(MarginModel):
    """Initial margin fraction by notional tier, per instrument's net position (docs/methodology.md section 9)."""

    rows = ("accounts", "groups")
    reduction = "closed_form"
    variables = ("tiered_notional", "tiered_short_premium", "tiered_group_notional", "tiered_group_short_premium",
                 "tiered_unit_notional", "tiered_tier_notional", "tiered_tier_imf")
    methodology = METHODOLOGY

    def __init__(self, params: MarginParams = MarginParams(), tiers: TierTable | None = None,
                 maintenance_fraction: float | None = None, liquidation_price: bool = True):
        if maintenance_fraction is not None:
            params = dataclasses.replace(params, maintenance_ratio=maintenance_fraction)
        super().__init__(params)
        self.tiers = tiers or TierTable.from_lists(DEFAULT_TIER_NOTIONAL, DEFAULT_TIER_IMF)
        self.maintenance_fraction = maintenance_fraction
        self.liquidation_price = bool(liquidation_price)

    @classmethod
    def from_config(cls, params: MarginParams, own: Mapping) -> "Tiered":
        own = dict(own)
        tiers = TierTable.from_lists(own.pop("tier_notional", DEFAULT_TIER_NOTIONAL),
                                     own.pop("tier_imf", DEFAULT_TIER_IMF))
        fraction = own.pop("maintenance_fraction", None)
        fraction = real_number(fraction, "margin.tiered.maintenance_fraction", 0.0, 1.0, low_open=True,
                               allow_none=True)
        liquidation = flag(own.pop("liquidation_price", True), "margin.tiered.liquidation_price")
        super().from_config(params, own)          # refuses any other key
        return cls(params, tiers, fraction, liquidation)

    def confidences(self) -> tuple[float, ...]:
        return ()                                  # reads no scenario tail

    def margin_of(self, holdings, unit_notional, unit_premium):
        """Per row of ``holdings`` (positions first): (sum of T(|N|), sum of |N|, short premium), USD."""
        pos = holdings[:, :unit_notional.size].tocoo()
        notional = np.abs(pos.data * unit_notional[pos.col])
        short = np.maximum(0.0, -pos.data) * unit_premium[pos.col]
        n = holdings.shape[0]
        return (np.bincount(pos.row, weights=self.tiers.margin(notional), minlength=n),
                np.bincount(pos.row, weights=notional, minlength=n),
                np.bincount(pos.row, weights=short, minlength=n))

    def requirements(self, inputs: MarginInputs) -> Requirement:
        book = inputs.book
        scale = 1.0 + self.params.buffer
        unit_notional, unit_premium = unit_terms(book)
        tiered, notional, premium = self.margin_of(book.holdings[book.rows("accounts")], unit_notional,
                                                   unit_premium)
        g_tiered, g_notional, g_premium = self.margin_of(book.holdings[book.group_row], unit_notional,
                                                         unit_premium)
        im = (tiered + premium) * scale
        group_im = (g_tiered + g_premium) * scale
        t = self.tiers
        variables = {
            "tiered_notional": _da(notional, ("account",), "sum over instruments of |net notional| "
                                   "(options: delta-equivalent)"),
            "tiered_short_premium": _da(premium, ("account",), "premium of the net short options (outside the tiers)"),
            "tiered_group_notional": _da(g_notional, ("group",), "sum over instruments of |pool net notional| "
                                         "(options: delta-equivalent)"),
            "tiered_group_short_premium": _da(g_premium, ("group",), "premium of the pool's net short options"),
            "tiered_unit_notional": _da(unit_notional, ("instrument",), "USD notional of one contract "
                                        "(options: contract_size x delta x S; inverse: face value)"),
            "tiered_tier_notional": _da(t.floor, ("tier",), "lower bound of the notional tier"),
            "tiered_tier_imf": _da(t.imf, ("tier",), "initial margin fraction of the notional slice in the tier",
                                   units="1"),
        }
        # Positions are net per instrument in an account already: each margined alone gives im itself.
        return Requirement(im, group_im, isolated_im=im.copy(), variables=variables,
                           coords={"tier": np.arange(t.floor.size)})
