"""mcmargin.margin.span: SPAN-style scanning (docs/methodology.md, section 7).

Books worked by hand (explicit parameters from a YAML file written here,
arithmetic in the comments, option prices from tests/recompute.py's own
Black-Scholes), properties with the default parameters derived from a
correlated scenario model, and the stress job running the model.
"""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import recompute
from conftest import VALUATION, run_job, stress_config
from mcmargin import build_scenarios
from mcmargin.aggregation import compile_book
from mcmargin.errors import ConfigError, InputError
from mcmargin.inputs.files import book_from_frames
from mcmargin.margin import MarginInputs, MarginParams, build_margin_models, known_models, margin_dataset
from mcmargin.margin.span import PRICE_MOVES, VOL_MOVES, Span, default_credit_rate

PRICES = {"BTC": 90_000.0, "ETH": 3_000.0, "SOL": 150.0, "USDT": 1.0}
VOLS = {"BTC": 0.5, "ETH": 0.7, "SOL": 0.9, "USDT": 0.0}
DEC, MAR = "2026-12-25", "2027-03-26"          # 30 and 121 days after the valuation date (2026-11-25)

#: Every instrument the tests trade: (id, kind, underlying, inverse, contract_size, expiry, strike, type).
CATALOGUE = [
    ("BTC-SPOT", "spot", "BTC", False, 1, "", np.nan, ""),
    ("BTC-PERP", "perpetual", "BTC", False, 1, "", np.nan, ""),
    ("BTC-INV-PERP", "perpetual", "BTC", True, 100, "", np.nan, ""),
    ("BTC-FUT-DEC", "future", "BTC", False, 1, DEC, np.nan, ""),
    ("BTC-FUT-MAR", "future", "BTC", False, 1, MAR, np.nan, ""),
    ("BTC-INV-FUT-MAR", "future", "BTC", True, 100, MAR, np.nan, ""),
    ("BTC-C-90-DEC", "option", "BTC", False, 1, DEC, 90_000.0, "call"),
    ("BTC-P-90-DEC", "option", "BTC", False, 1, DEC, 90_000.0, "put"),
    ("BTC-C-90-MAR", "option", "BTC", False, 1, MAR, 90_000.0, "call"),
    ("BTC-P-INV-85-MAR", "option", "BTC", True, 1, MAR, 85_000.0, "put"),
    ("BTC-C-120-DEC", "option", "BTC", False, 1, DEC, 120_000.0, "call"),
    ("ETH-PERP", "perpetual", "ETH", False, 1, "", np.nan, ""),
    ("ETH-FUT-DEC", "future", "ETH", False, 0.1, DEC, np.nan, ""),
    ("ETH-C-DEC", "option", "ETH", False, 1, DEC, 3_000.0, "call"),
    ("ETH-C-EXP", "option", "ETH", False, 1, "2026-11-26", 3_000.0, "call"),   # expires inside the horizon
    ("SOL-PERP", "perpetual", "SOL", False, 1, "", np.nan, ""),
]

SCENARIOS_3F = dict(model="gaussian", n=1000, seed=5, horizon_days=2,
                    risk_factors={"BTC": {"vol": 0.5, "vol_of_vol": 1.0, "spot_vol_corr": -0.4},
                                  "ETH": {"vol": 0.7, "vol_of_vol": 1.2, "spot_vol_corr": -0.3},
                                  "SOL": {"vol": 0.9, "vol_of_vol": 1.5, "spot_vol_corr": -0.3}},
                    correlation=[[1.0, 0.8, 0.7], [0.8, 1.0, 0.75], [0.7, 0.75, 1.0]])

#: The hand-worked cases' parameters (docs/methodology.md, section 7.2).
PARAMS = """
underlyings:
  BTC: {price_scan_range: 0.09, vol_scan_range: 0.2, tiers: [31, 92, 183], intra_rate: 0.03,
        short_option_minimum: 0.02, cover_fraction: 0.35}
  ETH: {price_scan_range: 0.12, vol_scan_range: 0.25}
  SOL: {price_scan_range: 0.15, vol_scan_range: 0.3}
inter_commodity:
  - {legs: [BTC, ETH], delta_ratio: [1.0, 0.75], credit_rate: 0.6, priority: 1}
  - {legs: [BTC, SOL], delta_ratio: [1.0, 1.0], credit_rate: 0.5, priority: 2}
"""
BUFFER = 1.1      # margin.buffer = 0.1 in every hand-worked case


