"""Import modules on a background thread while the main thread waits on compiled work.

A stress run's steps after the engine import about 0.4 s of modules: xarray
imports ``dask.array`` on the first dataset it builds (it checks every new
variable against dask's array type whenever dask is installed), and the
writer imports ``zarr``.  The engine's worker threads run compiled code
that releases the GIL, and the main thread only waits for them, so those
imports can be done meanwhile (:func:`import_in_background`).  An import
is the same whichever thread does it first; one that fails here is left to
fail, with its own message, where the module is used.
"""

from __future__ import annotations

import importlib
import sys
import threading


def import_in_background(*names: str) -> threading.Thread | None:
    """Start a daemon thread importing ``names`` (those not imported yet), in order; return it (None: nothing
    to import).

    Python's import lock makes a module imported once whichever thread gets
    there first: a later ``import`` of the same module on the main thread
    waits for this one to finish.
    """
    missing = [n for n in names if n not in sys.modules]
    if not missing:
        return None

    def run():
        for name in missing:
            try:
                importlib.import_module(name)
            except Exception:      # noqa: BLE001 - its user imports it again and reports the error there
                return

    thread = threading.Thread(target=run, name="import-ahead", daemon=True)
    thread.start()
    return thread
