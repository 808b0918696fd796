"""What every scenario model provides, and the registry that builds them.

A scenario model turns ``(start, stop)`` scenario indices into two arrays
of shape ``(stop - start, n_assets)`` on a backend: ``shock``, the log-return
of each market asset over the horizon, and ``vol_shock``, the log change of
its implied volatility.  Columns follow the book's market assets; cash
assets (market vol 0) have zero shocks.  Draws depend only on
``(seed, scenario index)``, never on the chunking (:mod:`.rng`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping

import numpy as np

from ..errors import ConfigError
from ..common.settings import STRESS_RULES, check_settings


class ScenarioModel(abc.ABC):
    """A source of [scenario x asset] return and vol shocks.

    Attributes
    ----------
    assets : tuple of str
        Column labels: the book's market assets, in market order.
    n : int
        Number of scenarios.
    horizon_days : float
        Horizon of the shocks, in calendar days (parametric models) or rows
        of the history (history-based models).
    """

    assets: tuple[str, ...]
    n: int
    horizon_days: float
    seed: int

    @abc.abstractmethod
    def draw(self, start: int, stop: int, backend):
        """Return ``(shock, vol_shock)`` for scenarios ``start..stop-1`` as arrays of ``backend``."""

    def describe(self) -> dict:
        """Methodology and parameters, for the output dataset's attrs (JSON-able)."""
        return {"model": type(self).__name__, "n": self.n, "seed": self.seed,
                "horizon_days": self.horizon_days}

    def draw_numpy(self, start: int = 0, stop: int | None = None):
        """``draw`` on the NumPy backend, for tests and exports."""
        from ..backend import get_backend

        b = get_backend("numpy")
        return self.draw(start, self.n if stop is None else stop, b)


# name -> factory(cfg, assets, asset_vols, history) -> ScenarioModel
_REGISTRY: dict[str, Callable] = {}


def register(name: str):
    """Class or function decorator adding a scenario model under ``name``."""
    def deco(factory):
        _REGISTRY[name] = factory
        return factory
    return deco


def build_scenarios(cfg: Mapping, assets, asset_vols, history=None) -> ScenarioModel:
    """Build the scenario model that ``cfg`` (the ``scenarios`` config) names.

    Parameters
    ----------
    cfg : mapping
        The ``scenarios`` config group (``model``, ``n``, ``seed``,
        ``horizon_days`` and the model's own keys).
    assets : sequence of str
        The book's market assets (columns of the shocks).
    asset_vols : sequence of float
        Their market vols; assets with vol 0 are cash and never move.
    history : pandas.DataFrame, optional
        Price history (date index, one column per asset) for models that
        calibrate on it.
    """
    from . import copula, historical, parametric  # noqa: F401  (register the built-in models)
    name = cfg.get("model")
    if name not in _REGISTRY:
        raise ConfigError("scenarios.model", f"unknown scenario model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    for key in ("n", "seed", "horizon_days"):
        if key not in cfg:
            raise ConfigError(f"scenarios.{key}", "is required")
    # Every setting of the group, typed and in range (NaN and infinities fail), before any draw.
    check_settings({"scenarios": dict(cfg)}, STRESS_RULES)
    cfg = dict(cfg, n=int(cfg["n"]), seed=int(cfg["seed"]), horizon_days=float(cfg["horizon_days"]))
    from .assets import asset_map, map_history

    mapping = asset_map(cfg, assets)
    if mapping:
        # History columns are renamed here for every model; the calibration
        # dataset (scenarios.params) is relabelled when it is read.
        history = map_history(history, mapping)
        cfg = {**cfg, "_asset_map": mapping}
    return _REGISTRY[name](cfg, tuple(assets), np.asarray(asset_vols, dtype=float), history)
