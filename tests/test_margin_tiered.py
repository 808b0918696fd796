"""The ``tiered`` margin model (mcmargin.margin.tiered, docs/methodology.md section 9).

Books worked by hand, the arithmetic in the comments; properties users rely
on (monotone in size, no hedge margined above its legs) with hypothesis;
the stress job end to end against an independent recompute from the input
files.  The default tier table (conf/margin_params/tiered.yaml) is

    notional from     0     1M    5M    25M   USD
    IMF               5%    10%   20%   50%   of the slice within the tier

so T(N) = 0.05 min(N, 1M) + 0.10 (min(N, 5M) - 1M)+ + 0.20 (min(N, 25M) - 5M)+ + 0.50 (N - 25M)+.
"""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import recompute
from conftest import VALUATION, run_job, stress_config
from mcmargin.aggregation import compile_book
from mcmargin.errors import ConfigError
from mcmargin.inputs.files import book_from_frames
from mcmargin.margin import MarginInputs, MarginParams, build_margin_models, margin_dataset
from mcmargin.margin.tiered import TierTable, Tiered

# BTC at 100,000 with 50% vol; options struck at the money 73 days out (T = 0.2 years).
S, K, VOL, T = 100_000.0, 100_000.0, 0.5, 0.2
# d1 = (ln(S/K) + vol^2 T / 2) / (vol sqrt T) = 0.025 / 0.2236068 = 0.1118034, d2 = -d1.
D1 = 0.5 * VOL * math.sqrt(T)
N_D1 = 0.5 * (1.0 + math.erf(D1 / math.sqrt(2.0)))          # 0.5445104
# At the money with rate 0: C = S N(d1) - K N(d2) = S (2 N(d1) - 1) = 8,902.07; P = C (put-call parity).
CALL = S * (2.0 * N_D1 - 1.0)
PUT = CALL

INSTRUMENTS = pd.DataFrame(dict(
    instrument=["BTC-PERP", "BTC-FUT", "BTC-INV", "ETH-PERP", "BTC-C", "BTC-P", "BTC-SPOT"],
    kind=["perpetual", "future", "perpetual", "perpetual", "option", "option", "spot"],
    underlying=["BTC", "BTC", "BTC", "ETH", "BTC", "BTC", "BTC"],
    settle=["USDT", "USDT", "BTC", "USDT", "USDT", "USDT", "USDT"],
    inverse=["false", "false", "true", "false", "false", "false", "false"],
    contract_size=[1.0, 1.0, 100.0, 1.0, 1.0, 1.0, 1.0],
    expiry=["", "2027-02-06", "", "", "2027-02-06", "2027-02-06", ""],      # 2026-11-25 + 73 days
    strike=[np.nan, np.nan, np.nan, np.nan, K, K, np.nan],
    option_type=["", "", "", "", "call", "put", ""]))
MARKET = pd.DataFrame(dict(asset=["BTC", "ETH", "USDT"], price=[S, 5_000.0, 1.0], vol=[VOL, 0.6, 0.0],
                           haircut=[0.0, 0.0, 0.0]))


def dataset(positions, collateral=(), groups=(), model=None):
    """The tiered dataset of a hand-made book: positions (account, instrument, qty), collateral, {account: group}."""
    pos = pd.DataFrame(list(positions), columns=["account", "instrument", "quantity"])
    col = pd.DataFrame(list(collateral) or [(pos["account"].iloc[0], "USDT", 0.0)],
                       columns=["account", "asset", "amount"])
    acc = pd.DataFrame(list(dict(groups).items()), columns=["account", "group"]) if groups else None
    book = book_from_frames(INSTRUMENTS, MARKET, pos, col, acc, VALUATION)
    model = model or Tiered(MarginParams(buffer=0.0, maintenance_ratio=0.5))
    return margin_dataset(MarginInputs(compile_book(book, 2.0, row_kinds=model.rows), portfolio=book), model)


