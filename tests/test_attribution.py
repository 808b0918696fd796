"""Attribution (docs/methodology.md, section 16): tail scenarios, Euler contributions, their invariance.

Oracles: a brute-force full loss matrix (every holding revalued on its own by
tests/recompute.py from the exported shocks, no mcmargin), the tail read
off a stable sort (equal losses: lower scenario first), and the kernels'
kept scenarios against a lexicographic sort of a loss matrix full of ties.
"""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import VALUATION, run_job
from mcmargin import Chunking, MarginParams, run_stress
from mcmargin.engine import attribution as engine_attribution
from mcmargin.engine.kernels.fused import FusedKernel, pilot_size
from mcmargin.engine.kernels.reference import ReferenceKernel
from mcmargin.errors import ConfigError
from mcmargin.inputs.files import book_from_frames
from mcmargin.margin import attribution
from mcmargin.tails import rank_order, tail_size
from test_stress import random_frames, scenarios_for


def brute_ranks(losses):
    """Scenario indices of each row by rank: larger loss first, equal losses by the lower index (lexsort)."""
    return np.stack([np.lexsort((np.arange(row.size), -row)) for row in losses])


def run_kernel(kernel, h, pnl, m, chunk, pilot):
    """The engine's calls for one row block: prepare, start (a pilot or not), a fold per chunk, finish."""
    n = pnl.shape[0]
    pnls = [pnl[s:s + chunk] for s in range(0, n, chunk)]
    pnls = [np.ascontiguousarray(p.T) for p in pnls] if kernel.transposed else pnls
    hk = kernel.prepare(h)
    plan = kernel.plan(m, n, chunk, h) if pilot else None
    state = kernel.start(hk, pnls[0], m, plan)
    for p in pnls:
        state = kernel.fold(state, hk, p, m)
    top, scenario, recomputed = kernel.finish(state, hk, pnls, m)
    return top, scenario, pnls


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 30), n=st.integers(50, 3000), m=st.integers(1, 60), chunk=st.integers(17, 1500),
       seed=st.integers(0, 2**31), fused=st.booleans(), pilot=st.booleans())
