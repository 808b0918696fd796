"""Calibration of scenario models on price history (docs/methodology-history.md).

- :mod:`.volatility`: RiskMetrics EWMA and GARCH(1,1) conditional variance;
- :mod:`.dependence`: correlation of de-volatized returns with shrinkage and
  nearest-correlation repair;
- :mod:`.tdist`: Student-t degrees of freedom by maximum likelihood
  (marginal, multivariate t, t copula);
- :mod:`.fit`: :func:`calibrate` (history -> xarray dataset),
  :func:`save_params` and :func:`load_params`;
- :mod:`.plots`: diagnostic figures (vol paths, correlation heat map, QQ).
"""

import importlib

# Lazy re-exports (PEP 562): the stress run imports calibration.apc and
# calibration.buffer for every run, and importing fit/tdist here would pull in
# scipy.stats (about 1 s) for nothing.
_EXPORTS = {
    "devolatized_correlation": "dependence", "ledoit_wolf_intensity": "dependence",
    "CalibrationSettings": "fit", "calibrate": "fit", "load_params": "fit", "save_params": "fit",
    "fit_copula_dof": "tdist", "fit_mvt_dof": "tdist", "fit_t_dof": "tdist", "pseudo_observations": "tdist",
    "VOL_METHODS": "volatility", "VolFilter": "volatility", "devolatize": "volatility",
    "ewma_variance": "volatility", "filter_volatility": "volatility", "garch_fit": "volatility",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
