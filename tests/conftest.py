"""Shared fixtures: tiny configs composed with Hydra, and a small hand-made book."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
VALUATION = dt.date(2026, 11, 25)


def stress_config(*overrides):
    """The stress job's config with tiny sizes forced, plus ``overrides`` (a book from files has no size)."""
    tiny = ["scenarios.n=1000", "backend=numpy"]
    if "portfolio=files" not in overrides:
        tiny.insert(0, "portfolio.n_accounts=60")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="stress", overrides=tiny + list(overrides))


def cuda_device_present() -> bool:
    """Whether this machine has a CUDA device, asked of the driver, never of CuPy or JAX.

    ``nvidia-smi -L`` lists the GPUs the driver sees; without it, the device
    nodes /dev/nvidia0.. tell.  A GPU test skips only when this is False;
    where a device exists, a CuPy or JAX install that fails must fail the test.
    """
    import shutil
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and "GPU" in out.stdout:
                return True
        except (OSError, subprocess.SubprocessError):
            pass
    return any(Path("/dev").glob("nvidia[0-9]*"))


def run_job(module, *overrides, cwd=ROOT):
    """Run ``python -m module overrides...`` and return the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def exported_book(tmp_path_factory):
    """The synthetic book (40 accounts) exported once per test session as the five CSV input files."""
    from jobs.stress import run

    book = tmp_path_factory.mktemp("exported_book")
    run(stress_config("portfolio.n_accounts=40", "scenarios.n=100", f"portfolio.export={book}"))
    assert {f.name for f in book.iterdir()} >= {"instruments.csv", "market.csv", "positions.csv",
                                                "collateral.csv", "accounts.csv"}
    return book


@pytest.fixture
def small_frames():
    """Instruments, market, positions, collateral and accounts of a small book."""
    return small_frames_data()


def small_frames_data():
    """The tables of :func:`small_frames`, fresh on every call."""
    ins = pd.DataFrame(dict(
        instrument=["BTC-PERP", "BTC-INV-PERP", "BTC-C", "BTC-P-INV", "ETH-SPOT", "ETH-FUT", "ETH-C-EXP"],
        kind=["perpetual", "perpetual", "option", "option", "spot", "future", "option"],
        underlying=["BTC", "BTC", "BTC", "BTC", "ETH", "ETH", "ETH"],
        settle=["USDT", "BTC", "USDT", "BTC", "USDT", "USDT", "USDT"],
        inverse=["false", "TRUE", "0", "yes", "no", "False", "f"],
        contract_size=[1, 100, 1, 1, 1, 0.1, 1],
        expiry=["", "", "2026-12-25", "2027-03-26", "", "2026-12-25", "2026-11-26"],
        strike=[np.nan, np.nan, 95_000, 85_000, np.nan, np.nan, 3_000],
        option_type=["", "", "call", "put", "", "", "call"]))
    mkt = pd.DataFrame(dict(asset=["BTC", "ETH", "USDT"], price=[90_000.0, 3_000.0, 1.0], vol=[0.5, 0.7, 0.0],
                            haircut=[0.1, 0.15, 0.0]))
    pos = pd.DataFrame(dict(account=["a", "a", "b", "b", "c", "c", "e"],
                            instrument=["BTC-PERP", "BTC-C", "BTC-INV-PERP", "BTC-P-INV", "ETH-SPOT", "ETH-FUT",
                                        "ETH-C-EXP"],
                            quantity=[1.5, -2, -500, 3.5, 10, -100, -4]))
    col = pd.DataFrame(dict(account=["a", "b", "c", "d", "e"], asset=["USDT", "BTC", "USDT", "ETH", "USDT"],
                            amount=[20_000, 1, 1_000, 2, 500]))
    acc = pd.DataFrame(dict(account=["a", "b", "c"], group=["G1", "G1", ""]))
    return ins, mkt, pos, col, acc


@pytest.fixture
def small_book(small_frames):
    from mcmargin.inputs.files import book_from_frames

    return book_from_frames(*small_frames, VALUATION)


SCENARIOS_2F = dict(model="student_t", dof=5, n=4000, seed=11, horizon_days=2,
                    risk_factors={"BTC": {"vol": 0.5, "vol_of_vol": 1.0, "spot_vol_corr": -0.4},
                                  "ETH": {"vol": 0.7, "vol_of_vol": 1.2, "spot_vol_corr": -0.3}},
                    correlation=[[1.0, 0.8], [0.8, 1.0]])
