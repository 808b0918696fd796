"""Resume: a run SIGKILLed at several points and started again writes the uninterrupted run's dataset, bit for bit."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT
from mcmargin.output.compare import differences
from mcmargin.output.store import open_dataset

# The job, killed (SIGKILL, from inside: deterministic) at a chosen point.
KILLER = r"""
import os, runpy, signal, sys
point = os.environ["KILL_AT"]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "open":                        # the run directory exists, no block is finished
    import mcmargin.pipeline.resume as r
    opened = r.open_run_dir
    def open_run_dir(*a, **k):
        out = opened(*a, **k)
        die()
    r.open_run_dir = open_run_dir
elif point == "write":                     # every block is finished, the dataset not yet written
    import mcmargin.output.store as st
    st.write_dataset = lambda *a, **k: die()
else:                                      # after the k-th finished block is kept
    import mcmargin.engine.graph as g
    keep, kept = g._keep_block, []
    def _keep_block(path, result):
        out = keep(path, result)
        kept.append(path)
        if len(kept) >= int(point):
            die()
        return out
    g._keep_block = _keep_block
sys.argv = ["jobs.stress", *sys.argv[1:]]
runpy.run_module("jobs.stress", run_name="__main__")
"""

RUN = ("scenarios.n=3000", "engine.row_block=64", "backend=numpy",
       "stress_tests.names=[crash_2022_11]", "engine.blocks_in_flight=1", "cluster.n_workers=1")

SYNTHETIC = ("portfolio.n_accounts=300",)


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _run(cwd, *overrides, kill_at=None):
    cmd = [sys.executable, "-m", "jobs.stress", *RUN, *overrides]
    env = _env()
    if kill_at is not None:
        cmd = [sys.executable, "-c", KILLER, *RUN, *overrides]
        env["KILL_AT"] = str(kill_at)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _load(path):
    with open_dataset(path) as ds:
        return ds.load()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume-ref")
    p = _run(d, *SYNTHETIC, "output.path=ref.zarr")
    assert p.returncode == 0, p.stderr[-2000:]
    ds = _load(d / "ref.zarr")
    timings = json.loads(ds.attrs["timings"])
    assert timings["blocks"] >= 6 and timings["blocks_resumed"] == 0
    return ds


@pytest.mark.parametrize("kill_at", ["open", 1, "mid", "last", "write"])
def test_killed_then_resumed_is_bit_identical(tmp_path, reference, kill_at):
    blocks = json.loads(reference.attrs["timings"])["blocks"]
    k = {"mid": blocks // 2, "last": blocks - 1}.get(kill_at, kill_at)
    killed = _run(tmp_path, *SYNTHETIC, "output.path=out/run.zarr", kill_at=k)
    assert killed.returncode == -9, killed.stderr[-2000:]
    work = tmp_path / "out" / ".run.zarr.work"
    assert not (tmp_path / "out" / "run.zarr").exists()            # nothing at output.path
    (run_dir,) = [p for p in work.iterdir()]
    kept = len(list(run_dir.glob("block-*.pkl")))
    assert kept == {"open": 0, "write": blocks}.get(kill_at, k)
    resumed = _run(tmp_path, *SYNTHETIC, "output.path=out/run.zarr")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ds = _load(tmp_path / "out" / "run.zarr")
    assert json.loads(ds.attrs["timings"])["blocks_resumed"] == kept
    assert differences(reference, ds) == []                          # every variable, bit for bit
    assert not work.exists()                                         # removed when the run succeeded


def test_changed_input_after_a_kill_restarts_cleanly(tmp_path, exported_book):
    book = tmp_path / "book"
    shutil.copytree(exported_book, book)
    files = ("portfolio=files", "portfolio.dir=book", "engine.row_block=16", "output.work_dir=work")
    killed = _run(tmp_path, *files, "output.path=run.zarr", kill_at=2)
    assert killed.returncode == -9, killed.stderr[-2000:]
    (stale,) = list((tmp_path / "work").iterdir())                   # output.work_dir, not the default
    positions = pd.read_csv(book / "positions.csv", dtype=str)
    positions.loc[0, "quantity"] = str(2 * float(positions.loc[0, "quantity"]))
    positions.to_csv(book / "positions.csv", index=False)
    again = _run(tmp_path, *files, "output.path=run.zarr")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "work of a run with other inputs or settings" in again.stderr and not stale.exists()
    ds = _load(tmp_path / "run.zarr")
    assert json.loads(ds.attrs["timings"])["blocks_resumed"] == 0
    fresh = _run(tmp_path, *files, "output.path=fresh.zarr")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert differences(_load(tmp_path / "fresh.zarr"), ds) == []
    assert not (tmp_path / "work").exists()


def test_work_dir_is_never_the_output_path(tmp_path):
    from mcmargin.errors import ConfigError
    from mcmargin.pipeline.resume import check_work_dir, default_work_dir

    out = tmp_path / "out" / "run.zarr"
    assert default_work_dir(out) == tmp_path / "out" / ".run.zarr.work"
    for bad in (out, out / "work", tmp_path / "out"):
        with pytest.raises(ConfigError, match="output.work_dir"):
            check_work_dir(bad, out)
    assert check_work_dir(tmp_path / "elsewhere", out) == tmp_path / "elsewhere"


def test_run_key_covers_figures_not_where_they_go():
    from mcmargin.pipeline.resume import run_key

    cfg = {"scenarios": {"n": 10}, "output": {"path": "a.zarr", "confidence": [0.99]}, "logging": {"format": "human"},
           "cluster": {"kind": "threads"}}
    same = {**cfg, "output": {"path": "b.zarr", "confidence": [0.99]}, "logging": {"format": "json"},
            "cluster": {"kind": "distributed"}}
    assert run_key(cfg, {}) == run_key(same, {})
    assert run_key(cfg, {}) != run_key({**cfg, "scenarios": {"n": 11}}, {})
    assert run_key(cfg, {"/x.csv": "a"}) != run_key(cfg, {"/x.csv": "b"})


def test_a_killed_distributed_worker_changes_nothing(tmp_path):
    """Kill one worker of a 2-worker LocalCluster mid-run: it is replaced, its tasks rerun, the output unchanged."""
    import signal
    import threading
    import time

    from distributed import Client, LocalCluster
    from omegaconf import OmegaConf

    from mcmargin.engine.graph import Chunking
    from mcmargin.inputs.synthetic import synthetic_book
    from mcmargin.pipeline.stress import run_stress
    from mcmargin.scenarios import build_scenarios

    book = synthetic_book(n_accounts=1500)
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/scenarios/gaussian.yaml"))
    scen = build_scenarios(dict(cfg, n=12000, seed=3), book.assets, book.market["vol"].to_numpy())
    engine = dict(chunking=Chunking(2000, 64), blocks_in_flight=2)
    threads = run_stress(book, scen, scheduler="threads", **engine)
    keep = tmp_path / "kept"
    keep.mkdir()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc) as client:
        victim = sorted(client.run(os.getpid).values())[0]
        killed = []

        def kill_when_blocks_are_done():
            deadline = time.monotonic() + 300
            while len(list(keep.glob("block-*.pkl"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(victim, signal.SIGKILL)
            killed.append(len(list(keep.glob("block-*.pkl"))))

        t = threading.Thread(target=kill_when_blocks_are_done, daemon=True)
        t.start()
        ds = run_stress(book, scen, scheduler=client, keep_dir=keep, **engine)
        t.join(timeout=10)
        blocks = json.loads(ds.attrs["timings"])["blocks"]
        assert killed and killed[0] < blocks, "the worker was killed after the run had ended: make it larger"
        assert victim not in client.run(os.getpid).values() and len(client.run(os.getpid)) == 2   # replaced
    assert differences(threads, ds) == []
