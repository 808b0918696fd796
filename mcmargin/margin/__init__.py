"""Margin models: from the tails of a run's holdings rows to requirements (docs/methodology.md, section 5)."""

from .mc_es import ROUNDING_FLOOR, MarginParams, margin_dataset, margin_saving

__all__ = ["ROUNDING_FLOOR", "MarginParams", "margin_dataset", "margin_saving"]
