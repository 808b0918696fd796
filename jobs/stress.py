"""Nightly cross-margin stress run.

    python -m jobs.stress [hydra overrides]

Draws the scenarios, revalues the book, computes tails and margin for every
account and margin group, writes the dataset to ``output.path`` and prints a
summary.  All logic lives in :mod:`mcmargin`; this module maps the config.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
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


def run(cfg: DictConfig):
    """Run the stress job described by ``cfg`` and return its dataset (an ``xarray.Dataset``, not written).

    Every setting is checked before any work (:mod:`mcmargin.common.settings`), and
    every figure after it (:func:`mcmargin.output.check_figures`).
    """
    c = OmegaConf.to_container(cfg, resolve=True)
    check_settings(c, STRESS_RULES)
    from mcmargin.pipeline import config as mc
    from mcmargin.backend import resolve
    from mcmargin.output.store import check_figures
    from mcmargin.scenarios import build_scenarios
    from mcmargin.pipeline.stress import run_stress

    valuation = mc.valuation_date(c["valuation_date"])
    backend = resolve(str(c["backend"]))
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
                        attribution=bool(c["output"].get("attribution", True)),
                        tail_scenarios=int(c["output"].get("tail_scenarios", 5)))
    ds.attrs.update(config=OmegaConf.to_yaml(cfg, resolve=True), cluster=str(c["cluster"]["kind"]),
                    created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    versions=", ".join(f"{p} {_version(p)}" for p in _VERSIONS))
    return check_figures(ds)


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
        ds = run(cfg)
        path = write_dataset(ds, path)
        if calls:
            calls = write_margin_calls(ds, job_output_path(calls))
    print(summary(ds, top=int(cfg.output.top)))
    print(f"dataset written to {path}")
    if calls:
        print(f"margin calls written to {calls}")


if __name__ == "__main__":
    launch(main)
