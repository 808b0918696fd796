"""Liquidation cascades (issue 15; docs/methodology.md section 14).

A three-pool toy followed by hand (one round, two rounds, fund exhausted,
auto-deleveraging and its ranking); zero impact against a one-shot
liquidation priced independently (tests/recompute.py); monotonicity in the
impact; every per-scenario figure against a brute-force per-scenario loop
that prices every contract on its own; bit-identical results across block
sizes, schedulers and backends; the job's variables and config errors.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import recompute
from conftest import VALUATION, run_job, small_frames_data, stress_config
from jobs._cli import EXIT_USER_ERROR
from mcmargin import build_scenarios, run_stress
from mcmargin.aggregation import compile_book
from mcmargin.cascade import (CascadeParams, adl_ranking, cascade_instantaneous, cascade_scenarios, pool_book)
from mcmargin.errors import ConfigError
from mcmargin.inputs.files import book_from_frames

ROOT_365 = math.sqrt(365.0)
VOL = 0.5
ADV = 1_000.0
SIGMA_D = VOL / ROOT_365


# --------------------------------------------------------------------------- the toy, by hand
def _toy(collateral=(100.0, 150.0, 1_000.0, 10_000.0), with_d=True):
    """BTC at 100 (vol 0.5, ADV 1,000 BTC), one linear perpetual of size 1.

    Pools (singleton accounts): A long 10, B long 10, C short 5, D short 5;
    collateral in USDT (cash: it never moves).
    """
    ins = pd.DataFrame(dict(instrument=["BTC-PERP"], kind=["perpetual"], underlying=["BTC"], settle=["USDT"],
                            inverse=["false"], contract_size=[1.0], expiry=[""], strike=[np.nan], option_type=[""]))
    mkt = pd.DataFrame(dict(asset=["BTC", "USDT"], price=[100.0, 1.0], vol=[VOL, 0.0], haircut=[0.0, 0.0],
                            adv=[ADV, np.nan]))
    names = ["A", "B", "C", "D"] if with_d else ["A", "B", "C"]
    qty = [10.0, 10.0, -5.0, -5.0][:len(names)]
    pos = pd.DataFrame(dict(account=names, instrument=["BTC-PERP"] * len(names), quantity=qty))
    col = pd.DataFrame(dict(account=names, asset=["USDT"] * len(names), amount=list(collateral[:len(names)])))
    acc = pd.DataFrame(dict(account=names, group=[""] * len(names)))
    return book_from_frames(ins, mkt, pos, col, acc, VALUATION)


def _run_toy(price, mm, params, **kw):
    book = _toy(**kw)
    c = compile_book(book, 0.0, row_kinds=("accounts", "groups"))
    equity = np.asarray(c.holdings[c.group_row] @ c.unit_value).ravel()
    pools = pool_book(c, book, np.asarray(mm, dtype=float), equity, params)
    shock = np.array([[math.log(price / 100.0), 0.0]])
    return cascade_instantaneous(pools, shock, np.zeros_like(shock), params), list(c.groups)


def _step(units, k):
    """One round's log move of the square-root law for ``units`` sold."""
    return -k * SIGMA_D * math.sqrt(units / ADV)


def test_toy_one_round():
    """Price 91: A (equity 100 - 90 = 10) is below its mm 20 and sells 10 BTC; the move does not reach B."""
    k = 5.0
    p = CascadeParams(impact_coefficient=k, liquidation_fee=0.01, insurance_fund=0.0)
    res, groups = _run_toy(91.0, [20, 20, 20, 20], p)
    s1 = _step(10.0, k)
    assert 150 + 10 * (91 * math.exp(s1) - 100) >= 20          # B survives the move (the premise)
    assert res.rounds[0] == 1 and res.liquidated_accounts[0] == 1
    assert res.price_move[0, 0] == pytest.approx(s1, rel=1e-14) and res.price_move[0, 1] == 0.0
    assert res.cascade_loss[0] == 0.0 and res.insurance_fund_draw[0] == 0.0 and res.adl_volume[0] == 0.0
    assert list(res.first) == [1, 0, 0, 0] and list(res.any_round) == [1, 0, 0, 0]


