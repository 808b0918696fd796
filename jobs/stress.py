"""Nightly cross-margin stress run.

    python -m jobs.stress [hydra overrides]

Draws the scenarios, revalues the book, computes tails and margin for every
account and margin group, writes the dataset to ``output.path`` and prints a
summary.  The run itself is :func:`mcmargin.pipeline.job.run`; this module
checks the output paths, holds the run lock and writes.
"""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig

# Only Hydra is imported up front: `--help`, `--cfg job` and a bad override
# answer in well under a second, and each heavy library (xarray, dask, numba,
# JAX, distributed) is imported by the step that uses it.
from jobs._cli import launch, output_paths, user_errors, write_report_stage
from mcmargin.pipeline.job import export_only, run, run_resumable  # noqa: F401 (run: the job from Python)

#: Config keys of files the job writes besides output.path (jobs.reproduce turns them off).
SIDE_OUTPUTS = ("portfolio.export", "output.margin_calls")


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
        path, report = output_paths(cfg)
        calls = cfg.output.get("margin_calls")
        if calls:
            from mcmargin.output.calls import check_margin_calls_path, write_margin_calls

            check_margin_calls_path(job_output_path(calls))
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
                report_s = time.perf_counter()
                report = write_report_stage(ds, report, top=max(20, int(cfg.output.top)))
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
