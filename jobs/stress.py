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


def run(cfg: DictConfig, work_dir=None):
    """Run the stress job described by ``cfg`` and return its dataset (an ``xarray.Dataset``, not written).

    Every setting is checked before any work (:mod:`mcmargin.common.settings`), and
    every figure after it (:func:`mcmargin.output.check_figures`).  With
    ``work_dir``, finished row blocks are kept there and a run killed before
    it finished resumes from them (:mod:`mcmargin.pipeline.resume`); the
    caller removes the run directory once the dataset is written
    (:func:`run_resumable`).
    """
    return run_resumable(cfg, work_dir)[0]


def run_resumable(cfg: DictConfig, work_dir=None):
    """:func:`run`, returning ``(dataset, run directory or None)``."""
    c = OmegaConf.to_container(cfg, resolve=True)
    check_settings(c, STRESS_RULES)
    from mcmargin.common.audit import recording

    t0 = time.perf_counter()
    with recording() as inputs:
        ds, loading, kept = _run(cfg, c, work_dir, inputs)
    return _stamp(ds, cfg, inputs, loading, time.perf_counter() - t0), kept


def _run(cfg: DictConfig, c: dict, work_dir=None, inputs=None):
    """The run itself; returns ``(dataset, seconds spent loading the inputs, run directory or None)``."""
    from mcmargin.common.logs import stage
    from mcmargin.pipeline import config as mc
    from mcmargin.backend import resolve
    from mcmargin.output.store import check_figures
    from mcmargin.scenarios import build_scenarios
    from mcmargin.pipeline.stress import run_stress

    valuation = mc.valuation_date(c["valuation_date"])
    backend = resolve(str(c["backend"]))
    timings: dict = {}
    with stage("load_inputs", timings):
        book = mc.book_from_config(c["portfolio"], valuation)
        history = None
        if c.get("history"):
            from mcmargin.inputs.history import load_history

            history = load_history(c["history"])
        scen_cfg = dict(c["scenarios"], valuation_date=valuation)
        scenarios = build_scenarios(scen_cfg, book.assets, book.market["vol"].to_numpy(), history)
        margin = mc.margin_models_from_config(c["margin"])
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
                    reverse=mc.reverse_stress_from_config(c.get("reverse_stress") or {}, fund, book))
    from mcmargin.pipeline.runtime import job_scheduler

    kept = None
    with job_scheduler(c["cluster"]) as scheduler:
        if work_dir is not None:   # every input and setting is validated by now: only now is anything created
            from mcmargin.pipeline.resume import open_run_dir, run_key

            kept = open_run_dir(work_dir, run_key(c, inputs or {}))
        ds = run_stress(book, scenarios, margin=margin, scheduler=scheduler, keep_dir=kept, **settings)
    ds.attrs["cluster"] = str(c["cluster"]["kind"])
    return check_figures(ds), timings["load_inputs_s"], kept


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
        wait = real_number(cfg.output.get("lock_wait", 0), "output.lock_wait", 0.0)
        work = check_work_dir(cfg.output.get("work_dir"), path)
        with run_lock(path, wait):  # one run per output path at a time (mcmargin/output/store.py)
            ds, kept = run_resumable(cfg, work)
            with stage("write", path=str(path)):
                path = write_dataset(ds, path)
            if calls:
                calls = write_margin_calls(ds, job_output_path(calls))
            finish_run_dir(kept)    # the dataset is in place: the kept blocks are no longer needed
    print(summary(ds, top=int(cfg.output.top)))
    print(run_table(ds))
    print(f"dataset written to {path}")
    if calls:
        print(f"margin calls written to {calls}")


if __name__ == "__main__":
    launch(main)
