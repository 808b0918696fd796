"""Writing datasets safely (mcmargin.output): whose paths may be replaced, atomic swaps, locks, debris."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from mcmargin.errors import ConfigError, ResultError
from mcmargin.output.store import (CREATED_BY, check_figures, check_output_path, open_dataset, write_dataset, written_by_mcmargin)


def dataset(value: float = 1.0, n: int = 3) -> xr.Dataset:
    return xr.Dataset({"im": ("account", np.full(n, value), {"long_name": "initial margin", "units": "USD"})},
                      coords={"account": [f"a{i}" for i in range(n)]})


def debris(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- what may be replaced
def test_existing_directory_that_is_not_a_dataset_is_refused_untouched(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    (book / "positions.csv").write_text("account,instrument,quantity\n")
    (book / "notes").mkdir()
    with pytest.raises(ConfigError, match="not a dataset written by mcmargin") as info:
        write_dataset(dataset(), book)
    assert info.value.key == "output.path"
    assert sorted(p.name for p in book.iterdir()) == ["notes", "positions.csv"]
    assert debris(tmp_path) == []


def test_foreign_zarr_store_and_foreign_file_are_refused(tmp_path):
    dataset().to_zarr(tmp_path / "theirs.zarr")                 # a Zarr store, but not ours
    with pytest.raises(ConfigError, match="not a dataset written by mcmargin"):
        write_dataset(dataset(2.0), tmp_path / "theirs.zarr")
    assert float(xr.open_zarr(tmp_path / "theirs.zarr")["im"][0]) == 1.0
    (tmp_path / "report.nc").write_text("my notes")
    with pytest.raises(ConfigError, match="not a dataset written by mcmargin"):
        write_dataset(dataset(), tmp_path / "report.nc")
    assert (tmp_path / "report.nc").read_text() == "my notes"


@pytest.mark.parametrize("name", ["run.zarr", "run.nc"])
def test_own_dataset_is_replaced(tmp_path, name):
    path = tmp_path / name
    write_dataset(dataset(1.0), path)
    assert written_by_mcmargin(path)
    write_dataset(dataset(2.0), path)
    with open_dataset(path) as ds:
        assert float(ds["im"][0]) == 2.0
        assert ds.attrs[CREATED_BY].startswith("mcmargin ")
    assert debris(tmp_path) == []


def test_dataset_of_an_earlier_version_is_recognised(tmp_path):
    # Before the created_by mark, every stress dataset carried margin_model.
    dataset().assign_attrs(margin_model="mc_es").to_zarr(tmp_path / "old.zarr")
    write_dataset(dataset(3.0), tmp_path / "old.zarr")
    assert float(xr.open_zarr(tmp_path / "old.zarr")["im"][0]) == 3.0


@pytest.mark.parametrize("bad, fragment", [("", "is empty"), ("  ", "is empty"), (".", "names a directory")])
def test_empty_or_directory_path(bad, fragment):
    with pytest.raises(ConfigError, match=fragment):
        check_output_path(bad)


def test_parent_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_output_path(tmp_path / "afile" / "deeper" / "out.zarr")


def test_kind_mismatch(tmp_path):
    write_dataset(dataset(), tmp_path / "x.zarr")
    os.rename(tmp_path / "x.zarr", tmp_path / "x.nc")
    with pytest.raises(ConfigError, match="is a directory"):
        check_output_path(tmp_path / "x.nc")


def test_symlink_is_not_followed(tmp_path):
    write_dataset(dataset(), tmp_path / "real.zarr")
    (tmp_path / "link.zarr").symlink_to(tmp_path / "real.zarr")
    with pytest.raises(ConfigError, match="symbolic link"):
        write_dataset(dataset(), tmp_path / "link.zarr")


def test_unwritable_directory_is_refused_before_any_work(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    if os.geteuid() == 0:
        # Root may write anywhere; answer as the kernel answers any other user for a 0555 directory.
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real(p, mode))
    try:
        with pytest.raises(ConfigError, match="permission denied on") as info:
            check_output_path(locked / "sub" / "out.zarr")
        assert str(locked) in str(info.value)
    finally:
        os.chmod(locked, 0o755)


# ----------------------------------------------------------------------------- concurrency and kills
def _writer(path: str, value: float, start) -> None:
    start.wait()
    write_dataset(dataset(value, n=2000), path)


def test_six_concurrent_writers_leave_one_complete_dataset_and_no_debris(tmp_path):
    path = tmp_path / "stress.zarr"
    write_dataset(dataset(-1.0, n=2000), path)
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), float(v), start)) for v in range(6)]
    for p in procs:
        p.start()
    start.set()
    # While they race, the path always holds a complete dataset.
    seen = set()
    while any(p.is_alive() for p in procs):
        assert path.is_dir()
        try:
            with xr.open_zarr(path) as ds:
                seen.add(float(ds["im"][0]))
        except FileNotFoundError:  # the store swapped under the reader: retry, never absent
            continue
    for p in procs:
        p.join()
        assert p.exitcode == 0
    with xr.open_zarr(path) as ds:
        im = ds["im"].values
    assert im.size == 2000 and np.unique(im).size == 1 and im[0] in range(6)
    assert debris(tmp_path) == []


def test_writer_killed_mid_write_leaves_a_temporary_the_next_run_removes(tmp_path):
    path = tmp_path / "stress.zarr"
    code = ("import time, mcmargin.output as o\n"
            "def slow(ds, *a, **k):\n print('writing', flush=True); time.sleep(60)\n"
            "import xarray as xr; xr.Dataset.to_zarr = slow\n"
            "import numpy as np\n"
            "o.write_dataset(xr.Dataset({'im': ('account', np.ones(3))}), %r)\n" % str(path))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    leftover = debris(tmp_path)
    assert len(leftover) == 1 and leftover[0].startswith(".stress.zarr.tmp-")
    # While the writer lives, another run leaves its temporary alone ...
    write_dataset(dataset(1.0), path)
    assert debris(tmp_path) == leftover
    p.send_signal(signal.SIGKILL)
    p.wait()
    # ... and once it is dead, the next run on the path removes it.
    write_dataset(dataset(2.0), path)
    assert debris(tmp_path) == []
    assert float(xr.open_zarr(path)["im"][0]) == 2.0


def test_unlocked_leftover_of_another_host_is_removed(tmp_path):
    # A temporary from a run on another machine (PID meaningless here) whose lock nobody holds.
    stale = tmp_path / ".out.nc.tmp-99999999-deadbeef"
    stale.mkdir()
    (stale / "out.nc").write_text("half")
    write_dataset(dataset(), tmp_path / "out.nc")
    assert debris(tmp_path) == []


def test_locked_leftover_is_kept(tmp_path):
    box = tmp_path / ".out.nc.tmp-1-alive"
    box.mkdir()
    fd = os.open(box, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        write_dataset(dataset(), tmp_path / "out.nc")
        assert box.exists()
    finally:
        os.close(fd)


def test_failed_write_leaves_target_and_no_debris(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    write_dataset(dataset(1.0), path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", boom)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(dataset(2.0), path)
    monkeypatch.undo()
    assert float(xr.open_zarr(path)["im"][0]) == 1.0
    assert debris(tmp_path) == []


def test_swap_without_rename_exchange(tmp_path, monkeypatch):
    import mcmargin.output.store as out

    monkeypatch.setattr(out, "_exchange", lambda a, b: False)
    write_dataset(dataset(1.0), tmp_path / "run.zarr")
    write_dataset(dataset(2.0), tmp_path / "run.zarr")
    assert float(xr.open_zarr(tmp_path / "run.zarr")["im"][0]) == 2.0
    assert debris(tmp_path) == []


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_dataset(dataset(), tmp_path / "a.nc")
        write_dataset(dataset(), tmp_path / "b.zarr")
    finally:
        os.umask(old)
    assert (tmp_path / "a.nc").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.zarr").stat().st_mode & 0o777 == 0o755


def _files(root):
    return {str(f.relative_to(root)): (f.read_bytes(), f.stat().st_mode & 0o777)
            for f in sorted(root.rglob("*")) if f.is_file()}


def test_small_datasets_written_through_memory_give_the_same_store(tmp_path, monkeypatch):
    """A small dataset is encoded in a MemoryStore and its files written after (store.IN_MEMORY): the
    directory is the one zarr's own LocalStore writes, byte for byte, with the same permissions."""
    import mcmargin.output.store as out

    rng = np.random.default_rng(2)
    ds = dataset(1.0, 40).assign(var=(("account", "confidence"), rng.standard_normal((40, 2)),
                                      {"long_name": "value at risk", "units": "USD"}),
                                 group=("account", np.array([f"G{i % 7}" for i in range(40)])))
    ds = ds.assign_coords(confidence=[0.99, 0.995])
    old = os.umask(0o022)
    try:
        write_dataset(ds, tmp_path / "memory.zarr")
        monkeypatch.setattr(out, "IN_MEMORY", -1)
        write_dataset(ds, tmp_path / "direct.zarr")
    finally:
        os.umask(old)
    memory, direct = _files(tmp_path / "memory.zarr"), _files(tmp_path / "direct.zarr")
    assert memory == direct and len(memory) > 10
    assert {mode for _, mode in memory.values()} == {0o644}
    back = xr.open_zarr(tmp_path / "memory.zarr").load()
    xr.testing.assert_identical(back.drop_attrs(), ds.drop_attrs())


