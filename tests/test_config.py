"""Config mapping: clusters, chunking and margin keys (mcmargin.config)."""

import importlib.util

import pytest

from mcmargin.pipeline import config as mc
from mcmargin.errors import ConfigError


def test_threads_scheduler_sets_worker_count():
    import dask

    with mc.scheduler_from_config({"kind": "threads", "n_workers": 3}) as s:
        assert s == "threads" and dask.config.get("num_workers") == 3


def test_slurm_cluster_job_script_carries_the_settings():
    cluster = mc._local_cluster("slurm", {"queue": "risk", "account": "clearing", "cores": 8, "processes": 2,
                                          "memory": "32GB", "walltime": "00:30:00",
                                          "job_extra_directives": ["--exclusive"]})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for text in ("#SBATCH -p risk", "#SBATCH -A clearing", "#SBATCH --exclusive", "00:30:00"):
        assert text in script


@pytest.mark.skipif(importlib.util.find_spec("dask_cuda") is not None, reason="dask-cuda installed")
def test_cuda_cluster_without_dask_cuda_names_the_extra():
    with pytest.raises(ConfigError, match=r"mcmargin\[gpu\]"):
        mc._local_cluster("cuda", {})


def test_unknown_cluster_kind():
    with pytest.raises(ConfigError, match="cluster.kind"):
        with mc.scheduler_from_config({"kind": "mpi"}):
            pass


@pytest.mark.parametrize("engine,key", [({"scenario_chunk": -1}, "engine.scenario_chunk"),
                                        ({"row_block": 1.5}, "engine.row_block"),
                                        ({"task_memory_mb": 0}, "engine.task_memory_mb")])