def frames(positions, collateral=(), groups=None):
    ins = pd.DataFrame(CATALOGUE, columns=["instrument", "kind", "underlying", "inverse", "contract_size", "expiry",
                                           "strike", "option_type"])
    ins["settle"] = np.where(ins["inverse"], ins["underlying"], "USDT")
    ins["inverse"] = ins["inverse"].map({True: "true", False: "false"})
    mkt = pd.DataFrame(dict(asset=list(PRICES), price=list(PRICES.values()), vol=[VOLS[a] for a in PRICES],
                            haircut=0.0))
    pos = pd.DataFrame(positions, columns=["account", "instrument", "quantity"])
    pos = pos.groupby(["account", "instrument"], sort=False, as_index=False)["quantity"].sum()   # one row each
    col = pd.DataFrame(list(collateral) or [("cash", "USDT", 1.0)], columns=["account", "asset", "amount"])
    acc = pd.DataFrame(groups or [], columns=["account", "group"])
    return ins, mkt, pos, col, acc


def span_run(positions, model, collateral=(), groups=None):
    """The span dataset of a small book (compiled as run_stress does; the scenario model only for defaults)."""
    book = book_from_frames(*frames(positions, collateral, groups), VALUATION)
    scen = build_scenarios(SCENARIOS_3F, book.assets, book.market["vol"])
    compiled = compile_book(book, scen.horizon_days, row_kinds=model.rows)
    inputs = MarginInputs(compiled, None, portfolio=book, scenarios=scen)
    return margin_dataset([dataclasses.replace(inputs, grid_losses=model.grid_losses(inputs))], model)


@pytest.fixture
def params_file(tmp_path):
    def write(text=PARAMS, name="span.yaml"):
        p = tmp_path / name
        p.write_text(text)
        return str(p)
    return write


def hand_model(path):
    return Span(MarginParams(buffer=0.1), params_file=path)


def at(ds, var, account):
    return float(ds[var].sel(account=account))


def linear_scan(notional, r, cover=0.35):
    """Worst weighted loss of a linear USD notional (long > 0) over the 16 scenarios of scan range r."""
    losses = -notional * np.expm1(PRICE_MOVES * r)
    losses[14:] *= cover
    return max(0.0, losses.max())


# --------------------------------------------------------------------------- hand-worked books
def test_a_single_future(params_file):
    ds = span_run([("f", "BTC-FUT-DEC", 2.0)], hand_model(params_file()))
    # 2 BTC Dec futures = 180,000 USD of BTC.  Scenario 13/14 (down 3/3 x 0.09):
    # loss = 180,000 x (1 - e^-0.09) = 180,000 x 0.0860688 = 15,492.38; the extreme
    # down move counts 0.35 x 180,000 x (1 - e^-0.18) = 0.35 x 29,651.4 = 10,378.0, less.
    scan = 180_000 * (1 - math.exp(-0.09))
    assert scan == pytest.approx(15_492.38, abs=0.01)
    assert 0.35 * 180_000 * (1 - math.exp(-0.18)) < scan
    assert at(ds, "span_scan_risk", "f") == pytest.approx(scan, rel=1e-12)
    for part in ("intra_commodity_charge", "inter_commodity_credit", "short_option_minimum", "net_option_value"):
        assert at(ds, f"span_{part}", "f") == 0.0
    assert at(ds, "im", "f") == pytest.approx(BUFFER * scan, rel=1e-12)          # 17,041.62
    assert at(ds, "isolated_im", "f") == pytest.approx(at(ds, "im", "f"), rel=1e-12)


