"""Choose a margin buffer from a backtest.

    python -m jobs.calibrate_buffer backtest_path=PATH [overrides]
    python -m jobs.calibrate_buffer history=PATH portfolios=PATH [backtest keys]

Sweeps ``buffer.grid`` over the backtest's stored ``im`` and ``loss`` (no
model rerun): coverage, exceedances, the Kupiec and Christoffersen tests,
red windows, mean margin and procyclicality per (buffer, portfolio), and
``required_buffer`` per portfolio; writes the dataset to ``output.path``, a
frontier PNG and the HTML report (``output.report``) beside it, and prints the frontier table
(docs/methodology.md, section 15).  All logic lives in
:mod:`mcmargin.calibration.buffer`.
"""

from __future__ import annotations

import logging
import os
import time

import hydra
from omegaconf import DictConfig, OmegaConf

# Only Hydra and the light modules up front, so --help and a bad override answer at once.
from jobs._cli import launch, run_and_write, user_errors
from mcmargin.common.settings import CALIBRATE_BUFFER_RULES, check_settings
from mcmargin.errors import ConfigError

log = logging.getLogger("mcmargin.calibrate_buffer")


def backtest(c: dict):
    """The backtest dataset: read from ``backtest_path``, or computed from ``history`` and ``portfolios``."""
    path = c.get("backtest_path")
    if path:
        from mcmargin.output.store import open_dataset

        if not os.path.exists(path):
            raise ConfigError("backtest_path", f"{path} does not exist: give a jobs.backtest dataset (.zarr, .nc)")
        try:
            ds = open_dataset(path).load()
        except Exception as exc:  # noqa: BLE001  (an unreadable file is the user's input error)
            raise ConfigError("backtest_path", f"{path} is not a readable dataset: {exc}") from None
        missing = [v for v in ("im", "loss") if v not in ds] + [a for a in ("margin_buffer", "margin_confidence")
                                                                if a not in ds.attrs]
        if missing:
            raise ConfigError("backtest_path", f"{path} is not a jobs.backtest dataset: no {', '.join(missing)}")
        return ds, path
    for key in ("history", "portfolios"):
        if not c.get(key):
            raise ConfigError(key, f"is required without backtest_path: {key}=PATH (CSV or Parquet), or give "
                                   "backtest_path=PATH")
    from mcmargin.backtest.run import BacktestSettings, run_backtest
    from mcmargin.inputs.history import load_history
    from mcmargin.inputs.portfolios import file_sha256, load_portfolios
    from mcmargin.pipeline.runtime import job_scheduler

    settings = BacktestSettings.from_config(c)
    history = load_history(c["history"])
    portfolios = load_portfolios(c["portfolios"], list(history.columns))
    with job_scheduler(c["cluster"]) as scheduler:
        ds = run_backtest(history, portfolios, settings, scheduler=scheduler,
                          history_sha256=file_sha256(c["history"]))
    return ds, f"backtest of {c['history']} x {c['portfolios']} (run by this job)"


def run(cfg: DictConfig):
    """The calibration dataset ``cfg`` describes (an ``xarray.Dataset``, not written)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    check_settings(c, CALIBRATE_BUFFER_RULES)
    from mcmargin.calibration.buffer import buffer_grid, calibration_dataset
    from mcmargin.common.audit import audit_attrs, record_input, recording
    from mcmargin.common.logs import stage
    from mcmargin.output.store import check_figures

    b = c.get("buffer") or {}
    grid = buffer_grid(b.get("grid"))
    timings: dict = {}
    t0 = time.perf_counter()
    with recording() as inputs:   # the backtest dataset, or the history and portfolios files
        with stage("backtest", timings):
            source, where = backtest(c)
            if c.get("backtest_path"):
                record_input(c["backtest_path"])
        with stage("sweep", timings, buffers=len(grid)):
            ds = calibration_dataset(source, grid, target_coverage=b.get("target_coverage"),
                                     significance=float(b.get("significance", 0.05)))
    timings["job_s"] = time.perf_counter() - t0
    ds.attrs.update(backtest_source=where)
    ds.attrs.update(audit_attrs(job="jobs.calibrate_buffer", config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
                                inputs=inputs, seed=None if c.get("backtest_path") else c["scenarios"].get("seed"),
                                timings=timings))
    return check_figures(ds)


def plot_path(path) -> str:
    """``<stem>_frontier.png`` beside the dataset."""
    from mcmargin.output.store import dataset_stem

    return f"{dataset_stem(path)}_frontier.png"


def write(ds, path, plots: bool = True) -> list[str]:
    """The frontier plot (if asked), then the dataset; returns the paths written."""
    from mcmargin.calibration.buffer import plot_frontier
    from mcmargin.output.store import write_dataset

    written = [plot_frontier(ds, plot_path(path))] if plots else []
    return [str(write_dataset(ds, path)), *written]


@hydra.main(version_base="1.3", config_path="../conf", config_name="calibrate_buffer")
def main(cfg: DictConfig) -> None:
    with user_errors(cfg):   # applies logging.format
        from mcmargin.calibration.buffer import frontier_table

        ds, written = run_and_write(cfg, run, lambda ds, path: write(ds, path, bool(cfg.output.plots)))
    print(frontier_table(ds))
    for p in written:
        print(f"written: {os.path.relpath(p)}")


if __name__ == "__main__":
    launch(main)
