"""Linear instruments: spot, perpetual and dated futures, linear or inverse (docs/methodology.md, section 3).

Every one of them is linear in expm1(shock) of its underlying, so its
exposure is one USD notional on one asset factor:

- spot and linear contracts: ``contract_size x S`` (P&L ``size (S' - S) = size S expm1(r)``);
- inverse (coin-margined) contracts: the USD face value ``contract_size``
  (P&L in coin ``face (1/S - 1/S')``, worth ``face expm1(r)`` in USD at S').

Collateral is the same factor with the asset's price as notional.  Only
spot has a value today; a perpetual or a future is settled daily and
worth nothing until the price moves.
"""

from __future__ import annotations

import numpy as np

KINDS = ("spot", "perpetual", "future")
#: Kinds that need an expiry date.
DATED = ("future",)


def usd_notional(contract_size: np.ndarray, spot: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """USD exposure of one contract to its asset factor: the face value if inverse, else size x S."""
    return np.where(inverse, contract_size, contract_size * spot)


def unit_value(kind: np.ndarray, contract_size: np.ndarray, spot: np.ndarray) -> np.ndarray:
    """USD value of one contract today: spot its price, a settled perpetual or future nothing."""
    return np.where(kind == "spot", contract_size * spot, 0.0)


def row_problems(kind: np.ndarray, inverse: np.ndarray, no_inverse: np.ndarray):
    """(mask, column, message) of each rule a row of these kinds can break (inputs name file, row and column).

    The inverse flag of a perpetual or a future must be said (it changes
    the P&L completely); spot can't be inverse.
    """
    derivative = np.isin(kind, ("perpetual", "future"))
    return [
        (no_inverse & derivative, "inverse",
         lambda i: f"empty inverse flag: a {kind[i]} must say whether it is inverse (true/false)"),
        (inverse & (kind == "spot"), "inverse", "a spot instrument cannot be inverse"),
    ]