def T_of(n):
    """The default tiers by hand (module docstring)."""
    n = abs(n)
    return (0.05 * min(n, 1e6) + 0.10 * max(0.0, min(n, 5e6) - 1e6) + 0.20 * max(0.0, min(n, 25e6) - 5e6)
            + 0.50 * max(0.0, n - 25e6))


def test_books_worked_by_hand():
    ds = dataset([
        ("p1", "BTC-PERP", 5),            # 5 x 100,000 = 500,000 in tier 0: 0.05 x 500,000 = 25,000
        ("p2", "BTC-PERP", -30),          # 3,000,000: 0.05 x 1M + 0.10 x 2M = 50,000 + 200,000 = 250,000
        ("cs", "BTC-PERP", 20),           # calendar spread: 2M per leg, 0.05 x 1M + 0.10 x 1M = 150,000 per leg;
        ("cs", "BTC-FUT", -20),           # 300,000 in all (a gross 4M would be 50,000 + 300,000 = 350,000)
        ("st", "BTC-C", -10),             # short straddle: call delta N(d1), put N(d1) - 1; notionals
        ("st", "BTC-P", -10),             # 10 N(d1) S + 10 (1 - N(d1)) S = 10 S = 1M, all in tier 0: 50,000;
                                          # + premiums 10 C + 10 P = 178,041.41: 228,041.41
        ("hf", "BTC-C", 10),              # long call, delta 0.5445104: 544,510.35 -> 27,225.52 (no premium)
        ("hf", "BTC-FUT", -5),            # hedged by a future: 500,000 -> 25,000; 52,225.52 = the legs' sum
        ("iv", "BTC-INV", -5_000),        # inverse: USD face 5,000 x 100 = 500,000 -> 25,000
        ("sp", "BTC-SPOT", 12),           # spot on its notional: 1.2M -> 50,000 + 20,000 = 70,000
        ("pa", "BTC-PERP", 20),           # pool P: 20 - 12 = 8 BTC net -> 800,000 -> 40,000
        ("pb", "BTC-PERP", -12),          #   members alone: 150,000 and 0.05 x 1M + 0.10 x 0.2M = 70,000
        ("qa", "BTC-PERP", 8),            # pool Q: 8 + 8 = 16 BTC, 1.6M -> 50,000 + 60,000 = 110,000
        ("qb", "BTC-PERP", 8),            #   (members 40,000 each: tiers charge concentration, no hedge here)
    ], groups={"pa": "P", "pb": "P", "qa": "Q", "qb": "Q"})
    im = ds["im"].to_series()
    expected = {"p1": 25_000.0, "p2": 250_000.0, "cs": 300_000.0,
                "st": 0.05 * 10 * S + 10 * CALL + 10 * PUT,
                "hf": 0.05 * 10 * N_D1 * S + 25_000.0, "iv": 25_000.0, "sp": 70_000.0,
                "pa": 150_000.0, "pb": 70_000.0, "qa": 40_000.0, "qb": 40_000.0}
    for account, value in expected.items():
        assert im[account] == pytest.approx(value, rel=1e-12), account
    assert expected["st"] == pytest.approx(228_041.41, abs=0.01)
    assert expected["hf"] == pytest.approx(52_225.52, abs=0.01)
    gim = ds["group_im"].to_series()
    assert gim["P"] == pytest.approx(40_000.0, rel=1e-12)
    assert gim["Q"] == pytest.approx(110_000.0, rel=1e-12)
    assert gim["p2"] == im["p2"]                       # a singleton pool is its account
    # mm = im x margin.maintenance_ratio (0.5 here; no maintenance_fraction set).
    np.testing.assert_allclose(ds["mm"].values, 0.5 * ds["im"].values, rtol=1e-15)
    # Breakdown: |net notional| summed over instruments, short premium apart.
    assert float(ds["tiered_notional"].sel(account="cs")) == pytest.approx(4e6, rel=1e-12)
    assert float(ds["tiered_short_premium"].sel(account="st")) == pytest.approx(20 * CALL, rel=1e-12)
    assert float(ds["tiered_group_notional"].sel(group="P")) == pytest.approx(8e5, rel=1e-12)
    np.testing.assert_allclose(ds["tiered_unit_notional"].sel(instrument=["BTC-INV", "BTC-C", "BTC-P"]).values,
                               [100.0, N_D1 * S, (N_D1 - 1.0) * S], rtol=1e-12)
    # Every position of an account is already net per instrument: isolated_im = im, no netting benefit.
    np.testing.assert_array_equal(ds["isolated_im"].values, ds["im"].values)
    assert (ds["netting_benefit"].values == 0).all()
    assert ds.attrs["margin_model"] == "tiered"


