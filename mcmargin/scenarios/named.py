"""Named stress scenarios: instantaneous moves read from YAML files (docs/methodology.md section 11).

A stress file holds exactly these keys::

    description: text                      # what the scenario is
    source: text                           # where its figures come from
    returns: {ASSET: log-return, ...}      # instantaneous log price moves (may be {})
    vol_changes: {ASSET: log IV change}    # instantaneous log implied-vol moves (may be {})
    others: {return: x, vol_change: y}     # every risky asset (market vol > 0) the file does not list

The two tables are read apart: a risky asset that ``returns`` does not list
takes ``others.return``, one that ``vol_changes`` does not list takes
``others.vol_change``.  Cash and stablecoin assets (market vol 0) never
take ``others``: they move only when listed (a de-peg).  An asset a file lists that the book
lacks is skipped and logged.  A missing, NaN or infinite move, or an
unknown key, is an :class:`~mcmargin.errors.InputError` naming the file and
the key.

Built-in files live in ``conf/stress_tests/`` and are selected by their
name (the file stem); any other entry of ``stress_tests.names`` is a path.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np

from ..common.audit import record_input
from ..errors import ConfigError, InputError

log = logging.getLogger(__name__)

#: Folder of the built-in stress files (a data folder, not a Hydra config group).
BUILTIN_DIR = Path(__file__).resolve().parents[2] / "conf" / "stress_tests"
KEYS = ("description", "source", "returns", "vol_changes", "others")
OTHERS_KEYS = ("return", "vol_change")


@dataclasses.dataclass(frozen=True)
class NamedStress:
    """One stress scenario as its file gives it."""

    name: str
    description: str
    source: str
    returns: dict
    vol_changes: dict
    other_return: float
    other_vol_change: float
    file: str = ""


def builtin_names() -> list[str]:
    """Names of the built-in stress files, sorted."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve(names) -> list[Path]:
    """The files ``stress_tests.names`` selects: None = every built-in; a built-in name or a path each."""
    if names is None:
        names = builtin_names()
    if isinstance(names, str):
        raise ConfigError("stress_tests.names", f"expected a list of names or paths, got {names!r}")
    out = []
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n:
            raise ConfigError(f"stress_tests.names[{i}]", f"expected a built-in name or a path, got {n!r}")
        builtin = BUILTIN_DIR / f"{n}.yaml"
        path = builtin if ("/" not in n and not n.endswith((".yaml", ".yml")) and builtin.exists()) else Path(n)
        if not path.is_file():
            raise ConfigError(f"stress_tests.names[{i}]",
                              f"{n!r} is neither a built-in stress ({', '.join(builtin_names())}) nor a file")
        out.append(path)
    return out


def load_stress(path) -> NamedStress:
    """Read and check one stress file."""
    import yaml

    path = Path(path)
    f = str(path)
    if path.resolve().parent != BUILTIN_DIR.resolve():   # built-in files are code (the git commit names them)
        record_input(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise InputError(f, f"cannot read the stress file: {e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError.from_yaml(f, e, "cannot read the stress file, not valid YAML") from None
    if not isinstance(doc, dict):
        raise InputError(f, "a stress file is a mapping with keys " + ", ".join(KEYS))
    for k in doc:
        if k not in KEYS:
            raise InputError(f, f"unknown key {k!r}; expected {', '.join(KEYS)}", column=str(k))
    for k in KEYS:
        if k not in doc:
            raise InputError(f, f"key {k!r} is missing", column=k)
    moves = {}
    for k in ("returns", "vol_changes"):
        table = doc[k] if doc[k] is not None else {}
        if not isinstance(table, dict):
            raise InputError(f, f"{k} must map assets to moves, got {table!r}", column=k)
        moves[k] = {str(a): _move(v, f, f"{k}.{a}") for a, v in table.items()}
    others = doc["others"]
    if not isinstance(others, dict):
        raise InputError(f, f"others must be a mapping with keys {', '.join(OTHERS_KEYS)}, got {others!r}",
                         column="others")
    for k in others:
        if k not in OTHERS_KEYS:
            raise InputError(f, f"unknown key {k!r}; expected {', '.join(OTHERS_KEYS)}", column=f"others.{k}")
    for k in OTHERS_KEYS:
        if k not in others:
            raise InputError(f, f"key 'others.{k}' is missing", column=f"others.{k}")
    return NamedStress(name=path.stem, description=str(doc["description"] or ""), source=str(doc["source"] or ""),
                       returns=moves["returns"], vol_changes=moves["vol_changes"],
                       other_return=_move(others["return"], f, "others.return"),
                       other_vol_change=_move(others["vol_change"], f, "others.vol_change"), file=f)


def _move(value, file: str, key: str) -> float:
    """A finite number (a numeric string is read as its number: YAML 1.1 leaves ``1e-3`` a string)."""
    if value is None:
        raise InputError(file, "the move is missing (null)", column=key)
    if isinstance(value, bool):
        raise InputError(file, f"expected a number, got {value!r}", column=key)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(file, f"expected a number, got {value!r}", column=key) from None
    if not math.isfinite(x):
        raise InputError(file, f"expected a finite number, got {value!r}", column=key)
    return x


def load_stresses(names=None) -> list[NamedStress]:
    """Every stress ``names`` selects (see :func:`resolve`), checked; names must be distinct."""
    out = [load_stress(p) for p in resolve(names)]
    seen = set()
    for s in out:
        if s.name in seen:
            raise ConfigError("stress_tests.names", f"two stresses are named {s.name!r}")
        seen.add(s.name)
    return out


def stress_matrices(stresses, assets, market_vol):
    """``(names, shock [stress x asset], vol_shock [stress x asset])`` for a book's market assets.

    Listed assets take their file's move; unlisted risky assets (vol > 0)
    take ``others``; unlisted cash assets (vol 0) stay put.  Listed assets
    the book lacks are skipped and logged.
    """
    assets = [str(a) for a in assets]
    risky = np.asarray(market_vol, dtype=float) > 0
    index = {a: i for i, a in enumerate(assets)}
    shock = np.zeros((len(stresses), len(assets)))
    vol_shock = np.zeros_like(shock)
    for s, st in enumerate(stresses):
        shock[s, risky] = st.other_return
        vol_shock[s, risky] = st.other_vol_change
        missing = sorted({a for a in (*st.returns, *st.vol_changes) if a not in index})
        if missing:
            log.info("stress %s: asset(s) %s not in the book, skipped", st.name, ", ".join(missing))
        for a, x in st.returns.items():
            if a in index:
                shock[s, index[a]] = x
        for a, x in st.vol_changes.items():
            if a in index:
                vol_shock[s, index[a]] = x
    return [st.name for st in stresses], shock, vol_shock
