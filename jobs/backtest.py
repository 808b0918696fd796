"""Margin backtest over a price history.

    python -m jobs.backtest history=PATH portfolios=PATH [overrides]

For each date, the margin each portfolio would have been called from the
history up to that close, against the loss it then realised; exceedances,
the Basel traffic light and the Kupiec and Christoffersen tests
(docs/methodology.md, section 13).  Writes the dataset to ``output.path``
and a PNG per portfolio beside it.  All logic lives in
:mod:`mcmargin.backtest`.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import logging
import os

import hydra
from omegaconf import DictConfig, OmegaConf

# Only Hydra and the light modules up front, so --help and a bad override answer at once.
from jobs._cli import launch, user_errors
from mcmargin.common.settings import BACKTEST_RULES, check_settings
from mcmargin.errors import ConfigError

log = logging.getLogger("mcmargin.backtest")

_VERSIONS = ("mcmargin", "numpy", "numba", "dask", "xarray", "zarr", "scipy", "arch")


def run(cfg: DictConfig):
    """Run the backtest ``cfg`` describes and return its dataset (an ``xarray.Dataset``, not written)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    check_settings(c, BACKTEST_RULES)
    from mcmargin.backtest.run import BacktestSettings, run_backtest
    from mcmargin.inputs.history import load_history
    from mcmargin.inputs.portfolios import file_sha256, load_portfolios
    from mcmargin.output.store import check_figures
    from mcmargin.pipeline.runtime import job_scheduler

    settings = BacktestSettings.from_config(c)
    for key in ("history", "portfolios"):
        if not c.get(key):
            raise ConfigError(key, f"is required: {key}=PATH (CSV or Parquet)")
    history = load_history(c["history"])
    portfolios = load_portfolios(c["portfolios"], list(history.columns))
    with job_scheduler(c["cluster"]) as scheduler:
        ds = run_backtest(history, portfolios, settings, scheduler=scheduler,
                          history_sha256=file_sha256(c["history"]))
    ds.attrs.update(config=OmegaConf.to_yaml(cfg, resolve=True),
                    created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    versions=", ".join(f"{p} {_version(p)}" for p in _VERSIONS))
    return check_figures(ds)


def write(ds, path, plots: bool = True) -> list[str]:
    """Plots (if asked), then the dataset, each written whole; returns the paths written."""
    from mcmargin.output.store import write_dataset

    written = []
    if plots:
        from mcmargin.backtest.plots import plot_all

        stem = str(path).rstrip("/")
        for ext in (".zarr", ".nc", ".nc4", ".h5"):
            if stem.lower().endswith(ext):
                stem = stem[: -len(ext)]
                break
        os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
        written += [str(p) for p in plot_all(ds, stem)]
    written.insert(0, str(write_dataset(ds, path)))
    return written


def _version(package: str) -> str:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return "?"


@hydra.main(version_base="1.3", config_path="../conf", config_name="backtest")
def main(cfg: DictConfig) -> None:
    with user_errors():
        from mcmargin.backtest.run import summary
        from mcmargin.output.store import check_output_path
        from mcmargin.pipeline.runtime import job_output_path

        check_output_path(cfg.output.path)  # before any work: never compute what cannot be written
        path = check_output_path(job_output_path(cfg.output.path))
        report = None
        if cfg.output.get("report", True):
            from mcmargin.report import report_path_for
            from mcmargin.report.page import check_report_path

            report = check_report_path(report_path_for(path), key="output.report")
        ds = run(cfg)
        written = write(ds, path, bool(cfg.backtest.plots))
        if report is not None:
            from mcmargin.report import write_report

            written.append(str(write_report(ds, report)))
    print(summary(ds))
    for p in written:
        print(f"written: {os.path.relpath(p)}")


if __name__ == "__main__":
    launch(main)