def test_buffer_and_maintenance_fraction():
    model = Tiered(MarginParams(buffer=0.25, maintenance_ratio=0.75), maintenance_fraction=0.6)
    ds = dataset([("p2", "BTC-PERP", -30)], model=model)
    assert float(ds["im"].sel(account="p2")) == pytest.approx(1.25 * 250_000.0, rel=1e-12)
    # The model's own fraction (dYdX v4: 0.6) replaces the shared ratio for this model.
    assert float(ds["mm"].sel(account="p2")) == pytest.approx(0.6 * 1.25 * 250_000.0, rel=1e-12)
    assert ds.attrs["maintenance_ratio"] == 0.6


def test_marginal_tiers_are_the_venue_deduction_form_and_continuous():
    t = TierTable.from_lists([0, 1e6, 5e6, 25e6], [0.05, 0.10, 0.20, 0.50])
    # Hyperliquid: d_n = d_{n-1} + b_n (f_n - f_{n-1}): 0, 50,000, 550,000, 8,050,000.
    np.testing.assert_allclose(t.deduction, [0.0, 50_000.0, 550_000.0, 8_050_000.0], rtol=1e-12)
    n = np.array([0.0, 1e6, 2e6, 5e6, 3e7, -3e7])
    np.testing.assert_allclose(t.margin(n), [T_of(x) for x in n], rtol=1e-12)
    for bound in (1e6, 5e6, 25e6):                     # no jump at a bound
        assert t.margin(bound * (1 - 1e-12)) == pytest.approx(t.margin(bound), rel=1e-9)


# ----------------------------------------------------------------------------- properties
POSITION = st.floats(-60.0, 60.0, allow_nan=False).map(lambda x: round(x, 3))
TRADED = ["BTC-PERP", "BTC-FUT", "BTC-INV", "ETH-PERP", "BTC-C", "BTC-P", "BTC-SPOT"]
SCALE = {"BTC-INV": 1_000.0, "ETH-PERP": 20.0}        # contract sizes differ: similar notionals


def _im(positions, groups=()):
    ds = dataset(positions, groups=groups)
    return ds["im"].to_series(), ds["group_im"].to_series()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(q=st.lists(POSITION, min_size=len(TRADED), max_size=len(TRADED)), grow=st.floats(1.0, 4.0),
       which=st.integers(0, len(TRADED) - 1), extra=st.floats(0.0, 50.0))
def test_tiered_is_monotone_in_position_size(q, grow, which, extra):
    """Scaling the book up, or growing one position away from zero, never lowers im."""
    base = [("x", ins, qi * SCALE.get(ins, 1.0)) for ins, qi in zip(TRADED, q)]
    scaled = [(a, ins, qi * grow) for a, ins, qi in base]
    one = [(a, ins, qi + math.copysign(extra * SCALE.get(ins, 1.0), qi) if i == which else qi)
           for i, (a, ins, qi) in enumerate(base)]
    im0 = _im(base)[0]["x"]
    assert _im(scaled)[0]["x"] >= im0 * (1 - 1e-12)
    assert _im(one)[0]["x"] >= im0 * (1 - 1e-12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=st.lists(POSITION, min_size=len(TRADED), max_size=len(TRADED)),
       b=st.lists(st.floats(0.0, 60.0), min_size=len(TRADED), max_size=len(TRADED)))
