"""Dates as messages and datasets show them."""

from __future__ import annotations

import pandas as pd


def iso(value) -> str | None:
    """``2026-11-25`` for a midnight timestamp, the full ISO form otherwise; None for None or NaT."""
    if value is None or pd.isna(value):
        return None
    stamp = pd.Timestamp(value)
    return stamp.date().isoformat() if stamp == stamp.normalize() else stamp.isoformat()
