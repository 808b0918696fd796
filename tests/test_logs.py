"""Stage log lines (mcmargin/common/logs.py): one per stage with its timing; logging.format=json."""

import json
import logging

import pytest

from conftest import run_job
from mcmargin.common.logs import JsonFormatter, log_stage, set_log_format, stage
from mcmargin.errors import ConfigError


def test_json_run_logs_one_machine_readable_line_per_stage(tmp_path):
    p = run_job("jobs.stress", "portfolio.n_accounts=50", "scenarios.n=500", "backend=numpy",
                "stress_tests.names=[crash_2022_11]", "logging.format=json", "output.path=run.zarr", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    records = [json.loads(line) for line in p.stderr.splitlines()]      # every line is a JSON object
    stages = [r for r in records if r["logger"] == "mcmargin.stage"]
    assert [r["stage"] for r in stages] == ["load_inputs", "compile_book", "tails", "margin", "named_stress", "write",
                                               "report"]
    assert all(isinstance(r["seconds"], float) and r["seconds"] >= 0 and r["level"] == "INFO" for r in stages)
    timings = json.loads(__import__("xarray").open_zarr(tmp_path / "run.zarr").attrs["timings"])
    tails = next(r for r in stages if r["stage"] == "tails")
    assert tails["scenarios"] == 500 and tails["seconds"] == pytest.approx(timings["compute_s"] + timings["graph_s"],
                                                                            abs=0.05)
    # The summary is a table on stdout, not mixed into the log.
    assert "mcmargin stress run" in p.stdout and "load inputs" in p.stdout


def test_human_lines_by_default_and_bad_format_names_its_key(caplog):
    with caplog.at_level(logging.INFO, logger="mcmargin.stage"):
        log_stage("margin", 0.25, models="mc_es")
        timings = {}
        with stage("write", timings, path="x.zarr"):
            pass
    assert caplog.records[0].getMessage() == "stage margin done in 0.250 s (models=mc_es)"
    assert caplog.records[1].stage == "write" and "write_s" in timings
    line = json.loads(JsonFormatter().format(caplog.records[0]))
    assert line["stage"] == "margin" and line["seconds"] == 0.25 and line["models"] == "mc_es"
    with pytest.raises(ConfigError, match="logging.format: expected one of human, json, got 'xml'"):
        set_log_format("xml")