def test_chunking_keys_are_checked(engine, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        mc.chunking_from_config(engine)


@pytest.mark.parametrize("value", [-1, 2.5, True, "4"])
def test_blocks_in_flight_key_is_checked(value):
    with pytest.raises(ConfigError, match=r"engine\.blocks_in_flight"):
        mc.blocks_in_flight_from_config({"blocks_in_flight": value})
    assert mc.blocks_in_flight_from_config({}) == 0
    assert mc.blocks_in_flight_from_config({"blocks_in_flight": 3}) == 3
    # SLURM workers arrive after the run starts: size the lanes for the jobs asked for.
    slurm = {"kind": "slurm", "jobs": 2, "cores": 16}
    assert mc.blocks_in_flight_from_config({"blocks_in_flight": 0}, slurm) == 64
    assert mc.blocks_in_flight_from_config({"blocks_in_flight": 5}, slurm) == 5
    assert mc.blocks_in_flight_from_config({}, {"kind": "distributed"}) == 0


def test_margin_keys():
    p = mc.margin_from_config({"model": "mc_es", "confidence": 0.995, "buffer": 0.25, "maintenance_ratio": 0.5})
    assert (p.confidence, p.buffer, p.maintenance_ratio) == (0.995, 0.25, 0.5)
    with pytest.raises(ConfigError, match="margin.model"):
        mc.margin_from_config({"model": "spun", "confidence": 0.99, "buffer": 0, "maintenance_ratio": 1})
    with pytest.raises(ConfigError, match="output.confidence"):
        mc.confidences_from_config({"confidence": [0.99, 1.5]}, p)
    assert mc.confidences_from_config({"confidence": [0.99]}, p) == [0.99, 0.995]


# ----------------------------------------------------------------- every documented key through the job
# One row per documented key (README "Configuration"): the overrides, and the effect asserted on the
# job's dataset against a base run.  In process (jobs.stress.run with a composed config); the process
# boundary (output.path, the printed summary, exit codes) is tested in tests/test_stress_job.py.
import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402

from omegaconf import OmegaConf  # noqa: E402

from conftest import CONF, ROOT, stress_config  # noqa: E402

BASE = ("portfolio.n_accounts=40", "scenarios.n=600", "output.scenarios=true", "engine.progress=false")


def job(*overrides):
    from jobs.stress import run
    return run(stress_config(*BASE, *overrides))


@pytest.fixture(scope="module")
def base():
    return job()


def option_ids():
    import datetime as dt
    from mcmargin.inputs.synthetic import synthetic_book
    ins = synthetic_book(40, seed=7, valuation_date=dt.date(2026, 11, 25)).instruments
    return set(ins.loc[ins["kind"] == "option", "instrument"])


def same_figures(a, b, rtol=0.0):
    for v in ("equity", "im", "isolated_im", "var", "es", "group_im", "group_es", "unit_es"):
        np.testing.assert_allclose(a[v].values, b[v].values, rtol=rtol, atol=0 if rtol == 0 else 1e-9, err_msg=v)
    return True


def differ(a, b, v="im"):
    return not np.allclose(a[v].values, b[v].values, rtol=1e-9)


def _scaled_shocks(factor):
    def check(ds, b):
        np.testing.assert_allclose(ds["shock"].values, b["shock"].values * factor, rtol=1e-12, atol=1e-15)
        return True
    return check


def _martingale(ds, b):
    cfg = OmegaConf.load(CONF / "scenarios" / "gaussian.yaml")
    for a, p in cfg["risk_factors"].items():
        s = p["vol"] * math.sqrt(cfg["horizon_days"] / cfg["days_per_year"])
        np.testing.assert_allclose(ds["shock"].sel(asset=a).values, b["shock"].sel(asset=a).values - s * s / 2,
                                   rtol=0, atol=1e-15)
    return json.loads(ds.attrs["scenario_model"])["drift"] == "martingale"


def _rate(ds, b):
    assert ds.attrs["pricing_rate"] == 0.05
    changed = ~np.isclose(ds["unit_es"].values, b["unit_es"].values, rtol=1e-12).all(axis=1)
    # only options are priced with the rate: every instrument whose standalone ES moved is an option
    names = set(ds["instrument"].values[changed])
    return bool(names) and names <= option_ids() and differ(ds, b, "equity")


def _margin(q, buffer, ratio):
    def check(ds, b):
        np.testing.assert_allclose(ds["im"], np.maximum(0, ds["es"].sel(confidence=q)) * (1 + buffer), rtol=1e-12)
        np.testing.assert_allclose(ds["mm"], ds["im"] * ratio, rtol=1e-12)
        return ds.attrs["margin_confidence"] == q and q in ds["confidence"].values
    return check


ROWS = [
    # (documented key, overrides, effect on the dataset given the base run)
    ("valuation_date", ["valuation_date=2026-11-20"],     # option times: test_portfolio_files_keys
     lambda ds, b: ds.attrs["valuation_date"] == "2026-11-20" and b.attrs["valuation_date"] == "2026-11-25"),
    ("backend", ["backend=jax"], lambda ds, b: ds.attrs["backend"] == "jax" and same_figures(ds, b, 1e-9)),
    ("portfolio.n_accounts", ["portfolio.n_accounts=25"], lambda ds, b: ds.sizes["account"] == 25),
    ("portfolio.seed", ["portfolio.seed=8"], lambda ds, b: differ(ds, b, "equity")),
    ("portfolio.group_share", ["portfolio.group_share=0.0"],
     lambda ds, b: (ds["group_members"] == 1).all() and (b["group_members"] > 1).any()),
    ("scenarios.n", ["scenarios.n=500"], lambda ds, b: ds.sizes["scenario"] == ds.attrs["n_scenarios"] == 500),
    ("scenarios.seed", ["scenarios.seed=1"], lambda ds, b: differ(ds, b, "shock")),
    ("scenarios.horizon_days", ["scenarios.horizon_days=8"],
     lambda ds, b: ds.attrs["horizon_days"] == 8 and _scaled_shocks(2.0)(ds, b)),
    ("scenarios.days_per_year", ["scenarios.days_per_year=360"], _scaled_shocks(math.sqrt(365 / 360))),
    ("scenarios.drift", ["scenarios.drift=martingale"], _martingale),
    ("scenarios.risk_factors", ["scenarios.risk_factors.BTC.vol=1.1"],
     lambda ds, b: np.allclose(ds["shock"].sel(asset="BTC"), 2 * b["shock"].sel(asset="BTC"), rtol=1e-12)
     and np.array_equal(ds["shock"].sel(asset="ETH"), b["shock"].sel(asset="ETH"))),
    ("scenarios.correlation", ["scenarios.correlation=[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]"],
     lambda ds, b: abs(np.corrcoef(ds["shock"].sel(asset="BTC"), ds["shock"].sel(asset="ETH"))[0, 1]) < 0.15
     and np.corrcoef(b["shock"].sel(asset="BTC"), b["shock"].sel(asset="ETH"))[0, 1] > 0.7),
    ("scenarios.dof", ["scenarios=student_t", "scenarios.dof=3"],
     lambda ds, b: json.loads(ds.attrs["scenario_model"])["dof"] == 3.0 and differ(ds, b, "shock")),
    ("margin.confidence", ["margin.confidence=0.975"], _margin(0.975, 0.1, 0.75)),
    ("margin.buffer", ["margin.buffer=0.3"],
     lambda ds, b: np.allclose(ds["im"], b["im"] / 1.1 * 1.3, rtol=1e-12)),
    ("margin.maintenance_ratio", ["margin.maintenance_ratio=0.5"], _margin(0.99, 0.1, 0.5)),
    ("output.confidence", ["output.confidence=[0.9,0.95]"],
     lambda ds, b: list(ds["confidence"].values) == [0.9, 0.95, 0.99]),
    ("output.scenarios", ["output.scenarios=false"], lambda ds, b: "shock" not in ds and "scenario" not in ds.dims),
    ("cluster.n_workers", ["cluster.n_workers=1"], lambda ds, b: same_figures(ds, b)),
    ("engine.fast_path", ["engine.fast_path=false"],
     lambda ds, b: ds.attrs["kernel"] == "array-api reference" and b.attrs["kernel"].startswith("fused")
     and same_figures(ds, b, 1e-12)),
    ("engine.scenario_chunk", ["engine.scenario_chunk=128"],
     lambda ds, b: ds.attrs["chunk_scenarios"] == 128 and same_figures(ds, b, 1e-12)),
    ("engine.row_block", ["engine.row_block=7"], lambda ds, b: ds.attrs["chunk_rows"] == 7 and same_figures(ds, b)),
    ("engine.task_memory_mb", ["engine.task_memory_mb=0.05"],
     lambda ds, b: ds.attrs["chunk_rows"] < b.attrs["chunk_rows"] and same_figures(ds, b, 1e-12)),
    ("engine.blocks_in_flight", ["engine.blocks_in_flight=3", "engine.row_block=8"],
     lambda ds, b: ds.attrs["blocks_in_flight"] == 3 and same_figures(ds, b)),
    ("engine.progress", ["engine.progress=true"], lambda ds, b: same_figures(ds, b)),
    ("pricing.rate", ["pricing.rate=0.05"], _rate),
]


@pytest.mark.parametrize("key,overrides,effect", ROWS, ids=[r[0] for r in ROWS])
def test_documented_key_has_its_effect(base, key, overrides, effect):
    ds = job(*overrides)
    assert effect(ds, base), key


def test_documented_keys_are_all_in_the_table():
    """Every key of the README's configuration table has a row here or in the tests named below."""
    import re
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("## Scenarios calibrated")]
    documented = set(re.findall(r"`((?:portfolio|scenarios|margin|output|cluster|engine|pricing)\.[a-z_]+)`", table))
    documented |= {"valuation_date", "backend"}
    elsewhere = {  # key -> the test that exercises it through the job
        "portfolio.export": "test_config.py::test_portfolio_files_keys",
        "portfolio.dir": "test_config.py::test_portfolio_files_keys",
        "output.path": "test_stress_job.py::test_export_run_files_and_recompute_every_figure",
        "output.top": "test_config.py::test_output_top",
        "cluster.threads_per_worker": "test_config.py::test_distributed_cluster_through_the_job",
        "cluster.address": "test_config.py::test_distributed_cluster_through_the_job",
        "cluster.device_memory_limit": "test_config.py::test_cuda_cluster_without_dask_cuda_names_the_extra",
        "cluster.jobs": "test_config.py::test_slurm_cluster_job_script_carries_the_settings",
        "cluster.queue": "test_config.py::test_slurm_cluster_job_script_carries_the_settings",
        "cluster.account": "test_config.py::test_slurm_cluster_job_script_carries_the_settings",
        "cluster.cores": "test_config.py::test_slurm_cluster_job_script_carries_the_settings",
        "cluster.memory": "test_config.py::test_slurm_cluster_job_script_carries_the_settings",
        "cluster.walltime": "test_config.py::test_slurm_cluster_job_script_carries_the_settings",
        "portfolio.export_format": "test_config.py::test_portfolio_files_keys",
        "portfolio.instruments": "test_config.py::test_portfolio_files_keys",
        "portfolio.accounts": "test_config.py::test_portfolio_files_keys",
        "portfolio.export_then_run": "test_runtime.py::test_export_then_run_keeps_the_old_behaviour",
        "scenarios.params": "test_stress_history.py::test_asset_map_maps_params_and_history_columns",
        "scenarios.asset_map": "test_stress_history.py::test_asset_map_maps_params_and_history_columns",
        "scenarios.params_fallback": "test_historical.py::test_parametric_models_take_params_file_or_history",
        "margin.models": "test_margin_base.py::test_the_stress_job_runs_several_models_and_prints_them",
        "output.margin_calls": "test_status.py::test_the_job_writes_the_margin_call_file",
        "output.lock_wait": "test_run_lock.py::test_two_concurrent_runs_on_one_path",
        "output.work_dir": "test_resume.py::test_changed_input_after_a_kill_restarts_cleanly",
        "reverse_stress.enabled": "test_reverse_stress.py::test_the_job_runs_a_reverse_stress_and_refuses_one_without_a_fund",
        "margin.apc": "test_apc.py::test_the_stress_run_applies_each_apc_option",
        "margin.buffer_portfolio": "test_buffer.py::test_margin_buffer_reads_a_calibration_dataset",
        "scenarios.stress_period": "test_stress_history.py::test_stress_run_fhs_options",
        "scenarios.vol_floor_lookback": "test_stress_history.py::test_stress_run_fhs_options",
        "output.report": "test_report.py::test_stress_job_writes_its_report_beside_the_dataset",
        "output.loss_pools": "test_report.py::test_loss_distribution_is_the_pools_losses_binned",
        "output.loss_bins": "test_report.py::test_loss_distribution_is_the_pools_losses_binned",
        "output.loss_scenarios": "test_report.py::test_loss_distribution_is_the_pools_losses_binned",
        "output.attribution": "test_attribution.py::test_job_writes_attribution_and_refuses_a_bad_key",
        "output.tail_scenarios": "test_attribution.py::test_job_writes_attribution_and_refuses_a_bad_key",
    }
    covered = {r[0] for r in ROWS} | set(elsewhere)
    assert documented - covered == set(), documented - covered


