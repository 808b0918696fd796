"""mcmargin: Monte Carlo stress testing and margin for cross-margined derivatives books."""

from .backend import get_backend
from .book import Book
from .engine import Chunking
from .errors import ConfigError, InputError, McMarginError
from .margin import MarginParams
from .scenarios import ScenarioModel, build_scenarios
from .stress import run_stress
from .tails import tail_size

__all__ = ["Book", "Chunking", "ConfigError", "InputError", "MarginParams", "McMarginError", "ScenarioModel",
           "build_scenarios", "get_backend", "run_stress", "tail_size"]
__version__ = "0.1.0"