def test_kept_scenarios_are_the_top_m_ranked_ties_to_the_lower_index(rows, n, m, chunk, seed, fused, pilot):
    """With many equal losses (P&L rounded, rows without holdings), the kernels keep the m scenarios a full
    lexicographic sort ranks first, and explain_block's tail sums and top k are those of that sort."""
    rng = np.random.default_rng(seed)
    m = min(m, n)
    h = sp.random(rows, 6, density=0.5, random_state=rng, format="csr")
    h.data = np.round(h.data * 4)                         # small integers: losses tie often
    pnl = np.round(rng.standard_normal((n, 6)), 0)
    loss = -np.asarray(h @ pnl.T)
    kernel = FusedKernel() if fused else ReferenceKernel("numpy")
    top, scenario, pnls = run_kernel(kernel, h, pnl, m, chunk, pilot and pilot_size(m, n, chunk) is not None)
    ranks = brute_ranks(loss)
    for r in range(rows):
        assert set(scenario[r].tolist()) == set(ranks[r, :m].tolist()), r
        np.testing.assert_array_equal(np.sort(top[r]), np.sort(loss[r, ranks[r, :m]]))
    # explain: every row, the full factor pattern, k = min(5, m) at a smaller tail m' <= m
    mq, k = max(1, m // 2), min(5, max(1, m // 2))
    pattern = sp.csr_matrix(np.ones((rows, 6)))
    by_scenario = [engine_attribution.scenario_major(p) for p in pnls] if kernel.transposed else pnls
    first, sums = engine_attribution.explain_block(top, scenario, np.ones(rows, dtype=bool), pattern, mq, k,
                                                   by_scenario)
    np.testing.assert_array_equal(first, ranks[:, :k])
    want = np.stack([pnl[np.sort(ranks[r, :mq])].sum(axis=0) for r in range(rows)])
    np.testing.assert_allclose(sums.reshape(rows, 6), want, rtol=1e-12, atol=1e-9)


def test_rank_order_is_the_stable_sort():
    assert rank_order([1.0, 3.0, 3.0, 0.0, 3.0]).tolist() == [1, 2, 4, 0, 3]
    assert rank_order(np.zeros(7), 3).tolist() == [0, 1, 2]


# ------------------------------------------------------------ against a full loss matrix
def brute_force(frames, ds, q, top=5):
    """Per holding of ``ds``: minus the mean of its P&L over its pool's tail scenarios, from a full loss matrix
    revalued by tests/recompute.py; and each pool's ES and worst scenarios."""
    import recompute

    ins, mkt, pos, col, acc = frames
    n = ds.sizes["scenario"]
    shock, vol_shock = ds["shock"].to_pandas(), ds["vol_shock"].to_pandas()
    units = recompute.unit_pnl(ins.set_index("instrument"), mkt.set_index("asset"),
                               {a: shock[a].to_numpy() for a in shock.columns},
                               {a: vol_shock[a].to_numpy() for a in vol_shock.columns}, VALUATION, 2.0)
    price = dict(zip(mkt["asset"], mkt["price"]))
    vol = dict(zip(mkt["asset"], mkt["vol"]))
    pnl = {}                                                # (account, instrument or asset, kind) -> P&L [n]
    for a, i, qty in pos.groupby(["account", "instrument"], as_index=False)["quantity"].sum().itertuples(index=False):
        pnl[(a, i, "position")] = qty * units[i][1]
    for a, c, amt in col.groupby(["account", "asset"], as_index=False)["amount"].sum().itertuples(index=False):
        pnl[(a, c, "collateral")] = (amt * price[c] * np.expm1(shock[c].to_numpy()) if vol[c] > 0 else np.zeros(n))
    group_of = {a: (g if isinstance(g, str) and g.strip() else a) for a, g in zip(acc["account"], acc["group"])}
    m = tail_size(n, q)
    tails, es, worst = {}, {}, {}
    for g in ds["group"].values:
        members = [k for k in pnl if group_of.get(k[0], k[0]) == g]
        loss = -sum(pnl[k] for k in members) if members else np.zeros(n)
        order = np.argsort(-loss, kind="stable")              # equal losses: lower scenario first
        tails[g], es[g], worst[g] = order[:m], np.sort(loss[order[:m]]).sum() / m, order[:top]
    contribution = {k: -v[tails[group_of.get(k[0], k[0])]].mean() for k, v in pnl.items()}
    return contribution, es, worst


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_accounts=st.integers(1, 20), q=st.sampled_from([0.99, 0.975, 0.9]))
def test_contributions_are_the_brute_force_tail_means_and_sum_to_group_es(seed, n_accounts, q):
    frames = random_frames(seed, n_accounts, cash_only=False)
    book = book_from_frames(*frames, VALUATION)
    ds = run_stress(book, scenarios_for(book, n=2000, seed=seed), margin=MarginParams(q, 0.0, 0.75),
                    include_scenarios=True, chunking=Chunking(700, 7))
    contribution, es, worst = brute_force(frames, ds, q)
    got = {(a, i, k): v for a, i, k, v in zip(ds["holding_account"].values, ds["holding_instrument"].values,
                                              ds["holding_kind"].values, ds["es_contribution"].values)}
    assert set(got) == set(contribution)
    group_es = ds["group_es"].sel(confidence=q).to_series()
    for key, want in contribution.items():
        pool = ds["holding_group"].values[list(got).index(key)]
        scale = max(abs(es[pool]), abs(want), 1.0)
        assert abs(got[key] - want) <= 1e-9 * scale, (key, got[key], want)
    # Euler: the contributions of each pool sum to its group_es (1e-9 relative), and so do the factor views.
    sums = ds["es_contribution"].groupby("holding_group").sum().to_series()
    for g, v in group_es.items():
        total = sums.get(g, 0.0)
        assert abs(total - v) <= 1e-9 * abs(v) or (v == 0 and total == 0), (g, total, v)
        assert abs(ds["factor_contribution"].sel(group=g).sum().item() - v) <= 1e-9 * max(abs(v), 1e-300) or v == 0
        assert abs(es[g] - v) <= 1e-9 * max(abs(v), 1.0)
        np.testing.assert_array_equal(ds["tail_scenarios"].sel(group=g).values, worst[g])


def test_tail_scenarios_and_contributions_do_not_depend_on_chunks_blocks_kernel_or_scheduler():
    frames = random_frames(7, 40, cash_only=False)
    book = book_from_frames(*frames, VALUATION)
    scen = scenarios_for(book, n=3000, seed=7)
    runs = {"one chunk": run_stress(book, scen, chunking=Chunking(3000, 1000), scheduler="sync"),
            "pilot, tiny blocks": run_stress(book, scen, chunking=Chunking(512, 3), scheduler="threads"),
            "odd chunks": run_stress(book, scen, chunking=Chunking(777, 11)),
            "reference": run_stress(book, scen, fast_path=False, chunking=Chunking(1000, 5), scheduler="sync"),
            "processes": run_stress(book, scen, chunking=Chunking(600, 13), scheduler="processes")}
    base = runs.pop("one chunk")
    assert (base["tail_scenarios"].values >= 0).all()
    for name, ds in runs.items():
        for v in ("tail_scenarios", "es_contribution", "factor_contribution", "group_es"):
            np.testing.assert_array_equal(ds[v].values, base[v].values, err_msg=f"{name}: {v}")


def test_cash_only_pools_rank_their_zero_losses_by_scenario_index():
    frames = random_frames(3, 6, cash_only=True)
    ins, mkt, pos, col, acc = frames
    pos = pos.iloc[:0]                                    # no positions: USDT only, every loss exactly 0
    book = book_from_frames(ins, mkt, pos, col, acc, VALUATION)
    ds = run_stress(book, scenarios_for(book, n=1000, seed=3), chunking=Chunking(300, 2))
    assert (ds["tail_scenarios"].values == np.arange(5)).all()
    assert (ds["es_contribution"].values == 0).all() and not np.signbit(ds["es_contribution"].values).any()