def test_toy_two_rounds():
    """With k = 20 A's 10 BTC push the price from 91 to 86.4: B falls below mm and sells 10 more; C gains."""
    k = 20.0
    p = CascadeParams(impact_coefficient=k, liquidation_fee=0.01, insurance_fund=0.0)
    res, _ = _run_toy(91.0, [20, 20, 20, 20], p)
    s1 = _step(10.0, k)
    assert 150 + 10 * (91 * math.exp(s1) - 100) < 20             # B fails in round 2 (the premise)
    assert res.rounds[0] == 2 and res.liquidated_accounts[0] == 2
    assert res.price_move[0, 0] == pytest.approx(2 * s1, rel=1e-14)
    assert list(res.first) == [1, 0, 0, 0] and list(res.any_round) == [1, 1, 0, 0]
    assert res.cascade_loss[0] == 0.0                            # both had equity left: no deficit


def test_toy_max_rounds_stops_the_cascade():
    """max_rounds = 1 stops after A: B is never revalued, though A's sale (reported) would sink it."""
    k = 20.0
    p = CascadeParams(impact_coefficient=k, liquidation_fee=0.01, insurance_fund=0.0, max_rounds=1)
    res, _ = _run_toy(91.0, [20, 20, 20, 20], p)
    assert res.rounds[0] == 1 and res.liquidated_accounts[0] == 1
    assert res.price_move[0, 0] == pytest.approx(_step(10.0, k), rel=1e-14)


def test_toy_fund_exhausted_and_auto_deleveraging():
    """Price 85, no impact.  A: equity 100 - 150 = -50, a deficit of 50, pays no fee.  B (collateral
    200, equity 50 below its mm 60) is liquidated with equity left and pays its fee 0.01 x 10 x 85 = 8.5 into the fund of 30.  The
    fund (38.5) pays 38.5 of the 50; the rest, 11.5, is auto-deleveraged: 11.5 / 50 of A's 10 BTC long,
    2.3 BTC, is closed against the short C (first in the ranking) at 85: 195.5 USD of notional."""
    p = CascadeParams(impact_coefficient=0.0, liquidation_fee=0.01, insurance_fund=30.0)
    coll = (100.0, 200.0, 1_000.0, 10_000.0)
    res, _ = _run_toy(85.0, [20, 60, 20, 20], p, collateral=coll)
    assert res.rounds[0] == 1 and res.liquidated_accounts[0] == 2
    assert res.cascade_loss[0] == pytest.approx(50.0, rel=1e-14)
    assert res.insurance_fund_draw[0] == pytest.approx(38.5, rel=1e-14)
    assert res.adl_volume[0] == pytest.approx(2.3 * 85.0, rel=1e-13)
    assert res.fund_need[0] == pytest.approx(50.0 - 8.5, rel=1e-14)   # deficit less the fees that came in
    # An empty fund: all 10 BTC go to ADL, 5 from C then 5 from D (both shorts, both in profit).
    res, _ = _run_toy(85.0, [20, 60, 20, 20], dataclasses.replace(p, insurance_fund=0.0), collateral=coll)
    assert res.insurance_fund_draw[0] == pytest.approx(8.5, rel=1e-14)   # the fee that came in
    assert res.adl_volume[0] == pytest.approx((50 - 8.5) / 50 * 10 * 85.0, rel=1e-13)
    # Without D only C's 5 BTC are there to take: the volume is capped at 5 x 85.
    res, _ = _run_toy(85.0, [20, 60, 20], dataclasses.replace(p, insurance_fund=0.0, liquidation_fee=0.0),
                      collateral=coll, with_d=False)
    assert res.adl_volume[0] == pytest.approx(5 * 85.0, rel=1e-14)
    assert res.cascade_loss[0] == pytest.approx(50.0, rel=1e-14) and res.insurance_fund_draw[0] == 0.0


