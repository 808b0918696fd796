"""Liquidation cascades: forced sales move prices, the insurance fund pays, then auto-deleveraging.

docs/methodology.md, section 14.  :mod:`.model` holds the per-block kernel
(array API, every backend), :mod:`.run` schedules it over a run's scenarios
and named stresses and builds the dataset variables.  The pipeline feeds it
the compiled book, the scenario model and the primary margin model's
``group_mm``; it knows no margin model and no tail engine.
"""

from .model import CascadeParams, PoolBook, adl_ranking, cascade_block, pool_book, to_backend
from .run import cascade_instantaneous, cascade_scenarios, run_cascade

__all__ = ["CascadeParams", "PoolBook", "adl_ranking", "cascade_block", "pool_book", "to_backend",
           "cascade_instantaneous", "cascade_scenarios", "run_cascade"]