def test_no_hedge_is_margined_above_the_sum_of_its_legs(a, b):
    """Two legs pooled, opposite in every instrument they share: the pool needs no more than the legs apart."""
    leg_a = [("a", ins, qi * SCALE.get(ins, 1.0)) for ins, qi in zip(TRADED, a)]
    leg_b = [("b", ins, -math.copysign(bi, qi) * SCALE.get(ins, 1.0)) for ins, qi, bi in zip(TRADED, a, b)]
    im, gim = _im(leg_a + leg_b, groups={"a": "H", "b": "H"})
    assert gim["H"] <= (im["a"] + im["b"]) * (1 + 1e-12)


def test_the_named_hedges_are_never_margined_above_their_legs():
    hedges = {
        "perp against a dated future": [("BTC-PERP", 10), ("BTC-FUT", -10)],
        "long call delta-hedged with a short perpetual": [("BTC-C", 10), ("BTC-PERP", -round(10 * N_D1, 3))],
        "BTC against ETH, dollar-neutral": [("BTC-PERP", 3), ("ETH-PERP", -60)],
        "short straddle": [("BTC-C", -10), ("BTC-P", -10)],
    }
    for name, legs in hedges.items():
        together = _im([("h", ins, q) for ins, q in legs])[0]["h"]
        apart = sum(_im([("h", ins, q)])[0]["h"] for ins, q in legs)
        # Different instruments: tiered recognises no offset between them, and charges nothing extra.
        assert together == pytest.approx(apart, rel=1e-12), name


# ----------------------------------------------------------------------------- configuration and the job
def test_config_errors_name_the_key():
    common = {"model": "tiered", "confidence": 0.99, "buffer": 0.1, "maintenance_ratio": 0.75}
    for own, key in [({"tier_imf": [0.05, 0.1, 0.2]}, r"margin\.tiered\.tier_imf"),
                     ({"tier_notional": [0, 5e6, 1e6, 2e7]}, r"margin\.tiered\.tier_notional\[2\]"),
                     ({"tier_notional": [1, 5e6, 1e7, 2e7]}, r"margin\.tiered\.tier_notional\[0\]"),
                     ({"tier_imf": [0.05, 0.04, 0.2, 0.5]}, r"margin\.tiered\.tier_imf\[1\]"),
                     ({"tier_imf": [0.05, 0.1, 1.5, 0.5]}, r"margin\.tiered\.tier_imf\[2\]"),
                     ({"maintenance_fraction": 0}, r"margin\.tiered\.maintenance_fraction"),
                     ({"liquidation_price": "yes"}, r"margin\.tiered\.liquidation_price"),
                     ({"tiers": 3}, r"margin\.tiered\.tiers")]:
        with pytest.raises(ConfigError, match=key):
            build_margin_models({**common, "tiered": own})
    model = build_margin_models({**common, "tiered": {"maintenance_fraction": 0.5, "liquidation_price": False}})[0]
    assert isinstance(model, Tiered) and model.params.maintenance_ratio == 0.5 and not model.liquidation_price


@pytest.mark.parametrize("override, key", [
    ("margin.tiered.maintenance_fraction=abc", "margin.tiered.maintenance_fraction"),
    ("margin.tiered.tier_imf=[0.05,abc,0.2,0.5]", "margin.tiered.tier_imf[1]"),
    ("margin.tiered.liquidation_price=abc", "margin.tiered.liquidation_price"),
])
def test_a_bad_tiered_setting_exits_2_naming_the_key(tmp_path, override, key):
    from test_cli import TINY, assert_clean_failure

    p = run_job("jobs.stress", *TINY, "margin=tiered", override, f"output.path={tmp_path / 'o.zarr'}", cwd=tmp_path)
    assert_clean_failure(p, f"config key {key}:")
    assert list(tmp_path.iterdir()) == []