def test_adl_ranking_by_hand():
    """BitMEX's score: PNL% x effective leverage = (profit / entry notional) x (notional / equity)."""
    # C and D: short 5 BTC from 100 to 85: profit 75, entry notional 500, notional 425; equity 1,075 and 10,075.
    score = adl_ranking([75.0, 75.0, -10.0, 75.0], [425.0, 425.0, 100.0, 0.0], [1075.0, 10075.0, 50.0, 10.0],
                        [500.0, 500.0, 100.0, 500.0])
    assert score[0] == pytest.approx(0.15 * 425 / 1075, rel=1e-15)
    assert score[1] == pytest.approx(0.15 * 425 / 10075, rel=1e-15)
    assert score[0] > score[1] and score[2] == -np.inf and score[3] == -np.inf   # losers, no notional: never


def test_toy_monotone_in_impact():
    """A long-only book: more impact never lowers a price, so losses, liquidations and rounds never fall."""
    last = None
    for k in (0.0, 1.0, 5.0, 20.0, 50.0, 200.0):
        p = CascadeParams(impact_coefficient=k, liquidation_fee=0.01, insurance_fund=0.0)
        res, _ = _run_toy(91.0, [20, 20, 20, 20], p, collateral=(100.0, 150.0, 300.0, 600.0))
        now = (res.rounds[0], res.liquidated_accounts[0], res.cascade_loss[0])
        if last is not None:
            assert all(a >= b for a, b in zip(now, last)), (k, now, last)
        last = now
    assert last[0] >= 2


# --------------------------------------------------------------------------- synthetic and small books
SCEN = dict(model="gaussian", n=400, seed=5, horizon_days=2,
            default_factor=dict(vol=None, vol_of_vol=1.0, spot_vol_corr=-0.3, dof=None))


@pytest.fixture(scope="module")
def synthetic():
    from mcmargin import synthetic_book

    book = synthetic_book(n_accounts=300, seed=11)
    scen = build_scenarios(dict(SCEN, risk_factors={a: dict(vol=2.0, vol_of_vol=1.0, spot_vol_corr=-0.3)
                                                    for a in ("BTC", "ETH", "SOL", "BNB")}),
                           book.assets, book.market["vol"])
    ds = run_stress(book, scen)
    c = compile_book(book, 2.0, row_kinds=("accounts", "groups"))
    return book, scen, ds, c


def _pools(synthetic, params):
    book, scen, ds, c = synthetic
    return pool_book(c, book, ds["group_mm"].to_numpy(), ds["group_equity"].to_numpy(), params)


def test_zero_impact_is_one_shot(synthetic):
    """k = 0: the pools liquidated are exactly those whose loss exceeds equity - mm after the shock, priced
    contract by contract (recompute.unit_pnl), once; nothing moves, and there is never a second round."""
    book, scen, ds, c = synthetic
    p = CascadeParams(impact_coefficient=0.0, liquidation_fee=0.0, insurance_fund=0.0)
    res = cascade_scenarios(_pools(synthetic, p), scen, p)
    loss = _pool_losses(book, scen, ds)                              # [pool x scenario], independent
    fail = loss > (ds["group_equity"].to_numpy() - ds["group_mm"].to_numpy())[:, None]
    members = ds["group_members"].to_numpy()
    assert fail.any() and not fail.all()
    np.testing.assert_array_equal(res.liquidated_accounts, (fail * members[:, None]).sum(axis=0))
    np.testing.assert_array_equal(res.rounds, fail.any(axis=0).astype(float))
    np.testing.assert_array_equal(res.first, fail.sum(axis=1))
    np.testing.assert_array_equal(res.any_round, res.first)
    deficit = np.where(fail, np.maximum(0.0, loss - ds["group_equity"].to_numpy()[:, None]), 0.0).sum(axis=0)
    np.testing.assert_allclose(res.cascade_loss, deficit, rtol=1e-9, atol=1e-6)
    assert (res.price_move == 0).all()


