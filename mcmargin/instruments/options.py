"""European options, linear or inverse, priced by Black-Scholes (docs/methodology.md, section 3).

Each option is a risk factor of its own: the USD P&L of one contract,
``contract_size x (BS(S', sigma', T') - BS(S, sigma, T))`` with the spot and
implied vol of its underlying shocked and the expiry shortened by the
horizon (``T' = T - horizon / 365``; an option expiring inside the
horizon pays its intrinsic value).  Option time counts calendar days of
365 per year.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import black_scholes as pricing

KINDS = ("option",)
#: Kinds that need an expiry date.
DATED = ("option",)
OPTION_TYPES = ("call", "put")
DAYS_PER_YEAR = 365.0  # option time: (expiry - valuation_date) in days / 365


def row_problems(option, strike, option_type, vol, effective_vol, underlying):
    """(mask, column, message) of each rule an option row can break (inputs name file, row and column)."""
    return [
        (option & ~(strike > 0), "strike", "an option needs a strike > 0, got {value}"),
        (option & ~np.isin(option_type, OPTION_TYPES), "option_type",
         f"unknown option_type {{value}}; expected one of {', '.join(OPTION_TYPES)}"),
        (option & ~(effective_vol > 0), "vol",
         lambda i: f"option on {underlying[i]!r} has no volatility: " + (
             "its vol is 0" if not np.isnan(vol[i]) else
             f"the market vol of {underlying[i]!r} is 0 and the instrument gives no vol")),
    ]


@dataclasses.dataclass
class OptionBlock:
    """The pricing arrays of a book's options (one entry per option instrument, in column order).

    On the CPU they are NumPy arrays; :meth:`on` copies them to a backend.
    """

    asset: object          # index of the underlying among the market assets
    spot: object           # S today, USD
    strike: object
    expiry: object         # T in years, before the horizon
    expiry_after: object   # T' = T - horizon / 365
    vol: object
    is_call: object
    size: object           # contract size, units of the underlying
    value: object          # BS today, per unit of underlying
    rate: float

    @property
    def n(self) -> int:
        return len(self.strike)

    def on(self, backend) -> "OptionBlock":
        """The arrays revaluation reads, as arrays of ``backend`` (indices int64, flags bool)."""
        xp, f = backend.xp, backend.asarray
        idx = xp.asarray(f(self.asset), dtype=xp.int64) if self.asset.size else xp.zeros((0,), dtype=xp.int64)
        return OptionBlock(asset=idx, spot=f(self.spot), strike=f(self.strike), expiry=None,
                           expiry_after=f(self.expiry_after), vol=f(self.vol),
                           is_call=f(self.is_call.astype(float)) > 0.5, size=f(self.size), value=f(self.value),
                           rate=self.rate)


def compile_options(asset, spot, strike, days_to_expiry, vol, is_call, size, horizon_days: float,
                    rate: float = 0.0) -> OptionBlock:
    """The :class:`OptionBlock` of options with these terms, for shocks over ``horizon_days`` calendar days."""
    from scipy.special import ndtr

    t0 = days_to_expiry / DAYS_PER_YEAR
    value = pricing.black_scholes(np, ndtr, spot, strike, t0, vol, is_call, rate)
    return OptionBlock(asset=asset, spot=spot, strike=strike, expiry=t0,
                       expiry_after=t0 - float(horizon_days) / DAYS_PER_YEAR, vol=vol, is_call=is_call,
                       size=size, value=value, rate=float(rate))


def revalue(backend, options: OptionBlock, shock, vol_shock):
    """USD P&L of one contract of each option, ``[scenario x option]`` (array API)."""
    xp = backend.xp
    spot = options.spot * xp.exp(xp.take(shock, options.asset, axis=1))
    vol = options.vol * xp.exp(xp.take(vol_shock, options.asset, axis=1))
    value = pricing.black_scholes(xp, backend.norm_cdf, spot, options.strike, options.expiry_after, vol,
                                  options.is_call, options.rate)
    return options.size * (value - options.value)