def test_portfolio_files_keys(exported_book, tmp_path):
    """portfolio=files: portfolio.dir, a path per table overriding the directory's file, portfolio.export
    with portfolio.export_format=parquet (read back as the same book)."""
    import shutil
    import pandas as pd
    from jobs.stress import run
    a = run(stress_config("portfolio=files", f"portfolio.dir={exported_book}", "scenarios.n=300"))
    # per-table path: the same positions with every quantity doubled, elsewhere
    pos = pd.read_csv(exported_book / "positions.csv", dtype={"account": str})
    pos["quantity"] *= 2
    other = tmp_path / "today" / "positions.parquet"
    other.parent.mkdir()
    pos.to_parquet(other)
    b = run(stress_config("portfolio=files", f"portfolio.dir={exported_book}", f"portfolio.positions={other}",
                          "scenarios.n=300"))
    # unit_es depends on the instruments only; isolated margin is positively homogeneous in the quantities
    np.testing.assert_array_equal(a["unit_es"].values, b["unit_es"].values)
    col = pd.read_csv(exported_book / "collateral.csv", dtype={"account": str})
    no_col = ~a["account"].to_index().isin(col["account"].unique())
    np.testing.assert_allclose(b["isolated_im"].values, 2 * a["isolated_im"].values, rtol=1e-12)
    np.testing.assert_allclose(b["im"].values[no_col], 2 * a["im"].values[no_col], rtol=1e-9, atol=1e-9)
    # every table by its own path, no directory: the same book
    tables = ("instruments", "market", "positions", "collateral", "accounts")
    d = run(stress_config("portfolio=files", *(f"portfolio.{t}={exported_book / (t + '.csv')}" for t in tables),
                          "scenarios.n=300"))
    same_figures(d, a)
    # valuation_date moves option times (the files' expiries are fixed): option unit_es changes, linear ones not
    e = run(stress_config("portfolio=files", f"portfolio.dir={exported_book}", "scenarios.n=300",
                          "valuation_date=2026-11-20"))
    opt = a["instrument"].to_index().isin(list(option_ids()))
    assert not np.allclose(e["unit_es"].values[opt], a["unit_es"].values[opt], rtol=1e-9)
    np.testing.assert_allclose(e["unit_es"].values[~opt], a["unit_es"].values[~opt], rtol=1e-12)
    # export as parquet, then run on the exported files: the same figures
    out = tmp_path / "pq"
    run(stress_config("portfolio=files", f"portfolio.dir={exported_book}", "scenarios.n=300",
                      f"portfolio.export={out}", "portfolio.export_format=parquet"))
    assert sorted(p.suffix for p in out.iterdir() if p.name != ".mcmargin-export") == [".parquet"] * 5
    c = run(stress_config("portfolio=files", f"portfolio.dir={out}", "scenarios.n=300"))
    for v in ("equity", "im", "isolated_im", "group_im", "es"):
        np.testing.assert_array_equal(c[v].values, a[v].values, err_msg=v)
    with pytest.raises(ConfigError, match="portfolio.export_format"):
        run(stress_config("portfolio.n_accounts=5", f"portfolio.export={tmp_path / 'x'}",
                          "portfolio.export_format=xlsx"))
    shutil.rmtree(out)


def test_output_top():
    from mcmargin.output.summary import summary
    ds = job("output.top=3")
    counts = {}
    for top in (2, 4):
        text = summary(ds, top=top)
        counts[top] = sum(1 for line in text.splitlines() if line.startswith("    "))
    assert counts[4] > counts[2] and ds.attrs["config"].count("top: 3") == 1


@pytest.mark.slow
def test_distributed_cluster_through_the_job(base):
    """cluster=distributed: a LocalCluster of worker processes gives the threads run's figures bit for bit."""
    ds = job("cluster=distributed", "cluster.n_workers=2", "cluster.threads_per_worker=1")
    assert ds.attrs["cluster"] == "distributed"
    same_figures(ds, base)