def _pool_losses(book, scen, ds, horizon=2.0):
    """[pool x scenario] losses, every contract priced on its own (tests/recompute.py), collateral moved."""
    ins = book.instruments.set_index("instrument")
    mkt = book.market.set_index("asset")
    shock, vol_shock = (pd.DataFrame(np.asarray(a), columns=list(book.assets)) for a in scen.draw_numpy())
    unit = recompute.unit_pnl(ins, mkt, shock, vol_shock, VALUATION, horizon)
    groups = list(ds["group"].values)
    gi = dict(zip(ds["account"].values, [groups.index(g) for g in ds["account_group"].values]))
    pnl = np.zeros((len(groups), len(shock)))
    for a, i, q in book.positions[["account", "instrument", "quantity"]].itertuples(index=False):
        pnl[gi[str(a)]] += q * np.asarray(unit[i][1])
    for a, asset, amount in book.collateral[["account", "asset", "amount"]].itertuples(index=False):
        pnl[gi[str(a)]] += amount * float(mkt.loc[asset, "price"]) * np.expm1(shock[asset].to_numpy())
    return -pnl


def test_synthetic_losses_and_rounds_never_fall_as_impact_grows(synthetic):
    """Over a synthetic book (mostly long): totals of losses, liquidations and rounds rise with k."""
    book, scen, ds, c = synthetic
    last = None
    for k in (0.0, 2.0, 10.0, 50.0):
        p = CascadeParams(impact_coefficient=k, insurance_fund=0.0)
        res = cascade_scenarios(_pools(synthetic, p), scen, p)
        now = np.array([res.cascade_loss.sum(), res.liquidated_accounts.sum(), res.rounds.sum()])
        if last is not None:
            assert (now >= last).all(), (k, now, last)
        last = now
    assert last[2] > scen.n                      # a real cascade: more than one round on average


def test_bit_identical_across_blocks_schedulers_and_workers(synthetic):
    p = CascadeParams(impact_coefficient=10.0, insurance_fund=1e5)
    book, scen, ds, c = synthetic
    pools = _pools(synthetic, p)
    ref = cascade_scenarios(pools, scen, p, scheduler="sync")
    assert ref.rounds.max() >= 2
    import dask

    for block, sched, workers in ((1, "sync", 1), (7, "threads", 2), (64, "threads", 1), (0, "threads", 2)):
        with dask.config.set(num_workers=workers):
            other = cascade_scenarios(pools, scen, dataclasses.replace(p, scenario_block=block), scheduler=sched)
        for f in dataclasses.fields(ref):
            np.testing.assert_array_equal(getattr(other, f.name), getattr(ref, f.name), err_msg=f"{f.name} {block}")


@pytest.mark.parametrize("backend", ["array_api_strict", pytest.param("jax", marks=pytest.mark.slow)])
def test_other_backends_give_the_same_figures(synthetic, backend):
    """The kernel is written once against the array API: the strict namespace and JAX agree with NumPy."""
    pytest.importorskip(backend)
    p = CascadeParams(impact_coefficient=10.0, insurance_fund=1e5, scenario_block=50 if backend != "jax" else 20)
    pools = _pools(synthetic, p)
    book, scen, ds, c = synthetic
    # JAX compiles every new shape (the set of scenarios still cascading shrinks round by round): keep it small.
    scen = build_scenarios(dict(SCEN, n=100 if backend != "jax" else 20, risk_factors={a: dict(vol=2.0, vol_of_vol=1.0, spot_vol_corr=-0.3)
                                                           for a in ("BTC", "ETH", "SOL", "BNB")}),
                           book.assets, book.market["vol"])
    ref = cascade_scenarios(pools, scen, p)
    strict = cascade_scenarios(pools, scen, p, backend=backend)
    for name in ("rounds", "liquidated_accounts", "first", "any_round"):
        np.testing.assert_array_equal(getattr(strict, name), getattr(ref, name), err_msg=name)
    for name in ("cascade_loss", "insurance_fund_draw", "price_move", "adl_volume"):
        np.testing.assert_allclose(getattr(strict, name), getattr(ref, name), rtol=1e-10, atol=1e-9, err_msg=name)


