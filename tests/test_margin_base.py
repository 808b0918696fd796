"""Margin models as plug-ins (mcmargin.margin.base): models defined here, in the test suite, run end to end.

Each model below is registered from this file only, with no change to the
library, and runs through ``run_stress`` and through the stress job.  Its
figures are checked against a brute-force recompute of the book under the
very scenarios drawn (tests/recompute.py prices every instrument on its own).
"""

import numpy as np
import pandas as pd
import pytest

import recompute
from conftest import SCENARIOS_2F, VALUATION, stress_config
from mcmargin import build_scenarios, run_stress
from mcmargin.errors import ConfigError
from mcmargin.margin import (MarginInputs, MarginModel, MarginParams, Requirement, base, build_margin_model,
                             known_models, register)


class VarMargin(MarginModel):
    """im = multiplier x max(0, VaR_q) x (1 + buffer): a tail model that needs no unit rows."""

    rows = ("accounts", "groups")
    reduction = "tail"
    variables = ("var_multiplier",)
    methodology = "test: scaled VaR"

    def __init__(self, params=MarginParams(), multiplier=1.0):
        super().__init__(params)
        self.multiplier = multiplier

    @classmethod
    def from_config(cls, params, own):
        own = dict(own)
        multiplier = float(own.pop("multiplier", 1.0))
        super().from_config(params, own)          # refuses any other key
        return cls(params, multiplier)

    def requirements(self, inputs: MarginInputs) -> Requirement:
        book, tails = inputs.book, inputs.tails
        k = list(tails.confidences).index(self.params.confidence)
        scale = self.multiplier * (1.0 + self.params.buffer)
        im = np.maximum(0.0, tails.var[book.rows("accounts"), k]) * scale
        group_im = np.maximum(0.0, tails.var[book.group_row, k]) * scale
        return Requirement(im, group_im,
                           variables={"var_multiplier": ((), self.multiplier, {"long_name": "k", "units": "1"})})


#: The grid of the scan model: every risky asset moves together by -15%, 0 or +15% (log), vol by -30% or +30%.
GRID_MOVES = [(r, v) for r in (-0.15, 0.0, 0.15) for v in (-0.3, 0.3)]


class Scan(MarginModel):
    """im = max(0, worst loss over a fixed 6-scenario grid) x (1 + buffer): a grid model."""

    rows = ("accounts", "groups")
    reduction = "grid"
    methodology = "test: 6-scenario scan"

    def confidences(self):
        return ()

    def grid(self, inputs):
        risky = (inputs.portfolio.market["vol"].to_numpy() > 0).astype(float)
        shock = np.array([r * risky for r, _ in GRID_MOVES])
        vol_shock = np.array([v * risky for _, v in GRID_MOVES])
        return shock, vol_shock

    def requirements(self, inputs):
        book, worst = inputs.book, inputs.grid_losses.max(axis=1)
        scale = 1.0 + self.params.buffer
        return Requirement(np.maximum(0.0, worst[book.rows("accounts")]) * scale,
                           np.maximum(0.0, worst[book.group_row]) * scale)


@pytest.fixture(autouse=True)
def plugins():
    """Register the test models for one test, then leave the registry as it was."""
    before = dict(base.known_models())          # the built-in models registered first, kept after
    register("var_margin")(VarMargin)
    register("scan")(Scan)
    yield
    base._REGISTRY.clear()
    base._REGISTRY.update(before)


def _brute_force_losses(small_frames, shock, vol_shock, horizon_days):
    """[account x scenario] losses of the small book (accounts a..e), every contract priced on its own."""
    ins, mkt, pos, col, _ = small_frames
    ins = ins.set_index("instrument")
    mkt = mkt.set_index("asset")
    units = recompute.unit_pnl(ins, mkt, shock, vol_shock, VALUATION, horizon_days)
    accounts = sorted(set(pos["account"]) | set(col["account"]))
    n = len(next(iter(shock.values())))
    loss = np.zeros((len(accounts), n))
    for r in pos.itertuples():
        loss[accounts.index(r.account)] -= r.quantity * units[r.instrument][1]
    for r in col.itertuples():
        loss[accounts.index(r.account)] -= r.amount * mkt.loc[r.asset, "price"] * np.expm1(shock[r.asset])
    return accounts, loss


