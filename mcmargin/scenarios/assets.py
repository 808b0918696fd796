"""Which book asset each history or calibration column stands for (``scenarios.asset_map``).

A history file or a calibration dataset names its columns after what was
observed (``SPX``, ``BTC-USD``); the book names its market assets.  Without
a mapping a column counts for the book asset of the same name only.
``scenarios.asset_map`` maps column names to book assets, e.g.
``{SPX: BTC}`` (use SPX's history for BTC) or ``{BTCUSD: BTC, ETHUSD: ETH}``;
a column may stand for several assets with a list (``{BTC: [BTC, WBTC]}``).
Columns not named keep their names.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ConfigError

KEY = "scenarios.asset_map"


def asset_map(cfg: Mapping, book_assets) -> dict[str, list[str]]:
    """``scenarios.asset_map`` checked: column -> list of book assets (empty when not set)."""
    raw = cfg.get("asset_map") or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(KEY, f"must map columns to book assets, e.g. {{SPX: BTC}}, got {raw!r}")
    known = set(str(a) for a in book_assets)
    out = {}
    for column, target in raw.items():
        targets = [target] if isinstance(target, str) else list(target) if isinstance(target, (list, tuple)) \
            else None
        if not targets or not all(isinstance(t, str) for t in targets):
            raise ConfigError(f"{KEY}.{column}", f"must name a book asset (or a list of them), got {target!r}")
        unknown = [t for t in targets if t not in known]
        if unknown:
            raise ConfigError(f"{KEY}.{column}", f"{', '.join(unknown)} is not a market asset of the book "
                                                 f"(known: {', '.join(sorted(known))})")
        out[str(column)] = targets
    return out


def map_history(history, mapping: dict[str, list[str]]):
    """The history frame with mapped columns renamed (or copied) to their book assets."""
    if not mapping or history is None:
        return history
    import pandas as pd

    if not isinstance(history, pd.DataFrame):
        from ..inputs.history import as_history

        history = as_history(history)
    missing = [c for c in mapping if c not in history.columns]
    if missing:
        raise ConfigError(KEY, f"column(s) {', '.join(missing)} are not in the history "
                               f"(it has {', '.join(map(str, history.columns))})")
    out = history.drop(columns=list(mapping))
    for column, targets in mapping.items():
        for t in targets:
            out[t] = history[column]
    out.attrs = dict(history.attrs)
    return out


def map_params(ds, mapping: dict[str, list[str]], path: str):
    """The calibration dataset with mapped assets relabelled (a column for several assets is repeated)."""
    if not mapping:
        return ds
    import numpy as np

    have = [str(a) for a in ds["asset"].values]
    missing = [c for c in mapping if c not in have]
    if missing:
        raise ConfigError(KEY, f"asset(s) {', '.join(missing)} are not in the calibration dataset {path} "
                               f"(it has {', '.join(have)})")
    source, labels = [], []
    for a in have:
        for t in mapping.get(a, [a]):
            source.append(a)
            labels.append(t)
    if len(set(labels)) != len(labels):
        raise ConfigError(KEY, f"maps two columns of {path} to the same book asset")
    out = ds.sel(asset=source, asset_b=source) if "asset_b" in ds.dims else ds.sel(asset=source)
    out = out.assign_coords(asset=np.array(labels, dtype=object))
    if "asset_b" in out.dims:
        out = out.assign_coords(asset_b=np.array(labels, dtype=object))
    return out


def check_params_cover(ds, factors, path: str, fallback: bool = False) -> None:
    """Error naming the risky book assets a calibration dataset has no parameters for.

    With ``fallback`` (``scenarios.params_fallback=true``) those assets take
    the configured values instead (``risk_factors``, then ``default_factor``),
    and a warning names them: the choice is the user's, never silent.
    """
    import logging

    have = set(str(a) for a in ds["asset"].values)
    missing = [a for a in factors if a not in have]
    if missing and fallback:
        logging.getLogger("mcmargin.scenarios").warning(
            "%s has no parameters for %s: they take the configured values (scenarios.params_fallback=true)",
            path, ", ".join(missing))
        return
    if missing:
        covered = [a for a in factors if a in have]
        raise ConfigError("scenarios.params",
                          f"{path} has no parameters for the book's risky asset(s) {', '.join(missing)} "
                          f"(it covers {', '.join(covered) or 'none of them'}; it holds "
                          f"{', '.join(sorted(have))}); map its assets to book assets with "
                          f"{KEY}={{COLUMN: ASSET}}, e.g. {KEY}={{{sorted(have)[0]}: {missing[0]}}}, or let them take "
                          "the configured values with scenarios.params_fallback=true")