def _recompute_tiered(book_dir, buffer):
    """im per account and per group from the input files alone (pandas, scipy's normal CDF)."""
    from scipy.stats import norm

    ins, mkt, pos, _, accs = recompute.read_book(book_dir)
    s = mkt.loc[ins["underlying"], "price"].to_numpy()
    size = ins["contract_size"].to_numpy(float)
    inverse = ins["inverse"].map(recompute._flag).to_numpy()
    unit = np.where(inverse, size, size * s)
    premium = np.zeros(len(ins))
    for i, r in enumerate(ins.itertuples()):
        if r.kind == "option":
            t = (pd.Timestamp(r.expiry) - pd.Timestamp(VALUATION)).days / 365.0
            vol = r.vol if "vol" in ins.columns and not pd.isna(r.vol) else mkt.loc[r.underlying, "vol"]
            call = r.option_type == "call"
            d1 = (math.log(s[i] / r.strike) + 0.5 * vol * vol * t) / (vol * math.sqrt(t))
            unit[i] = size[i] * s[i] * (norm.cdf(d1) if call else norm.cdf(d1) - 1.0)
            premium[i] = size[i] * float(recompute.bs_usd(np.array(s[i]), r.strike, t, vol, call))
    unit, premium = pd.Series(unit, ins.index), pd.Series(premium, ins.index)
    group = dict(zip(accs["account"], accs["group"]))
    pos = pos.assign(group=[group.get(a) or a for a in pos["account"]])

    def margin(by):
        net = pos.groupby([by, "instrument"])["quantity"].sum().reset_index()
        n = (net["quantity"] * unit[net["instrument"]].to_numpy()).abs()
        short = np.maximum(0.0, -net["quantity"]) * premium[net["instrument"]].to_numpy()
        return ((n.map(T_of) + short).groupby(net[by]).sum() * (1 + buffer))
    return margin("account"), margin("group")


def test_the_stress_job_runs_tiered_against_a_recompute_from_the_files(exported_book):
    from jobs.stress import run

    ds = run(stress_config("portfolio=files", f"portfolio.dir={exported_book}", "scenarios.n=200",
                           "margin=tiered"))
    im, gim = _recompute_tiered(exported_book, buffer=0.10)
    got = ds["im"].to_series()
    np.testing.assert_allclose(got[im.index].values, im.values, rtol=1e-9)
    assert (got.drop(im.index) == 0).all()               # accounts with collateral only
    np.testing.assert_allclose(ds["group_im"].to_series()[gim.index].values, gim.values, rtol=1e-9)
    np.testing.assert_allclose(ds["mm"].values, 0.75 * ds["im"].values, rtol=1e-15)
    assert ds["liquidation_price"].dims == ("group", "asset")
    assert np.isfinite(ds["liquidation_price"].values).any()
    assert "var" in ds and ds.attrs["margin_model"] == "tiered"


def test_the_stress_job_runs_mc_es_and_tiered_together():
    from jobs.stress import run

    both = run(stress_config("margin.models=[mc_es,tiered]"))
    alone = run(stress_config("margin=tiered"))
    assert list(both["model"].values) == ["mc_es", "tiered"]
    assert both["liquidation_price"].dims == ("model", "group", "asset")
    assert np.isnan(both["liquidation_price"].sel(model="mc_es")).all()   # off by default for mc_es
    for v in ("im", "group_im", "mm", "liquidation_price", "isolated_im"):
        np.testing.assert_array_equal(both[v].sel(model="tiered").values, alone[v].values, err_msg=v)
    np.testing.assert_array_equal(both["tiered_notional"].values, alone["tiered_notional"].values)
