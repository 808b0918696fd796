"""Resuming a killed run: its completed row blocks, kept in a run directory keyed by what the run computes.

A job started again with the same config and inputs after being killed
(SIGKILL, a lost node) continues from the row blocks it had finished and
writes a dataset bit-identical to an uninterrupted run's
(docs/architecture.md, "Resume").

- **Where.**  ``output.work_dir`` (default ``.NAME.work/`` beside
  ``output.path``: never the output path itself, nor inside it), one
  subdirectory per run key.  It is created only once every input has been
  read and validated, so a run refused for bad input leaves nothing.
- **Key.**  :func:`run_key`: the sha256 of the resolved config (without
  the keys that change no figure: where the output goes, logging, progress,
  the cluster) and of every input file's sha256.  A changed input or
  setting gives another key: the stale run directory is removed and the
  run starts from zero; nothing stale is ever read.  The engine adds its
  own signature of the holdings, chunking and limits to each file
  (:func:`mcmargin.engine.graph.compute_tails`).
- **When done.**  :func:`finish_run_dir` removes the run directory once the
  dataset is in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)

#: Config keys that change no figure: left out of the run key, so e.g. a
#: resumed run may log as JSON or use another cluster.
NEUTRAL_KEYS = ("output.path", "output.work_dir", "output.lock_wait", "output.top", "output.margin_calls",
                "logging", "engine.progress", "engine.blocks_in_flight", "cluster", "portfolio.export",
                "portfolio.export_format", "portfolio.export_then_run")

#: The file that marks a run directory as this project's (only such directories are ever removed).
MARKER = "mcmargin-run.json"


def run_key(config: dict, inputs: dict) -> str:
    """The sha256 of the resolved ``config`` (less :data:`NEUTRAL_KEYS`) and the ``inputs`` (path -> sha256)."""
    cfg = json.loads(json.dumps(config, default=str))
    for key in NEUTRAL_KEYS:
        *head, last = key.split(".")
        node = cfg
        for k in head:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    doc = json.dumps({"config": cfg, "inputs": dict(sorted(inputs.items()))}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def default_work_dir(output_path) -> Path:
    """``.NAME.work`` beside ``output_path``."""
    p = Path(output_path)
    return p.with_name(f".{p.name}.work")


def check_work_dir(work_dir, output_path, key: str = "output.work_dir") -> Path:
    """The work directory as a path (default :func:`default_work_dir`); never ``output_path`` nor inside it."""
    out = Path(output_path).expanduser().resolve()
    w = default_work_dir(output_path) if work_dir in (None, "") else Path(str(work_dir)).expanduser()
    wr = w.resolve()
    if wr == out or out in wr.parents or wr in out.parents:
        raise ConfigError(key, f"{w} is, holds or lies inside output.path {output_path}: the work directory must be "
                               "apart from the dataset (default: .NAME.work beside it)")
    if w.exists() and not w.is_dir():
        raise ConfigError(key, f"{w} is a file, not a directory")
    return w


def open_run_dir(work_dir, key: str) -> Path:
    """The run directory of ``key`` under ``work_dir``, created now; other (stale) runs' directories removed."""
    root = Path(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    for other in root.iterdir():
        if other.name != key[:32] and (other / MARKER).is_file():
            log.info("removing %s: work of a run with other inputs or settings", other)
            shutil.rmtree(other, ignore_errors=True)
    run = root / key[:32]
    kept = sum(1 for _ in run.glob("block-*.pkl")) if run.is_dir() else 0
    run.mkdir(exist_ok=True)
    (run / MARKER).write_text(json.dumps({"run_key": key}))
    if kept:
        log.info("resuming from %s: %d finished row block(s) kept", run, kept)
    return run


def finish_run_dir(run) -> None:
    """Remove a run directory once its dataset is in place (and the work directory, when left empty)."""
    if run is None:
        return
    run = Path(run)
    shutil.rmtree(run, ignore_errors=True)
    try:
        run.parent.rmdir()
    except OSError:
        pass            # other runs' work, or not ours to remove
