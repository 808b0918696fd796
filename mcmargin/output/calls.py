"""The margin-call file: one row per pool with a call, for the people who must act on it.

Every value is a variable of the run's dataset (the primary model's, where
several models ran), so the file can be checked against it: ``group``, its
member ``accounts`` (``;``-separated), ``equity`` (with the model's
haircuts where it applies them), ``im``, ``mm``, ``call``, ``status``,
``margin_ratio``, and the top-up due in the pool's main collateral asset
(``topup_asset``, ``topup_amount``).  CSV or Parquet by the path's suffix;
written whole or not at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import ConfigError
from .store import write_file_atomically

COLUMNS = ("group", "accounts", "equity", "im", "mm", "call", "status", "margin_ratio", "topup_asset",
           "topup_amount")


def margin_calls(ds: xr.Dataset) -> pd.DataFrame:
    """The pools of ``ds`` with ``group_margin_call > 0``, largest call first, columns :data:`COLUMNS`."""
    p = ds.isel(model=0) if "model" in ds.dims else ds
    equity = p["group_adjusted_equity" if "group_adjusted_equity" in p else "group_equity"].values
    call = p["group_margin_call"].values
    due = np.flatnonzero(call > 0)
    groups = np.array([str(g) for g in p["group"].values.tolist()], dtype=object)   # StringDType-safe (read back)
    members = (pd.Series([str(a) for a in p["account"].values.tolist()])
               .groupby([str(g) for g in p["account_group"].values.tolist()]).agg(";".join))
    frame = pd.DataFrame({
        "group": groups[due], "accounts": members.reindex(groups[due]).to_numpy(), "equity": equity[due],
        "im": p["group_im"].values[due], "mm": p["group_mm"].values[due], "call": call[due],
        "status": np.array(p["group_status"].values.tolist(), dtype=object)[due],
        "margin_ratio": p["group_margin_ratio"].values[due],
        "topup_asset": np.array(p["group_topup_asset"].values.tolist(), dtype=object)[due],
        "topup_amount": p["group_topup_amount"].values[due]})
    return frame.sort_values(["call", "group"], ascending=[False, True], kind="stable").reset_index(drop=True)


def check_margin_calls_path(path, key: str = "output.margin_calls") -> Path:
    """``path`` as a Path if it can take a margin-call file (checked before any work), else a ConfigError."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ConfigError(key, f"must end in .csv, .parquet or .pq, got {str(path)!r}")
    if path.is_dir():
        raise ConfigError(key, f"{path} is a directory")
    return path


def write_margin_calls(ds: xr.Dataset, path, key: str = "output.margin_calls") -> Path:
    """Write :func:`margin_calls` to ``path`` (``.csv``, or ``.parquet``/``.pq``), atomically."""
    path = check_margin_calls_path(path, key)
    suffix = path.suffix.lower()
    frame = margin_calls(ds)
    if suffix == ".csv":
        return write_file_atomically(path, lambda tmp: frame.to_csv(tmp, index=False))
    return write_file_atomically(path, lambda tmp: frame.to_parquet(tmp, index=False))
