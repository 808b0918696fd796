"""Checking config values: every setting's type and range, named by its key.

A margin run that accepts ``horizon_days=nan`` reports zero margin, so
every numeric setting is checked *finite and in range* (comparisons such
as ``value <= 0`` let NaN through: the checks here are written so that NaN
fails them).  Values come from Hydra (where ``abc`` stays a string, ``nan``
and ``inf`` become floats and ``null`` None) or from plain dicts.

The small parsers (:func:`whole_number`, :func:`real_number`, :func:`flag`,
:func:`one_of`) are what every module uses to read a setting; the rule
tables (:data:`STRESS_RULES`, :data:`CALIBRATE_RULES`) list the settings of
each job, so that :func:`check_settings` rejects a bad value before any work.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping

from ..errors import ConfigError

__all__ = ["plain", "whole_number", "real_number", "flag", "one_of", "mapping", "check_settings", "STRESS_RULES",
           "CALIBRATE_RULES", "CALIBRATE_BUFFER_RULES", "BACKTEST_RULES", "PM_GRID_RULES", "SERVE_RULES"]


def plain(cfg) -> dict:
    """A config section as a plain dict: an OmegaConf ``DictConfig`` resolved, any other mapping copied."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def whole_number(value, key: str, minimum: int | None = None, maximum: int | None = None,
                 allow_none: bool = False) -> int | None:
    """``value`` as an int: a whole number (``4`` or ``4.0``; not ``4.5``, NaN, a bool or a string).

    A string, even ``"4"``, is refused: a count that arrives quoted is more
    likely a slip than a number.

    Raises
    ------
    ConfigError
        Naming ``key`` and the expected range.
    """
    if value is None:
        if allow_none:
            return None
        raise ConfigError(key, f"is required: expected a whole number{_range(minimum, maximum)}, got null")
    if not _is_number(value) or not math.isfinite(value) or value != int(value):
        raise ConfigError(key, f"expected a whole number{_range(minimum, maximum)}, got {value!r}")
    n = int(value)
    if (minimum is not None and n < minimum) or (maximum is not None and n > maximum):
        raise ConfigError(key, f"expected a whole number{_range(minimum, maximum)}, got {n}")
    return n


def real_number(value, key: str, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, allow_none: bool = False) -> float | None:
    """``value`` as a finite float within ``[low, high]`` (open ends where asked).

    A numeric string is read as its number: YAML 1.1 leaves ``1e-3`` a string.

    Raises
    ------
    ConfigError
        Naming ``key``, for a non-number, NaN, an infinity or a value out of range.
    """
    interval = _interval(low, high, low_open, high_open)
    if value is None:
        if allow_none:
            return None
        raise ConfigError(key, f"is required: expected a finite number{interval}, got null")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            pass
    if not _is_number(value) or not math.isfinite(value):
        raise ConfigError(key, f"expected a finite number{interval}, got {value!r}")
    x = float(value)
    below = low is not None and (x <= low if low_open else x < low)
    above = high is not None and (x >= high if high_open else x > high)
    if below or above:
        raise ConfigError(key, f"expected a finite number{interval}, got {value!r}")
    return x


def flag(value, key: str) -> bool:
    """``value`` as a bool: true/false (not 1, "yes" or null, which are more likely slips)."""
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")
    return value


def one_of(value, key: str, choices) -> str:
    """``value`` if it is one of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(key, f"expected one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def mapping(value, key: str, allow_none: bool = True):
    """``value`` if it is a mapping (a config section), or None where allowed; else a ConfigError naming ``key``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected a mapping of settings (key: value, ...), got {value!r}")
    return value


