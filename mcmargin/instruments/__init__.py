"""Instruments: what a contract is worth today and under a scenario, one module per family.

- :mod:`.linear`: spot, perpetuals and futures, linear or inverse (one USD notional on an asset factor);
- :mod:`.options`: European options (a factor each, priced by Black-Scholes);
- :mod:`.black_scholes`: the one Black-Scholes pricer of the package (the synthetic exchange uses it too);
- :mod:`.revaluation`: the P&L of every factor under a chunk of scenarios.

:data:`FAMILIES` maps every instrument ``kind`` of the input contract to its module.
"""

from . import linear, options

#: kind -> family module (docs/architecture.md, "How to add an instrument kind").
FAMILIES = {**{k: linear for k in linear.KINDS}, **{k: options for k in options.KINDS}}
#: Every kind the input contract accepts, in a stable order.
KINDS = tuple(FAMILIES)
#: Kinds that need an expiry date.
DATED = linear.DATED + options.DATED

__all__ = ["DATED", "FAMILIES", "KINDS", "linear", "options"]
