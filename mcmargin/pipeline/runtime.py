"""How a job runs under Hydra: per-job output paths in a sweep, a quiet cluster shutdown.

Kept apart from :mod:`mcmargin.pipeline.config` (config values to objects): these
helpers concern the process a job runs in, not the figures.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path


def job_output_path(path) -> Path:
    """Where this job writes ``output.path``.

    In a Hydra multirun (``-m``) every job of the sweep would otherwise
    write the same relative path and only the last dataset would survive, so
    a relative path is taken inside the job's own sweep directory
    (``hydra.sweep.dir/hydra.sweep.subdir``, e.g. ``multirun/2026-11-25/
    22-00-00/1/out/stress.zarr``).  An absolute path is used as given (to
    sweep into one tree, put ``${hydra:job.num}`` in it).  Outside Hydra, or
    in a single run, ``path`` is unchanged.
    """
    path = Path(path)
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):  # not under Hydra
        return path
    if hc.mode == RunMode.MULTIRUN and not path.is_absolute():
        return Path(hc.runtime.output_dir) / path
    return path


#: Loggers of ``distributed`` that speak during a LocalCluster's start and close.
_DISTRIBUTED_LOGGERS = ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker",
                        "distributed.core", "distributed.batched", "distributed.comm", "distributed.http.proxy")


@contextlib.contextmanager
def job_scheduler(cluster):
    """:func:`mcmargin.pipeline.config.scheduler_from_config`, without ``distributed``'s noise.

    ``distributed`` sets its loggers to INFO when imported, after Hydra has
    configured logging (conf/hydra/job_logging: WARNING), so they are put
    back to WARNING first.  When the job is done the cluster is closed on
    purpose, after the results are gathered: the nanny's warnings about
    workers it kills on the way out say nothing then, so ``distributed`` is
    held at ERROR while it closes.  Every level is restored afterwards.
    """
    from . import config as mc

    loggers = []
    if cluster.get("kind", "threads") != "threads":
        import distributed  # noqa: F401  (its import sets the levels we then correct)

        loggers = [logging.getLogger(n) for n in _DISTRIBUTED_LOGGERS]
    saved = [lg.level for lg in loggers]
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: [lg.setLevel(v) for lg, v in zip(loggers, saved)])  # runs last
        for lg in loggers:
            lg.setLevel(max(lg.level, logging.WARNING))
        scheduler = stack.enter_context(mc.scheduler_from_config(cluster))
        try:
            yield scheduler
        finally:  # before the cluster closes
            for lg in loggers:
                lg.setLevel(logging.ERROR)