def test_numbers_are_compressed_by_shuffle_and_lz4_and_read_back_bit_for_bit(tmp_path):
    """Numeric arrays go through Blosc (byte shuffle, LZ4 level 5: store.NUMERIC_COMPRESSION); every value,
    NaN, infinities, -0.0 and int64's extremes included, reads back identical."""
    import json

    values = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, 1.7976931348623157e308, -1.25] * 5)
    ds = dataset(1.0, 40).assign(pnl=("account", values),
                                 count=("account", np.resize(np.array([np.iinfo(np.int64).min, -1, 0,
                                                                       np.iinfo(np.int64).max]), 40)))
    write_dataset(ds, tmp_path / "out.zarr")
    for name in ("pnl", "count", "im"):
        codecs = json.loads((tmp_path / "out.zarr" / name / "zarr.json").read_text())["codecs"]
        assert [c["name"] for c in codecs] == ["bytes", "blosc"]
        assert {k: codecs[1]["configuration"][k] for k in ("cname", "clevel", "shuffle")} == {
            "cname": "lz4", "clevel": 5, "shuffle": "shuffle"}
    back = xr.open_zarr(tmp_path / "out.zarr").load()
    np.testing.assert_array_equal(back.pnl.values.view(np.int64), values.view(np.int64))   # bits, not values
    xr.testing.assert_identical(back.drop_attrs(), ds.drop_attrs())