# --------------------------------------------------------------------------- brute force on a small book
def _small_book():
    ins, mkt, pos, col, acc = small_frames_data()
    mkt = mkt.assign(adv=[2_000.0, np.nan, np.nan])          # ETH without adv: the default (USD / price)
    pos = pd.concat([pos, pd.DataFrame(dict(account=["f", "g", "h"], instrument=["BTC-PERP", "ETH-FUT", "BTC-C"],
                                            quantity=[3.0, 200.0, 5.0]))])
    col = pd.concat([col, pd.DataFrame(dict(account=["f", "g", "h"], asset=["USDT", "USDT", "BTC"],
                                            amount=[40_000.0, 9_000.0, 0.5]))])
    acc = pd.DataFrame(dict(account=["a", "b", "c", "f", "g"], group=["G1", "G1", "", "G2", "G2"]))
    return book_from_frames(ins, mkt, pos, col, acc, VALUATION)


def _brute_force(book, ds, shock, vol_shock, p: CascadeParams, horizon=2.0):
    """The cascade of each scenario by a plain loop: every contract priced on its own each round."""
    ins = book.instruments.set_index("instrument")
    mkt = book.market.set_index("asset")
    assets = list(book.assets)
    groups = list(ds["group"].values)
    member_of = dict(zip(ds["account"].values, ds["account_group"].values))
    equity = dict(zip(groups, ds["group_equity"].to_numpy()))
    mm = dict(zip(groups, ds["group_mm"].to_numpy()))
    members = dict(zip(groups, ds["group_members"].to_numpy()))
    adv = {a: (mkt.loc[a, "adv"] if np.isfinite(mkt.loc[a, "adv"]) else p.default_adv_usd / mkt.loc[a, "price"])
           for a in assets}
    sigma = {a: mkt.loc[a, "vol"] / ROOT_365 for a in assets}
    today = pd.Timestamp(VALUATION)
    out = []
    for s in range(shock.shape[0]):
        impact = dict.fromkeys(assets, 0.0)
        alive = set(groups)
        rounds = accounts = 0
        loss_total = draws = 0.0
        fund = p.insurance_fund
        for _ in range(p.max_rounds):
            x = pd.DataFrame([{a: shock[s, j] + impact[a] for j, a in enumerate(assets)}])
            v = pd.DataFrame([{a: vol_shock[s, j] + p.spot_vol_sensitivity * impact[a]
                               for j, a in enumerate(assets)}])
            unit = recompute.unit_pnl(ins, mkt, x, v, VALUATION, horizon)
            pnl = dict.fromkeys(groups, 0.0)
            notional = dict.fromkeys(groups, 0.0)
            units = {g: dict.fromkeys(assets, 0.0) for g in groups}
            for a, i, q in book.positions[["account", "instrument", "quantity"]].itertuples(index=False):
                g, r = member_of[str(a)], ins.loc[i]
                pnl[g] += q * float(np.asarray(unit[i][1])[0])
                s0 = float(mkt.loc[r.underlying, "price"])
                # Fee notional: |qty| x size x S' (the face value of an inverse contract), per position.
                notional[g] += abs(q) * r.contract_size * (
                    1.0 if (recompute._flag(r.inverse) and r.kind != "option") else s0 * math.exp(x[r.underlying][0]))
                if r.kind == "option":
                    s1 = s0 * math.exp(x[r.underlying][0])
                    vol = float(mkt.loc[r.underlying, "vol"]) * math.exp(v[r.underlying][0])
                    t = ((pd.Timestamp(r.expiry) - today).days - horizon) / 365.0
                    call = str(r.option_type).lower() == "call"
                    if t > 0:
                        d1 = (math.log(s1 / r.strike) + 0.5 * vol * vol * t) / (vol * math.sqrt(t))
                        delta = norm.cdf(d1) if call else norm.cdf(d1) - 1.0
                    else:
                        delta = float(s1 > r.strike) if call else -float(s1 < r.strike)
                    units[g][r.underlying] += q * r.contract_size * delta
                elif recompute._flag(r.inverse):
                    units[g][r.underlying] += q * r.contract_size / s0      # face value / S0 per USD of P&L
                else:
                    units[g][r.underlying] += q * r.contract_size
            for a, asset, amount in book.collateral[["account", "asset", "amount"]].itertuples(index=False):
                g = member_of[str(a)]
                pnl[g] += amount * float(mkt.loc[asset, "price"]) * math.expm1(x[asset][0])
                if mkt.loc[asset, "vol"] > 0:
                    units[g][asset] += amount
            failed = [g for g in groups if g in alive and -pnl[g] > equity[g] - mm[g]]
            if not failed:
                break
            rounds += 1
            accounts += sum(members[g] for g in failed)
            deficit = sum(max(0.0, -pnl[g] - equity[g]) for g in failed)
            fund += sum(min(p.liquidation_fee * notional[g], max(0.0, equity[g] + pnl[g])) for g in failed)
            draws += min(deficit, fund)
            fund -= min(deficit, fund)
            loss_total += deficit
            for a in assets:
                sold = sum(units[g][a] for g in failed)
                if sold and sigma[a] > 0:
                    impact[a] += -math.copysign(1.0, sold) * p.impact_coefficient * sigma[a] * math.sqrt(
                        abs(sold) / adv[a])
            alive -= set(failed)
        out.append((rounds, accounts, loss_total, [impact[a] for a in assets], draws))
    return out


