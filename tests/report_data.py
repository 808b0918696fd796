"""Small datasets for the report tests: real tiny runs of the jobs that write them (a stress run with the
cascade, several models and named stresses; a backtest with anti-procyclicality; its buffer calibration),
and hand-built backtest and buffer datasets for the cases a tiny real run does not reach (a red zone, no
passing buffer on the grid); an HTML table reader."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pandas as pd
import xarray as xr


#: The tiny stress run with everything the report draws: two models, a default fund, the cascade with an
#: insurance fund small enough to run out in a few scenarios (auto-deleveraging), loss distributions.
CASCADE_RUN = ("portfolio.n_accounts=200", "scenarios.n=2000", "cascade.enabled=true", "cascade.insurance_fund=3e3",
               "margin.models=[mc_es,span]", "default_fund.size=5e4", "output.loss_pools=3")


def cascade_run() -> xr.Dataset:
    """The stress job's dataset for :data:`CASCADE_RUN` (in process, as ``python -m jobs.stress`` computes it)."""
    from conftest import stress_config
    from jobs.stress import run

    return run(stress_config(*CASCADE_RUN))


def history_files(d) -> tuple[str, str]:
    """600 business days of three fat-tailed assets with a volatility regime, and three books, as CSV in ``d``."""
    g = np.random.default_rng(21)
    n = 600
    vol = np.where((np.arange(n) > 350) & (np.arange(n) < 450), 0.05, 0.015)
    r = g.standard_t(4, (n, 3)) / np.sqrt(2) * vol[:, None] * np.array([1.0, 1.3, 0.8])
    idx = pd.date_range("2022-01-03", periods=n, freq="B", name="date")
    pd.DataFrame(np.exp(np.cumsum(r, axis=0)) * [100, 50, 20], index=idx,
                 columns=["A", "B", "C"]).to_csv(d / "history.csv")
    pd.DataFrame({"portfolio": ["long", "long", "short", "hedged", "hedged"], "asset": ["A", "B", "C", "A", "B"],
                  "quantity": [10, 20, -30, 10, -15]}).to_csv(d / "portfolios.csv", index=False)
    return str(d / "history.csv"), str(d / "portfolios.csv")


def backtest_run(d) -> xr.Dataset:
    """A real backtest (filtered historical simulation, buffer 0.1, anti-procyclicality buffer) on
    :func:`history_files`, written to ``d/bt.zarr`` as ``python -m jobs.backtest`` writes it."""
    from mcmargin.backtest.run import BacktestSettings, run_backtest
    from mcmargin.inputs.history import load_history
    from mcmargin.inputs.portfolios import load_portfolios
    from mcmargin.output.store import write_dataset

    hist, books = history_files(d)
    h = load_history(hist)
    st = BacktestSettings(model="fhs", n=200, seed=7, horizon=1, lookback=250, buffer=0.1, apc="buffer")
    ds = run_backtest(h, load_portfolios(books, list(h.columns)), st, scheduler="sync")
    write_dataset(ds, d / "bt.zarr")
    return ds


def buffer_run(backtest: xr.Dataset, grid=None, target_coverage=0.995) -> xr.Dataset:
    """The buffer calibration of ``backtest`` (what ``python -m jobs.calibrate_buffer`` computes); at the
    default target coverage the three books need buffers 0.07, 0.17 and 0.23."""
    from mcmargin.calibration.buffer import buffer_grid, calibration_dataset

    return calibration_dataset(backtest, buffer_grid(grid), target_coverage=target_coverage)


def _da(values, dims, long_name, units, coords=None):
    return xr.DataArray(values, dims=dims, coords=coords, attrs={"long_name": long_name, "units": units})


