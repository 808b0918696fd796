"""The one interface of the fold kernels, and the one place a kernel is chosen.

A *fold kernel* streams a row block's scenario losses ``-(H @ pnl.T)``
through a tail state that keeps each row's worst losses (the definitions
are in :mod:`mcmargin.tails`).  As ``arch`` keeps a compiled recursion
beside its plain-Python reference behind one flag, two kernels share this
interface:

- :class:`~.reference.ReferenceKernel`: array-API code, any backend
  (NumPy, JAX, CuPy, array-api-strict): the definition;
- :class:`~.fused.FusedKernel`: the compiled CPU fast path (Numba), which
  fuses aggregation and selection and starts from pilot thresholds.

The scheduler (:mod:`mcmargin.engine.graph`) calls only these methods, in
this order, per row block: :meth:`~TailKernel.prepare` once,
:meth:`~TailKernel.start` once, :meth:`~TailKernel.fold` per scenario chunk
(in scenario order), :meth:`~TailKernel.finish` once.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np


@dataclasses.dataclass
class TailState:
    """The worst losses a row block has kept so far: the state every kernel folds into.

    Attributes
    ----------
    values : array [rows x slots]
        Kept losses, on the kernel's backend.  The reference keeps exactly
        its current top min(m, seen) in every slot; the fused kernel keeps
        ``count[r]`` losses in the first slots of row r (top m, then staged
        candidates).
    count : numpy.ndarray [rows] of int64 or None
        Losses held per row (None: every slot is held).
    threshold : numpy.ndarray [rows] or None
        A loss must exceed it to be kept (-inf: keep everything), or None
        for kernels that select by sorting.
    m : int
        Tail size kept per row.
    skip : int
        Scenarios at the start of the next chunk already folded in (a pilot's sample).
    limits, hits, excess, counting : numpy.ndarray or None
        Loss limits [rows x K] a kernel counts as the losses stream by (NaN:
        not counted there), the exceedances and excess so far, and the rows
        that count any (kernels that count at the end leave them None).
    index : array [rows x slots] of int64 or None
        The scenario of each kept loss (``values``' twin), so that a row's
        tail scenarios are known at the end (docs/methodology.md, section 16).
    offset : int
        Scenario index of the next chunk's first scenario (chunks are folded
        in scenario order from 0).
    listed : numpy.ndarray of bool or None
        Rows a kernel leaves out of its folds and settles at the end from
        scenario lists made once per run (the fused kernel's single- and
        two-position rows), or None for kernels that fold every row.
    """

    values: object
    count: np.ndarray | None
    threshold: np.ndarray | None
    m: int
    skip: int = 0
    limits: np.ndarray | None = None
    hits: np.ndarray | None = None
    excess: np.ndarray | None = None
    counting: np.ndarray | None = None
    index: object = None
    offset: int = 0
    listed: np.ndarray | None = None


class TailKernel(Protocol):
    """What the scheduler needs of a fold kernel (see the module docstring)."""

    #: Shown in the dataset's ``kernel`` attribute.
    label: str
    #: True when the kernel streams P&L as ``[factors x scenarios]`` (C-contiguous), else ``[scenarios x factors]``.
    transposed: bool

    def plan(self, m: int, n_scenarios: int, chunk: int, holdings):
        """What :meth:`start` needs to know of the run, from its sizes and every row's holdings (SciPy CSR,
        ``[rows x factors]``): a dict, JSON-able, whose ``"pilot"`` entry (a pilot's sample size and order
        statistic, or None) the run reports; or None."""

    def row_bytes(self, m: int, chunk: int) -> int:
        """Bytes a row of a block in flight holds (its tail state, and any losses materialised per chunk):
        sizes the row blocks to the task memory budget (:meth:`~..graph.Chunking.resolve`)."""

    def prepare(self, holdings):
        """A row block's holdings (SciPy CSR, ``[rows x factors]``) in the form :meth:`fold` reads."""

    def start(self, holdings, first_pnl, m: int, plan, limits=None) -> TailState | None:
        """The state before the first fold (None: the first fold makes it); ``limits`` [rows x K]
        (known before the pass) may be counted in the folds for some rows (``TailState.counting``)."""

    def fold(self, state: TailState | None, holdings, pnl, m: int) -> TailState:
        """Fold one scenario chunk's losses into ``state`` (which may be updated in place) and return it."""

    def finish(self, state: TailState, holdings, pnls, m: int) -> tuple[np.ndarray, np.ndarray, int]:
        """``(top, scenario, recomputed)``: each row's m worst losses as float64 NumPy ``[rows x m]`` (any
        order; equal losses ranked by the lower scenario index first), their scenario indices (int64, same
        shape), and how many rows had to be folded again over ``pnls`` (every chunk's P&L) to get them."""

    def sort_rows(self, tails: np.ndarray) -> np.ndarray:
        """:meth:`finish`'s tails with each row sorted in ascending order (VaR and ES read them); may sort in
        place."""

    def count(self, holdings, rows, pnls, limits) -> tuple[np.ndarray, np.ndarray]:
        """``(hits, excess)`` [len(rows) x K]: scenarios whose loss exceeds each of ``limits``
        [len(rows) x K] (NaN: not counted), and the sum of the excess, over every chunk's P&L."""


def select_kernel(backend_name: str, fast_path: bool) -> TailKernel:
    """The kernel a run uses: the fused one on the NumPy backend when ``fast_path``, else the reference.

    This is the only place the choice is made.
    """
    if fast_path and backend_name == "numpy":
        from .fused import FusedKernel

        return FusedKernel()
    from .reference import ReferenceKernel

    return ReferenceKernel(backend_name)
