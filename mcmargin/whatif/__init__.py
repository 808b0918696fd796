"""The what-if service's library: the night's cube and the calculator that answers from it.

- :mod:`mcmargin.whatif.cube`: ``output.cube`` (Zarr), everything needed to
  rebuild any pool's scenario loss vector without redoing the night (factor
  P&L per scenario, the column-to-factor map, holdings, the shocks and the
  night's figures);
- :mod:`mcmargin.whatif.calculator`: what-if, max size, attribution and
  re-pricing on a loaded cube (plain Python, no web framework);
- :mod:`mcmargin.whatif.app`: the HTTP service (FastAPI, the ``serve`` extra).

docs/architecture.md, "What-if service".
"""

from .cube import build_cube, check_cube_margin, load_cube

__all__ = ["build_cube", "check_cube_margin", "load_cube"]