def test_hedged_holdings_get_opposite_contributions_summing_to_the_pool_es():
    frames = random_frames(5, 3, cash_only=True)
    ins, mkt, pos, col, acc = frames
    import pandas as pd
    pos = pd.DataFrame(dict(account=["A000", "A000", "A001"], instrument=["E-SPOT", "E-FUT", "B-PERP"],
                            quantity=[2.0, -20.0, 0.5]))              # E-FUT has size 1: -20 futures vs 2 spot
    pos.loc[1, "quantity"] = -2.0
    book = book_from_frames(ins, mkt, pos, col, acc.assign(group=""), VALUATION)
    ds = run_stress(book, scenarios_for(book, n=2000, seed=5))
    c = ds["es_contribution"].to_series()
    hedge = ds["holding_account"].values == "A000"
    kinds = ds["holding_kind"].values
    spot, fut = c.values[hedge & (kinds == "position")]
    assert spot != 0 and spot == -fut                       # an exact hedge: equal and opposite
    assert ds["group_es"].sel(confidence=0.99, group="A000").item() == 0.0


def test_attribution_off_and_bad_tail_scenarios():
    frames = random_frames(2, 5, cash_only=False)
    book = book_from_frames(*frames, VALUATION)
    scen = scenarios_for(book, n=1000, seed=2)
    ds = run_stress(book, scen, attribution=False)
    assert not {"es_contribution", "factor_contribution", "tail_scenarios", "holding"} & set(ds.variables)
    with pytest.raises(ConfigError, match="output.tail_scenarios"):
        run_stress(book, scen, tail_scenarios=1001)
    # More worst scenarios than the tail holds (m = 10 at q = 0.99): the worst 25 all the same, and the
    # figures of the run unchanged.
    base = run_stress(book, scen, include_scenarios=True)
    ds = run_stress(book, scen, tail_scenarios=25, chunking=Chunking(300, 2))
    assert ds.sizes["tail_rank"] == 25
    np.testing.assert_array_equal(ds["tail_scenarios"].values[:, :5], base["tail_scenarios"].values)
    np.testing.assert_array_equal(ds["es_contribution"].values, base["es_contribution"].values)
    for v in ("group_es", "group_var", "es", "var", "im"):
        np.testing.assert_array_equal(ds[v].values, base[v].values, err_msg=v)
    contribution, es, worst = brute_force(frames, base, 0.99, top=25)
    for g in ds["group"].values:
        np.testing.assert_array_equal(ds["tail_scenarios"].sel(group=g).values, worst[g])


def test_job_writes_attribution_and_refuses_a_bad_key(tmp_path):
    out = tmp_path / "o.zarr"
    r = run_job("jobs.stress", "portfolio.n_accounts=30", "scenarios.n=1000", f"output.path={out}",
                f"hydra.run.dir={tmp_path}/h", "output.tail_scenarios=3", "engine.progress=false")
    assert r.returncode == 0, r.stderr
    import xarray as xr
    ds = xr.open_zarr(out)
    assert ds.sizes["tail_rank"] == 3 and ds["es_contribution"].dims == ("holding",)
    for name in ("es_contribution", "factor_contribution", "tail_scenarios", "holding_group", "holding_account",
                 "holding_instrument"):
        assert {"long_name", "units"} <= set(ds[name].attrs), name
    bad = run_job("jobs.stress", "portfolio.n_accounts=30", "scenarios.n=1000", f"output.path={tmp_path}/b.zarr",
                  f"hydra.run.dir={tmp_path}/h", "output.attribution=maybe")
    assert bad.returncode == 2 and "output.attribution" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "b.zarr").exists()
    off = run_job("jobs.stress", "portfolio.n_accounts=30", "scenarios.n=1000", f"output.path={tmp_path}/off.zarr",
                  f"hydra.run.dir={tmp_path}/h", "output.attribution=false", "engine.progress=false")
    assert off.returncode == 0, off.stderr
    assert "es_contribution" not in xr.open_zarr(tmp_path / "off.zarr").variables


def test_a_grid_model_explains_group_es_at_margin_confidence_even_when_not_asked_for():
    from mcmargin.margin.span import Span

    frames = random_frames(4, 8, cash_only=False)
    book = book_from_frames(*frames, VALUATION)
    ds = run_stress(book, scenarios_for(book, n=1000, seed=4), margin=Span(MarginParams(0.97, 0.0, 0.75)),
                    confidences=(0.99,))
    assert 0.97 in ds["confidence"].values
    sums = ds["es_contribution"].groupby("holding_group").sum().to_series()
    for g, v in ds["group_es"].sel(confidence=0.97).to_series().items():
        assert abs(sums.get(g, 0.0) - v) <= 1e-9 * abs(v) or v == sums.get(g, 0.0) == 0
