"""How jobs run: sweeps, export-only, progress output, a quiet cluster (mcmargin.runtime, .progress)."""

import io
import logging

import pytest

from conftest import ROOT, run_job
from mcmargin.output.store import open_dataset


def test_a_sweep_writes_one_dataset_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    p = run_job("jobs.stress", "-m", "margin.buffer=0,0.1,0.2", "portfolio.n_accounts=30", "scenarios.n=500",
                f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    found = sorted(sweep.glob("*/out/stress.zarr"))
    assert [f.parent.parent.name for f in found] == ["0", "1", "2"]
    buffers = [open_dataset(f).attrs["margin_buffer"] for f in found]
    assert buffers == [0.0, 0.1, 0.2]
    im = [float(open_dataset(f)["im"].sum()) for f in found]
    assert im[0] < im[1] < im[2]
    assert not (tmp_path / "out").exists()          # nothing at the single-run path
    assert p.stdout.count("dataset written to") == 3


def test_job_output_path_outside_a_sweep_is_unchanged(tmp_path):
    from mcmargin.pipeline.runtime import job_output_path

    assert str(job_output_path("out/x.zarr")) == "out/x.zarr"
    assert job_output_path(tmp_path / "x.zarr") == tmp_path / "x.zarr"


def test_export_alone_writes_the_book_and_no_dataset(tmp_path):
    book, out = tmp_path / "book", tmp_path / "run.zarr"
    p = run_job("jobs.stress", "portfolio.n_accounts=20", f"portfolio.export={book}", f"output.path={out}",
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert {f.name for f in book.iterdir()} == {"instruments.csv", "market.csv", "positions.csv",
                                                "collateral.csv", "accounts.csv", ".mcmargin-export"}
    assert not out.exists() and "not started" in p.stdout and "export_then_run" in p.stdout
    assert "dataset written" not in p.stdout


def test_export_then_run_keeps_the_old_behaviour(tmp_path):
    from jobs.stress import export_only
    from conftest import stress_config

    book = tmp_path / "book"
    cfg = stress_config(f"portfolio.export={book}", "portfolio.export_then_run=true")
    assert cfg.portfolio.export_then_run is True
    p = run_job("jobs.stress", "portfolio.n_accounts=20", "scenarios.n=200", f"portfolio.export={book}",
                "portfolio.export_then_run=true", f"output.path={tmp_path / 'run.zarr'}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "run.zarr").exists() and (book / "positions.csv").exists()
    assert "book exported" in export_only(cfg)


# ------------------------------------------------------------------ progress
class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_log_is_a_few_lines_without_carriage_returns():
    from mcmargin.engine.progress import Progress

    out = io.StringIO()
    p = Progress(1000, minimum=0.0, out=out)
    for done in range(1, 1001):
        p.update(done)
    p.close()
    text = out.getvalue()
    assert "\r" not in text
    assert text.count("\n") == 4 and "100% done" in text


def test_progress_on_a_terminal_is_a_bar_redrawn_at_most_once_a_second():
    from mcmargin.engine.progress import Progress

    out = _Tty()
    p = Progress(1000, minimum=0.0, out=out)
    for done in range(1, 1001):
        p.update(done)
    p.close()
    frames = out.getvalue().split("\r")[1:]
    assert 1 <= len(frames) <= 3 and "100%" in frames[-1] and out.getvalue().endswith("\n")


def test_short_runs_show_nothing():
    from mcmargin.engine.progress import Progress

    out = io.StringIO()
    p = Progress(10, minimum=60.0, out=out)
    p.update(10)
    p.close()
    assert out.getvalue() == ""


@pytest.mark.parametrize("cluster", ["threads", "distributed"])
def test_engine_progress_goes_to_stderr_only(monkeypatch, capfd, cluster):
    import mcmargin.engine.graph as engine
    from jobs.stress import run
    from conftest import stress_config

    monkeypatch.setattr(engine, "PROGRESS_AFTER_S", 0.0)
    overrides = ["engine.progress=true", "engine.scenario_chunk=256", f"cluster={cluster}"]
    if cluster == "distributed":
        overrides += ["cluster.n_workers=1"]
    run(stress_config(*overrides))
    captured = capfd.readouterr()
    assert "[progress]" in captured.err and "\r" not in captured.err
    assert "[progress]" not in captured.out and "Completed" not in captured.out
    if cluster == "distributed":
        assert "WARNING" not in captured.err and "INFO] distributed" not in captured.err


def test_job_scheduler_restores_distributed_log_levels():
    from mcmargin.pipeline.runtime import job_scheduler

    lg = logging.getLogger("distributed.nanny")
    before = lg.level
    with job_scheduler({"kind": "threads"}) as s:
        assert s == "threads"
    assert lg.level == before


@pytest.mark.parametrize("job,groups", [("jobs.stress", ["portfolio: files, synthetic", "scenarios:", "cluster:"]),
                                        ("jobs.calibrate", ["none: every key is at the top level"])])
def test_help_says_what_the_job_does_its_groups_and_examples(job, groups):
    p = run_job(job, "--help")
    assert p.returncode == 0, p.stderr
    text = p.stdout
    assert text.startswith(f"{job}: ") and "Powered by Hydra" not in text
    assert "== Config groups" in text and all(g in text for g in groups)
    examples = text.split("== Examples ==")[1].split("\n\n")[0]
    assert sum(line.strip().startswith(f"python -m {job}") for line in examples.splitlines()) == 3


def test_help_and_cfg_job_import_no_heavy_library():
    import subprocess
    import sys

    code = ("import sys, runpy; sys.argv = ['jobs.stress', '--cfg', 'job']\n"
            "try:\n    runpy.run_module('jobs.stress', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('xarray', 'dask', 'numba', 'jax', 'distributed', 'scipy') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"
