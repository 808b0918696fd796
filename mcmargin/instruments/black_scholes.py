"""Instrument revaluation under scenarios (docs/methodology.md, section 3).

Written once against the array API: every function takes the array
namespace ``xp`` and the normal CDF of a :class:`~mcmargin.backend.Backend`,
so the same code prices on NumPy, JAX, CuPy and array-api-strict.

Conventions: prices in USD; ``contract_size`` in units of the underlying
for spot, linear contracts and options, in USD face value for inverse
contracts; times in years of 365 days.  Spot, linear and inverse contracts
and collateral are linear in expm1(shock) of their asset: size (S' - S) =
size S expm1(r), face (1/S - 1/S') S' = face expm1(r); they are netted into
asset factors by :mod:`mcmargin.aggregation` (see :mod:`.linear`).
"""

from __future__ import annotations


def black_scholes(xp, norm_cdf, spot, strike, expiry_years, vol, is_call, rate=0.0):
    """Black-Scholes value of a European option, in the currency of ``spot``.

    Vectorised over broadcastable arrays.  Where ``expiry_years <= 0`` (the
    option expires within the horizon) the value is the intrinsic value at
    ``spot``.  ``is_call`` is a boolean array.
    """
    alive = expiry_years > 0
    t = xp.where(alive, expiry_years, 1.0)       # keeps dead lanes finite
    sd = vol * xp.sqrt(t)
    sd = xp.where(sd > 0, sd, 1.0)
    discount = xp.exp(-rate * t)
    d1 = (xp.log(spot / strike) + (rate + 0.5 * vol * vol) * t) / sd
    d2 = d1 - sd
    # call = S N(d1) - K D N(d2), put = K D N(-d2) - S N(-d1): each lane needs
    # only its own two CDFs, N(s d1) and N(s d2) with s = +1 (call) or -1
    # (put).  Multiplying by +-1 is exact, so every lane gets the very
    # numbers of the four-CDF formula at half the CDF evaluations (the most
    # expensive step of revaluation).
    one = xp.ones_like(d1)                       # the array API allows no where(cond, scalar, scalar)
    sign = xp.where(is_call, one, -one)
    n1 = norm_cdf(sign * d1)
    n2 = norm_cdf(sign * d2)
    kd = strike * discount
    value = xp.where(is_call, spot * n1 - kd * n2, kd * n2 - spot * n1)
    # A zero vol (or vol shocked to ~0) prices the discounted forward intrinsic.
    flat = xp.where(is_call, xp.maximum(spot - strike * discount, 0.0), xp.maximum(strike * discount - spot, 0.0))
    value = xp.where(vol * xp.sqrt(t) > 0, value, flat)
    intrinsic = xp.where(is_call, xp.maximum(spot - strike, 0.0), xp.maximum(strike - spot, 0.0))
    return xp.where(alive, value, intrinsic)



def black_scholes_delta(xp, norm_cdf, spot, strike, expiry_years, vol, is_call, rate=0.0):
    """dV/dS of :func:`black_scholes` (alive lanes with a positive vol; N(d1) or N(d1) - 1)."""
    t = xp.where(expiry_years > 0, expiry_years, 1.0)
    sd = vol * xp.sqrt(t)
    sd = xp.where(sd > 0, sd, 1.0)
    d1 = (xp.log(spot / strike) + (rate + 0.5 * vol * vol) * t) / sd
    n1 = norm_cdf(d1)
    return xp.where(is_call, n1, n1 - 1.0)
