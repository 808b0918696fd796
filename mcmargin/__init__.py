"""mcmargin: Monte Carlo stress testing and margin for cross-margined derivatives books.

The names below are imported on first use (PEP 562), so ``import mcmargin``
or ``import mcmargin.pipeline.config`` costs little, and a job pulls in the array
libraries only when it runs.
"""

import importlib

_EXPORTS = {
    "get_backend": ".backend", "Book": ".inputs.book", "Chunking": ".engine", "ConfigError": ".errors",
    "InputError": ".errors", "McMarginError": ".errors", "MarginParams": ".margin", "MarginModel": ".margin",
    "ScenarioModel": ".scenarios", "build_scenarios": ".scenarios", "run_stress": ".pipeline.stress",
    "tail_size": ".tails", "synthetic_book": ".inputs.synthetic",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
