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
from mcmargin.io import book_from_frames


def scenarios_for(book, **over):
    return build_scenarios(dict(SCENARIOS_2F, **over), book.assets, book.market["vol"].to_numpy())


def rel_close(a, b, tol):
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = np.maximum(np.abs(b), 1e-6 * np.abs(b).max(initial=0.0))
    return np.all(np.abs(a - b) <= tol * np.maximum(scale, 1e-300))


FIGURES = ("equity", "im", "mm", "isolated_im", "margin_call", "var", "es", "group_im", "group_es",
           "group_equity", "group_margin_call", "unit_es")


# ----------------------------------------------------------------- closed form
def test_gaussian_single_future_matches_closed_form():
    """Long 1 BTC linear perpetual, Gaussian log-returns: lognormal VaR and ES."""
    ins = pd.DataFrame(dict(instrument=["P"], kind=["perpetual"], underlying=["BTC"], settle=["USD"],
                            inverse=[False], contract_size=[1.0]))
    mkt = pd.DataFrame(dict(asset=["BTC", "USD"], price=[50_000.0, 1.0], vol=[0.6, 0.0]))
    pos = pd.DataFrame(dict(account=["x"], instrument=["P"], quantity=[1.0]))
    col = pd.DataFrame(dict(account=["x"], asset=["USD"], amount=[1e6]))
    book = book_from_frames(ins, mkt, pos, col, None, VALUATION)
    sigma, h, n = 0.8, 2, 400_000
    scen = build_scenarios(dict(model="gaussian", n=n, seed=5, horizon_days=h, risk_factors={"BTC": {"vol": sigma}}),
                           book.assets, book.market["vol"].to_numpy())
    ds = run_stress(book, scen, confidences=[0.99, 0.975], margin=MarginParams(0.99, 0.0, 0.5))
    s = sigma * np.sqrt(h / 365)
    for q in (0.99, 0.975):
        z = norm.ppf(1 - q)
        var = 50_000 * (1 - np.exp(s * z))                               # loss at the q-quantile
        es = 50_000 * (1 - norm.cdf(z - s) / (1 - q) * np.exp(s * s / 2))  # E[S - S'| tail]
        got = ds.sel(account="x", confidence=q)
        assert float(got["var"]) == pytest.approx(var, rel=0.02)
        assert float(got["es"]) == pytest.approx(es, rel=0.015)
    assert float(ds["im"].sel(account="x")) == pytest.approx(float(ds["es"].sel(account="x", confidence=0.99)))


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
    # equity: b holds 1 BTC, short inverse perp (value 0) and 3.5 inverse puts at their premium
    eq_b = float(ds["equity"].sel(account="b"))
    assert eq_b > 90_000 and eq_b < 90_000 + 3.5 * 90_000 * 0.2
    np.testing.assert_allclose(float(ds["equity"].sel(account="d")), 6_000.0)
    assert ds["unit_es"].dims == ("instrument", "side")


def test_options_expiring_inside_horizon_pay_intrinsic(small_book):
    # e is short 4 ETH calls struck at spot that expire tomorrow (inside the 2-day horizon):
    # the loss in each scenario is 4 * (max(S' - K, 0) - premium today).
    scen = scenarios_for(small_book)
    ds = run_stress(small_book, scen, include_scenarios=True)
    from scipy.special import ndtr
    from mcmargin import pricing
    premium = pricing.black_scholes(np, ndtr, 3000.0, 3000.0, 1 / 365, 0.7, True)
    s1 = 3000.0 * np.exp(ds["shock"].sel(asset="ETH").values)
    loss = 4 * (np.maximum(s1 - 3000.0, 0) - premium)
    m = 40  # 4000 scenarios at 0.99
    assert float(ds["es"].sel(account="e", confidence=0.99)) == pytest.approx(np.sort(loss)[-m:].mean(), rel=1e-12)


# ------------------------------------------------------ properties (hypothesis)
def random_book(seed, n_accounts, cash_only):
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
    return book_from_frames(ins, mkt, pos, col, acc, VALUATION)


PROPS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(seed=st.integers(0, 10_000), n=st.integers(1, 25), buffer=st.floats(0, 0.5))
def test_cross_margin_never_exceeds_isolated_or_members(seed, n, buffer):
    book = random_book(seed, n, cash_only=True)
    ds = run_stress(book, scenarios_for(book, n=800, seed=seed), margin=MarginParams(0.99, buffer, 0.75))
    # ES is subadditive on a common scenario set: one pool <= parts margined alone
    assert (ds["im"] <= ds["isolated_im"] * (1 + 1e-12) + 1e-9).all()
    member_im = ds["im"].groupby(ds["account_group"].rename("group")).sum().sel(group=ds["group"])
    assert (ds["group_im"] <= member_im * (1 + 1e-12) + 1e-9).all()


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

    with caplog.at_level("WARNING", logger="mcmargin.stress"):
        run(stress_config("scenarios.n=10", "portfolio.n_accounts=5"))
    text = caplog.text
    assert "m = 1 tail scenario" in text and "q = 0.99" in text and "sampling noise" in text
    assert "scenarios.n >= 2,000" in text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mcmargin.stress"):
        run(stress_config("scenarios.n=4000", "portfolio.n_accounts=5", "output.confidence=[0.99]"))
    assert "tail scenario" not in caplog.text     # m = 40 at q = 0.99


def test_tail_size_threshold_is_the_stated_minimum():
    from mcmargin.stress import MIN_TAIL_SCENARIOS, check_tail_sizes

    assert check_tail_sizes(100 * MIN_TAIL_SCENARIOS, [0.99]) == []        # m = 20
    assert len(check_tail_sizes(100 * MIN_TAIL_SCENARIOS - 100, [0.99])) == 1   # m = 19


def test_unused_haircuts_are_logged_once_per_run(caplog):
    from jobs.stress import run
    from conftest import stress_config

    with caplog.at_level("INFO", logger="mcmargin.stress"):
        run(stress_config("portfolio.n_accounts=5"))
    assert caplog.text.count("market.haircut is not used by the mc_es") == 1


def test_no_haircut_note_without_haircuts(small_book):
    import dataclasses

    from mcmargin.stress import note_unused_haircuts

    assert "mc_es" in note_unused_haircuts(small_book)
    plain = dataclasses.replace(small_book, market=small_book.market.assign(haircut=0.0))
    assert note_unused_haircuts(plain) is None
