"""Revaluation: the P&L of every risk factor under a chunk of scenarios (array API, any backend).

Factors are, in order, the market assets (expm1 of the shock: the P&L of
one USD of linear exposure, which every linear instrument and collateral
nets into, :mod:`.linear`) and then the options (the USD P&L of one
contract each, :mod:`.options`).
"""

from __future__ import annotations

import dataclasses

from . import options as option_family


@dataclasses.dataclass
class BackendBook:
    """The pricing arrays of a compiled book on one backend."""

    options: option_family.OptionBlock


def to_backend(book, backend) -> BackendBook:
    """What :func:`revalue` reads of ``book`` (a :class:`~mcmargin.aggregation.CompiledBook`), on ``backend``."""
    return BackendBook(options=book.options.on(backend))


def revalue(backend, priced: BackendBook, shock, vol_shock):
    """P&L of every factor, ``[scenario x factor]``: expm1(shock) of each asset, then each option's contract P&L."""
    xp = backend.xp
    return xp.concat([xp.expm1(shock), option_family.revalue(backend, priced.options, shock, vol_shock)], axis=1)
