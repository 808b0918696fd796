"""The nightly stress job as a library call: a resolved config in, an audited dataset out.

:func:`run` is what ``python -m jobs.stress`` runs between checking its
output paths and writing: every setting checked before any work, the inputs
loaded and recorded (:mod:`mcmargin.common.audit`), :func:`~.stress.run_stress`,
every figure checked after it.  It takes the config as Hydra gives it (a
``DictConfig``; build one with ``hydra.compose`` or ``OmegaConf.create``), so
scripts and tests run the job without the command line.
"""

from __future__ import annotations

import time

from omegaconf import DictConfig, OmegaConf

from ..common.settings import STRESS_RULES, check_settings

__all__ = ["run", "run_resumable", "export_only"]


def run(cfg: DictConfig, work_dir=None, *, cube: bool = False):
    """Run the stress job described by ``cfg`` and return its dataset (an ``xarray.Dataset``, not written).

    Every setting is checked before any work (:mod:`mcmargin.common.settings`), and
    every figure after it (:func:`mcmargin.output.check_figures`).  With ``cube``
    (and ``output.cube`` set) returns ``(dataset, cube)``: the what-if cube of
    :mod:`mcmargin.whatif.cube`, also not written.  With
    ``work_dir``, finished row blocks are kept there and a run killed before
    it finished resumes from them (:mod:`mcmargin.pipeline.resume`); the
    caller removes the run directory once the dataset is written
    (:func:`run_resumable`).
    """
    ds, cube_ds, _ = run_resumable(cfg, work_dir, cube=cube)
    return (ds, cube_ds) if cube else ds


def run_resumable(cfg: DictConfig, work_dir=None, *, cube: bool = False):
    """:func:`run`, returning ``(dataset, what-if cube or None, run directory or None)``."""
    c = OmegaConf.to_container(cfg, resolve=True)
    check_settings(c, STRESS_RULES)
    from mcmargin.common.audit import recording

    t0 = time.perf_counter()
    with recording() as inputs:
        ds, loading, kept, cube_inputs = _run(cfg, c, work_dir, inputs, cube=cube)
    ds = _stamp(ds, cfg, inputs, loading, time.perf_counter() - t0)
    cube_ds = None
    if cube_inputs is not None:
        from mcmargin.whatif import build_cube

        cube_ds = build_cube(*cube_inputs, ds)
    return ds, cube_ds, kept


def _run(cfg: DictConfig, c: dict, work_dir=None, inputs=None, *, cube: bool = False):
    """The run itself; returns ``(dataset, seconds spent loading the inputs, run directory or None,
    (book, scenarios) for the what-if cube or None)``."""
    from mcmargin.common.logs import stage
    from mcmargin.pipeline import config as mc
    from mcmargin.backend import resolve
    from mcmargin.output.store import check_figures
    from mcmargin.scenarios import build_scenarios
    from mcmargin.pipeline.stress import run_stress
    from mcmargin.cascade import CascadeParams

    valuation = mc.valuation_date(c["valuation_date"])
    backend = resolve(str(c["backend"]))
    margin = mc.margin_models_from_config(c["margin"], fold_apc=True)   # a buffer dataset is read before any work
    cube = cube and bool(c["output"].get("cube"))
    if cube:
        from mcmargin.whatif import check_cube_margin

        check_cube_margin(margin)          # before any work: a cube the service cannot serve is refused now
    timings: dict = {}
    with stage("load_inputs", timings):
        book = mc.book_from_config(c["portfolio"], valuation)
        history = None
        if c.get("history"):
            from mcmargin.inputs.history import load_history

            history = load_history(c["history"])
        scen_cfg, apc_attrs = mc.apc_scenarios_from_config(c["margin"], dict(c["scenarios"], valuation_date=valuation),
                                                           history)
        scenarios = build_scenarios(scen_cfg, book.assets, book.market["vol"].to_numpy(), history)
        from mcmargin.scenarios.named import load_stresses

        stresses = load_stresses(c.get("stress_tests", {}).get("names"))
    fund = c.get("default_fund", {}).get("size")
    chunking, budget = mc.chunking_from_config(c["engine"])
    settings = dict(confidences=mc.confidences_from_config(c["output"], margin), backend=backend,
                    fast_path=bool(c["engine"]["fast_path"]), chunking=chunking, rate=float(c["pricing"]["rate"]),
                    include_scenarios=bool(c["output"]["scenarios"]), budget=budget,
                    progress=bool(c["engine"]["progress"]),
                    blocks_in_flight=mc.blocks_in_flight_from_config(c["engine"], c["cluster"]),
                    status=mc.status_from_config(c["margin"]), stresses=stresses,
                    default_fund=None if fund is None else float(fund),
                    reverse=mc.reverse_stress_from_config(c.get("reverse_stress") or {}, fund, book),
                    cascade=CascadeParams.from_config(c.get("cascade")),
                    loss_pools=int(c["output"].get("loss_pools", 0)), loss_bins=int(c["output"].get("loss_bins", 50)),
                    loss_scenarios=int(c["output"].get("loss_scenarios", 0)),
                    attribution=bool(c["output"].get("attribution", True)),
                    tail_scenarios=int(c["output"].get("tail_scenarios", 5)))
    from mcmargin.pipeline.runtime import job_scheduler

    kept = None
    with job_scheduler(c["cluster"]) as scheduler:
        if work_dir is not None:   # every input and setting is validated by now: only now is anything created
            from mcmargin.pipeline.resume import open_run_dir, run_key

            kept = open_run_dir(work_dir, run_key(c, inputs or {}))
        ds = run_stress(book, scenarios, margin=margin, scheduler=scheduler, keep_dir=kept, **settings)
    ds.attrs.update(cluster=str(c["cluster"]["kind"]), **apc_attrs)
    return check_figures(ds), timings["load_inputs_s"], kept, (book, scenarios) if cube else None


def _stamp(ds, cfg: DictConfig, inputs: dict, loading: float, seconds: float):
    """``ds`` with the audit attributes (:func:`mcmargin.common.audit.audit_attrs`)."""
    import json

    from mcmargin.common.audit import audit_attrs

    timings = {"load_inputs_s": loading, **json.loads(ds.attrs.get("timings", "{}")), "job_s": seconds}
    ds.attrs.update(audit_attrs(job="jobs.stress", config_yaml=OmegaConf.to_yaml(cfg, resolve=True), inputs=inputs,
                                seed=ds.attrs.get("seed"), backend=ds.attrs.get("backend", "numpy"),
                                device=ds.attrs.get("device", "cpu"), timings=timings))
    return ds


def export_only(cfg: DictConfig) -> str:
    """Build and export the book ``portfolio.export`` names, and nothing else; returns what to print.

    Exporting is a step of its own (to edit the files, then run on them), so
    it neither runs the job nor touches ``output.path``;
    ``portfolio.export_then_run=true`` does both, as before.
    """
    from mcmargin.pipeline import config as mc

    c = OmegaConf.to_container(cfg, resolve=True)
    check_settings(c, STRESS_RULES)
    book = mc.book_from_config(c["portfolio"], mc.valuation_date(c["valuation_date"]))
    fmt = c["portfolio"].get("export_format", "csv")
    return (f"book exported to {c['portfolio']['export']} ({fmt}): {book.account_ids.size:,} accounts, "
            f"{len(book.instruments):,} instruments; the stress run was not started "
            "(portfolio.export_then_run=true exports and runs)")
