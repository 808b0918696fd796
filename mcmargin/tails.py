"""Exact tail measures from a streaming merge of the worst losses.

Definitions (docs/methodology.md, section 4).  With N scenarios and
confidence q, the tail size is ``m = ceil(N (1 - q) - 1e-9)``; **VaR_q is
the m-th largest loss and ES_q the mean of the m largest losses**.  With
N = 20,000 and q = 0.99, m = 200.  (The 1e-9 absorbs binary rounding:
20,000 x 0.01 is 200.00000000000003 in floating point.)

Only the m worst losses of each row are ever kept.  Scenario chunks are
folded in one after the other: the new tail is the top m of (old tail,
chunk losses), which is exact whatever the chunking because the top m of
a union is the top m of the union of top m's.  The measures are taken from
the final tail sorted in descending order, so the sum behind ES is
always formed in the same order and does not depend on the chunking.

The fold kernels that keep those worst losses live in
:mod:`mcmargin.engine.kernels` (the array-API reference and the fused CPU
kernel, one interface); this module holds only the definitions and
:class:`TailResult`, what the engine hands the margin models.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def tail_size(n_scenarios: int, confidence: float) -> int:
    """m = ceil(N (1 - q) - 1e-9), at least 1."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return max(1, math.ceil(n_scenarios * (1.0 - confidence) - 1e-9))


@dataclasses.dataclass
class TailResult:
    """VaR and ES of every row of the holdings at each confidence."""

    book: object                 # the CompiledBook whose rows these are
    confidences: list
    var: np.ndarray              # [rows x confidence]
    es: np.ndarray               # [rows x confidence]
    n_scenarios: int
    tail_size: int               # m kept per row (the largest over the confidences)
    chunking: object             # the engine's Chunking: scenario chunk and row block sizes
    timings: dict


def sorted_tail(tail) -> np.ndarray:
    """Tail values per row in descending order (float64 NumPy)."""
    return -np.sort(-np.asarray(tail, dtype=np.float64), axis=1)


def var_es(sorted_asc: np.ndarray, m: int):
    """VaR and ES from tails sorted in ascending order (rows x >= m): the last m are the worst.

    The sum behind ES runs over a contiguous, sorted slice, so its order
    (and rounding) depends only on the values, never on how they arrived.
    """
    worst = sorted_asc[:, sorted_asc.shape[1] - m:]
    return worst[:, 0].copy(), worst.sum(axis=1) / m


def var_es_reference(losses, confidence: float):
    """VaR and ES of a full loss vector by the definition, for tests and references."""
    losses = np.sort(np.asarray(losses, dtype=np.float64))[::-1]
    m = tail_size(losses.size, confidence)
    return losses[m - 1], losses[:m].sum() / m
