"""The stress engine: scenario chunks revalued and folded into exact tails, scheduled with dask.

- :mod:`.graph`: the task graph (:func:`~.graph.compute_tails`), chunk sizes, lanes, schedulers;
- :mod:`.kernels`: the fold of a chunk's losses into row tails, one interface for
  the fused compiled kernel and the array-API reference;
- :mod:`.progress`: progress reporting on stderr.
"""

from .graph import TASK_BUDGET, Chunking, compute_tails

__all__ = ["TASK_BUDGET", "Chunking", "compute_tails"]
