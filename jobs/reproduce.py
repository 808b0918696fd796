"""Reproduce a dataset from its audit trail.

    python -m jobs.reproduce dataset=PATH

Reads the job, resolved config and input checksums a dataset records
(:mod:`mcmargin.common.audit`), checks every input at its recorded path
against its recorded sha256, reruns the job with that config into a fresh
temporary directory (the dataset checked is never written to), and reports
every variable that differs and by how much.

Exit status: 0 when the rerun is bit-identical in every variable,
coordinate and result attribute; 1 when anything differs; 2 when an input
is missing or changed (nothing is rerun), or the dataset cannot be read or
has no audit trail.

A job takes part by writing :func:`mcmargin.common.audit.audit_attrs` into
its dataset and exposing ``run(cfg) -> xarray.Dataset`` (the dataset, not
written); ``SIDE_OUTPUTS`` in its module lists the config keys of files it
writes besides the dataset, which the rerun sets to null.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from jobs._cli import launch, user_errors

log = logging.getLogger("mcmargin.reproduce")

#: Exit status when the rerun differs from the dataset.
EXIT_DIFFERENT = 1


def reproduce(dataset, work_dir=None, keep: bool = False) -> tuple[list, str]:
    """Rerun the run ``dataset`` records; returns ``(differences, path of the rerun or "")``.

    Raises
    ------
    ConfigError
        ``dataset`` is missing, unreadable or has no audit trail.
    InputError
        A recorded input is missing or its sha256 changed (nothing is rerun).
    """
    import contextlib
    import importlib
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    import yaml
    from omegaconf import OmegaConf

    from mcmargin.common.audit import sha256_of
    from mcmargin.errors import ConfigError, InputError
    from mcmargin.output.compare import differences
    from mcmargin.output.store import is_netcdf_path, open_dataset, write_dataset, written_by_mcmargin

    if not dataset:
        raise ConfigError("dataset", "is required: dataset=PATH (a dataset written by an mcmargin job)")
    path = Path(str(dataset)).expanduser().resolve()
    if not path.exists():
        raise ConfigError("dataset", f"{dataset} does not exist")
    if not written_by_mcmargin(path):
        raise ConfigError("dataset", f"{dataset} is not a dataset written by mcmargin")
    with open_dataset(path) as ds:
        original = ds.load()
    missing = [k for k in ("job", "config", "input_sha256") if k not in original.attrs]
    if missing:
        raise ConfigError("dataset", f"{dataset} has no audit trail (attribute {missing[0]!r} is missing: it was "
                                     "written before mcmargin recorded one), so it cannot be reproduced")
    recorded = json.loads(original.attrs["input_sha256"])
    for file, digest in recorded.items():
        if not os.path.exists(file):
            raise InputError(file, "input of the dataset is missing (it was read from this path)")
        now = sha256_of(file)
        if now != digest:
            raise InputError(file, f"input changed since the dataset was written: sha256 {now}, recorded {digest}")
    job = str(original.attrs["job"])
    if not job.startswith("jobs.") or not job[5:].isidentifier():   # only this project's jobs are ever imported
        raise ConfigError("dataset", f"{dataset} names job {job!r}, not one of mcmargin's jobs")
    module = importlib.import_module(job)
    cfg = OmegaConf.create(yaml.safe_load(original.attrs["config"]))
    for key in getattr(module, "SIDE_OUTPUTS", ()):
        if OmegaConf.select(cfg, key) is not None:
            OmegaConf.update(cfg, key, None, merge=False)
    if work_dir:
        Path(str(work_dir)).mkdir(parents=True, exist_ok=True)
    box = Path(tempfile.mkdtemp(prefix="mcmargin-reproduce-", dir=work_dir or None)).resolve()
    target = box / (path.name if is_netcdf_path(path) or path.name.endswith(".zarr") else path.name + ".zarr")
    if OmegaConf.select(cfg, "output.path") is not None:
        OmegaConf.update(cfg, "output.path", str(target), merge=False)
    cwd = original.attrs.get("working_directory") or os.getcwd()
    try:
        with contextlib.chdir(cwd if os.path.isdir(cwd) else os.getcwd()):
            log.info("rerunning %s for %s in %s", job, path, box)
            rerun = module.run(cfg)
        write_dataset(rerun, target, netcdf=is_netcdf_path(path))
        again = json.loads(rerun.attrs.get("input_sha256", "{}"))
        if again != recorded:
            log.warning("the rerun read other inputs than the dataset records: %s", sorted(set(again) ^ set(recorded)))
        with open_dataset(target) as ds:
            found = differences(original, ds.load())
    finally:
        if not keep:
            shutil.rmtree(box, ignore_errors=True)
    return found, str(target) if keep else ""


@hydra.main(version_base="1.3", config_path="../conf", config_name="reproduce")
def main(cfg: DictConfig) -> None:
    import sys

    with user_errors(cfg):
        found, kept = reproduce(cfg.dataset, cfg.get("work_dir"), bool(cfg.get("keep")))
    for d in found:
        print(f"differs: {d}")
    if kept:
        print(f"rerun written to {kept}")
    if found:
        print(f"{cfg.dataset}: NOT reproduced ({len(found)} difference(s))")
        sys.exit(EXIT_DIFFERENT)
    print(f"{cfg.dataset}: reproduced bit for bit")


if __name__ == "__main__":
    launch(main)
