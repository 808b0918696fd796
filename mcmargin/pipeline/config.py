"""From config mappings (Hydra or plain dicts) to the library's objects.

Each function takes the config section it needs and raises
:class:`~mcmargin.errors.ConfigError` naming the key at fault.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path

from ..inputs.book import Book
from ..engine.graph import TASK_BUDGET, Chunking
from ..errors import ConfigError
from ..margin import MarginModel, MarginParams, build_margin_models
from ..common.settings import STRESS_RULES, check_settings, one_of, real_number, whole_number

log = logging.getLogger(__name__)

TABLES = ("instruments", "market", "positions", "collateral", "accounts")


def valuation_date(value) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError("valuation_date", f"must be an ISO date like 2026-11-25, got {value!r}") from None


def book_from_config(portfolio: Mapping, valuation: dt.date) -> Book:
    """The book that ``portfolio`` (synthetic or files) describes; exported if asked."""
    kind = portfolio.get("kind")
    if kind == "synthetic":
        from ..inputs.synthetic import synthetic_book

        n = whole_number(portfolio.get("n_accounts"), "portfolio.n_accounts", minimum=1)
        book = synthetic_book(n_accounts=n, seed=whole_number(portfolio.get("seed", 7), "portfolio.seed", 0),
                              valuation_date=valuation,
                              group_share=real_number(portfolio.get("group_share", 0.2), "portfolio.group_share",
                                                      0.0, 1.0))
    elif kind == "files":
        from ..inputs.files import load_book, load_book_dir

        paths = {t: portfolio.get(t) for t in TABLES if portfolio.get(t)}
        directory = portfolio.get("dir")
        if directory:
            if not Path(directory).is_dir():
                raise ConfigError("portfolio.dir", f"{directory} is not a directory")
            if paths:  # a path per table overrides the directory's file for that table
                for t in TABLES:
                    found = [f for f in (Path(directory) / f"{t}.csv", Path(directory) / f"{t}.parquet")
                             if f.exists()]
                    if t not in paths and found:
                        paths[t] = found[0]
                book = load_book(paths, valuation)
            else:
                book = load_book_dir(directory, valuation)
        elif paths:
            book = load_book(paths, valuation)
        else:
            raise ConfigError("portfolio.dir", "portfolio=files needs portfolio.dir=PATH or a path per table "
                                               "(portfolio.instruments=..., portfolio.market=..., ...)")
    else:
        raise ConfigError("portfolio.kind", f"must be synthetic or files, got {kind!r}")
    export = portfolio.get("export")
    if export:
        from ..inputs.files import write_book

        fmt = one_of(portfolio.get("export_format", "csv"), "portfolio.export_format", ("csv", "parquet"))
        write_book(book, export, fmt=fmt)
        log.info("book exported to %s (%s)", export, fmt)
    return book


def margin_models_from_config(margin: Mapping, fold_apc: bool = False) -> list[MarginModel]:
    """The margin models ``margin.models`` names (default ``[margin.model]``), primary first, checked key by key.

    ``fold_apc``: a single-date run (the stress run) holds the ``margin.apc=buffer``
    buffer in full, folded into the buffer applied (docs/methodology.md, section 15).
    """
    check_settings({"margin": dict(margin)}, STRESS_RULES)
    return build_margin_models(margin, fold_apc=fold_apc)


def apc_scenarios_from_config(margin: Mapping, scenarios: Mapping, history=None) -> tuple[dict, dict]:
    """The scenario settings under ``margin.apc`` and the attrs recording them (:func:`mcmargin.margin.apc.apc_scenario_settings`)."""
    from ..calibration.apc import apc_option, apc_scenario_settings

    return apc_scenario_settings(apc_option(margin.get("apc")), scenarios, history)


def reverse_stress_from_config(reverse: Mapping, default_fund, book: Book):
    """``(direction [asset], fund)`` of ``reverse_stress.*``, or None when it is off.

    The direction defaults to every risky asset (market vol > 0) down
    together with weight 1, stablecoins and cash fixed; ``reverse_stress.fund``
    defaults to ``default_fund.size``.
    """
    if not reverse.get("enabled"):
        return None
    import numpy as np

    fund = reverse.get("fund", None)
    fund = default_fund if fund is None else fund
    if fund is None:
        raise ConfigError("reverse_stress.fund", "is required (or default_fund.size) when reverse_stress.enabled=true")
    assets = [str(a) for a in book.assets]
    given = reverse.get("direction")
    if given is None:
        direction = np.where(book.market["vol"].to_numpy(dtype=float) > 0, -1.0, 0.0)
    else:
        unknown = sorted(set(map(str, given)) - set(assets))
        if unknown:
            raise ConfigError(f"reverse_stress.direction.{unknown[0]}", f"is not a market asset; assets: {', '.join(assets)}")
        direction = np.array([real_number(given.get(a, 0.0), f"reverse_stress.direction.{a}") for a in assets])
    if not np.any(direction != 0):
        raise ConfigError("reverse_stress.direction", "moves no asset")
    return direction, real_number(fund, "reverse_stress.fund", 0.0)


def status_from_config(margin: Mapping):
    """The margin-ratio ladder of ``group_status`` (``margin.status.*``)."""
    from ..margin.status import StatusLadder

    return StatusLadder.from_config(margin.get("status"))


def margin_from_config(margin: Mapping) -> MarginParams:
    """The parameters every margin model shares (``margin.confidence``, ``buffer``, ``maintenance_ratio``)."""
    return margin_models_from_config(margin)[0].params


def confidences_from_config(output: Mapping, margin) -> list[float]:
    """``output.confidence`` with every confidence the margin model(s) read (parameters: their confidence)."""
    qs = output.get("confidence") or []
    check_settings({"output": {"confidence": qs}}, STRESS_RULES)
    models = [margin] if isinstance(margin, (MarginModel, MarginParams)) else list(margin)
    own = set()
    for m in models:
        own |= set(m.confidences()) if isinstance(m, MarginModel) else {m.confidence}
    return sorted({float(q) for q in qs} | own)


def chunking_from_config(engine: Mapping) -> tuple[Chunking, int]:
    out = [whole_number(engine.get(key, 0), f"engine.{key}", minimum=0) for key in ("scenario_chunk", "row_block")]
    budget = real_number(engine.get("task_memory_mb", TASK_BUDGET // 2**20), "engine.task_memory_mb", 0.0,
                         low_open=True)
    return Chunking(scenarios=out[0], rows=out[1]), int(budget * 2**20)


def blocks_in_flight_from_config(engine: Mapping, cluster: Mapping | None = None) -> int:
    """``engine.blocks_in_flight``; 0 stays automatic (twice the threads found at run time).

    A SLURM cluster's workers join as their jobs start, after the run has
    begun, so its 0 becomes twice the threads it will have (jobs x cores).
    """
    v = whole_number(engine.get("blocks_in_flight", 0), "engine.blocks_in_flight", minimum=0)
    if v == 0 and cluster and cluster.get("kind") == "slurm" and not cluster.get("address"):
        v = 2 * int(cluster.get("jobs", 1)) * int(cluster.get("cores", 1))
    return v


@contextlib.contextmanager
def scheduler_from_config(cluster: Mapping):
    """Yield the dask scheduler the ``cluster`` config names (closed on exit).

    ``threads`` yields the string "threads"; the others yield a
    ``distributed.Client``.  An ``address`` connects to a running scheduler.
    """
    kind = cluster.get("kind", "threads")
    if kind == "threads":
        import dask

        n = cluster.get("n_workers")
        with dask.config.set(scheduler="threads", num_workers=n):
            yield "threads"
        return
    if kind not in ("distributed", "cuda", "slurm"):
        raise ConfigError("cluster.kind", f"unknown cluster kind {kind!r}; choose threads, distributed, cuda or slurm")
    from distributed import Client

    address = cluster.get("address")
    if address:
        with Client(address) as client:
            yield client
        return
    with _local_cluster(kind, cluster) as lc, Client(lc) as client:
        if kind == "slurm":
            lc.scale(jobs=int(cluster.get("jobs", 1)))
        yield client


def _local_cluster(kind: str, cluster: Mapping):
    if kind == "distributed":
        from distributed import LocalCluster

        return LocalCluster(n_workers=int(cluster.get("n_workers") or 2),
                            threads_per_worker=int(cluster.get("threads_per_worker") or 1),
                            processes=True, dashboard_address=None)
    if kind == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise ConfigError("cluster.kind", "cluster=cuda needs dask-cuda: pip install 'mcmargin[gpu]'") from None
        n = cluster.get("n_workers")
        return LocalCUDACluster(n_workers=n, device_memory_limit=cluster.get("device_memory_limit", 0.8),
                                dashboard_address=None)
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(queue=cluster.get("queue"), account=cluster.get("account"),
                        cores=int(cluster.get("cores", 1)), processes=int(cluster.get("processes", 1)),
                        memory=str(cluster.get("memory", "4GB")), walltime=cluster.get("walltime"),
                        job_extra_directives=list(cluster.get("job_extra_directives") or []))