def backtest_dataset(n_dates: int = 320, seed: int = 3) -> xr.Dataset:
    """Dims date x portfolio with the backtest's variables; portfolio ``crisis`` has a run of exceedances
    (a yellow and red zone), ``calm`` has a few."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=n_dates).to_numpy()
    portfolios = np.array(["calm", "crisis"])
    scale = np.array([1e5, 2e5])
    loss = rng.standard_normal((n_dates, 2)) * scale
    var = 2.326 * scale * np.ones((n_dates, 1))
    es = 2.665 * scale * np.ones((n_dates, 1))
    im = es * 1.1
    loss[200:215, 1] = im[200:215, 1] * 1.5           # a crisis: 15 consecutive exceedances
    exceed = loss > im
    window = np.stack([np.convolve(exceed[:, k], np.ones(250, int))[:n_dates] for k in range(2)], axis=1)
    light = np.where(window >= 10, "red", np.where(window >= 5, "yellow", "green"))
    n_exc = exceed.sum(axis=0)
    coords = {"date": dates, "portfolio": portfolios}
    d2 = ("date", "portfolio")
    ds = xr.Dataset({
        "im": _da(im, d2, "initial margin", "USD", coords), "var": _da(var, d2, "value at risk", "USD", coords),
        "es": _da(es, d2, "expected shortfall", "USD", coords), "loss": _da(loss, d2, "realised loss", "USD", coords),
        "exceedance": _da(exceed, d2, "loss > im", "1", coords),
        "window_exceedances": _da(window, d2, "exceedances in the 250 dates ending at t", "1", coords),
        "traffic_light": _da(light, d2, "Basel traffic-light zone", "1", coords),
        "coverage": _da(1 - n_exc / n_dates, ("portfolio",), "share of dates covered", "1"),
        "n_exceedances": _da(n_exc, ("portfolio",), "exceedances", "1"),
        "n_days": _da(np.full(2, n_dates), ("portfolio",), "dates", "1"),
        "kupiec_pvalue": _da(np.array([0.61234, 1.2e-7]), ("portfolio",), "Kupiec", "1"),
        "christoffersen_pvalue": _da(np.array([0.4321, 3.3e-9]), ("portfolio",), "Christoffersen", "1"),
        "conditional_coverage_pvalue": _da(np.array([0.5555, 1.1e-12]), ("portfolio",), "conditional", "1"),
        "red_windows": _da(np.array([0, int((window[:, 1] >= 10).sum())]), ("portfolio",), "red windows", "1"),
        "passed": _da(np.array([True, False]), ("portfolio",), "passed", "1"),
    }, coords=coords)
    ds.attrs.update(model='{"model": "fhs", "ewma_lambda": 0.94, "lookback": 500}', first_date="2020-01-01",
                    last_date=str(pd.Timestamp(dates[-1]).date()), created="2026-12-05T10:00:00+00:00",
                    history_sha256="ab12cd34", portfolios_sha256="ef56ab78", margin_confidence=0.99)
    return ds


def buffer_dataset() -> xr.Dataset:
    """Dims buffer x portfolio with the calibration's variables; ``b`` never reaches the target (NaN)."""
    grid = np.round(np.arange(0, 1.0001, 0.01), 2)
    portfolios = np.array(["a", "b"])
    cov = np.stack([np.minimum(1.0, 0.97 + 0.05 * grid), np.minimum(0.985, 0.95 + 0.02 * grid)], axis=1)
    mean = np.stack([1e6 * (1 + grid), 4e5 * (1 + grid)], axis=1)
    coords = {"buffer": grid, "portfolio": portfolios}
    d2 = ("buffer", "portfolio")
    n_exc = np.round((1 - cov) * 1000).astype(int)
    ds = xr.Dataset({
        "coverage": _da(cov, d2, "coverage", "1", coords), "mean_margin": _da(mean, d2, "mean margin", "USD", coords),
        "n_exceedances": _da(n_exc, d2, "exceedances", "1", coords),
        "kupiec_pvalue": _da(np.linspace(0.01, 0.9, grid.size)[:, None] * np.ones(2), d2, "Kupiec", "1", coords),
        "christoffersen_pvalue": _da(np.full((grid.size, 2), 0.5), d2, "Christoffersen", "1", coords),
        "red_windows": _da(np.zeros((grid.size, 2), int), d2, "red windows", "1", coords),
        "peak_to_trough": _da(np.full((grid.size, 2), 2.0), d2, "peak to trough", "1", coords),
        "max_increase_1d": _da(np.full((grid.size, 2), 0.1), d2, "max 1d increase", "1", coords),
        "max_increase_30d": _da(np.full((grid.size, 2), 0.5), d2, "max 30d increase", "1", coords),
        "required_buffer": _da(np.array([grid[np.argmax(cov[:, 0] >= 0.99)], np.nan]), ("portfolio",),
                               "required buffer", "1", {"portfolio": portfolios}),
    }, coords=coords)
    ds.attrs.update(target_coverage=0.99, created="2026-12-05T10:00:00+00:00", backtest_sha256="0badc0de")
    return ds


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self._id, self._row, self._cell = {}, None, None, None
        self.links = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.links.append((tag, a[key]))
        if tag == "table" and a.get("id"):
            self._id = a["id"]
            self.tables[self._id] = []
        elif tag == "tr" and self._id:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = [a.get("data-value"), ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(tuple(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.tables[self._id].append(self._row)
            self._row = None
        elif tag == "table":
            self._id = None


def read_page(html: str):
    """``(tables, links)``: each table with an id as rows of (data-value, text) cells; every (tag, src/href)."""
    p = _Tables()
    p.feed(html)
    return p.tables, p.links
