"""Margin models: from a run's tails (or grid losses, or the book alone) to requirements (docs/methodology.md, section 5).

- :mod:`.base`: :class:`MarginModel` (what a model provides), the registry
  (:func:`register`, :func:`build_margin_model`), :class:`MarginParams`
  shared by every model, and :func:`margin_dataset`, the figures every
  model's dataset has;
- :mod:`.mc_es`: Monte Carlo expected shortfall, the core's model;
- :mod:`.span`: SPAN-style 16-scenario scanning (docs/methodology.md, section 7);
- :mod:`.pm_grid`: crypto portfolio-margin grid (docs/methodology.md, section 8);
- :mod:`.tiered`: perpetual-exchange tiers on net notional (docs/methodology.md, section 9);
- :mod:`.liquidation`: liquidation prices of pools for any model (docs/methodology.md, section 10);
- :mod:`.status`: margin ratios, the status ladder and top-ups (docs/methodology.md, section 12).
"""

from .base import (MODEL_VARIABLES, REDUCTIONS, ROUNDING_FLOOR, MarginInputs, MarginModel, MarginParams, Requirement,
                   as_model, as_models, build_margin_model, build_margin_models, known_models, margin_dataset,
                   margin_saving, register)
from .mc_es import McEs
from .status import STATUSES, StatusLadder
from .span import Span

__all__ = ["MODEL_VARIABLES", "REDUCTIONS", "ROUNDING_FLOOR", "STATUSES", "MarginInputs", "MarginModel",
           "MarginParams", "McEs", "StatusLadder",
           "Requirement", "Span", "as_model", "as_models", "build_margin_model", "build_margin_models", "known_models",
           "margin_dataset", "margin_saving", "register"]
