"""One PNG per portfolio: margin against realised loss, exceedances marked, traffic-light zone shaded.

matplotlib is imported here only (the Agg backend: no display needed), so
a run with ``backtest.plots=false`` never loads it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

ZONE_COLOURS = {"yellow": "#ffe680", "red": "#ff9a9a"}


def plot_path(stem: str, portfolio: str) -> Path:
    """``<stem>_<portfolio>.png``, the portfolio name reduced to safe file-name characters."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(portfolio)).strip("_") or "portfolio"
    return Path(f"{stem}_{safe}.png")


def plot_portfolio(ds, portfolio, path) -> Path:
    """Draw one portfolio's backtest to ``path`` (written whole: to a temporary name, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = ds.sel(portfolio=portfolio)
    dates = v["date"].values
    im, loss = v["im"].values, v["loss"].values
    exc = v["exceedance"].values.astype(bool)
    light = v["traffic_light"].values.astype(str)
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=100)
    for zone, colour in ZONE_COLOURS.items():
        ax.fill_between(dates, 0, 1, where=light == zone, transform=ax.get_xaxis_transform(), color=colour,
                        alpha=0.6, linewidth=0, step="mid", label=f"{zone} zone ({ds.attrs['window']}-date window)")
    ax.plot(dates, loss, color="0.55", linewidth=0.5, label="realised loss")
    ax.plot(dates, im, color="tab:blue", linewidth=0.9, label="initial margin")
    ax.scatter(dates[exc], loss[exc], color="tab:red", s=10, zorder=3,
               label=f"exceedance ({int(exc.sum())})")
    ax.axhline(0, color="0.3", linewidth=0.4)
    ok = bool(v["passed"].values)
    ax.set_title(f"{portfolio}: {int(v['n_exceedances'])} exceedances in {int(v['n_days'])} dates, "
                 f"Kupiec p {float(v['kupiec_pvalue']):.3f}, independence p "
                 f"{float(v['christoffersen_pvalue']):.3f}, {'passed' if ok else 'FAILED'}", fontsize=10)
    ax.set_ylabel("USD")
    ax.legend(loc="upper left", fontsize=7, ncol=3, frameon=False)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_all(ds, stem: str) -> list[Path]:
    """Every portfolio's PNG beside the dataset; returns the paths."""
    return [plot_portfolio(ds, p, plot_path(stem, p)) for p in np.asarray(ds["portfolio"].values)]
