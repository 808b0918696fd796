"""Writing result datasets safely (Zarr, or netCDF for a ``.nc`` path).

A margin run's output path is precious twice over: what is there may be a
user's files, and what is written there becomes margin calls.  So:

- **Only our own datasets are replaced.**  :func:`check_output_path` refuses
  a path that holds anything but a dataset this project wrote (recognised by
  its ``created_by`` attribute, or by the attributes every earlier mcmargin
  dataset carries), a path whose parent is a file, an empty path, and a
  directory the process cannot write.  Jobs call it before any work.
- **Never half-written.**  The dataset is written beside the target, in a
  temporary directory ``.NAME.tmp-PID-RANDOM/``, and swapped into place only
  when complete.
- **Never absent, never raced.**  Writers of one directory take an exclusive
  ``flock`` on it for the swap, so concurrent runs replace the dataset one
  after the other.  A directory store is swapped with ``renameat2``'s
  ``RENAME_EXCHANGE``, so ``output.path`` holds the old or the new dataset
  at every instant; a netCDF file with ``os.replace``, atomic by POSIX.
  On a file system without ``RENAME_EXCHANGE`` the swap falls back to two
  renames under the lock (the path is absent for that instant).
- **No debris.**  Each writer holds a ``flock`` on its own temporary store
  while it lives.  The next writer on the path removes every temporary
  store whose lock it can take: their owner is gone (killed mid-write),
  whatever host or PID it had.

- **One run per path.**  A job holds :func:`run_lock` on its output path
  from before its first input is read until its dataset is in place: a
  second run on the same path waits for it (``output.lock_wait`` seconds)
  or stops with a message naming the run that holds it (process, host,
  start time).  Its lock file ``.NAME.lock`` is removed when the run ends.

Other locks are advisory ``flock`` locks on directories and files that
exist anyway: no lock file is left behind but the run lock of a killed run
(free, and taken over by the next run).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import ConfigError, ResultError
from .zarr_strings import defer_long_strings, encode_ahead, write_deferred

log = logging.getLogger(__name__)

#: Attribute that marks a dataset as written by this project (value: "mcmargin <version>").
CREATED_BY = "created_by"
# Attributes that datasets of earlier mcmargin versions carry (stress runs, calibrations).
_EARLIER_MARKERS = ("margin_model", "mcmargin_version")
NETCDF_SUFFIXES = (".nc", ".nc4", ".h5")
_TMP_TAG = ".tmp-"


def is_netcdf_path(path) -> bool:
    """True when ``path`` names a netCDF file (``.nc``, ``.nc4``, ``.h5``), else it is a Zarr store."""
    return Path(path).suffix.lower() in NETCDF_SUFFIXES


def dataset_stem(path) -> str:
    """``path`` without its dataset extension (.zarr, .nc, .nc4, .h5): the stem side files are named after."""
    stem = str(path).rstrip("/")
    for ext in (".zarr", ".nc", ".nc4", ".h5"):
        if stem.lower().endswith(ext):
            return stem[: -len(ext)]
    return stem


def check_output_path(path, key: str = "output.path", netcdf: bool | None = None) -> Path:
    """Check that a dataset may be written at ``path``, before any work is done.

    Parameters
    ----------
    path : str or path-like
    key : str
        Config key the path came from, for messages.
    netcdf : bool, optional
        Format to be written; by suffix when None (:func:`is_netcdf_path`).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ConfigError
        Empty path; a parent that is a file; a directory the process cannot
        create or write; an existing path that is not a dataset this project
        wrote (it is left untouched); or one of the wrong kind (a directory
        where a netCDF file is to go, or the reverse).
    """
    if path is None or not str(path).strip():
        raise ConfigError(key, "is empty: give the dataset's path (a .zarr directory or a .nc file)")
    p = Path(str(path)).expanduser()
    if p.name in ("", ".", "..") or p.resolve() == Path(p.anchor):
        raise ConfigError(key, f"{path} names a directory, not a dataset: give e.g. {Path(path) / 'stress.zarr'}")
    netcdf = is_netcdf_path(p) if netcdf is None else netcdf
    ancestor = p.parent
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise ConfigError(key, f"cannot write {p}: {ancestor} is a broken link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(key, f"cannot write {p}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(key, f"cannot write {p}: permission denied on {ancestor}")
    if p.exists() or p.is_symlink():
        _check_replaceable(p, key, netcdf)
    return p


def _check_replaceable(p: Path, key: str, netcdf: bool) -> None:
    if p.is_symlink():
        raise ConfigError(key, f"{p} is a symbolic link; refusing to replace it (remove it or choose another path)")
    if netcdf and p.is_dir():
        raise ConfigError(key, f"{p} is a directory; a netCDF dataset is a file (choose another path)")
    if not netcdf and p.is_file():
        raise ConfigError(key, f"{p} is a file; a Zarr dataset is a directory (choose another path, or .nc)")
    if not written_by_mcmargin(p):
        what = "directory" if p.is_dir() else "file"
        raise ConfigError(key, f"{p} exists and is not a dataset written by mcmargin; refusing to replace this "
                               f"{what} (nothing was changed: remove it yourself or choose another path)")


def written_by_mcmargin(path) -> bool:
    """True when ``path`` is a Zarr store or netCDF file whose attributes say mcmargin wrote it."""
    p = Path(path)
    attrs = _zarr_root_attrs(p) if p.is_dir() else _netcdf_attrs(p)
    return bool(attrs) and (str(attrs.get(CREATED_BY, "")).startswith("mcmargin")
                            or any(k in attrs for k in _EARLIER_MARKERS))


def _zarr_root_attrs(p: Path) -> dict:
    for meta, field in (("zarr.json", "attributes"), (".zattrs", None)):
        f = p / meta
        if f.is_file():
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError):
                return {}
            attrs = doc.get(field, {}) if field else doc
            return attrs if isinstance(attrs, dict) else {}
    return {}


def _netcdf_attrs(p: Path) -> dict:
    try:
        import netCDF4

        with netCDF4.Dataset(p) as nc:
            return {k: nc.getncattr(k) for k in nc.ncattrs()}
    except Exception:  # not a netCDF/HDF5 file at all
        return {}


#: Attribute by which a variable declares the non-finite values its documentation defines, as
#: ``"VALUES: meaning"`` with VALUES among nan, inf, +inf, -inf (comma-separated), e.g.
#: ``"nan: no liquidation price"``.  :func:`check_figures` accepts those and no others.
NONFINITE = "nonfinite"


def check_figures(ds: xr.Dataset) -> xr.Dataset:
    """Refuse a dataset holding a non-finite figure its variable does not define.

    A margin of NaN or inf is no margin: every float variable and coordinate
    must be finite, except for the values a variable declares in its
    :data:`NONFINITE` attribute.

    Raises
    ------
    ResultError
        Naming the variable and the labels (account, group, ...) of its first
        bad value.
    """
    for name, var in ds.variables.items():
        if var.dtype.kind not in "fc":
            continue
        values = np.asarray(var.values)
        bad = ~np.isfinite(values)
        if not bad.any():
            continue
        allowed = {t.strip() for t in str(var.attrs.get(NONFINITE, "")).split(":")[0].split(",")}
        if "nan" in allowed:
            bad &= ~np.isnan(values)
        for sign, token in ((1, "+inf"), (-1, "-inf")):
            if token in allowed or "inf" in allowed:
                bad &= ~(np.isinf(values) & (np.sign(values) == sign))
        if bad.any():
            at = np.unravel_index(int(np.argmax(bad)), values.shape)
            labels = ", ".join(f"{d} {_label(ds, d, i)}" for d, i in zip(var.dims, at)) or "(scalar)"
            raise ResultError(str(name), labels, f"{values[at]} is not a finite figure (its inputs overflow or "
                                                 "are degenerate: check the book's quantities, amounts and prices)")
    return ds


def _label(ds: xr.Dataset, dim: str, i) -> str:
    if dim in ds.coords:
        v = ds[dim].values[i]
        return repr(v.item() if isinstance(v, np.generic) else str(v))
    return str(int(i))


def write_dataset(ds: xr.Dataset, path, *, netcdf: bool | None = None, key: str = "output.path") -> Path:
    """Write ``ds`` to ``path`` safely (module docstring); Zarr unless netCDF by suffix or flag.

    Parameters
    ----------
    ds : xarray.Dataset
    path : str or path-like
    netcdf : bool, optional
        Write netCDF; by suffix when None (:func:`is_netcdf_path`).
    key : str
        Config key of the path, for messages.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ConfigError
        The path may not be written (:func:`check_output_path`); nothing changed.
    """
    path = check_output_path(path, key, netcdf)
    netcdf = is_netcdf_path(path) if netcdf is None else netcdf
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    ds.attrs[CREATED_BY] = f"mcmargin {_version()}"
    with _temporary_store(path) as tmp:
        if netcdf:
            ds.to_netcdf(tmp)
        else:
            with warnings.catch_warnings():
                # Consolidated metadata is what xarray readers look for first;
                # zarr notes it is not yet in the v3 spec.
                warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
                # Long string variables are written by array operations after the rest (zarr_strings.py).
                ds, encoding, deferred = defer_long_strings(ds)
                encoding = {**_numeric_compression(ds), **encoding}
                pool, ahead = encode_ahead(deferred)
                try:
                    _to_zarr_directory(ds.pipe(_variable_length_strings), tmp, encoding)
                    write_deferred(tmp, deferred, ahead)
                finally:
                    pool.shutdown(cancel_futures=True)
        with _locked(path.parent):
            # Checked again under the lock: another program may have put something there meanwhile.
            if path.exists() or path.is_symlink():
                _check_replaceable(path, key, netcdf)
            _swap_into_place(tmp, path)
    return path


#: Datasets up to this many bytes (long strings aside, mcmargin/output/zarr_strings.py) are encoded in
#: memory, then their files written in one pass: the encoded copy stays well under the run's own peak.
IN_MEMORY = 256 * 2**20


def _to_zarr_directory(ds: xr.Dataset, directory: Path, encoding: dict) -> None:
    """``ds.to_zarr`` into the new directory store ``directory`` (consolidated metadata).

    zarr-python writes each array's metadata and chunks through its
    asynchronous store, a few milliseconds an array whatever its size: a
    dataset up to ``IN_MEMORY`` bytes is written into a ``MemoryStore`` over a
    plain dict and the dict's entries then become files.  The same store, in
    two thirds of the time for the default run's dataset and four fifths at
    100,000 accounts.
    """
    if ds.nbytes > IN_MEMORY:
        ds.to_zarr(directory, mode="w", consolidated=True, encoding=encoding)
        return
    from zarr.storage import MemoryStore

    entries: dict = {}
    ds.to_zarr(MemoryStore(entries), mode="w", consolidated=True, encoding=encoding)
    files = {directory / key: buffer for key, buffer in entries.items()}
    for folder in sorted({f.parent for f in files}):
        folder.mkdir(parents=True, exist_ok=True)
    # A few threads: a file's write waits on the kernel, not on Python.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda item: item[0].write_bytes(item[1].to_bytes()), files.items()))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mcmargin")
    except PackageNotFoundError:
        return "unknown"


#: How numeric arrays are compressed: Blosc's byte shuffle (each byte of a float with the same byte of its
#: neighbours), then LZ4 at level 5 (zarr 2's default codec).  On the million-account dataset's 651 MB of
#: numbers, one thread: 0.56 s to 64.6%, against 1.55 s to 59.0% for zstd level 1 and more again for zarr
#: 3's default (zstd level 3, no shuffle) (benchmarks/RESULTS.md).
NUMERIC_COMPRESSION = {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"}


def _numeric_compression(ds: xr.Dataset) -> dict:
    """Zarr ``encoding`` of ``ds``'s numeric variables (:data:`NUMERIC_COMPRESSION`), unless they name a compressor."""
    from zarr.codecs import BloscCodec

    codec = BloscCodec(**NUMERIC_COMPRESSION)
    return {k: {"compressors": (codec,), "write_empty_chunks": True} for k, v in ds.variables.items()
            if v.dtype.kind in "biuf" and not ({"compressors", "compressor"} & set(v.encoding))}


