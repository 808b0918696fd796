"""The audit trail every dataset carries: what ran, on what, with which code.

Two halves, both usable from any layer (this module imports nothing of the
project's but the errors):

- **Input checksums.**  Every loader of a user file calls
  :func:`record_input` with the path it reads.  While a job runs inside
  :func:`recording`, those paths and their sha256 are collected; outside it
  the call costs nothing.  A loader written later needs that one line to
  take part (docs/architecture.md, "Audit trail and reproduction").
  Built-in files of the package (conf/stress_tests/) are code, not inputs:
  they are versioned by the git commit and are not recorded.
- **Stamping.**  :func:`audit_attrs` returns the attributes a job adds to
  its dataset before writing it: the resolved config (YAML), the job's
  module, ``input_sha256`` (a JSON mapping of absolute path to sha256;
  ``{}`` when no file was read, e.g. the synthetic book), seed, backend,
  device, package versions, the code's version (package version and, in a
  git checkout, its commit and whether the tree had local changes), the
  working directory (relative paths of the config resolve there), the
  creation time and the timings.

Attribute values are strings or numbers (netCDF takes nothing else); the
mappings are JSON.  :mod:`jobs.reproduce` reads them back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import subprocess
import threading
from pathlib import Path

#: Packages whose versions every dataset records (those that change figures or their storage).
VERSIONED_PACKAGES = ("mcmargin", "numpy", "scipy", "pandas", "xarray", "zarr", "dask", "distributed", "numba",
                      "jax", "hydra-core", "omegaconf", "arch", "pyarrow", "netCDF4")

#: The attributes :func:`audit_attrs` sets (the contract jobs.reproduce and the tests read).
AUDIT_ATTRS = ("job", "config", "input_sha256", "seed", "backend", "device", "versions", "code_version",
               "git_commit", "git_dirty", "working_directory", "created", "timings")

_lock = threading.Lock()
_active: list[dict] = []          # a stack of recordings (nested jobs, e.g. a backtest calling a run)
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]   # the checkout (or site-packages) above mcmargin/


def sha256_of(path) -> str:
    """The sha256 of a file, or of a directory (a Parquet or Zarr dataset): its files' names and contents.

    A directory's digest covers every regular file below it, in sorted
    relative-path order, each as its path, a NUL, its length and its bytes,
    so a renamed, added or removed file changes it.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            rel = f.relative_to(p).as_posix().encode()
            h.update(rel + b"\0" + str(f.stat().st_size).encode() + b"\0")
            _update(h, f)
    else:
        _update(h, p)
    return h.hexdigest()


def _update(h, f: Path) -> None:
    with open(f, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            h.update(block)


def record_input(path) -> None:
    """Note that ``path`` (a user's input file or dataset directory) is read by the current job.

    Call it where the file is opened, after checking that it exists (a
    missing file is the loader's error to report).  Outside
    :func:`recording` it does nothing.
    """
    if not _active:
        return
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        return
    key = str(p.resolve())
    with _lock:
        targets = [r for r in _active if key not in r]
    if targets:
        digest = sha256_of(p)
        with _lock:
            for r in targets:
                r[key] = digest


@contextlib.contextmanager
def recording():
    """Collect the inputs read inside the block: yields the mapping absolute path -> sha256 (filled as read)."""
    seen: dict[str, str] = {}
    with _lock:
        _active.append(seen)
    try:
        yield seen
    finally:
        with _lock:
            _active.remove(seen)


def package_versions(packages=VERSIONED_PACKAGES) -> dict[str, str]:
    """``{package: version}`` of the packages this process has imported (the code that ran), and mcmargin.

    A package the run never imported cannot have changed its figures, so it
    is left out; an imported one is read from its ``__version__`` where it
    has one (asking the installed metadata costs about 10 ms a package).
    """
    import importlib.metadata as md
    import sys

    out = {}
    for p in packages:
        module = sys.modules.get(_MODULES.get(p, p))
        if module is None and p != "mcmargin":
            continue
        v = getattr(module, "__version__", None)
        if not isinstance(v, str):
            try:
                v = md.version(p)
            except md.PackageNotFoundError:
                continue
        out[p] = v
    return out


#: Import names of the distributions whose name differs.
_MODULES = {"hydra-core": "hydra"}


def code_version() -> dict:
    """``{"code_version", "git_commit", "git_dirty"}``: the package version and, in a git checkout, its commit.

    ``git_commit`` is ``""`` (and ``git_dirty`` 0) when the code is not a
    git checkout (an installed wheel) or git is not available.
    ``git_dirty`` is 1 when tracked files differed from the commit: the
    commit alone does not then name the code that ran.
    """
    out = {"code_version": package_versions(("mcmargin",)).get("mcmargin", "unknown"), "git_commit": "",
           "git_dirty": 0}
    if not (_PACKAGE_ROOT / "mcmargin").is_dir():
        return out
    try:
        # One git call: the commit (branch.oid) and whether tracked files of the code differ from it.
        done = subprocess.run(["git", "-C", str(_PACKAGE_ROOT), "status", "--porcelain=v2", "--branch",
                               "--untracked-files=no", "--", "mcmargin", "jobs", "conf"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return out
    if done.returncode != 0:
        return out
    lines = done.stdout.splitlines()
    oid = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), "")
    out["git_commit"] = "" if oid == "(initial)" else oid
    out["git_dirty"] = int(any(not ln.startswith("#") for ln in lines))
    return out


def audit_attrs(*, job: str, config_yaml: str, inputs: dict, seed=None, backend: str = "numpy",
                device: str = "cpu", timings: dict | None = None) -> dict:
    """The audit attributes of a dataset (module docstring); a job adds them just before writing.

    Parameters
    ----------
    job : str
        The job's module (``jobs.stress``), which :mod:`jobs.reproduce` runs again.
    config_yaml : str
        The resolved config as YAML (``OmegaConf.to_yaml(cfg, resolve=True)``).
    inputs : dict
        Absolute path -> sha256 (what :func:`recording` collected).
    seed : int, optional
        The run's random seed (-1 when the run draws no random numbers).
    backend, device : str
    timings : dict, optional
        Seconds per stage; stored as JSON.
    """
    return {
        "job": job,
        "config": config_yaml,
        "input_sha256": json.dumps(dict(sorted(inputs.items()))),
        "seed": -1 if seed is None else int(seed),
        "backend": str(backend),
        "device": str(device),
        "versions": json.dumps(package_versions()),
        **code_version(),
        "working_directory": os.getcwd(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "timings": json.dumps({k: round(v, 6) if isinstance(v, float) else v
                               for k, v in (timings or {}).items()}),
    }
