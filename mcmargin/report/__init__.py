"""The HTML report: one self-contained page per dataset (stress run, backtest, buffer calibration).

    from mcmargin.report import render_report, write_report
    html = render_report(ds)                  # a string
    write_report(ds, "out/stress.html")       # whole or not at all

A report reads a dataset and nothing else: it can be drawn again at any time
from a stored dataset (``python -m jobs.report dataset=PATH``).  Each
section appears when its variables are in the dataset (:mod:`.sections`).
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from ..errors import ConfigError
from .page import page, write_text_atomically
from .sections import SECTIONS, run_header

#: Rows of each "largest" table by default.
TOP = 20

__all__ = ["TOP", "dataset_kind", "render_report", "report_path_for", "write_report"]


def dataset_kind(ds: xr.Dataset) -> str | None:
    """``stress``, ``backtest`` or ``buffer`` from the dataset's dimensions and variables; None otherwise."""
    dims = set(ds.dims)
    if "group_im" in ds and "account" in dims:
        return "stress"
    if {"buffer", "portfolio"} <= dims and "coverage" in ds:
        return "buffer"
    if {"date", "portfolio"} <= dims and "im" in ds and "loss" in ds:
        return "backtest"
    return None


def render_report(ds: xr.Dataset, top: int = TOP, title: str | None = None) -> str:
    """The report of ``ds`` as one HTML document (a string).

    Parameters
    ----------
    ds : xarray.Dataset
        A stress, backtest or buffer-calibration dataset.
    top : int
        Rows of each table of the largest pools.
    title : str, optional
        The page title (default from the dataset's kind).

    Raises
    ------
    ConfigError
        ``ds`` is none of the three kinds (key ``dataset``).
    """
    kind = dataset_kind(ds)
    if kind is None:
        raise ConfigError("dataset", "is not a stress, backtest or buffer-calibration dataset written by mcmargin "
                                     f"(its variables: {', '.join(list(map(str, ds.data_vars))[:8]) or 'none'})")
    sections = [run_header(ds, kind, top)]
    sections += [s for s in (f(ds, top) for f in SECTIONS) if s is not None]
    title = title or {"stress": "mcmargin stress run", "backtest": "mcmargin backtest",
                      "buffer": "mcmargin buffer calibration"}[kind]
    sub = ds.attrs.get("valuation_date") or ds.attrs.get("created") or ""
    return page(title, f"{sub} - every figure is a dataset variable or a sum of one, named beside it",
                sections, with_charts=any('class="chart"' in s.body for s in sections))


def report_path_for(dataset_path) -> Path:
    """Where a job writes the report of the dataset at ``dataset_path``: beside it, ``NAME.html``."""
    p = Path(dataset_path)
    return p.with_suffix(".html") if p.suffix else p.with_name(p.name + ".html")


def write_report(ds: xr.Dataset, path, top: int = TOP, key: str = "output.path") -> Path:
    """Render ``ds`` and write the page to ``path`` atomically; returns the path."""
    return write_text_atomically(render_report(ds, top), path, key)
