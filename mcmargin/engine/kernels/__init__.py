"""Fold kernels: one interface (:class:`~.base.TailKernel`), two implementations, chosen in one place.

- :mod:`.base`: the interface, the :class:`~.base.TailState` every kernel folds into, :func:`~.base.select_kernel`;
- :mod:`.reference`: the array-API reference (any backend);
- :mod:`.fused`: the compiled CPU fast path (Numba) and its pilot thresholds.
"""

from .base import TailKernel, TailState, select_kernel

__all__ = ["TailKernel", "TailState", "select_kernel"]
