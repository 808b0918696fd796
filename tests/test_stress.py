"""run_stress: closed forms, margin identities and invariances."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from conftest import SCENARIOS_2F, VALUATION
from mcmargin import Chunking, MarginParams, build_scenarios, run_stress
from mcmargin.inputs.files import book_from_frames


def scenarios_for(book, **over):
    return build_scenarios(dict(SCENARIOS_2F, **over), book.assets, book.market["vol"].to_numpy())


def rel_close(a, b, tol):
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = np.maximum(np.abs(b), 1e-6 * np.abs(b).max(initial=0.0))
    return np.all(np.abs(a - b) <= tol * np.maximum(scale, 1e-300))


FIGURES = ("equity", "im", "mm", "isolated_im", "margin_call", "var", "es", "group_im", "group_es",
           "group_equity", "group_margin_call", "unit_es")


# ----------------------------------------------------------------- closed form
from omegaconf import OmegaConf  # noqa: E402

from conftest import CONF  # noqa: E402
import oracles  # noqa: E402


def output_confidences():
    """Every confidence the job reports by default: output.confidence plus margin.confidence."""
    from conftest import stress_config

    cfg = stress_config()          # composed as the job composes it (margin options share conf/margin_common.yaml)
    return sorted(set(float(q) for q in cfg.output.confidence) | {float(cfg.margin.confidence)})


S0, SIGMA = 50_000.0, 0.8
#: One account per position: long linear perpetual, long spot, long inverse perpetual (face S0: the same USD
#: loss s0 expm1(-r)), short linear perpetual.  Each loses a monotone function of the BTC log-return.
SINGLE_ASSET_BOOK = dict(
    instruments=pd.DataFrame(dict(instrument=["P", "S", "INV"], kind=["perpetual", "spot", "perpetual"],
                                  underlying=["BTC"] * 3, settle=["USD", "USD", "BTC"], inverse=[False, False, True],
                                  contract_size=[1.0, 1.0, S0])),
    market=pd.DataFrame(dict(asset=["BTC", "USD"], price=[S0, 1.0], vol=[0.6, 0.0])),
    positions=pd.DataFrame(dict(account=["lin", "spot", "inv", "short"], instrument=["P", "S", "INV", "P"],
                                quantity=[1.0, 1.0, 1.0, -1.0])),
    collateral=pd.DataFrame(dict(account=["lin"], asset=["USD"], amount=[1e6])))


@pytest.fixture(scope="module")
def single_asset_book():
    t = SINGLE_ASSET_BOOK
    return book_from_frames(t["instruments"], t["market"], t["positions"], t["collateral"], None, VALUATION)


def closed_form(model, side, q, s, mu, dof):
    if model == "gaussian":
        f = oracles.lognormal_long if side == "long" else oracles.lognormal_short
        return f(S0, s, q, mu)
    if side == "short":
        var, pdf = oracles.student_t_short_var(S0, s, q, dof, mu)
        return var, np.nan, pdf, np.nan
    return oracles.student_t_long(S0, s, q, dof, mu)


CLOSED_FORM_RUNS = {  # model -> (scenario config, accounts checked for ES and VaR, accounts checked for VaR only)
    "gaussian": (dict(model="gaussian", n=4_000_000, seed=5, horizon_days=30), ("lin", "spot", "inv", "short"), ()),
    # a short position under Student-t log-returns has an infinite ES (E[e^X] diverges): VaR only
    "student_t": (dict(model="student_t", dof=5.0, n=4_000_000, seed=6, horizon_days=30),
                  ("lin", "spot", "inv"), ("short",)),
}


@pytest.fixture(scope="module", params=list(CLOSED_FORM_RUNS))
def closed_form_run(request, single_asset_book):
    cfg, full, var_only = CLOSED_FORM_RUNS[request.param]
    cfg = dict(cfg, risk_factors={"BTC": {"vol": SIGMA}})
    scen = build_scenarios(cfg, single_asset_book.assets, single_asset_book.market["vol"].to_numpy())
    ds = run_stress(single_asset_book, scen, confidences=output_confidences(), margin=MarginParams(0.99, 0.0, 0.5))
    return request.param, cfg, full, var_only, ds


def zscores(model, cfg, ds, account, q, days_per_year=365.0, mu=None):
    n, h = cfg["n"], cfg["horizon_days"]
    s = SIGMA * np.sqrt(h / days_per_year)
    side = "short" if account == "short" else "long"
    var, es, pdf, tail_var = closed_form(model, side, q, s, 0.0 if mu is None else mu(s), cfg.get("dof"))
    se_var, se_es = oracles.var_es_se_law(n, q, var, es, pdf, tail_var)
    got = ds.sel(account=account, confidence=q)
    return (float(got["var"]) - var) / se_var, (float(got["es"]) - es) / se_es


def test_single_asset_var_es_match_closed_forms(closed_form_run):
    """Gaussian (lognormal) and Student-t VaR and ES of one-asset positions at every output confidence,
    to 3 Monte Carlo standard errors (VaR: sqrt(q(1-q)/n)/f; ES: Chen 2008), on 4 million scenarios."""
    model, cfg, full, var_only, ds = closed_form_run
    assert list(ds["confidence"].values) == output_confidences()
    for q in output_confidences():
        for account in full + var_only:
            zv, ze = zscores(model, cfg, ds, account, q)
            assert abs(zv) <= oracles.K_SE, (model, account, q, "VaR", zv)
            if account in full:
                assert abs(ze) <= oracles.K_SE, (model, account, q, "ES", ze)
    assert float(ds["im"].sel(account="lin")) == pytest.approx(float(ds["es"].sel(account="lin", confidence=0.99)))


WRONG_CONVENTIONS = {
    "martingale drift": dict(mu=lambda s: -0.5 * s * s),
    "360-day year": dict(days_per_year=360.0),
}


@pytest.mark.parametrize("wrong", list(WRONG_CONVENTIONS))
def test_closed_form_tolerance_rejects_a_convention_error(closed_form_run, wrong):
    """Negative control: the closed form under a wrong convention (martingale drift instead of zero, a
    360-day year instead of 365) lies outside the 3-SE band, so the test above would catch that error."""
    model, cfg, full, var_only, ds = closed_form_run
    for q in output_confidences():
        zv, ze = zscores(model, cfg, ds, "lin", q, **WRONG_CONVENTIONS[wrong])
        assert max(abs(zv), abs(ze)) > oracles.K_SE, (model, wrong, q, zv, ze)     # VaR or ES check fails


# -------------------------------------------------------------- identities
def test_margin_identities(small_book):
    params = MarginParams(confidence=0.99, buffer=0.1, maintenance_ratio=0.6)
    ds = run_stress(small_book, scenarios_for(small_book), margin=params)
    q = ds.sel(confidence=0.99)
    np.testing.assert_allclose(ds["im"], np.maximum(0, q["es"]) * 1.1, rtol=1e-15)
    np.testing.assert_allclose(ds["mm"], ds["im"] * 0.6, rtol=1e-15)
    np.testing.assert_allclose(ds["margin_call"], np.maximum(0, ds["im"] - ds["equity"]), rtol=1e-15)
    assert (ds["es"] >= ds["var"] - 1e-9).all()
    assert list(ds["group"].values) == ["G1", "c", "d", "e"]
    assert dict(zip(ds["account"].values, ds["account_group"].values)) == {"a": "G1", "b": "G1", "c": "c",
                                                                          "d": "d", "e": "e"}
    # singleton groups are their member, bit for bit
    for g in ("c", "d", "e"):
        assert float(ds["group_im"].sel(group=g)) == float(ds["im"].sel(account=g))
    # equity: b holds 1 BTC, short inverse perp (value 0) and 3.5 inverse puts at their premium, priced here
    # in coin by a change of numeraire (tests/recompute.py, checked against QuantLib) and converted at spot
    from recompute import inverse_option_coin
    t = (dt.date(2027, 3, 26) - VALUATION).days / 365
    put_usd = 90_000.0 * float(inverse_option_coin(np.array(90_000.0), 85_000.0, t, 0.5, False))
    assert put_usd > 1_000                                             # a real premium, not a zero
    assert float(ds["equity"].sel(account="b")) == pytest.approx(90_000.0 + 3.5 * put_usd, rel=1e-12)
    np.testing.assert_allclose(float(ds["equity"].sel(account="d")), 6_000.0)
    assert ds["unit_es"].dims == ("instrument", "side")


def test_options_expiring_inside_horizon_pay_intrinsic(small_book):
    # e is short 4 ETH calls struck at spot that expire tomorrow (inside the 2-day horizon):
    # the loss in each scenario is 4 * (max(S' - K, 0) - premium today).
    scen = scenarios_for(small_book)
    ds = run_stress(small_book, scen, include_scenarios=True)
    from scipy.special import ndtr
    from mcmargin.instruments import black_scholes as pricing
    premium = pricing.black_scholes(np, ndtr, 3000.0, 3000.0, 1 / 365, 0.7, True)
    s1 = 3000.0 * np.exp(ds["shock"].sel(asset="ETH").values)
    loss = 4 * (np.maximum(s1 - 3000.0, 0) - premium)
    m = 40  # 4000 scenarios at 0.99
    assert float(ds["es"].sel(account="e", confidence=0.99)) == pytest.approx(np.sort(loss)[-m:].mean(), rel=1e-12)


# ------------------------------------------------------ properties (hypothesis)
def random_frames(seed, n_accounts, cash_only):
    rng = np.random.default_rng(seed)
    exp = (VALUATION + dt.timedelta(days=30)).isoformat()
    ins = pd.DataFrame(dict(
        instrument=["B-PERP", "B-INV", "B-C", "B-P", "E-FUT", "E-SPOT", "E-P"],
        kind=["perpetual", "perpetual", "option", "option", "future", "spot", "option"],
        underlying=["BTC", "BTC", "BTC", "BTC", "ETH", "ETH", "ETH"],
        settle=["USDT", "BTC", "USDT", "USDT", "USDT", "USDT", "ETH"],
        inverse=[False, True, False, False, False, False, True],
        contract_size=[1.0, 100.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        expiry=["", "", exp, exp, exp, "", exp],
        strike=[np.nan, np.nan, 100_000, 80_000, np.nan, np.nan, 2_800],
        option_type=["", "", "call", "put", "", "", "put"]))
    mkt = pd.DataFrame(dict(asset=["BTC", "ETH", "USDT"], price=[90_000.0, 3_000.0, 1.0], vol=[0.5, 0.7, 0.0]))
    accounts = [f"A{i:03d}" for i in range(n_accounts)]
    rows = [(a, i, float(np.round(rng.normal(0, 3), 3)))
            for a in accounts for i in rng.choice(ins["instrument"], rng.integers(1, 5), replace=False)]
    pos = pd.DataFrame(rows, columns=["account", "instrument", "quantity"])
    assets = ["USDT"] if cash_only else ["USDT", "BTC", "ETH"]
    crow = [(a, c, float(rng.uniform(0, 50_000 if c == "USDT" else 2))) for a in accounts
            for c in rng.choice(assets, rng.integers(1, len(assets) + 1), replace=False)]
    col = pd.DataFrame(crow, columns=["account", "asset", "amount"])
    groups = [f"G{rng.integers(0, max(1, n_accounts // 3))}" if rng.random() < 0.6 else "" for _ in accounts]
    acc = pd.DataFrame(dict(account=accounts, group=groups))
    return ins, mkt, pos, col, acc


def random_book(seed, n_accounts, cash_only):
    return book_from_frames(*random_frames(seed, n_accounts, cash_only), VALUATION)


PROPS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(seed=st.integers(0, 10_000), n=st.integers(1, 25), buffer=st.floats(0, 0.5))
def test_cross_margin_never_exceeds_isolated_or_members(seed, n, buffer):
    import tempfile
    from pathlib import Path
    import recompute
    frames = random_frames(seed, n, cash_only=True)
    book = book_from_frames(*frames, VALUATION)
    ds = run_stress(book, scenarios_for(book, n=800, seed=seed), margin=MarginParams(0.99, buffer, 0.75),
                    include_scenarios=True)
    # ES is subadditive on a common scenario set: one pool <= parts margined alone
    assert (ds["im"] <= ds["isolated_im"] * (1 + 1e-12) + 1e-9).all()
    member_im = ds["im"].groupby(ds["account_group"].rename("group")).sum().sel(group=ds["group"])
    assert (ds["group_im"] <= member_im * (1 + 1e-12) + 1e-9).all()
    # ... and from below: the requirements are the recomputed ones (a zero or shrunken margin fails)
    with tempfile.TemporaryDirectory() as d:
        for name, t in zip(("instruments", "market", "positions", "collateral", "accounts"), frames):
            t.to_csv(Path(d) / f"{name}.csv", index=False)
        ref = recompute.recompute(d, ds["shock"].to_pandas(), ds["vol_shock"].to_pandas(),
                                  accounts=ds["account"].values, confidences=ds["confidence"].values,
                                  buffer=buffer, maintenance_ratio=0.75)
    for v in ("im", "isolated_im", "group_im", "netting_benefit", "group_netting_benefit"):
        np.testing.assert_allclose(ds[v].values, ref[v], rtol=1e-9, atol=1e-6, err_msg=v)
    assert (ds["im"].values >= ref["im"] * (1 - 1e-9) - 1e-6).all()
    assert (ref["im"] > 0).any()


@PROPS
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30), chunk=st.integers(32, 700), rows=st.integers(1, 40))
def test_chunk_sizes_change_no_figure(seed, n, chunk, rows):
    book = random_book(seed, n, cash_only=False)
    scen = scenarios_for(book, n=700, seed=seed)
    base = run_stress(book, scen, chunking=Chunking(700, 10_000))
    for fast in (True, False):
        other = run_stress(book, scen, chunking=Chunking(chunk, rows), fast_path=fast)
        for v in FIGURES:
            assert rel_close(other[v], base[v], 1e-12), v


@PROPS
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30))
def test_numpy_jax_and_strict_backends_agree(seed, n):
    book = random_book(seed, n, cash_only=False)
    scen = scenarios_for(book, n=600, seed=seed)
    ref = run_stress(book, scen, fast_path=False)
    for kwargs in (dict(backend="numpy", fast_path=True), dict(backend="jax"), dict(backend="array_api_strict")):
        got = run_stress(book, scen, chunking=Chunking(250, 16), **kwargs)
        for v in FIGURES:
            assert rel_close(got[v], ref[v], 1e-9), (kwargs, v)


def test_backend_attrs_and_reproducibility(small_book):
    scen = scenarios_for(small_book)
    a = run_stress(small_book, scen)
    b = run_stress(small_book, scen, chunking=Chunking(333, 2))
    assert a.attrs["backend"] == "numpy" and a.attrs["kernel"].startswith("fused")
    for v in FIGURES:
        np.testing.assert_array_equal(a[v], b[v])   # fused path: bit for bit across chunkings


def test_too_few_tail_scenarios_warn_and_say_why(caplog):
    from jobs.stress import run
    from conftest import stress_config

    with caplog.at_level("WARNING", logger="mcmargin.pipeline.stress"):
        run(stress_config("scenarios.n=10", "portfolio.n_accounts=5"))
    text = caplog.text
    assert "m = 1 tail scenario" in text and "q = 0.99" in text and "sampling noise" in text
    assert "scenarios.n >= 2,000" in text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mcmargin.pipeline.stress"):
        run(stress_config("scenarios.n=4000", "portfolio.n_accounts=5", "output.confidence=[0.99]"))
    assert "tail scenario" not in caplog.text     # m = 40 at q = 0.99


def test_tail_size_threshold_is_the_stated_minimum():
    from mcmargin.pipeline.stress import MIN_TAIL_SCENARIOS, check_tail_sizes

    assert check_tail_sizes(100 * MIN_TAIL_SCENARIOS, [0.99]) == []        # m = 20
    assert len(check_tail_sizes(100 * MIN_TAIL_SCENARIOS - 100, [0.99])) == 1   # m = 19


def test_unused_haircuts_are_logged_once_per_run(caplog):
    from jobs.stress import run
    from conftest import stress_config

    with caplog.at_level("INFO", logger="mcmargin.pipeline.stress"):
        run(stress_config("portfolio.n_accounts=5"))
    assert caplog.text.count("market.haircut is not used by the mc_es") == 1


def test_no_haircut_note_without_haircuts(small_book):
    import dataclasses

    from mcmargin.pipeline.stress import note_unused_haircuts

    assert "mc_es" in note_unused_haircuts(small_book)
    plain = dataclasses.replace(small_book, market=small_book.market.assign(haircut=0.0))
    assert note_unused_haircuts(plain) is None
