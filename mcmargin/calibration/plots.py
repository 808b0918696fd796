"""Diagnostic figures of a calibration dataset (PNG, Agg canvas; no pyplot state).

- :func:`plot_vol_paths`: annualised conditional vol of each asset over time,
  the look-back window shaded;
- :func:`plot_correlation`: heat map of the de-volatized correlation;
- :func:`plot_qq`: QQ plot of each asset's look-back residuals against the
  standard normal, with the fitted (unit-variance) Student-t for reference.

Each writes atomically (temporary file beside the target, then rename).
"""

from __future__ import annotations

import math
import os
import uuid

import numpy as np
import xarray as xr

MAX_LINES = 12


def _figure(width=8.0, height=4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    # A unique name, created by savefig itself: mkstemp would create the file
    # with mode 0600, and os.replace keeps it, where every other output of a
    # job gets the process's umask (0644 under the usual 022).
    tmp = os.path.join(d, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp.png")
    try:
        fig.savefig(tmp, format="png", bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _assets(ds: xr.Dataset) -> list[str]:
    return [str(a) for a in ds["asset"].values]


def plot_vol_paths(ds: xr.Dataset, path) -> str:
    """Annualised conditional volatility paths (at most 12 assets, the most volatile)."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    assets = _assets(ds)
    order = np.argsort(-np.nan_to_num(ds["vol"].values.astype(float)))[:MAX_LINES]
    dates = ds["date"].values
    for j in order:
        ax.plot(dates, ds["vol_path"].values[:, j], lw=0.8, label=assets[j])
    if "in_lookback" in ds and ds["in_lookback"].values.any():
        w = dates[ds["in_lookback"].values.astype(bool)]
        ax.axvspan(w[0], w[-1], color="0.9", zorder=0, label="look-back")
    ax.set_title(f"Conditional volatility ({ds.attrs.get('vol_method', '')}), annualised")
    ax.set_ylabel("vol")
    ax.legend(loc="upper left", fontsize=7, ncol=2)
    return _save(fig, path)


def plot_correlation(ds: xr.Dataset, path) -> str:
    """Heat map of ``correlation(asset, asset_b)``."""
    assets = _assets(ds)
    k = len(assets)
    size = min(4.0 + 0.35 * k, 16.0)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(ds["correlation"].values, vmin=-1, vmax=1, cmap="RdBu_r")
    if k <= 40:
        ax.set_xticks(range(k), assets, rotation=90, fontsize=7)
        ax.set_yticks(range(k), assets, fontsize=7)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{ds['correlation'].values[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(f"De-volatized correlation ({ds.attrs.get('window_start', '')}..{ds.attrs.get('window_end', '')})")
    return _save(fig, path)


def plot_qq(ds: xr.Dataset, path) -> str:
    """QQ plots of look-back residuals against N(0, 1), with the fitted Student-t quantiles."""
    from scipy import stats

    assets = _assets(ds)
    order = list(range(len(assets)))[:MAX_LINES]
    cols = min(4, len(order)) or 1
    rows = math.ceil(len(order) / cols) or 1
    fig = _figure(3.0 * cols, 3.0 * rows)
    mask = ds["in_lookback"].values.astype(bool) if "in_lookback" in ds else slice(None)
    for n, j in enumerate(order):
        ax = fig.add_subplot(rows, cols, n + 1)
        z = ds["residual"].values[mask, j]
        z = np.sort(z[np.isfinite(z)])
        if z.size < 2 or not np.any(z != 0):
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{assets[j]}\nno movement\n(constant price)", ha="center", va="center",
                    fontsize=9, transform=ax.transAxes)
            continue
        p = (np.arange(1, z.size + 1) - 0.5) / z.size
        q = stats.norm.ppf(p)
        ax.plot(q, z, ".", ms=2, label="residuals")
        lim = [q[0], q[-1]]
        ax.plot(lim, lim, "k-", lw=0.6, label="normal")
        nu = float(ds["dof"].values[j]) if "dof" in ds else float("nan")
        if math.isfinite(nu) and nu > 2:
            ax.plot(q, stats.t.ppf(p, nu) * math.sqrt((nu - 2) / nu), "r-", lw=0.6, label=f"t({nu:.1f})")
        ax.set_title(assets[j], fontsize=8)
        ax.tick_params(labelsize=6)
        if n == 0:
            ax.legend(fontsize=6)
    fig.suptitle("QQ plot of de-volatized residuals vs N(0,1)", fontsize=9)
    return _save(fig, path)


def plot_all(ds: xr.Dataset, stem: str) -> list[str]:
    """The three figures as ``{stem}_vol.png``, ``{stem}_correlation.png``, ``{stem}_qq.png``."""
    return [plot_vol_paths(ds, f"{stem}_vol.png"), plot_correlation(ds, f"{stem}_correlation.png"),
            plot_qq(ds, f"{stem}_qq.png")]
