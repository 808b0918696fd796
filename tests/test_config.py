"""Config mapping: clusters, chunking and margin keys (mcmargin.config)."""

import importlib.util

import pytest

from mcmargin import config as mc
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
        mc.margin_from_config({"model": "span", "confidence": 0.99, "buffer": 0, "maintenance_ratio": 1})
    with pytest.raises(ConfigError, match="output.confidence"):
        mc.confidences_from_config({"confidence": [0.99, 1.5]}, p)
    assert mc.confidences_from_config({"confidence": [0.99]}, p) == [0.99, 0.995]