def test_a_tail_model_from_the_test_suite_runs_through_run_stress(small_book, small_frames):
    scen = build_scenarios(SCENARIOS_2F, small_book.assets, small_book.market["vol"])
    model = VarMargin(MarginParams(confidence=0.99, buffer=0.1, maintenance_ratio=0.5), multiplier=1.5)
    ds = run_stress(small_book, scen, margin=model, confidences=[0.99, 0.995])
    shock, vol_shock = scen.draw_numpy()
    assets = list(small_book.assets)
    accounts, loss = _brute_force_losses(small_frames, {a: shock[:, i] for i, a in enumerate(assets)},
                                         {a: vol_shock[:, i] for i, a in enumerate(assets)}, scen.horizon_days)
    var, _ = recompute.var_es(loss, 0.99)
    assert list(ds["account"].values) == accounts
    np.testing.assert_allclose(ds["im"].values, 1.5 * 1.1 * np.maximum(0.0, var), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(ds["mm"].values, 0.5 * ds["im"].values, rtol=1e-15)
    assert ds.attrs["margin_model"] == "var_margin" and ds.attrs["methodology"] == "test: scaled VaR"
    assert float(ds["var_multiplier"]) == 1.5
    # Only the rows the model asked for were built: no unit rows, so no standalone figures.
    assert "unit_es" not in ds and "isolated_im" not in ds
    assert ds.attrs["margin_buffer"] == 0.1 and ds.attrs["maintenance_ratio"] == 0.5


def test_a_grid_model_from_the_test_suite_takes_the_worst_grid_loss(small_book, small_frames):
    scen = build_scenarios(SCENARIOS_2F, small_book.assets, small_book.market["vol"])
    ds = run_stress(small_book, scen, margin=Scan(MarginParams(buffer=0.2)), confidences=[0.99])
    risky = {a: float(v > 0) for a, v in zip(small_book.assets, small_book.market["vol"])}
    shock = {a: np.array([r * risky[a] for r, _ in GRID_MOVES]) for a in risky}
    vol_shock = {a: np.array([v * risky[a] for _, v in GRID_MOVES]) for a in risky}
    accounts, loss = _brute_force_losses(small_frames, shock, vol_shock, scen.horizon_days)
    assert list(ds["account"].values) == accounts
    np.testing.assert_allclose(ds["im"].values, 1.2 * np.maximum(0.0, loss.max(axis=1)), rtol=1e-9, atol=1e-6)
    # G1 pools a and b: its grid loss is the sum of theirs, scenario by scenario.
    pooled = loss[accounts.index("a")] + loss[accounts.index("b")]
    np.testing.assert_allclose(float(ds["group_im"].sel(group="G1")), 1.2 * max(0.0, pooled.max()), rtol=1e-9)
    assert (ds["im"].values > 0).any()


def test_the_stress_job_runs_a_model_registered_by_the_test_suite():
    from jobs.stress import run

    ds = run(stress_config("margin.model=var_margin", "+margin.var_margin.multiplier=2.0", "scenarios.n=2000"))
    k = list(ds["confidence"].values).index(0.99)
    np.testing.assert_allclose(ds["im"].values, 2.0 * 1.1 * np.maximum(0.0, ds["var"].values[:, k]), rtol=1e-12)
    np.testing.assert_allclose(ds["group_im"].values,
                               2.0 * 1.1 * np.maximum(0.0, ds["group_var"].values[:, k]), rtol=1e-12)
    assert ds.attrs["margin_model"] == "var_margin"
    np.testing.assert_array_equal(ds["margin_call"].values, np.maximum(0.0, ds["im"].values - ds["equity"].values))


def test_model_config_errors_name_the_key():
    common = {"confidence": 0.99, "buffer": 0.1, "maintenance_ratio": 0.75}
    with pytest.raises(ConfigError, match=r"margin\.var_margin\.multiplyer"):
        build_margin_model({"model": "var_margin", **common, "var_margin": {"multiplyer": 2}})
    with pytest.raises(ConfigError, match=r"margin\.model.*known: mc_es, (.*, )?scan, (.*, )?var_margin"):
        build_margin_model({"model": "spun", **common})
    with pytest.raises(ConfigError, match=r"margin\.buffer"):
        build_margin_model({"model": "var_margin", "confidence": 0.99, "maintenance_ratio": 0.75})
    assert isinstance(build_margin_model({"model": "var_margin", **common, "var_margin": {"multiplier": 3}}),
                      VarMargin)
    with pytest.raises(ValueError, match="reduction"):
        register("bad")(type("Bad", (VarMargin,), {"reduction": "median"}))


def test_mc_es_is_a_registered_model_with_its_rows():
    models = known_models()
    assert models["mc_es"].reduction == "tail"
    assert set(models["mc_es"].rows) == {"accounts", "groups", "long", "short", "collateral_long",
                                         "collateral_short"}


class GrossNotional(MarginModel):
    """im = rate x gross USD exposure of the positions (a closed form: no scenario is read)."""

    rows = ("accounts", "groups")
    reduction = "closed_form"

    def confidences(self):
        return ()

    def requirements(self, inputs):
        assert inputs.grid_losses is None
        book = inputs.book
        gross = abs(book.exposures) @ np.ones(book.n_factors)      # |USD delta| per factor, summed
        scale = 0.05 * (1.0 + self.params.buffer)
        return Requirement(gross[book.rows("accounts")] * scale, gross[book.group_row] * scale)


def test_a_closed_form_model_reads_the_book_alone(small_book):
    register("gross")(GrossNotional)
    scen = build_scenarios(SCENARIOS_2F, small_book.assets, small_book.market["vol"])
    ds = run_stress(small_book, scen, margin=GrossNotional(MarginParams(buffer=0.0)), confidences=[0.99])
    # Account c: 10 ETH spot (30,000 USD) and -100 x 0.1 ETH futures (-30,000 USD) net to no ETH delta,
    # plus 1,000 USDT cash (no factor): a closed form on net exposure charges nothing.
    assert float(ds["im"].sel(account="c")) == 0.0
    # Account d holds 2 ETH of collateral only: 6,000 USD of ETH delta.
    assert float(ds["im"].sel(account="d")) == pytest.approx(0.05 * 6_000.0, rel=1e-12)
    assert ds.attrs["margin_model"] == "gross"


def test_several_models_in_one_pass_get_a_model_dimension(small_book):
    """Each model's figures equal its run alone; equity and the tails stay model-free."""
    from mcmargin.margin import McEs
    from mcmargin.output.summary import summary

    scen = build_scenarios(SCENARIOS_2F, small_book.assets, small_book.market["vol"])
    params = MarginParams(confidence=0.99, buffer=0.1, maintenance_ratio=0.6)
    models = [McEs(params), VarMargin(params, multiplier=2.0), Scan(params)]
    together = run_stress(small_book, scen, margin=models, confidences=[0.99, 0.995])
    assert list(together["model"].values) == ["mc_es", "var_margin", "scan"]
    assert together["im"].dims == ("model", "account") and together["group_im"].dims == ("model", "group")
    assert together["equity"].dims == ("account",) and together["es"].dims == ("account", "confidence")
    assert together.attrs["margin_model"] == "mc_es" and together.attrs["margin_models"] == "mc_es,var_margin,scan"
    for model in models:
        alone = run_stress(small_book, scen, margin=model, confidences=[0.99, 0.995])
        got = together.sel(model=model.name)
        for v in ("im", "mm", "margin_call", "group_im", "group_mm", "group_margin_call"):
            np.testing.assert_array_equal(got[v].values, alone[v].values, err_msg=f"{model.name} {v}")
        for v in ("equity", "var", "es", "group_es"):
            np.testing.assert_array_equal(together[v].values, alone[v].values)
    # Only mc_es margins positions alone: the others have NaN there, never a made-up figure.
    assert np.isnan(together["isolated_im"].sel(model="scan")).all()
    assert together["isolated_im"].attrs["nonfinite"].startswith("nan:")
    from mcmargin.output.store import check_figures
    check_figures(together)                   # the NaN it declares is accepted, and no other
    np.testing.assert_array_equal(together["unit_es"].values, run_stress(small_book, scen, margin=models[0],
                                                                         confidences=[0.99])["unit_es"].values)
    text = summary(together)
    assert "margin models (primary first" in text and "var_margin" in text and "scan" in text


def test_margin_models_from_the_config():
    common = {"confidence": 0.99, "buffer": 0.1, "maintenance_ratio": 0.75}
    models = base.build_margin_models({"model": "mc_es", "models": ["scan", "mc_es"], **common, "mc_es": {}})
    assert [m.name for m in models] == ["scan", "mc_es"]
    with pytest.raises(ConfigError, match=r"margin\.models\[1\]"):
        base.build_margin_models({"model": "mc_es", "models": ["mc_es", "spam"], **common})
    with pytest.raises(ConfigError, match=r"margin\.models"):
        base.build_margin_models({"model": "mc_es", "models": ["mc_es", "mc_es"], **common})
    with pytest.raises(ConfigError, match=r"margin\.colour"):
        base.build_margin_models({"model": "mc_es", **common, "colour": "red"})


def test_the_stress_job_runs_several_models_and_prints_them(tmp_path):
    from conftest import run_job

    done = run_job("jobs.stress", "portfolio.n_accounts=60", "scenarios.n=1000", "backend=numpy",
                   "margin.models=[mc_es]", f"output.path={tmp_path}/one.zarr")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "margin models" not in done.stdout


@pytest.mark.parametrize("fast_path", [True, False])
def test_pool_exceedances_against_a_brute_force_count(small_book, small_frames, fast_path):
    """group_exceedance_prob and group_expected_excess of each model, from the very draws, by brute force.

    mc_es counts from the kept tail, scan (grid) in the fold, var_margin (no tail formula) in a pass of its own.
    """
    from mcmargin.margin import McEs

    scen = build_scenarios(SCENARIOS_2F, small_book.assets, small_book.market["vol"])
    params = MarginParams(confidence=0.99, buffer=0.1, maintenance_ratio=0.6)
    models = [McEs(params), Scan(params), VarMargin(params, multiplier=0.8)]
    ds = run_stress(small_book, scen, margin=models, confidences=[0.99], fast_path=fast_path,
                    chunking=__import__("mcmargin").Chunking(700, 2))
    shock, vol_shock = scen.draw_numpy()
    assets = list(small_book.assets)
    accounts, loss = _brute_force_losses(small_frames, {a: shock[:, i] for i, a in enumerate(assets)},
                                         {a: vol_shock[:, i] for i, a in enumerate(assets)}, scen.horizon_days)
    pools = {"G1": loss[accounts.index("a")] + loss[accounts.index("b")],
             **{a: loss[accounts.index(a)] for a in ("c", "d", "e")}}
    assert sorted(ds["group"].values) == sorted(pools)
    for model in ("mc_es", "scan", "var_margin"):
        m = ds.sel(model=model)
        for g, pool in pools.items():
            limit = float(m["group_im"].sel(group=g))
            # The brute force sums prices leg by leg, so an exact hedge (pool c) leaves rounding residue
            # of ~1e-12 USD where the engine's netted exposure loses exactly 0: count within 1e-6 USD.
            prob = float(m["group_exceedance_prob"].sel(group=g))
            assert np.mean(pool > limit + 1e-6) <= prob <= np.mean(pool > limit - 1e-6), (model, g)
            assert float(m["group_expected_excess"].sel(group=g)) == pytest.approx(
                np.mean(np.maximum(0.0, pool - limit)), rel=1e-9, abs=1e-9)
    assert float(ds["group_exceedance_prob"].sel(model="scan", group="d")) > 0     # the counts are not all 0
    # The ES model is exceeded at most 1% of the time by construction; the 0.8 x VaR model more often.
    assert float(ds["group_exceedance_prob"].sel(model="mc_es").max()) <= 0.01
    assert float(ds["group_exceedance_prob"].sel(model="var_margin").max()) > 0.01


def test_the_four_built_in_models_in_one_job():
    """margin.models=[mc_es,span,pm_grid,tiered] is a plain override of the default config."""
    from jobs.stress import run

    ds = run(stress_config("margin.models=[mc_es,span,pm_grid,tiered]", "scenarios.n=2000"))
    assert list(ds["model"].values) == ["mc_es", "span", "pm_grid", "tiered"]
    for v in ("im", "group_im", "group_exceedance_prob", "group_expected_excess"):
        assert ds[v].dims[0] == "model" and np.isfinite(ds[v].values).all() and (ds[v].values >= 0).all(), v
    assert (ds["group_exceedance_prob"] <= 1).all()
    for name in ("span", "pm_grid", "tiered"):           # each model alone gives the same figures
        alone = run(stress_config(f"margin={name}", "scenarios.n=2000"))
        np.testing.assert_array_equal(ds["group_im"].sel(model=name).values, alone["group_im"].values)
        np.testing.assert_array_equal(ds["group_exceedance_prob"].sel(model=name).values,
                                      alone["group_exceedance_prob"].values)


class SmallScan(Scan):
    """A fifth of the scan: a grid model that leaves most pools under-margined (exceeded far more than 1%)."""

    def requirements(self, inputs):
        req = super().requirements(inputs)
        return Requirement(0.2 * req.im, 0.2 * req.group_im)


@pytest.mark.parametrize("chunking", [(700, 2), (4000, 64)])
def test_exceedances_of_an_under_margining_model_are_counted_in_the_fold(small_book, small_frames, chunking):
    """Limits below the pilot threshold are counted as the losses stream by (and the pilot's sample at the
    start); without a pilot (one chunk) the rows are counted again at the end: both exact."""
    from mcmargin import Chunking

    register("small_scan")(SmallScan)
    scen = build_scenarios(SCENARIOS_2F, small_book.assets, small_book.market["vol"])
    ds = run_stress(small_book, scen, margin=SmallScan(MarginParams()), confidences=[0.99],
                    chunking=Chunking(*chunking))
    shock, vol_shock = scen.draw_numpy()
    assets = list(small_book.assets)
    accounts, loss = _brute_force_losses(small_frames, {a: shock[:, i] for i, a in enumerate(assets)},
                                         {a: vol_shock[:, i] for i, a in enumerate(assets)}, scen.horizon_days)
    pool = loss[accounts.index("a")] + loss[accounts.index("b")]
    limit = float(ds["group_im"].sel(group="G1"))
    assert np.mean(pool > limit) > 0.05                  # far below its VaR: not exact from the kept tail
    assert float(ds["group_exceedance_prob"].sel(group="G1")) == pytest.approx(np.mean(pool > limit), abs=1e-15)
    assert float(ds["group_expected_excess"].sel(group="G1")) == pytest.approx(
        np.mean(np.maximum(0.0, pool - limit)), rel=1e-9)


def test_the_summary_describes_the_primary_model(small_book):
    from mcmargin.margin import McEs
    from mcmargin.output.summary import summary

    scen = build_scenarios(SCENARIOS_2F, small_book.assets, small_book.market["vol"])
    ds = run_stress(small_book, scen, margin=[Scan(MarginParams()), McEs(MarginParams())], confidences=[0.99])
    text = summary(ds)
    assert "total initial margin (scan)" in text
    assert "collateral margined alone" not in text          # an mc_es figure: not the primary model's
    assert "collateral margined alone" in summary(run_stress(small_book, scen, confidences=[0.99]))
