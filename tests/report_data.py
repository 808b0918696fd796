"""Small datasets for the report tests: a real stress run, and backtest, buffer and cascade datasets built
to the variable lists of their issues (docs/notes: issue 13 backtest, issue 16 buffer calibration, issue 15
cascades), so the report's sections are tested before those jobs exist; an HTML table reader."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pandas as pd
import xarray as xr


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


def with_cascade(ds: xr.Dataset, n_scenarios: int | None = None, seed: int = 5) -> xr.Dataset:
    """``ds`` (a stress run) with the cascade's variables of issue 15, values drawn at random."""
    rng = np.random.default_rng(seed)
    n = n_scenarios or (ds.sizes["scenario"] if "scenario" in ds.dims else 500)
    rounds = rng.poisson(0.7, n)
    liquidated = rounds * rng.integers(0, 4, n)
    draw = np.where(rounds > 0, rng.exponential(2e4, n), 0.0)
    adl = np.where(draw > 4e4, draw - 4e4, 0.0)
    loss = draw + adl
    sc = ("scenario",)
    out = ds.assign({
        "cascade_rounds": _da(rounds, sc, "rounds", "1"), "liquidated_accounts": _da(liquidated, sc, "accounts", "1"),
        "insurance_fund_draw": _da(draw, sc, "draw", "USD"), "adl_volume": _da(adl, sc, "adl", "USD"),
        "cascade_loss": _da(loss, sc, "loss", "USD"),
        "insurance_fund_exhausted_prob": _da(float((adl > 0).mean()), (), "exhausted", "1"),
    })
    conf = out["confidence"].values
    out = out.assign({
        "insurance_fund_draw_var": _da(np.quantile(draw, conf), ("confidence",), "var", "USD"),
        "insurance_fund_draw_es": _da(np.quantile(draw, conf) * 1.2, ("confidence",), "es", "USD"),
        "adl_volume_es": _da(np.quantile(adl, conf) * 1.1, ("confidence",), "es", "USD"),
    })
    if "stress" in out.dims:
        k = out.sizes["stress"]
        st = ("stress",)
        out = out.assign({"stress_cascade_rounds": _da(rng.integers(0, 5, k), st, "rounds", "1"),
                          "stress_liquidated_accounts": _da(rng.integers(0, 9, k), st, "accounts", "1"),
                          "stress_insurance_fund_draw": _da(rng.exponential(1e4, k), st, "draw", "USD"),
                          "stress_adl_volume": _da(rng.exponential(1e3, k), st, "adl", "USD"),
                          "stress_cascade_loss": _da(rng.exponential(2e4, k), st, "loss", "USD")})
    g = out.sizes["group"]
    p0 = rng.uniform(0, 0.05, g)
    out = out.assign({"group_liquidation_prob": _da(p0, ("group",), "liquidation prob", "1"),
                      "group_liquidation_prob_cascade": _da(p0 + rng.uniform(0, 0.02, g), ("group",),
                                                            "liquidation prob with cascade", "1")})
    return out


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
