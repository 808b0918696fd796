"""Aggregation: the book compiled to columns, risk factors and holdings rows.

- :mod:`.compiled`: :func:`~.compiled.compile_book` builds a :class:`~.compiled.CompiledBook`:
  position columns, their exposure to the risk factors, and the sparse
  holdings rows (accounts, pooled groups, unit rows) whose losses the
  engine takes tails of; which blocks of rows exist is asked by the margin
  models (:data:`~.compiled.ROW_KINDS`).
"""

from .compiled import ROW_KINDS, CompiledBook, column_pnl, compile_book

__all__ = ["ROW_KINDS", "CompiledBook", "column_pnl", "compile_book"]
