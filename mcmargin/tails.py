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


@dataclasses.dataclass(frozen=True)
class Limits:
    """Loss limits (a pool's margin) whose exceedances a run counts, in the same pass as the tails.

    For each row and limit t: the number of scenarios whose loss exceeds t,
    and the sum over all scenarios of ``max(0, loss - t)``.

    Attributes
    ----------
    fixed : numpy.ndarray [rows x K1]
        Limits known before the run (a grid or closed-form model's margin);
        NaN where a row is not counted.
    from_tails : list of (confidence, scale, offset)
        Limits known only from the row's own tail: ``scale x max(0, ES_q) + offset[row]``
        (a tail model's margin).  ``offset`` is an array [rows] (NaN: not counted).

    Both are counted from each row's kept worst losses when the pass ends:
    exact wherever the limit is at least the smallest kept loss (always, for
    an ES-based limit); rows whose limit lies lower are counted again.
    """

    fixed: np.ndarray | None = None
    from_tails: tuple = ()


def exceedances_from_tail(ordered: np.ndarray, limit: np.ndarray):
    """(hits, excess, exact) of limits [rows x K] per row from the row's kept worst losses (``ordered``, ascending).

    ``hits`` counts the kept losses above each limit, ``excess`` sums what
    they exceed it by.  Exact (``exact``) where the limit is at least the
    smallest kept loss, since every loss above it was kept, and where the
    limit is NaN (not counted: 0 hits); elsewhere the caller counts again.
    """
    hits, excess = np.empty(limit.shape), np.empty(limit.shape)
    over = np.empty_like(ordered, dtype=np.float64)
    for k in range(limit.shape[1]):          # one limit at a time: [rows x m] temporaries, not [rows x K x m]
        t = limit[:, k:k + 1]
        hits[:, k] = np.count_nonzero(ordered > t, axis=1)
        # What each loss exceeds the limit by, 0.0 where it does not: a loss above t exceeds it by a positive
        # number, any other by at most +0.0, and fmax turns NaN (a NaN limit, -inf - -inf) into 0.0: the
        # same numbers as ``where(ordered > t, ordered - t, 0.0)``, summed in the same order, without the mask.
        with np.errstate(invalid="ignore"):
            np.subtract(ordered, t, out=over)
        np.fmax(over, 0.0, out=over)
        excess[:, k] = over.sum(axis=1)
    exact = (limit >= ordered[:, :1]) | np.isnan(limit)
    return hits, excess, exact


@dataclasses.dataclass(frozen=True)
class TailAttribution:
    """What a run keeps of its rows' tails to explain them (docs/methodology.md, section 16).

    Attributes
    ----------
    confidence : float
        q of the explained ES (one of the run's confidences); its tail size m = ``tail_size(N, q)``.
    rows : numpy.ndarray of bool [rows]
        Rows explained: their ``top`` worst scenarios are reported (``TailResult.tail_top``).
    pattern : scipy.sparse.csr_matrix [rows x factors]
        For each explained row, the factors whose P&L is summed over its m tail
        scenarios (``TailResult.tail_sums``, aligned with ``pattern.data``).
    top : int
        Worst scenarios reported per row, in rank order (at most m).
    """

    confidence: float
    rows: np.ndarray
    pattern: object
    top: int = 5


@dataclasses.dataclass
class TailResult:
    """VaR and ES of every row of the holdings at each confidence (and exceedances of its limits)."""

    book: object                 # the CompiledBook whose rows these are
    confidences: list
    var: np.ndarray              # [rows x confidence]
    es: np.ndarray               # [rows x confidence]
    n_scenarios: int
    tail_size: int               # m kept per row (the largest over the confidences)
    chunking: object             # the engine's Chunking: scenario chunk and row block sizes
    timings: dict
    hits: np.ndarray | None = None      # [rows x limits] scenarios whose loss exceeds each limit (NaN: not counted)
    excess: np.ndarray | None = None    # [rows x limits] sum over scenarios of max(0, loss - limit)
    attribution: TailAttribution | None = None  # what was asked to be explained
    tail_top: np.ndarray | None = None  # [rows x top] int64: each explained row's worst scenarios in rank order (-1: not explained)
    tail_sums: np.ndarray | None = None  # [pattern nnz]: sum over the row's m tail scenarios of each pattern factor's P&L


def rank_order(losses, k: int | None = None) -> np.ndarray:
    """Scenario indices of a full loss vector in rank order: largest loss first, equal losses by the lower
    scenario index first (docs/methodology.md, section 16); the first ``k`` (all by default).

    The definition the engine's kept tail scenarios equal, for tests, references and a loss vector rebuilt
    outside a run (a what-if): the tail scenarios of ES at q are ``rank_order(losses, tail_size(N, q))``.
    """
    order = np.argsort(-np.asarray(losses, dtype=np.float64), kind="stable")
    return order if k is None else order[:k]


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
