"""Margin calls people can act on: margin ratios, a status ladder, and what each pool must top up.

(docs/methodology.md, section 12.)  From the primary margin model's
maintenance margin:

- ``margin_ratio = equity / mm`` per account and ``group_margin_ratio`` per
  pool (the equity the model's calls use: ``adjusted_equity`` for a model
  with collateral haircuts); +inf where ``mm`` is 0;
- ``group_status`` on a ladder: ``healthy`` at or above ``warning`` (1.5),
  ``warning`` below it, ``reduce_only`` below ``reduce_only`` (1.2),
  ``liquidation`` below ``liquidation`` (1.05): the thresholds Binance
  publishes for its portfolio-margin uniMMR (150%, 120%, 105%);
- ``group_topup_asset`` (the pool's main collateral asset: the largest
  USD value held; a cash asset when the pool holds none) and
  ``group_topup_amount`` (``group_margin_call`` in units of that asset).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..common.settings import mapping, real_number
from ..errors import ConfigError

STATUSES = ("healthy", "warning", "reduce_only", "liquidation")


@dataclasses.dataclass(frozen=True)
class StatusLadder:
    """Margin-ratio thresholds of the status ladder (``margin.status.*``), decreasing."""

    warning: float = 1.5
    reduce_only: float = 1.2
    liquidation: float = 1.05

    def __post_init__(self):
        for name in ("warning", "reduce_only", "liquidation"):
            object.__setattr__(self, name, real_number(getattr(self, name), f"margin.status.{name}", 0.0,
                                                       low_open=True))
        if not self.warning >= self.reduce_only >= self.liquidation:
            raise ConfigError("margin.status", "thresholds must decrease: warning >= reduce_only >= liquidation, "
                                               f"got {self.warning}, {self.reduce_only}, {self.liquidation}")

    @classmethod
    def from_config(cls, cfg) -> "StatusLadder":
        cfg = dict(mapping(cfg, "margin.status") or {})
        unknown = set(cfg) - {"warning", "reduce_only", "liquidation"}
        if unknown:
            raise ConfigError(f"margin.status.{sorted(unknown)[0]}", "is not a threshold: warning, reduce_only, "
                                                                    "liquidation")
        return cls(**cfg)

    def status(self, ratio: np.ndarray) -> np.ndarray:
        """The ladder's label of each margin ratio (NaN-free; +inf is healthy)."""
        out = np.full(ratio.shape, "healthy", dtype=object)
        out[ratio < self.warning] = "warning"
        out[ratio < self.reduce_only] = "reduce_only"
        out[ratio < self.liquidation] = "liquidation"
        return out.astype(str)


def margin_ratio(equity: np.ndarray, mm: np.ndarray) -> np.ndarray:
    """``equity / mm``, +inf where ``mm`` is 0 (nothing to maintain)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mm > 0, equity / np.where(mm > 0, mm, 1.0), np.inf)


def topup(book, group_call: np.ndarray):
    """(main collateral asset, amount of it) each pool must post to meet ``group_call`` (USD).

    The main collateral asset is the one of largest USD value the pool
    holds (positive amounts; of equal values, the first in the market's
    order); a pool holding none tops up in the first cash asset of the
    market (vol 0), else the first asset.
    """
    assets, prices = book.assets.astype(str), book.prices
    rows = book.holdings[book.group_row][:, book.n_instruments:]           # [group x asset] amounts
    # Dense: a handful of assets per pool, and a dense argmax is vectorised where scipy's sparse one loops.
    value = np.maximum(np.asarray(rows.multiply(prices).todense()), 0.0)
    held = value.max(axis=1, initial=0.0) > 0
    main = value.argmax(axis=1) if value.shape[1] else np.zeros(value.shape[0], dtype=np.int64)
    cash = np.flatnonzero(np.asarray(book.to_factors[book.n_columns - assets.size:].sum(axis=1)).ravel() == 0)
    fallback = int(cash[0]) if cash.size else 0
    main = np.where(held, main, fallback)
    return assets[main], group_call / prices[main]
