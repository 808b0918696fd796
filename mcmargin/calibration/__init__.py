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

from .dependence import devolatized_correlation, ledoit_wolf_intensity
from .fit import CalibrationSettings, calibrate, load_params, save_params
from .tdist import fit_copula_dof, fit_mvt_dof, fit_t_dof, pseudo_observations
from .volatility import VOL_METHODS, VolFilter, devolatize, ewma_variance, filter_volatility, garch_fit

__all__ = ["CalibrationSettings", "VOL_METHODS", "VolFilter", "calibrate", "devolatize",
           "devolatized_correlation", "ewma_variance", "filter_volatility", "fit_copula_dof", "fit_mvt_dof",
           "fit_t_dof", "garch_fit", "ledoit_wolf_intensity", "load_params", "pseudo_observations",
           "save_params"]