# ----------------------------------------------------------------------------- the final check of figures
def test_non_finite_figure_is_refused_naming_variable_and_account():
    ds = dataset(5.0)
    ds["im"][1] = np.inf
    with pytest.raises(ResultError, match=r"variable im at account 'a1'") as info:
        check_figures(ds)
    assert info.value.variable == "im" and "nothing was written" in str(info.value)


def test_nan_in_two_dimensional_variable_names_both_labels():
    ds = xr.Dataset({"es": (("account", "confidence"), np.ones((2, 2)))},
                    coords={"account": ["x", "y"], "confidence": [0.99, 0.995]})
    ds["es"][1, 1] = np.nan
    with pytest.raises(ResultError, match=r"account 'y', confidence 0.995"):
        check_figures(ds)


def test_declared_non_finite_values_pass_and_only_those():
    ds = xr.Dataset({"liquidation_price": ("account", np.array([1.0, np.nan]),
                                           {"nonfinite": "nan: no liquidation price"})})
    check_figures(ds)
    ds["liquidation_price"][0] = np.inf
    with pytest.raises(ResultError):
        check_figures(ds)
    ratio = xr.Dataset({"margin_ratio": ("account", np.array([np.inf, 2.0]), {"nonfinite": "+inf: mm is 0"})})
    check_figures(ratio)
    ratio["margin_ratio"][1] = -np.inf
    with pytest.raises(ResultError):
        check_figures(ratio)


def test_strings_and_integers_are_not_checked():
    check_figures(xr.Dataset({"account_group": ("account", np.array(["g", "h"])),
                              "group_members": ("group", np.array([1, 2]))}))