def test_a_calendar_spread_pays_the_intra_commodity_charge(params_file):
    positions = [("cal", "BTC-PERP", 2.0), ("cal", "BTC-FUT-MAR", -2.0),
                 ("same", "BTC-PERP", 1.0), ("same", "BTC-FUT-DEC", -1.0),
                 ("a", "BTC-PERP", 2.0), ("b", "BTC-FUT-MAR", -2.0)]
    ds = span_run(positions, hand_model(params_file()), groups=[("a", "G"), ("b", "G")])
    # Perpetual and future move with the same BTC price: +180,000 and -180,000 USD of delta net
    # to nothing, so every scenario loses exactly 0 and scan risk is 0.
    assert at(ds, "span_scan_risk", "cal") == 0.0
    # The deltas sit in different tiers: the perpetual in tier 1, March (121 days) in tier 3
    # (bounds 31, 92, 183).  Matched delta = min(180,000 long, 180,000 short) = 180,000 USD;
    # charge = 0.03 x 180,000 = 5,400; im = 1.1 x 5,400 = 5,940.
    assert at(ds, "span_intra_commodity_charge", "cal") == pytest.approx(5_400.0, rel=1e-12)
    assert at(ds, "im", "cal") == pytest.approx(5_940.0, rel=1e-12)
    # Legs alone: 2 x 1.1 x 180,000 (1 - e^-0.09) (the long loses on the way down, the short
    # on the way up: 180,000 (e^0.09 - 1) = 16,956.0, larger).
    alone = BUFFER * (180_000 * (1 - math.exp(-0.09)) + 180_000 * (math.exp(0.09) - 1))
    assert at(ds, "isolated_im", "cal") == pytest.approx(alone, rel=1e-12)
    # Perpetual against the December future (30 days): the same tier, nothing to charge.
    assert at(ds, "im", "same") == 0.0
    # A pool: a holds the perpetual, b the future; the pooled row is the calendar spread.
    assert float(ds["group_im"].sel(group="G")) == pytest.approx(5_940.0, rel=1e-12)
    assert float(ds["group_span_intra_commodity_charge"].sel(group="G")) == pytest.approx(5_400.0, rel=1e-12)
    assert at(ds, "im", "a") == pytest.approx(BUFFER * 180_000 * (1 - math.exp(-0.09)), rel=1e-12)


def option_losses(legs, r, v, cover=0.35, asset="BTC"):
    """Weighted losses of ``legs`` [(quantity, strike, is_call, days)] of options on ``asset`` and (quantity, None,
    ...) futures of size 1 over its 16 scenarios, each option repriced by recompute.bs_usd (horizon 2 days)."""
    s0, sigma = PRICES[asset], VOLS[asset]
    s1 = s0 * np.exp(PRICE_MOVES * r)
    vol1 = sigma * np.exp(VOL_MOVES * v)
    pnl = np.zeros(16)
    for qty, strike, is_call, days in legs:
        if strike is None:                       # a linear future of size 1
            pnl += qty * (s1 - s0)
            continue
        v0 = recompute.bs_usd(np.array(s0), strike, days / 365, sigma, is_call)
        v1 = recompute.bs_usd(s1, strike, (days - 2) / 365, vol1, is_call)
        pnl += qty * (v1 - v0)
    loss = -pnl
    loss[14:] *= cover
    return loss


def test_a_short_straddle_scan_risk_against_the_short_option_minimum(params_file):
    positions = [("st", "BTC-C-90-DEC", -1.0), ("st", "BTC-P-90-DEC", -1.0)]
    ds = span_run(positions, hand_model(params_file()))
    # Short 1 call + 1 put at 90,000, 30 days, vol 0.5.  Each scenario reprices both at
    # S e^(m 0.09), vol 0.5 e^(+-0.2), 28 days left; the straddle loses most on a full move
    # with vol up: scenario 11 (up 3/3 = 98,476, vol 0.61): 4,169.61.
    loss = option_losses([(-1, 90_000, True, 30), (-1, 90_000, False, 30)], 0.09, 0.2)
    scan = loss.max()
    assert int(loss.argmax()) == 10 and scan == pytest.approx(4_169.61, abs=0.01)
    # Short option minimum: 0.02 x 2 contracts x 1 BTC x 90,000 = 3,600 < scan risk.
    assert at(ds, "span_short_option_minimum", "st") == pytest.approx(3_600.0, rel=1e-12)
    assert at(ds, "span_scan_risk", "st") == pytest.approx(scan, rel=1e-9)
    assert at(ds, "span_intra_commodity_charge", "st") == 0.0                 # one tier
    assert at(ds, "im", "st") == pytest.approx(BUFFER * scan, rel=1e-9)
    # Net option value: minus the two premiums (already in equity).
    premiums = sum(float(recompute.bs_usd(np.array(90_000.0), 90_000, 30 / 365, 0.5, c)) for c in (True, False))
    assert at(ds, "span_net_option_value", "st") == pytest.approx(-premiums, rel=1e-9)
    assert float(ds["equity"].sel(account="st")) == pytest.approx(-premiums, rel=1e-9)

    # Beside 10 long ETH Dec calls: each underlying's risk array moves only its own contracts
    # (the ETH calls' time decay is not in BTC's array), and the two scan risks add up
    # (parameters without inter-commodity spreads: the straddle's small delta would form one).
    no_pairs = params_file(PARAMS.split("inter_commodity")[0], "no_pairs.yaml")
    ds = span_run(positions + [("st", "ETH-C-DEC", 10.0)], hand_model(no_pairs))
    eth = option_losses([(10, 3_000, True, 30)], 0.12, 0.25, asset="ETH").max()
    assert at(ds, "span_scan_risk", "st") == pytest.approx(scan + eth, rel=1e-9)
    assert at(ds, "im", "st") == pytest.approx(BUFFER * (scan + eth), rel=1e-9)

    # With a short option minimum of 20% of notional: 0.2 x 2 x 90,000 = 36,000 > scan risk,
    # so im = 1.1 x 36,000 = 39,600.
    high = params_file(PARAMS.replace("short_option_minimum: 0.02", "short_option_minimum: 0.2"), "high.yaml")
    ds = span_run(positions, hand_model(high))
    assert at(ds, "span_short_option_minimum", "st") == pytest.approx(36_000.0, rel=1e-12)
    assert at(ds, "im", "st") == pytest.approx(39_600.0, rel=1e-12)


