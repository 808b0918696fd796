"""Nightly cross-margin stress run.

    python -m jobs.stress [hydra overrides]

Draws the scenarios, revalues the book, computes tails and margin for every
account and margin group, writes the dataset to ``output.path`` and prints a
summary.  All logic lives in :mod:`mcmargin`; this module maps the config.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import logging

import hydra
from omegaconf import DictConfig, OmegaConf

# Only Hydra is imported up front: `--help`, `--cfg job` and a bad override
# answer in well under a second, and each heavy library (xarray, dask, numba,
# JAX, distributed) is imported by the step that uses it.
from jobs._cli import launch, user_errors
from mcmargin.common.settings import STRESS_RULES, check_settings

log = logging.getLogger("mcmargin.stress")

_VERSIONS = ("mcmargin", "numpy", "jax", "xarray", "zarr", "dask", "distributed", "numba", "scipy")


def run(cfg: DictConfig, *, cube: bool = False):
    """Run the stress job described by ``cfg`` and return its dataset (an ``xarray.Dataset``, not written).

    Every setting is checked before any work (:mod:`mcmargin.common.settings`), and
    every figure after it (:func:`mcmargin.output.check_figures`).  With ``cube``
    (and ``output.cube`` set) returns ``(dataset, cube)``: the what-if cube of
    :mod:`mcmargin.whatif.cube`, also not written.
    """
    c = OmegaConf.to_container(cfg, resolve=True)
    check_settings(c, STRESS_RULES)
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
    from mcmargin.pipeline.runtime import job_scheduler

    with job_scheduler(c["cluster"]) as scheduler:
        ds = run_stress(book, scenarios, margin=margin, confidences=mc.confidences_from_config(c["output"], margin),
                        backend=backend, fast_path=bool(c["engine"]["fast_path"]), chunking=chunking,
                        rate=float(c["pricing"]["rate"]), scheduler=scheduler,
                        include_scenarios=bool(c["output"]["scenarios"]), budget=budget,
                        progress=bool(c["engine"]["progress"]),
                        blocks_in_flight=mc.blocks_in_flight_from_config(c["engine"], c["cluster"]),
                        status=mc.status_from_config(c["margin"]),
                        stresses=stresses, default_fund=None if fund is None else float(fund),
                        reverse=mc.reverse_stress_from_config(c.get("reverse_stress") or {}, fund, book),
                        cascade=CascadeParams.from_config(c.get("cascade")),
                        loss_pools=int(c["output"].get("loss_pools", 0)),
                        loss_bins=int(c["output"].get("loss_bins", 50)),
                        loss_scenarios=int(c["output"].get("loss_scenarios", 0)))
    ds.attrs.update(config=OmegaConf.to_yaml(cfg, resolve=True), cluster=str(c["cluster"]["kind"]),
                    created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    input_checksums=json.dumps(mc.input_checksums(c)),
                    versions=", ".join(f"{p} {_version(p)}" for p in _VERSIONS), **apc_attrs)
    ds = check_figures(ds)
    if cube:
        from mcmargin.whatif import build_cube

        return ds, build_cube(book, scenarios, ds)
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


def _version(package: str) -> str:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return "?"


@hydra.main(version_base="1.3", config_path="../conf", config_name="stress")
def main(cfg: DictConfig) -> None:
    from mcmargin.errors import ConfigError
    from mcmargin.output.store import check_output_path, write_dataset
    from mcmargin.output.summary import summary
    from mcmargin.pipeline.runtime import job_output_path

    with user_errors():
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
            ds, cube = run(cfg, cube=True)
        else:
            ds = run(cfg)
        path = write_dataset(ds, path)
        if cube_path:
            cube_path = write_dataset(cube, cube_path, key="output.cube")
        if calls:
            calls = write_margin_calls(ds, job_output_path(calls))
        if report is not None:
            import time

            from mcmargin.report import write_report

            t = time.perf_counter()
            report = write_report(ds, report, top=max(20, int(cfg.output.top)))
            report_s = time.perf_counter() - t
    print(summary(ds, top=int(cfg.output.top)))
    print(f"dataset written to {path}")
    if calls:
        print(f"margin calls written to {calls}")
    if cube_path:
        print(f"what-if cube written to {cube_path} (serve it: python -m jobs.serve cube={cube_path})")
    if report is not None:
        print(f"report written to {report} ({report_s:.2f} s)")


if __name__ == "__main__":
    launch(main)
