"""Nightly cross-margin stress run.

    python -m jobs.stress [hydra overrides]

Draws the scenarios, revalues the book, computes tails and margin for every
account and margin group, writes the dataset to ``output.path`` and prints a
summary.  All logic lives in :mod:`mcmargin`; this module maps the config.
"""

from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig, OmegaConf

# Only Hydra is imported up front: `--help`, `--cfg job` and a bad override
# answer in well under a second, and each heavy library (xarray, dask, numba,
# JAX, distributed) is imported by the step that uses it.
from jobs._cli import launch, user_errors
from mcmargin.common.settings import STRESS_RULES, check_settings

log = logging.getLogger("mcmargin.stress")

#: Config keys of files the job writes besides output.path (jobs.reproduce turns them off).
SIDE_OUTPUTS = ("portfolio.export", "output.margin_calls")


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


@hydra.main(version_base="1.3", config_path="../conf", config_name="stress")
def main(cfg: DictConfig) -> None:
    from mcmargin.common.logs import stage
    from mcmargin.common.settings import real_number
    from mcmargin.errors import ConfigError
    from mcmargin.output.store import check_output_path, run_lock, write_dataset
    from mcmargin.output.summary import run_table, summary
    from mcmargin.pipeline.resume import check_work_dir, finish_run_dir
    from mcmargin.pipeline.runtime import job_output_path

    with user_errors(cfg):
        if cfg.portfolio.get("export") and not cfg.portfolio.get("export_then_run"):
            print(export_only(cfg))
            return
        check_output_path(cfg.output.path)  # before any work: never compute what cannot be written
        path = check_output_path(job_output_path(cfg.output.path))
        calls = cfg.output.get("margin_calls")
        if calls:
            from mcmargin.output.calls import check_margin_calls_path, write_margin_calls

            check_margin_calls_path(job_output_path(calls))
        report = None
        if cfg.output.get("report", True):
            from mcmargin.report.page import check_report_path
            from mcmargin.report import report_path_for

            report = check_report_path(report_path_for(path), key="output.report")
        cube_path = cfg.output.get("cube")
        if cube_path:
            from mcmargin.output.store import is_netcdf_path

            if is_netcdf_path(cube_path):
                raise ConfigError("output.cube", f"{cube_path}: the cube is a Zarr directory (e.g. out/cube.zarr), "
                                                 "not netCDF")
            cube_path = check_output_path(job_output_path(cube_path), key="output.cube")
            if cube_path.resolve() == path.resolve():
                raise ConfigError("output.cube", f"{cube_path} is output.path too: the cube needs a path of its own")
        wait = real_number(cfg.output.get("lock_wait", 0), "output.lock_wait", 0.0)
        work = check_work_dir(cfg.output.get("work_dir"), path)
        with run_lock(path, wait):  # one run per output path at a time (mcmargin/output/store.py)
            ds, cube, kept = run_resumable(cfg, work, cube=bool(cube_path))
            with stage("write", path=str(path)):
                path = write_dataset(ds, path)
            if cube_path:
                with stage("write_cube", path=str(cube_path)):
                    cube_path = write_dataset(cube, cube_path, key="output.cube")
            if calls:
                calls = write_margin_calls(ds, job_output_path(calls))
            if report is not None:
                from mcmargin.report import write_report

                report_s = time.perf_counter()
                with stage("report", path=str(report)):
                    report = write_report(ds, report, top=max(20, int(cfg.output.top)))
                report_s = time.perf_counter() - report_s
            finish_run_dir(kept)    # the dataset is in place: the kept blocks are no longer needed
    print(summary(ds, top=int(cfg.output.top)))
    print(run_table(ds))
    print(f"dataset written to {path}")
    if calls:
        print(f"margin calls written to {calls}")
    if cube_path:
        print(f"what-if cube written to {cube_path} (serve it: python -m jobs.serve cube={cube_path})")
    if report is not None:
        print(f"report written to {report} ({report_s:.2f} s)")


if __name__ == "__main__":
    launch(main)