def test_an_option_hedged_by_a_future(params_file):
    positions = [("cov", "BTC-C-90-DEC", -1.0), ("cov", "BTC-FUT-DEC", 0.5)]
    ds = span_run(positions, hand_model(params_file()))
    # Short 1 ATM Dec call, long 0.5 BTC Dec future: per scenario, call loss plus
    # -0.5 x 90,000 x (e^(m 0.09) - 1).  The future halves the call's loss on the way up;
    # both legs in tier 1: no intra charge.  Short option minimum 0.02 x 90,000 = 1,800.
    loss = option_losses([(-1, 90_000, True, 30), (0.5, None, None, None)], 0.09, 0.2)
    scan = max(0.0, loss.max())
    assert at(ds, "span_scan_risk", "cov") == pytest.approx(scan, rel=1e-9)
    assert at(ds, "span_intra_commodity_charge", "cov") == 0.0
    assert at(ds, "span_short_option_minimum", "cov") == pytest.approx(1_800.0, rel=1e-12)
    assert at(ds, "im", "cov") == pytest.approx(BUFFER * max(scan, 1_800.0), rel=1e-9)
    # The call alone: its scan risk (scenario 11, up 3/3 vol up) and the future alone.
    call_alone = option_losses([(-1, 90_000, True, 30)], 0.09, 0.2).max()
    future_alone = linear_scan(45_000.0, 0.09)
    assert at(ds, "isolated_im", "cov") == pytest.approx(BUFFER * (call_alone + future_alone), rel=1e-9)
    assert at(ds, "im", "cov") < 0.6 * at(ds, "isolated_im", "cov")


