"""Config values: every setting typed and in range, named by its key (mcmargin.settings)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from jobs.stress import run
from mcmargin.errors import ConfigError
from mcmargin.common.settings import STRESS_RULES, check_settings, flag, real_number, whole_number
from conftest import stress_config

# (override, key named in the error): the values that once passed or ended in a traceback.
BAD_VALUES = [
    ("scenarios.horizon_days=nan", "scenarios.horizon_days"),
    ("scenarios.horizon_days=inf", "scenarios.horizon_days"),
    ("scenarios.horizon_days=abc", "scenarios.horizon_days"),
    ("scenarios.horizon_days=0", "scenarios.horizon_days"),
    ("scenarios.days_per_year=nan", "scenarios.days_per_year"),
    ("pricing.rate=nan", "pricing.rate"),
    ("pricing.rate=abc", "pricing.rate"),
    ("scenarios.n=abc", "scenarios.n"),
    ("scenarios.n=nan", "scenarios.n"),
    ("scenarios.n=1.5", "scenarios.n"),
    ("scenarios.n=0", "scenarios.n"),
    ("scenarios.n=true", "scenarios.n"),
    ("scenarios.seed=-1", "scenarios.seed"),
    ("margin.confidence=abc", "margin.confidence"),
    ("margin.confidence=null", "margin.confidence"),
    ("margin.confidence=nan", "margin.confidence"),
    ("margin.confidence=1", "margin.confidence"),
    ("margin.buffer=abc", "margin.buffer"),
    ("margin.buffer=nan", "margin.buffer"),
    ("margin.maintenance_ratio=inf", "margin.maintenance_ratio"),
    ("scenarios.correlation=abc", "scenarios.correlation"),
    ("scenarios.correlation=[[1,nan],[nan,1]]", "scenarios.correlation[0][1]"),
    ("scenarios.risk_factors.BTC.vol=nan", "scenarios.risk_factors.BTC.vol"),
    ("scenarios.risk_factors.BTC.spot_vol_corr=2", "scenarios.risk_factors.BTC.spot_vol_corr"),
    ("cluster.n_workers=0", "cluster.n_workers"),
    ("output.confidence=[0.99,abc]", "output.confidence[1]"),
    ("output.confidence=abc", "output.confidence"),
    ("output.top=-1", "output.top"),
    ("output.scenarios=maybe", "output.scenarios"),
    ("engine.task_memory_mb=nan", "engine.task_memory_mb"),
    ("engine.scenario_chunk=-5", "engine.scenario_chunk"),
    ("engine.fast_path=1", "engine.fast_path"),
    ("portfolio.n_accounts=abc", "portfolio.n_accounts"),
    ("portfolio.group_share=nan", "portfolio.group_share"),
]


@pytest.mark.parametrize("override, key", BAD_VALUES)
def test_bad_value_names_its_key_before_any_work(override, key, monkeypatch):
    import mcmargin.pipeline.config as mc

    def no_book(*args, **kwargs):  # the check must come before the book is built
        raise AssertionError("work started before the settings were checked")

    monkeypatch.setattr(mc, "book_from_config", no_book)
    with pytest.raises(ConfigError) as info:
        run(stress_config(override))
    assert info.value.key == key, str(info.value)
    assert f"config key {key}:" in str(info.value)


def test_student_t_dof_is_checked():
    with pytest.raises(ConfigError, match="scenarios.dof"):
        run(stress_config("scenarios=student_t", "scenarios.dof=nan"))


@pytest.mark.parametrize("value", [4, 4.0])
def test_whole_number_accepts_integral_values(value):
    assert whole_number(value, "k", minimum=1) == 4


@pytest.mark.parametrize("value", ["4", 4.5, math.nan, math.inf, True, None, [4]])
def test_whole_number_refuses(value):
    with pytest.raises(ConfigError, match="^config key k: "):
        whole_number(value, "k")


def test_real_number_bounds_are_nan_safe():
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ConfigError):
            real_number(value, "k")
    assert real_number("1e-3", "k") == 0.001          # YAML 1.1 leaves 1e-3 a string
    with pytest.raises(ConfigError, match=r"in \(0, 1\)"):
        real_number(1.0, "k", 0, 1, low_open=True, high_open=True)
    assert real_number(0.0, "k", 0, 1) == 0.0


def test_flag_is_strict():
    assert flag(True, "k") is True
    for value in (1, "yes", None):
        with pytest.raises(ConfigError):
            flag(value, "k")


NUMERIC_KEYS = sorted(k for k in STRESS_RULES if "*" not in k and k.count(".") == 1 and k.split(".")[-1] in {
    "rate", "horizon_days", "days_per_year", "dof", "confidence", "buffer", "maintenance_ratio", "task_memory_mb",
    "group_share", "n", "n_accounts", "scenario_chunk", "n_workers"})


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(NUMERIC_KEYS), value=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                                          st.integers(-10**6, 10**6), st.text(max_size=5),
                                                          st.none(), st.booleans()))
def test_no_numeric_setting_lets_a_non_finite_value_through(key, value):
    section, name = key.split(".")
    try:
        check_settings({section: {name: value}}, STRESS_RULES)
    except ConfigError as exc:
        assert exc.key == key
        return
    # Accepted: a finite number (a real setting may be a numeric string, as YAML 1.1 leaves 1e-3),
    # or null where null means "automatic" (cluster.n_workers).
    if value is None:
        assert key == "cluster.n_workers"
        return
    assert not isinstance(value, bool)
    assert math.isfinite(float(value.strip()) if isinstance(value, str) else value)