def _range(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" in {minimum}..{maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    return f" <= {maximum}" if maximum is not None else ""


def _interval(low, high, low_open, high_open) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f" {'<' if high_open else '<='} {high:g}"
    return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


# --------------------------------------------------------------------------- rule tables
Rule = Callable[[object, str], object]


def _whole(minimum=None, maximum=None, allow_none=False) -> Rule:
    return lambda v, k: whole_number(v, k, minimum, maximum, allow_none)


def _real(low=None, high=None, low_open=False, high_open=False, allow_none=False) -> Rule:
    return lambda v, k: real_number(v, k, low, high, low_open=low_open, high_open=high_open, allow_none=allow_none)


def _flag(v, k):
    return flag(v, k)


def _matrix(v, k):
    """A list of rows of finite numbers (shape and PSD are checked with the factors)."""
    if v is None:
        return v
    if not isinstance(v, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in v):
        raise ConfigError(k, f"expected a matrix (a list of rows of numbers), got {v!r}")
    for i, row in enumerate(v):
        if len(row) != len(v):          # ragged rows would reach NumPy as an object array
            raise ConfigError(f"{k}[{i}]", f"expected a square matrix: row {i} has {len(row)} entries, "
                                           f"the matrix {len(v)} rows")
        for j, x in enumerate(row):
            real_number(x, f"{k}[{i}][{j}]", -1.0, 1.0)
    return v


def _text(v, k):
    if v is not None and not isinstance(v, str):
        raise ConfigError(k, f"expected a text value, got {v!r}")
    return v


def _path(v, k):
    if v is None or (isinstance(v, str) and not v.strip()):
        raise ConfigError(k, "is empty: give a path")
    if not isinstance(v, str):
        raise ConfigError(k, f"expected a path, got {v!r}")
    return v


def _number_list(v, k):
    if not isinstance(v, (list, tuple)):
        raise ConfigError(k, f"expected a list of numbers, e.g. [0.99, 0.995], got {v!r}")
    return v


def _buffer(v, k):
    """A buffer in [0, 10], or the path of a calibration dataset (read by mcmargin.calibration.buffer)."""
    if isinstance(v, str):
        try:
            float(v.strip())
        except ValueError:
            if not v.strip():
                raise ConfigError(k, "is empty: give a number in [0, 10] or a calibration dataset path") from None
            import os

            if not os.path.exists(v):
                raise ConfigError(k, f"expected a number in [0, 10] or an existing calibration dataset "
                                     f"(jobs.calibrate_buffer output), got {v!r}") from None
            return v
    return real_number(v, k, 0, 10)


def _shrinkage(v, k):
    if isinstance(v, str) and v.lower().replace("-", "_") in ("ledoit_wolf", "lw", "auto"):
        return v
    return real_number(v, k, 0.0, 1.0)


def _device_memory(v, k):
    if isinstance(v, str):
        return v  # a size such as "24GB", parsed by dask
    return real_number(v, k, 0.0, 1.0, low_open=True)


_FACTOR_RULES = {"vol": _real(0, allow_none=True), "vol_of_vol": _real(0), "spot_vol_corr": _real(-1, 1),
                 "dof": _real(2, low_open=True, allow_none=True)}

#: Settings shared by the scenario models and the calibration (``scenarios.`` prefix or none).
_HISTORY_RULES: dict[str, Rule] = {
    "vol_method": lambda v, k: one_of(v, k, ("ewma", "garch")),
    "ewma_lambda": _real(0, 1, low_open=True, high_open=True),
    "lookback": _whole(2, allow_none=True),
    "shrinkage": _shrinkage,
    "periods_per_year": _real(0, low_open=True, allow_none=True),
    "gaps": lambda v, k: one_of(v, k, ("span", "drop")),
    "min_observations": _whole(1),
    "vol_floor_lookback": _whole(2, allow_none=True),
    "stress_weight": _real(0, 1),
    "fit_dof": _flag,
}

def _moves(v, k):
    """A non-empty list of relative price moves, each in (-1, 100] and not 0 (the pm_grid extended table)."""
    if not isinstance(v, (list, tuple)) or not v:
        raise ConfigError(k, f"expected a non-empty list of relative price moves, e.g. [-0.66, 0.5], got {v!r}")
    out = tuple(real_number(x, f"{k}[{i}]", -1.0, 100.0, low_open=True) for i, x in enumerate(v))
    if any(m == 0 for m in out):
        raise ConfigError(k, f"a move of 0 is no extended move, got {list(v)!r}")
    return out


def _stress_names(v, k):
    """null (every built-in stress) or a list of built-in names or paths (``[]``: none)."""
    if v is not None and not (isinstance(v, (list, tuple)) and all(isinstance(x, str) and x for x in v)):
        raise ConfigError(k, f"expected null (every built-in stress) or a list of names or paths, got {v!r}")
    return v


#: Settings of the ``pm_grid`` margin model (``margin.pm_grid.*``, docs/methodology.md section 6), parsed
#: by mcmargin/margin/pm_grid.py with these very rules.
PM_GRID_RULES: dict[str, Rule] = {
    "mode": lambda v, k: one_of(v, k, ("cross", "segregated")),
    "price_range": _real(0, 1, low_open=True, high_open=True),
    "buckets": _whole(1, 100),
    "vol_up": _real(0, 10),
    "vol_down": _real(0, 1, high_open=True),
    "vega_power_short": _real(0, 2),
    "vega_power_long": _real(0, 2),
    "min_days": _real(0, 365, low_open=True),
    "max_vol_up": _real(0, 10),
    "max_vol_down": _real(0, 1, high_open=True),
    "extended_moves": _moves,
    "extended_fraction": _real(0, 1),
    "short_option_contingency": _real(0, 1),
    "futures_contingency": _real(0, 1),
    "vega_contingency": _real(0, 10),
    "correlation": _real(-1, 1, allow_none=True),
}


#: Every setting of ``jobs.stress`` with a type or range; keys may hold ``*`` for one level.
STRESS_RULES: dict[str, Rule] = {
    "valuation_date": _text,
    "history": _text,
    "pricing.rate": _real(-1, 1),
    "portfolio.n_accounts": _whole(1),
    "portfolio.seed": _whole(0),
    "portfolio.group_share": _real(0, 1),
    "portfolio.export_format": lambda v, k: one_of(v, k, ("csv", "parquet")),
    "portfolio.export_then_run": _flag,
    "scenarios.n": _whole(1),
    "scenarios.seed": _whole(0),
    "scenarios.horizon_days": _real(0, 3650, low_open=True),
    "scenarios.days_per_year": _real(0, 366, low_open=True),
    "scenarios.drift": lambda v, k: one_of(v, k, ("zero", "martingale")),
    "scenarios.dof": _real(2, low_open=True),
    "scenarios.copula_dof": _real(0, low_open=True),
    "scenarios.marginal_dof": _real(2, low_open=True),
    "scenarios.correlation": _matrix,
    "scenarios.params": _text,
    "scenarios.params_fallback": _flag,
    **{f"scenarios.risk_factors.*.{f}": r for f, r in _FACTOR_RULES.items()},
    **{f"scenarios.default_factor.{f}": r for f, r in _FACTOR_RULES.items()},
    **{f"scenarios.{k}": r for k, r in _HISTORY_RULES.items()},
    "margin.confidence": _real(0.5, 1, low_open=True, high_open=True),
    "margin.buffer": _buffer,
    "margin.buffer_portfolio": _text,
    "margin.apc": lambda v, k: one_of(v, k, ("none", "buffer", "stress_weight", "floor")),
    "margin.maintenance_ratio": _real(0, 1, low_open=True),
    "margin.status.*": _real(0, low_open=True),
    "margin.mc_es.liquidity_addon": _flag,
    "margin.mc_es.liquidity_coefficient": _real(0),
    "margin.mc_es.liquidity_free_fraction": _real(0),
    "margin.mc_es.closeout_cost": _flag,
    "margin.mc_es.max_netting": _real(0, 1, allow_none=True),
    "margin.span.cover_fraction": _real(0, 1),
    "margin.span.intra_rate": _real(0, 1),
    "margin.span.short_option_minimum": _real(0, 1),
    "margin.span.tiers": _number_list,
    "margin.span.tiers.*": _real(0, low_open=True),
    "margin.span.scan_quantile": _real(0.5, 1, low_open=True, high_open=True),
    "margin.span.credit_min_correlation": _real(-1, 1),
    "margin.span.params": _text,
    **{f"margin.pm_grid.{k}": r for k, r in PM_GRID_RULES.items()},
    "margin.pm_grid.extended_moves.*": _real(-1, 100, low_open=True),
    "margin.mc_es.liquidation_price": _flag,
    "margin.tiered.tier_notional": _number_list,
    "margin.tiered.tier_notional.*": _real(0),
    "margin.tiered.tier_imf": _number_list,
    "margin.tiered.tier_imf.*": _real(0, 1, low_open=True),
    "margin.tiered.maintenance_fraction": _real(0, 1, low_open=True, allow_none=True),
    "margin.tiered.liquidation_price": _flag,
    "stress_tests.names": _stress_names,
    "stress_tests.names.*": _text,
    "default_fund.size": _real(0, allow_none=True),
    "reverse_stress.enabled": _flag,
    "reverse_stress.direction.*": _real(),
    "reverse_stress.fund": _real(0, allow_none=True),
    "cascade.enabled": _flag,
    "cascade.impact_coefficient": _real(0),
    "cascade.liquidation_fee": _real(0, 1),
    "cascade.insurance_fund": _real(0),
    "cascade.max_rounds": _whole(1, 1000),
    "cascade.spot_vol_sensitivity": _real(-10, 10),
    "cascade.default_adv_usd": _real(0, low_open=True),
    "cascade.scenario_block": _whole(0),
    "output.path": _path,
    "output.margin_calls": _text,
    "output.confidence": _number_list,
    "output.confidence.*": _real(0.5, 1, low_open=True, high_open=True),
    "output.scenarios": _flag,
    "output.top": _whole(0),
    "output.cube": _text,
    "output.report": _flag,
    "output.loss_pools": _whole(0),
    "output.loss_bins": _whole(1, 10000),
    "output.loss_scenarios": _whole(0),
    "output.attribution": _flag,
    "output.tail_scenarios": _whole(1),
    "engine.fast_path": _flag,
    "engine.scenario_chunk": _whole(0),
    "engine.row_block": _whole(0),
    "engine.task_memory_mb": _real(0, low_open=True),
    "engine.blocks_in_flight": _whole(0),
    "engine.progress": _flag,
    "cluster.n_workers": _whole(1, allow_none=True),
    "cluster.threads_per_worker": _whole(1, allow_none=True),
    "cluster.jobs": _whole(1),
    "cluster.cores": _whole(1),
    "cluster.processes": _whole(1),
    "cluster.device_memory_limit": _device_memory,
}

#: Every setting of ``jobs.serve`` (the what-if service) with a type or range.
SERVE_RULES: dict[str, Rule] = {
    "cube": _text,
    "serve.host": _path,
    "serve.port": _whole(0, 65535),
    "serve.token": _text,
    "serve.max_body_bytes": _whole(256),
    "serve.max_trades": _whole(1, 100_000),
    "serve.cache_rows": _whole(1),
}
#: Every setting of ``jobs.report`` with a type or range.
REPORT_RULES: dict[str, Rule] = {"dataset": _text, "output.path": _text, "output.top": _whole(1)}

#: Every setting of ``jobs.calibrate`` with a type or range.
CALIBRATE_RULES: dict[str, Rule] = {**_HISTORY_RULES, "output.path": _path, "output.plots": _flag}

#: Settings every job shares (mcmargin/common/logs.py; jobs.reproduce).
COMMON_RULES: dict[str, Rule] = {"logging.format": lambda v, k: one_of(v, k, ("human", "json")),
                                 "output.lock_wait": _real(0), "output.work_dir": _text}
STRESS_RULES.update(COMMON_RULES)
CALIBRATE_RULES.update(COMMON_RULES)
REPORT_RULES["logging.format"] = COMMON_RULES["logging.format"]


#: Every setting of ``jobs.backtest`` with a type or range (docs/methodology.md, section 13): the stress
#: run's scenario keys, the margin keys the backtest uses, its own ``backtest.*`` keys and the output.
BACKTEST_RULES: dict[str, Rule] = {
    "backend": _text,
    "history": _text,
    "portfolios": _text,
    **{k: r for k, r in STRESS_RULES.items() if k.startswith(("scenarios.", "cluster."))},
    "margin.model": _text,
    "margin.confidence": STRESS_RULES["margin.confidence"],
    "margin.buffer": STRESS_RULES["margin.buffer"],
    "margin.apc": STRESS_RULES["margin.apc"],
    "backtest.start": _text,
    "backtest.end": _text,
    "backtest.refit_every": _whole(1),
    "backtest.significance": _real(0, 1, low_open=True, high_open=True),
    "backtest.block_dates": _whole(1),
    "backtest.plots": _flag,
    "output.path": _path,
    "output.report": _flag,
}
BACKTEST_RULES.update(COMMON_RULES)


#: Every setting of ``jobs.calibrate_buffer`` with a type or range (docs/methodology.md, section 15): the
#: backtest's keys (used when it is run first), ``backtest_path``, ``buffer.*`` and the output.
CALIBRATE_BUFFER_RULES: dict[str, Rule] = {
    "backtest_path": _text,
    **BACKTEST_RULES,                          # used when the backtest is run first
    "margin.buffer": _real(0, 10),             # the backtest's own buffer b0: a number here, not a dataset
    "buffer.grid.start": _real(0, 10),
    "buffer.grid.stop": _real(0, 10),
    "buffer.grid.step": _real(0, 10, low_open=True),
    "buffer.grid.*": _real(0, 10),
    "buffer.target_coverage": _real(0, 1, low_open=True, high_open=True, allow_none=True),
    "buffer.significance": _real(0, 1, low_open=True, high_open=True),
    "output.plots": _flag,
}


def check_settings(cfg: Mapping, rules: Mapping[str, Rule]) -> None:
    """Check every value of ``cfg`` that a rule of ``rules`` covers (absent keys are not required).

    Raises
    ------
    ConfigError
        At the first bad value, naming its dotted key (``output.confidence[1]``
        for list items).
    """
    for key, value in _flatten(cfg):
        for pattern, rule in rules.items():
            if fnmatch.fnmatchcase(key, pattern):
                rule(value, _shown(key))
                break


def _flatten(cfg, prefix: str = ""):
    """(dotted key, value) for every value; list items of number lists are keyed ``key.i``."""
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        yield key, v
        if isinstance(v, Mapping):
            yield from _flatten(v, key + ".")
        elif isinstance(v, (list, tuple)) and not any(isinstance(x, (list, tuple, Mapping)) for x in v):
            for i, x in enumerate(v):
                yield f"{key}.{i}", x


def _shown(key: str) -> str:
    """``output.confidence.1`` as ``output.confidence[1]``."""
    head, _, tail = key.rpartition(".")
    return f"{head}[{tail}]" if tail.isdigit() and head else key