def test_an_inter_commodity_spread_in_priority_order(params_file):
    positions = [("be", "BTC-PERP", 1.0), ("be", "ETH-PERP", -30.0),
                 ("bes", "BTC-PERP", 1.0), ("bes", "ETH-PERP", -30.0), ("bes", "SOL-PERP", -600.0)]
    ds = span_run(positions, hand_model(params_file()))
    # Long 90,000 USD of BTC, short 30 x 3,000 = 90,000 USD of ETH (and 600 x 150 = 90,000 of SOL).
    scan_btc = 90_000 * (1 - math.exp(-0.09))       # 7,746.19  (long: down 3/3)
    scan_eth = 90_000 * (math.exp(0.12) - 1)        # 11,474.77 (short: up 3/3)
    scan_sol = 90_000 * (math.exp(0.15) - 1)        # 14,565.30
    # Linear legs have no time or vol risk: weighted price risk per USD of delta = scan / 90,000.
    # Priority 1, BTC/ETH at 1 : 0.75: spreads = min(90,000 / 1, 90,000 / 0.75) = 90,000;
    # BTC credit = 0.6 x 90,000 x 1 x scan_btc / 90,000 = 0.6 scan_btc = 4,647.71;
    # ETH credit = 0.6 x 90,000 x 0.75 x scan_eth / 90,000 = 0.45 scan_eth = 5,163.65.
    # BTC's delta is used up, so priority 2 (BTC/SOL) forms no spread.
    credit = 0.6 * scan_btc + 0.45 * scan_eth
    assert at(ds, "span_inter_commodity_credit", "be") == pytest.approx(credit, rel=1e-12)
    assert at(ds, "im", "be") == pytest.approx(BUFFER * (scan_btc + scan_eth - credit), rel=1e-12)
    assert at(ds, "span_inter_commodity_credit", "bes") == pytest.approx(credit, rel=1e-12)
    assert at(ds, "im", "bes") == pytest.approx(BUFFER * (scan_btc + scan_eth + scan_sol - credit), rel=1e-12)

    # The other priority: BTC/SOL first (1 : 1, rate 0.5) takes BTC's whole delta;
    # credit = 0.5 scan_btc + 0.5 scan_sol, and ETH gets none.
    swapped = params_file(PARAMS.replace("priority: 1", "priority: 9").replace("priority: 2", "priority: 1"),
                          "swapped.yaml")
    ds = span_run(positions, hand_model(swapped))
    credit = 0.5 * scan_btc + 0.5 * scan_sol
    assert at(ds, "im", "bes") == pytest.approx(BUFFER * (scan_btc + scan_eth + scan_sol - credit), rel=1e-12)
    # Same-direction positions are no spread: no credit.
    ds = span_run([("x", "BTC-PERP", 1.0), ("x", "ETH-PERP", 30.0)], hand_model(params_file()))
    assert at(ds, "span_inter_commodity_credit", "x") == 0.0


def test_the_parameters_are_written_to_the_dataset(params_file):
    ds = span_run([("f", "BTC-PERP", 1.0)], hand_model(params_file()))
    par = json.loads(ds.attrs["span_parameters"])
    assert par["underlyings"]["BTC"]["price_scan_range"] == 0.09
    assert par["underlyings"]["ETH"]["intra_rate"] == 0.02                 # the model's setting fills the gap
    assert [p["priority"] for p in par["inter_commodity"]] == [1, 2]
    assert par["source"].startswith("file ")
    assert ds["span_scan_risk"].attrs["units"] == "USD" and ds["span_scan_risk"].attrs["long_name"]


# --------------------------------------------------------------------------- defaults and properties
def default_model():
    return Span(MarginParams(buffer=0.1))


def test_defaults_are_derived_from_the_scenario_model():
    ds = span_run([("f", "BTC-PERP", 1.0)], default_model())
    par = json.loads(ds.attrs["span_parameters"])
    z = norm.ppf(0.99)
    root_h = math.sqrt(2 / 365)
    btc = par["underlyings"]["BTC"]
    assert btc["price_scan_range"] == pytest.approx(z * 0.5 * root_h, rel=1e-12)
    assert btc["vol_scan_range"] == pytest.approx(z * 1.0 * root_h, rel=1e-12)
    assert btc["cover_fraction"] == 0.35 and btc["intra_rate"] == 0.02 and btc["tiers"] == [31, 92, 183]
    pairs = {tuple(p["legs"]): p for p in par["inter_commodity"]}
    # Highest correlation first: BTC/ETH 0.8, ETH/SOL 0.75, BTC/SOL 0.7.
    assert [tuple(p["legs"]) for p in par["inter_commodity"]] == [("BTC", "ETH"), ("ETH", "SOL"), ("BTC", "SOL")]
    assert pairs[("BTC", "ETH")]["credit_rate"] == pytest.approx(1 - math.sqrt(0.1), rel=1e-12)
    # Delta ratio: each leg carries the same scan risk, r_BTC x R_BTC = r_ETH x R_ETH.
    r = pairs[("BTC", "ETH")]["delta_ratio"]
    assert r[0] * 0.5 == pytest.approx(r[1] * 0.7, rel=1e-12) and max(r) == 1.0
    assert default_credit_rate(1.0) == 1.0 and default_credit_rate(0.5) == pytest.approx(0.5)


HEDGES = {
    "calendar": [("BTC-PERP", 1.0), ("BTC-FUT-MAR", -1.0)],
    "delta_hedged_call": None,                 # filled in below from the call's delta
    "btc_eth": [("BTC-PERP", 1.0), ("ETH-PERP", -30.0)],
}


def call_delta():
    t = 121 / 365
    d1 = (math.log(1.0) + 0.5 * 0.25 * t) / (0.5 * math.sqrt(t))
    return norm.cdf(d1)


