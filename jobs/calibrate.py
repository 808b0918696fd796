"""Calibrate scenario-model parameters on a price history.

    python -m jobs.calibrate history=PATH output.path=out/params.nc [overrides]

Fits per-asset volatility (EWMA or GARCH(1,1)), the correlation of
de-volatized returns and Student-t degrees of freedom
(docs/methodology-history.md), writes them as an xarray dataset that the
stress run takes with ``scenarios.params=PATH``, and draws diagnostic plots
beside it.  All logic lives in :mod:`mcmargin.calibration`.
"""

from __future__ import annotations

import logging
import os
import time

import hydra
from omegaconf import DictConfig, OmegaConf

# Only Hydra and the light modules up front, so --help and a bad override answer at once.
from jobs._cli import launch, user_errors
from mcmargin.errors import ConfigError
from mcmargin.common.settings import CALIBRATE_RULES, check_settings

log = logging.getLogger("mcmargin.calibrate")


def run(cfg: DictConfig):
    """Calibrate on ``cfg.history`` and return the parameter dataset (an ``xarray.Dataset``, not written)."""
    from mcmargin.calibration import calibrate
    from mcmargin.inputs.history import load_history

    c = OmegaConf.to_container(cfg, resolve=True)
    check_settings(c, CALIBRATE_RULES)
    if not c.get("history"):
        raise ConfigError("history", "is required: history=PATH (CSV or Parquet with a date column and one price "
                                     "column per asset)")
    assets = c.get("assets")
    if assets is not None and (isinstance(assets, str) or not all(isinstance(a, str) for a in assets)):
        raise ConfigError("assets", f"must be a list of column names (e.g. [BTC, ETH]) or null, got {assets!r}")
    from mcmargin.common.audit import audit_attrs, recording
    from mcmargin.common.logs import stage

    timings: dict = {}
    t0 = time.perf_counter()
    with recording() as inputs:
        with stage("load_inputs", timings):
            history = load_history(c["history"], valuation_date=c.get("valuation_date"))
        with stage("calibrate", timings, assets=history.shape[1]):
            ds = calibrate(history, c, assets=assets, prefix="")
    timings["job_s"] = time.perf_counter() - t0
    # Calibration draws no random numbers (seed -1) and runs on NumPy.
    ds.attrs.update(audit_attrs(job="jobs.calibrate", config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
                                inputs=inputs, timings=timings))
    return ds


def write(ds, path: str, plots: bool = True) -> list[str]:
    """Plots (if asked), then the dataset, each written atomically; returns the paths written."""
    from mcmargin.calibration import save_params

    written = []
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        from mcmargin.calibration.plots import plot_all

        stem = path.rstrip("/")
        for ext in (".zarr", ".nc", ".nc4", ".h5"):
            if stem.lower().endswith(ext):
                stem = stem[: -len(ext)]
                break
        written += plot_all(ds, stem)
    written.insert(0, save_params(ds, path))
    return written


@hydra.main(version_base="1.3", config_path="../conf", config_name="calibrate")
def main(cfg: DictConfig) -> None:
    with user_errors(cfg):
        from mcmargin.common.logs import stage
        from mcmargin.common.settings import real_number
        from mcmargin.output.store import check_figures, check_output_path, run_lock

        path = cfg.output.path
        if not path:
            raise ConfigError("output.path", "is required: output.path=PATH (.nc or .zarr)")
        check_output_path(path, netcdf=not str(path).rstrip("/").lower().endswith(".zarr"))
        wait = real_number(cfg.output.get("lock_wait", 0), "output.lock_wait", 0.0)
        with run_lock(path, wait):  # one run per output path at a time
            ds = check_figures(run(cfg))
            with stage("write", path=str(path)):
                written = write(ds, str(path), bool(cfg.output.plots))
    for a in ds["asset"].values:
        v = ds.sel(asset=a)
        print(f"{a:>12}  vol {float(v['vol']):8.4f}  realized {float(v['realized_vol']):8.4f}  "
              f"dof {float(v['dof']):6.2f}")
    print(f"mvt_dof {float(ds['mvt_dof']):.2f}  copula_dof {float(ds['copula_dof']):.2f}  "
          f"min eigenvalue {ds.attrs['min_eigenvalue']:.4g}")
    for p in written:
        print(f"written: {os.path.relpath(p)}")


if __name__ == "__main__":
    launch(main)
