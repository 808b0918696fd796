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

import logging
import os
import time

import hydra
from omegaconf import DictConfig, OmegaConf

# Only Hydra and the light modules up front, so --help and a bad override answer at once.
from jobs._cli import launch, run_and_write, user_errors
from mcmargin.common.settings import BACKTEST_RULES, check_settings
from mcmargin.errors import ConfigError

log = logging.getLogger("mcmargin.backtest")


def run(cfg: DictConfig):
    """Run the backtest ``cfg`` describes and return its dataset (an ``xarray.Dataset``, not written)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    check_settings(c, BACKTEST_RULES)
    from mcmargin.backtest.run import BacktestSettings, run_backtest
    from mcmargin.common.audit import audit_attrs, recording
    from mcmargin.common.logs import stage
    from mcmargin.inputs.history import load_history
    from mcmargin.inputs.portfolios import file_sha256, load_portfolios
    from mcmargin.output.store import check_figures
    from mcmargin.pipeline.runtime import job_scheduler

    settings = BacktestSettings.from_config(c)
    for key in ("history", "portfolios"):
        if not c.get(key):
            raise ConfigError(key, f"is required: {key}=PATH (CSV or Parquet)")
    timings: dict = {}
    t0 = time.perf_counter()
    with recording() as inputs:   # the loaders record the history and portfolios files with their sha256
        with stage("load_inputs", timings):
            history = load_history(c["history"])
            portfolios = load_portfolios(c["portfolios"], list(history.columns))
        with stage("backtest", timings, dates=int(history.shape[0]), portfolios=len(portfolios.names)):
            with job_scheduler(c["cluster"]) as scheduler:
                ds = run_backtest(history, portfolios, settings, scheduler=scheduler,
                                  history_sha256=file_sha256(c["history"]))
    timings["job_s"] = time.perf_counter() - t0
    ds.attrs.update(audit_attrs(job="jobs.backtest", config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
                                inputs=inputs, seed=c["scenarios"].get("seed"), backend=str(c.get("backend", "numpy")),
                                timings=timings))
    return check_figures(ds)


def write(ds, path, plots: bool = True) -> list[str]:
    """Plots (if asked), then the dataset, each written whole; returns the paths written."""
    from mcmargin.output.store import dataset_stem, write_dataset

    written = []
    if plots:
        from mcmargin.backtest.plots import plot_all

        stem = dataset_stem(path)
        os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
        written += [str(p) for p in plot_all(ds, stem)]
    written.insert(0, str(write_dataset(ds, path)))
    return written


@hydra.main(version_base="1.3", config_path="../conf", config_name="backtest")
def main(cfg: DictConfig) -> None:
    with user_errors(cfg):   # applies logging.format
        from mcmargin.backtest.run import summary

        ds, written = run_and_write(cfg, run, lambda ds, path: write(ds, path, bool(cfg.backtest.plots)))
    print(summary(ds))
    for p in written:
        print(f"written: {os.path.relpath(p)}")


if __name__ == "__main__":
    launch(main)