@pytest.mark.parametrize("hedge", list(HEDGES))
def test_each_hedge_is_margined_well_below_its_legs(hedge):
    legs = HEDGES[hedge] or [("BTC-C-90-MAR", 1.0), ("BTC-PERP", -call_delta())]
    positions = [("h", i, q) for i, q in legs] + [(f"leg{k}", i, q) for k, (i, q) in enumerate(legs)]
    ds = span_run(positions, default_model())
    legs_alone = sum(at(ds, "im", f"leg{k}") for k in range(len(legs)))
    # isolated_im is each position margined alone: the legs' own accounts.
    assert at(ds, "isolated_im", "h") == pytest.approx(legs_alone, rel=1e-12)
    ratio = at(ds, "im", "h") / legs_alone
    assert ratio < 0.90, f"{hedge}: {ratio:.3f}"
    assert at(ds, "netting_benefit", "h") > 0.1 * legs_alone


def test_a_short_straddle_is_never_margined_above_its_legs():
    for strike, expiry in (("90", "DEC"), ("120", "DEC")):
        call = f"BTC-C-{strike}-{expiry}"
        put = "BTC-P-90-DEC"
        for q in (1.0, 3.5):
            ds = span_run([("s", call, -q), ("s", put, -q), ("c", call, -q), ("p", put, -q)], default_model())
            assert at(ds, "im", "s") <= at(ds, "im", "c") + at(ds, "im", "p") + 1e-9
            assert at(ds, "im", "s") <= at(ds, "isolated_im", "s") + 1e-9


def same_underlying_equivalents(instrument, quantity):
    """Exact hedges of a linear position: the other linear BTC instruments at the opposite USD notional."""
    size = {i[0]: (i[4], i[3]) for i in CATALOGUE}
    usd = lambda i: size[i][0] if size[i][1] else size[i][0] * PRICES["BTC"]      # noqa: E731
    return [(other, -quantity * usd(instrument) / usd(other)) for other in
            ("BTC-SPOT", "BTC-PERP", "BTC-INV-PERP", "BTC-FUT-DEC", "BTC-FUT-MAR", "BTC-INV-FUT-MAR")]


def test_adding_an_exact_hedge_never_raises_the_requirement():
    # Every instrument kind alone, long and short, then with its exact hedge: the same contract
    # sold back (half or all), and for linear BTC contracts any other linear BTC contract at the
    # opposite USD notional (same factor; at most the intra-commodity charge remains).
    positions, pairs = [], []
    for ins in [c[0] for c in CATALOGUE]:
        for q in (2.0, -2.0):
            base = f"{ins}{q:+}"
            positions.append((base, ins, q))
            hedges = [[(ins, -q / 2)], [(ins, -q)]]
            if ins.startswith("BTC") and "-C-" not in ins and "-P-" not in ins:
                hedges += [[h] for h in same_underlying_equivalents(ins, q)]
            for k, h in enumerate(hedges):
                name = f"{base}/h{k}"
                positions += [(name, ins, q)] + [(name, i, x) for i, x in h]
                pairs.append((base, name))
    ds = span_run(positions, default_model())
    im = ds["im"].to_series()
    assert np.isfinite(im).all() and (im >= 0).all()
    for base, hedged in pairs:
        assert im[hedged] <= im[base] * (1 + 1e-12) + 1e-9, (base, hedged, im[base], im[hedged])
    # Every kind has a positive requirement alone (each moves with a price or its vol).
    singles = im[[b for b, _ in pairs]]
    assert (singles > 0).all(), singles[singles <= 0]


def test_adding_the_hedge_of_a_whole_book_never_raises_it():
    rng = np.random.default_rng(7)
    names = [c[0] for c in CATALOGUE]
    positions, pairs = [], []
    for b in range(12):
        picks = rng.choice(len(names), size=4, replace=False)
        book = [(names[i], float(rng.choice([-3, -1, -0.5, 0.5, 1, 3]))) for i in picks]
        positions += [(f"b{b}", i, q) for i, q in book]
        for lam in (0.25, 1.0):
            positions += [(f"b{b}-{lam}", i, q * (1 - lam)) for i, q in book if lam < 1]
            pairs.append((f"b{b}", f"b{b}-{lam}", lam))
    ds = span_run(positions, default_model())
    im = ds["im"].to_series()
    for base, hedged, lam in pairs:
        got = im.get(hedged, 0.0)                      # a fully hedged book has no positions left
        assert got == pytest.approx((1 - lam) * im[base], rel=1e-9, abs=1e-9)


