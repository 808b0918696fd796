"""Option values against QuantLib, and the linear/inverse P&L rules."""

import datetime as dt

import mpmath as mp
import numpy as np
import pytest
import QuantLib as ql
from scipy.special import ndtr

from mcmargin.instruments import black_scholes as pricing

VALUATION = dt.date(2026, 11, 25)


def quantlib_value(spot, strike, days, vol, is_call, rate=0.0):
    today = ql.Date(VALUATION.day, VALUATION.month, VALUATION.year)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(spot)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, rate, dc, ql.Continuous)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), vol, dc)))
    option = ql.EuropeanOption(ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, strike),
                               ql.EuropeanExercise(today + days))
    option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
    return option.NPV()


CASES = [(spot, strike, days, vol, is_call, rate)
         for spot, strike in [(90_000.0, 70_000.0), (90_000.0, 90_000.0), (90_000.0, 110_000.0),
                              (3_000.0, 2_500.0), (3_000.0, 3_600.0)]
         for days in (3, 30, 365, 730)
         for vol in (0.35, 0.8)
         for is_call in (True, False)
         for rate in (0.0, 0.04)]


def exact_value(spot, strike, days, vol, is_call, rate=0.0):
    """Black-Scholes in 50-digit arithmetic: the reference where doubles cancel."""
    with mp.workdps(50):
        s, k, t, v, r = (mp.mpf(x) for x in (spot, strike, days / 365.0, vol, rate))
        sd = v * mp.sqrt(t)
        d1 = (mp.log(s / k) + (r + v * v / 2) * t) / sd
        d2 = d1 - sd
        df = mp.e ** (-r * t)
        value = s * mp.ncdf(d1) - k * df * mp.ncdf(d2) if is_call else k * df * mp.ncdf(-d2) - s * mp.ncdf(-d1)
        return float(value)


def ours(spot, strike, days, vol, is_call, rate):
    return float(pricing.black_scholes(np, ndtr, np.array(spot), np.array(strike), np.array(days / 365.0),
                                       np.array(vol), np.array(is_call), rate))


@pytest.mark.parametrize("spot,strike,days,vol,is_call,rate", CASES)
def test_black_scholes_matches_quantlib(spot, strike, days, vol, is_call, rate):
    ref = quantlib_value(spot, strike, days, vol, is_call, rate)
    if ref < 1e-6 * spot:
        # Far out of the money QuantLib's own S N(d1) - K N(d2) cancels (it
        # even returns negative values); the 50-digit test below covers these.
        pytest.skip("below QuantLib's own precision")
    assert ours(spot, strike, days, vol, is_call, rate) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("spot,strike,days,vol,is_call,rate", CASES)
def test_black_scholes_matches_high_precision(spot, strike, days, vol, is_call, rate):
    assert ours(spot, strike, days, vol, is_call, rate) == pytest.approx(
        exact_value(spot, strike, days, vol, is_call, rate), rel=1e-10)


def test_expired_within_horizon_is_intrinsic():
    spot = np.array([80.0, 120.0, 80.0, 120.0])
    strike = np.full(4, 100.0)
    is_call = np.array([True, True, False, False])
    v = pricing.black_scholes(np, ndtr, spot, strike, np.array([-1 / 365] * 4), np.full(4, 0.5), is_call)
    np.testing.assert_array_equal(v, [0.0, 20.0, 20.0, 0.0])


def test_zero_vol_is_discounted_intrinsic():
    v = pricing.black_scholes(np, ndtr, np.array(120.0), np.array(100.0), np.array(1.0), np.array(0.0),
                              np.array(True), 0.05)
    assert v == pytest.approx(120.0 - 100.0 * np.exp(-0.05))



@pytest.mark.parametrize("is_call", [True, False])
@pytest.mark.parametrize("spot", [80.0, 100.0, 120.0])
def test_zero_vol_is_the_discounted_forward_intrinsic_for_calls_and_puts(spot, is_call):
    """vol = 0 prices max(S - K e^-rT, 0) (call) or max(K e^-rT - S, 0) (put): the vol -> 0 limit of QuantLib's value."""
    k, days, r = 100.0, 365, 0.05
    got = ours(spot, k, days, 0.0, is_call, r)
    fwd = k * np.exp(-r * days / 365)
    want = max(spot - fwd, 0.0) if is_call else max(fwd - spot, 0.0)
    assert got == pytest.approx(want, abs=1e-12)
    assert got == pytest.approx(quantlib_value(spot, k, days, 1e-4, is_call, r), abs=1e-6)
