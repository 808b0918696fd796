"""Fuzzing configs: every setting's check, the scenario models and margin models built from config."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import VALUATION, stress_config
from fuzz import FUZZ, check_loader, document_edits, examples, numbers
from mcmargin.errors import McMarginError

BASE = OmegaConf.to_container(stress_config(), resolve=True)
CORRELATIONS = st.lists(st.lists(st.floats(-1.5, 1.5), min_size=4, max_size=4), min_size=3, max_size=5)
SCENARIO_VALUES = {"vol": numbers(-1, 5), "vol_of_vol": numbers(-1, 5), "spot_vol_corr": numbers(-2, 2),
                   "n": st.integers(-5, 300), "horizon_days": numbers(-1, 30), "correlation": CORRELATIONS,
                   "dof": numbers(0, 50), "model": st.sampled_from(["gaussian", "student_t", "t_copula", "nope"])}


@FUZZ
@given(cfg=document_edits(BASE, SCENARIO_VALUES, max_edits=4))
def test_fuzz_settings(cfg):
    """Every setting is checked by its rule: a bad one is a ConfigError naming its key, never a traceback."""
    from mcmargin.common.settings import STRESS_RULES, check_settings

    check_loader(lambda: check_settings(cfg, STRESS_RULES)) if isinstance(cfg, dict) else None


@examples(0.5)
@given(scen=document_edits(BASE["scenarios"], SCENARIO_VALUES, max_edits=3),
       model=st.sampled_from(["gaussian", "student_t", "t_copula"]))
def test_fuzz_scenario_config(scen, model):
    """A scenario model built from any config draws finite shocks, or says which key is wrong."""
    from mcmargin.common.settings import STRESS_RULES, check_settings
    from mcmargin.scenarios import build_scenarios

    if not isinstance(scen, dict):
        return
    scen = {**scen, "model": scen.get("model", model) if model == "gaussian" else model, "n": 64}
    assets = np.array(["BTC", "ETH", "SOL", "BNB", "USDT"], dtype=object)
    vol = np.array([0.5, 0.7, 0.9, 0.6, 0.0])

    def build():
        check_settings({"scenarios": scen}, STRESS_RULES)
        m = build_scenarios(dict(scen, valuation_date=VALUATION), assets, vol)
        from mcmargin.backend import get_backend

        return m.draw(0, 64, get_backend("numpy"))

    out = check_loader(build, keys=("scenarios",))
    if isinstance(out, McMarginError):
        return
    shock, vol_shock = (np.asarray(x) for x in out)
    assert shock.shape == (64, 5) and np.isfinite(shock).all() and np.isfinite(vol_shock).all()


MARGIN_VALUES = {"confidence": numbers(0, 1.5), "buffer": numbers(-1, 20), "maintenance_ratio": numbers(-1, 2),
                 "model": st.sampled_from(["mc_es", "span", "pm_grid", "tiered", "nope", ""]),
                 "models": st.lists(st.sampled_from(["mc_es", "span", "pm_grid", "tiered", "x"]), max_size=3)}


@FUZZ
@given(margin=document_edits(BASE["margin"], MARGIN_VALUES, max_edits=4))
def test_fuzz_margin_config(margin):
    from mcmargin.pipeline.config import margin_models_from_config, status_from_config

    if not isinstance(margin, dict):
        return
    models = check_loader(lambda: (margin_models_from_config(margin), status_from_config(margin)), keys=("margin",))
    if isinstance(models, McMarginError):
        return
    for m in models[0]:
        assert 0.5 < m.params.confidence < 1 and m.params.buffer >= 0 and 0 < m.params.maintenance_ratio <= 1