def test_every_scenario_against_a_brute_force_loop():
    book = _small_book()
    scen = build_scenarios(dict(SCEN, n=150, default_factor=dict(vol=1.5, vol_of_vol=1.0, spot_vol_corr=-0.3,
                                                                 dof=None)),
                           book.assets, book.market["vol"])
    ds = run_stress(book, scen)
    p = CascadeParams(impact_coefficient=100.0, liquidation_fee=0.01, insurance_fund=3_000.0, max_rounds=6,
                      spot_vol_sensitivity=-3.0)
    c = compile_book(book, 2.0, row_kinds=("accounts", "groups"))
    # Maintenance at twice the model's: pools nearer their line, so the book cascades in many scenarios.
    ds["group_mm"] = 2 * ds["group_mm"]
    pools = pool_book(c, book, ds["group_mm"].to_numpy(), ds["group_equity"].to_numpy(), p)
    res = cascade_scenarios(pools, scen, p)
    shock, vol_shock = (np.asarray(a) for a in scen.draw_numpy())
    ref = _brute_force(book, ds, shock, vol_shock, p)
    assert 10 < sum(r[0] >= 2 for r in ref) < 140            # the book cascades in some scenarios, not all
    draws = np.array([r[4] for r in ref])
    loss = np.array([r[2] for r in ref])
    assert (draws < loss).any() and ((draws == loss) & (loss > 0)).any()   # the fund runs out, or not
    np.testing.assert_array_equal(res.rounds, [r[0] for r in ref])
    np.testing.assert_array_equal(res.liquidated_accounts, [r[1] for r in ref])
    np.testing.assert_allclose(res.cascade_loss, [r[2] for r in ref], rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(res.price_move, [r[3] for r in ref], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.insurance_fund_draw, draws, rtol=1e-9, atol=1e-6)
    # The spot-vol sensitivity matters here (the book's options move with the vols): without it, other rounds.
    flat = cascade_scenarios(pools, scen, dataclasses.replace(p, spot_vol_sensitivity=0.0))
    assert not np.array_equal(flat.rounds, res.rounds)


# --------------------------------------------------------------------------- the job
def test_job_variables_and_their_dims():
    from jobs.stress import run

    ds = run(stress_config("cascade.enabled=true", "scenarios.n=300", "stress_tests.names=[crash_2022_11,vol_spike]"))
    n = ds.sizes["scenario"]
    assert n == 300
    for v in ("cascade_rounds", "liquidated_accounts", "insurance_fund_draw", "adl_volume", "cascade_loss"):
        assert ds[v].dims == ("scenario",) and ds[f"stress_{v}"].dims == ("stress",)
        assert np.isfinite(ds[v]).all() and (ds[v] >= 0).all()
        assert ds[v].attrs["units"] and ds[v].attrs["long_name"]
    assert ds["cascade_price_move"].dims == ("scenario", "asset")
    assert ds["stress_cascade_price_move"].dims == ("stress", "asset")
    for v in ("insurance_fund_draw_var", "insurance_fund_draw_es", "adl_volume_es"):
        assert ds[v].dims == ("confidence",)
    assert ds["insurance_fund_exhausted_prob"].dims == ()
    assert ds["group_liquidation_prob"].dims == ("group",)
    assert (ds["group_liquidation_prob_cascade"] >= ds["group_liquidation_prob"]).all()
    # Tails by the definition (m-th largest, mean of the m largest), from the per-scenario draws.
    draws = np.sort(ds["insurance_fund_draw"].to_numpy())[::-1]
    for j, q in enumerate(ds["confidence"].values):
        var, es = recompute.var_es(draws, float(q))
        assert ds["insurance_fund_draw_var"].values[j] == var
        assert ds["insurance_fund_draw_es"].values[j] == pytest.approx(es, rel=1e-12)
    # The per-pool share against liquidated_accounts: the accounts liquidated after the shock alone.
    members = ds["group_members"].to_numpy()
    assert (ds["group_liquidation_prob"].to_numpy() * n * members).sum() <= ds["liquidated_accounts"].sum() + 1e-6


def test_off_by_default_adds_nothing():
    from jobs.stress import run

    ds = run(stress_config("scenarios.n=300"))
    assert "scenario" not in ds.dims
    assert not any("cascade" in v or v.startswith(("insurance_fund", "adl_", "liquidated_", "group_liquidation"))
                   for v in ds.data_vars)
    assert "cascade_s" not in ds.attrs["timings"]


@pytest.mark.parametrize("override, key", [("cascade.max_rounds=0", "cascade.max_rounds"),
                                           ("cascade.liquidation_fee=nan", "cascade.liquidation_fee"),
                                           ("cascade.insurance_fund=-1", "cascade.insurance_fund"),
                                           ("cascade.enabled=1", "cascade.enabled")])
def test_bad_cascade_settings_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        CascadeParams.from_config({k.split(".")[1]: v for k, v in [(override.split("=")[0],
                                                                     _parse(override.split("=")[1]))]})


def _parse(text):
    return {"nan": float("nan"), "1": 1, "0": 0, "-1": -1}.get(text, text)


def test_job_exits_2_on_a_bad_key(tmp_path):
    out = run_job("jobs.stress", "portfolio.n_accounts=20", "scenarios.n=100", "cascade.enabled=true",
                  "cascade.max_rounds=0", f"output.path={tmp_path / 'x.zarr'}")
    assert out.returncode == EXIT_USER_ERROR
    assert "cascade.max_rounds" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.zarr").exists()