def _variable_length_strings(ds: xr.Dataset) -> xr.Dataset:
    # Variable-length strings have a Zarr v3 data type; fixed-width NumPy
    # unicode does not (zarr warns it may become unreadable).
    fixed = [k for k, v in ds.variables.items() if v.dtype.kind == "U"]
    return ds.assign({k: ds[k].astype(object) for k in fixed if k in ds.data_vars}).assign_coords(
        {k: ds[k].astype(object) for k in fixed if k in ds.coords})


@contextlib.contextmanager
def _temporary_store(path: Path):
    """A fresh temporary store for ``path``, locked by this process while it lives, removed after.

    The store is ``.NAME.tmp-PID-RANDOM/NAME``: the lock is held on the
    enclosing directory, which the writer (xarray, zarr, netCDF) never
    replaces, whatever it does to the store itself.
    """
    box = path.with_name(f".{path.name}{_TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    # Made and locked under the directory lock, which cleaners hold too: none of them can
    # see this box before its lock is taken and remove it as a dead run's.
    with _locked(path.parent):
        box.mkdir(mode=0o777)
        fd = os.open(box, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _remove_dead_temporaries(path, own=box)
    try:
        yield box / path.name
    finally:
        # After a swap the box holds the previous dataset (or nothing): remove it either way.
        _remove(box)
        os.close(fd)


def _remove_dead_temporaries(path: Path, own: Path) -> None:
    """Remove temporary stores of ``path`` left by writers that died (their lock is free).

    Called under the directory lock (:func:`_temporary_store`).
    """
    for stale in path.parent.glob(f".{_glob_escape(path.name)}{_TMP_TAG}*"):
        if stale == own:
            continue
        try:
            fd = os.open(stale, os.O_RDONLY)
        except OSError:
            continue  # gone meanwhile, or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its writer is alive
        try:
            log.info("removing %s, left by a run that did not finish", stale)
            _remove(stale)
        finally:
            os.close(fd)


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def _locked(directory: Path):
    """An exclusive flock on ``directory`` (blocking): one swap at a time per directory."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _swap_into_place(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; afterwards ``new`` names the previous dataset, or nothing."""
    if new.is_file() or not target.exists():  # os.replace is atomic for files
        os.replace(new, target)
        return
    if _exchange(new, target):
        return
    # No RENAME_EXCHANGE here: two renames under the directory lock.
    old = new.with_name(new.name + ".old")
    os.replace(target, old)
    os.replace(new, target)
    os.replace(old, new)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def write_file_atomically(path: Path, write) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place: whole or absent.

    The file gets the process's normal permissions (umask), not
    ``mkstemp``'s 0600; on any error the temporary file is removed.
    """
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def open_dataset(path) -> xr.Dataset:
    """Open a dataset written by :func:`write_dataset`."""
    return xr.open_dataset(path) if is_netcdf_path(path) else xr.open_zarr(path)


#: Suffix of the run lock beside an output path (``.NAME.lock``).
_LOCK_TAG = ".lock"


@contextlib.contextmanager
def run_lock(path, wait: float = 0.0, key: str = "output.path"):
    """Hold the output path ``path`` for one run: a second run on it waits ``wait`` seconds, then fails.

    The lock is an exclusive ``flock`` on ``.NAME.lock`` beside ``path``
    (the parent directories are created if needed, and removed again if the
    run left them empty), which says who holds it
    (PID, host, start time) for the other run's message.  A run killed with
    SIGKILL releases it with its process; the file is reused.

    Raises
    ------
    ConfigError
        Another run holds the path after ``wait`` seconds (the message names it).
    """
    p = Path(str(path)).expanduser()
    made = [d for d in (p.parent, *p.parent.parents) if not d.exists()]
    p.parent.mkdir(parents=True, exist_ok=True)
    lock = p.with_name(f".{p.name}{_LOCK_TAG}")
    deadline = time.monotonic() + max(0.0, float(wait))
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:      # the run before us removed the (empty) directory it had made
            p.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                raise ConfigError(key, f"{p} is being written by another run ({holder}); nothing was done: wait "
                                       "for it to finish, give output.lock_wait=SECONDS to wait, or choose another "
                                       "path") from None
            time.sleep(0.2)
            continue
        # The holder before us may have removed the file after we opened it: then ours is stale, retry.
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started "
                     f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}".encode())
        yield p
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)            # under the lock: a waiter that opened it sees a new inode and retries
        os.close(fd)
        for d in made:                 # a run that wrote nothing leaves no directory behind either
            with contextlib.suppress(OSError):
                d.rmdir()


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
    except OSError:
        return "unknown process"
