"""Structured log lines: one per stage of a run, with its timing.

Every stage of a job (loading the inputs, compiling the book, the tail pass,
the margin rules, writing) logs one line through :func:`log_stage`, at
INFO, with the fields ``stage`` and ``seconds`` (and any others it has,
e.g. ``rows`` or ``path``).  How the line looks is the handler's choice:

- ``logging.format=human`` (the default): ``[INFO] mcmargin.stage: stage
  compile_book done in 0.031 s (rows=60)``;
- ``logging.format=json``: one JSON object a line, ``{"time": ...,
  "level": "INFO", "logger": ..., "message": ..., "stage": ...,
  "seconds": ...}``, for log collectors.

:func:`set_log_format` switches the handlers Hydra set up
(conf/hydra/job_logging) to the chosen formatter; jobs call it through
:func:`jobs._cli.user_errors`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time

from ..errors import ConfigError

#: Logger every stage line goes to.
STAGE_LOGGER = "mcmargin.stage"
LOG_FORMATS = ("human", "json")
# Attributes every LogRecord has: whatever else a record carries came from ``extra=``.
_RECORD_KEYS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def log_stage(stage: str, seconds: float, logger: logging.Logger | None = None, **fields) -> None:
    """Log that ``stage`` finished after ``seconds``, with ``fields`` as structured extras."""
    lg = logger or logging.getLogger(STAGE_LOGGER)
    extra = "".join(f", {k}={v}" for k, v in fields.items())
    lg.info("stage %s done in %.3f s%s", stage, seconds, f" ({extra[2:]})" if extra else "",
            extra={"stage": stage, "seconds": round(float(seconds), 6), **fields})


@contextlib.contextmanager
def stage(name: str, timings: dict | None = None, **fields):
    """Time the block as stage ``name``: log it (:func:`log_stage`) and store ``timings[name + "_s"]``."""
    t0 = time.perf_counter()
    yield
    seconds = time.perf_counter() - t0
    if timings is not None:
        timings[f"{name}_s"] = seconds
    log_stage(name, seconds, **fields)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's structured extras."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for k, v in vars(record).items():
            if k not in _RECORD_KEYS and not k.startswith("_"):
                out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def set_log_format(fmt: str, key: str = "logging.format") -> None:
    """Put every handler of the root logger on the ``human`` (unchanged) or ``json`` formatter."""
    if fmt not in LOG_FORMATS:
        raise ConfigError(key, f"expected one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    if fmt == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
