"""The benchmark driver runs end to end on a tiny size (its figures live in benchmarks/RESULTS.md)."""

import pytest

from conftest import run_job


@pytest.mark.slow
def test_quick_benchmark_runs_and_checks_equality(tmp_path):
    out = tmp_path / "bench.md"
    p = run_job("benchmarks.run", "--quick", "--output", str(out))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    text = out.read_text()
    assert "PASS" in text and "FAIL" not in text
    assert "not measured" in text          # GPU rows are predictions, never invented measurements


def test_task_time_split_runs(capsys):
    from benchmarks import tasks

    tasks.main(["--accounts", "300", "--scenarios", "20000", "--threads", "1"])
    out = capsys.readouterr().out
    assert "threads 1" in out
    for name in ("fold (fused)", "pilot", "VaR/ES", "draws + revaluation"):
        assert name in out
    from mcmargin.engine import graph as engine
    from mcmargin.engine.kernels.fused import FusedKernel
    for f in (engine._finish, FusedKernel.fold, FusedKernel.start):
        assert not hasattr(f, "__wrapped__")


def test_task_time_split_of_the_job_runs(capsys):
    """``--job``: the stress job's own run on a tiny book, the attribution's parts timed, everything put back."""
    from benchmarks import tasks
    from mcmargin.engine import attribution
    from mcmargin.engine.kernels.fused import FusedKernel

    before = (attribution.add_chunk, FusedKernel.finish, FusedKernel.fold)
    tasks.main(["--job", "portfolio.n_accounts=300", "scenarios.n=5000"])
    out = capsys.readouterr().out
    for name in ("run(cfg) wall", "fold (fused)", "pilot", "of which attribution's tail sums", "of which final cut"):
        assert name in out
    assert (attribution.add_chunk, FusedKernel.finish, FusedKernel.fold) == before


@pytest.mark.slow
def test_resume_benchmark_runs_on_a_tiny_size(capsys):
    from benchmarks import resume

    assert resume.main(["--accounts", "300", "--scenarios", "2000", "--kill-at", "0.8", "engine.row_block=32"]) == 0
    row = capsys.readouterr().out
    assert "bit-identical" in row and "blocks loaded" in row