def test_every_instrument_kind_and_collateral_gives_a_finite_requirement():
    names = [c[0] for c in CATALOGUE]
    positions = [(f"{i}{q:+}", i, q) for i in names for q in (1.0, -1.0)] + [("mix", i, 1.0) for i in names]
    ds = span_run(positions, default_model(),
                  collateral=[("btc-coll", "BTC", 2.0), ("short-eth", "ETH", -5.0), ("cash", "USDT", 10.0)])
    for v in ("im", "isolated_im", "span_scan_risk", "span_short_option_minimum", "group_im"):
        assert np.isfinite(ds[v].values).all() and (ds[v].values >= 0).all(), v
    # Collateral is scanned as a spot holding of its asset (positions only count in isolated_im).
    assert at(ds, "im", "btc-coll") > 0 and at(ds, "isolated_im", "btc-coll") == 0.0
    assert at(ds, "im", "cash") == 0.0


# --------------------------------------------------------------------------- settings and the job
def test_settings_and_parameter_files_are_checked(params_file):
    common = {"confidence": 0.99, "buffer": 0.1, "maintenance_ratio": 0.75}
    assert "span" in known_models()
    for key, value in (("cover_fraction", "abc"), ("cover_fraction", 1.5), ("intra_rate", -0.1),
                       ("short_option_minimum", float("nan")), ("tiers", [92, 31]), ("scan_quantile", 1.0),
                       ("params", ""), ("colour", 1)):
        with pytest.raises(ConfigError, match=rf"margin\.span\.{key}"):
            build_margin_models({"model": "span", **common, "span": {key: value}})
    bad = {"price_scan_range: 0.09": "price_scan_range: -1", "credit_rate: 0.6": "credit_rate: lots",
           "legs: [BTC, SOL]": "legs: [BTC, DOGE]", "priority: 2": "priority: 1",
           "cover_fraction: 0.35": "cover_fraction: 0.35, spin: 1"}
    keys = ["underlyings.BTC.price_scan_range", r"inter_commodity\[0\].credit_rate", r"inter_commodity\[1\].legs",
            "inter_commodity", "underlyings.BTC.spin"]
    for (old, new), key in zip(bad.items(), keys):
        path = params_file(PARAMS.replace(old, new), "bad.yaml")
        with pytest.raises(InputError, match=rf"bad\.yaml.*key {key}"):
            hand_model(path)
    # A book's underlying missing from the file.
    only_btc = params_file("underlyings:\n  BTC: {price_scan_range: 0.09, vol_scan_range: 0.2}\n", "btc.yaml")
    with pytest.raises(InputError, match=r"btc\.yaml.*underlyings\.ETH"):
        span_run([("f", "BTC-PERP", 1.0)], hand_model(only_btc))


def test_the_stress_job_runs_span_alone_and_beside_mc_es():
    from jobs.stress import run

    alone = run(stress_config("margin=span"))
    assert alone.attrs["margin_model"] == "span" and "span_parameters" in alone.attrs
    for v in ("im", "group_im", "isolated_im", "span_scan_risk", "group_span_scan_risk"):
        assert np.isfinite(alone[v].values).all() and (alone[v].values >= 0).all()
    assert (alone["im"].values > 0).any()
    np.testing.assert_array_equal(alone["margin_call"].values,
                                  np.maximum(0.0, alone["im"].values - alone["equity"].values))
    both = run(stress_config("margin.models=[mc_es,span]"))
    assert list(both["model"].values) == ["mc_es", "span"]
    np.testing.assert_array_equal(both["im"].sel(model="span").values, alone["im"].values)
    np.testing.assert_array_equal(both["group_im"].sel(model="span").values, alone["group_im"].values)
    np.testing.assert_array_equal(both["span_scan_risk"].values, alone["span_scan_risk"].values)


def test_a_bad_span_setting_exits_2_naming_the_key():
    done = run_job("jobs.stress", "margin=span", "margin.span.cover_fraction=abc", "portfolio.n_accounts=10",
                   "scenarios.n=100", "backend=numpy")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "margin.span.cover_fraction" in done.stderr + done.stdout
