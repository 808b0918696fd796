"""Each kind of report opened in headless Chromium (Debian's package, driven by Playwright): every section's
title is on the page, every chart and image has loaded, the console shows no error, the tables sort, and the
numbers on the rendered page are the dataset's.  The reports are those of real tiny runs (tests/report_data.py):
a stress run with the cascade, two models and the named stresses; a backtest; its buffer calibration.

Chromium is the system browser (``.ci/run`` installs Debian's ``chromium`` when it is missing); Playwright's
own browser downloads are never used.  The tests skip, saying why, only where no Chromium can be found.
"""

import math
import os
import shutil

import numpy as np
import pytest

from conftest import stress_config
from report_data import backtest_run, buffer_run, cascade_run
from mcmargin.report import write_report

#: Flags for a headless run with no network chatter of the browser's own (updates, sync, QUIC).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium():
    """The system Chromium: $CHROMIUM, else chromium or chromium-browser on PATH, else /usr/bin/chromium."""
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/bin/chromium"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (checked $CHROMIUM, chromium and "
                                                         "chromium-browser on PATH, /usr/bin/chromium); "
                                                         ".ci/run installs Debian's chromium package")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def reports(tmp_path_factory, exported_book):
    """A report of each kind, from real runs: a stress run on the exported book (two models, a fund, shocks
    kept, distributions), the tiny cascade run (report_data.CASCADE_RUN), a backtest and its buffer
    calibration; returns {kind: (path, dataset)}."""
    from jobs.stress import run

    d = tmp_path_factory.mktemp("reports")
    stress = run(stress_config("portfolio=files", f"portfolio.dir={exported_book}", "scenarios.n=1500",
                               "output.scenarios=true", "margin.models=[mc_es,span]", "default_fund.size=5e4",
                               "output.loss_pools=3"))
    bt = backtest_run(d)
    out = {}
    for kind, ds in (("stress", stress), ("cascade", cascade_run()), ("backtest", bt), ("buffer", buffer_run(bt))):
        out[kind] = (write_report(ds, d / f"{kind}.html"), ds)
    return out


def open_page(browser, path):
    """(page, problems): the page loaded, and every console error, page error and failed request."""
    page = browser.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("request", lambda r: problems.append(f"network request: {r.url}")
            if not r.url.startswith(("file:", "data:", "blob:", "about:")) else None)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, problems


EXPECTED = {
    "stress": ["Run", "Totals", "Loss distribution of the largest pools", "Margin by model", "Named stresses"],
    "cascade": ["Run", "Totals", "Loss distribution of the largest pools", "Margin by model", "Named stresses",
                "Cascade"],
    "backtest": ["Run", "Backtest"],
    "buffer": ["Run", "Buffer calibration"],
}


@pytest.mark.parametrize("kind", ["stress", "cascade", "backtest", "buffer"])
def test_sections_charts_and_console(browser, reports, kind):
    path, ds = reports[kind]
    page, problems = open_page(browser, path)
    assert page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)") == EXPECTED[kind]
    charts = page.eval_on_selector_all(".plotly-chart", "els => els.map(e => e.id)")
    assert charts
    page.wait_for_function("() => Array.from(document.querySelectorAll('.plotly-chart'))"
                           ".every(e => e.querySelector('svg.main-svg') && e._fullData)", timeout=30_000)
    drawn = page.eval_on_selector_all(".plotly-chart", "els => els.map(e => e.querySelectorAll('.trace').length)")
    assert all(n > 0 for n in drawn), dict(zip(charts, drawn))
    images = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
    assert all(images)
    assert problems == []
    page.close()


def test_tables_sort_on_click(browser, reports):
    page, problems = open_page(browser, reports["stress"][0])
    column = "Array.from(document.querySelectorAll('#largest-requirements tbody tr')).map(r => +r.cells[3].dataset.value)"
    before = page.evaluate(column)
    assert before == sorted(before, reverse=True)
    page.click("#largest-requirements th:nth-child(4)")
    after = page.evaluate(column)
    assert after == sorted(before)
    assert problems == []


def test_numbers_on_the_page_are_the_datasets(browser, reports):
    """Read off the rendered page (text as shown), against the dataset."""
    path, ds = reports["stress"]
    p = ds.isel(model=0)
    page, _ = open_page(browser, path)
    totals = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('#totals tbody tr'))"
                           ".map(r => [r.cells[2].textContent, r.cells[1].textContent]))")
    assert totals["sum of equity"] == f"{float(p['equity'].sum()):,.0f}"
    assert totals["sum of group_im"] == f"{float(p['group_im'].sum()):,.0f}"
    assert totals["sum of group_margin_call"] == f"{float(p['group_margin_call'].sum()):,.0f}"
    assert page.text_content("#calls-count").startswith(f"{int((p['group_margin_call'] > 0).sum()):,} pools")
    shown = page.evaluate("Array.from(document.querySelectorAll('#stresses tbody tr'))"
                          ".map(r => [r.cells[0].textContent, r.cells[2].textContent])")
    assert shown == [[str(s), f"{float(c):,.0f}"] for s, c in zip(ds["stress"].values, ds["cover2"].values)]
    # the distribution chart holds the stored counts as shares of the scenarios, VaR and ES marked
    n = int(ds["pool_loss_count"].values[0].sum())
    share = page.evaluate("document.getElementById('loss-0').data[0].y")
    np.testing.assert_allclose(share, ds["pool_loss_count"].values[0] / n, rtol=1e-15)
    lines = page.evaluate("document.getElementById('loss-0').layout.shapes.map(s => s.x0)")
    i = [str(g) for g in p["group"].values].index(str(ds["loss_pool"].values[0]))
    marks = [float(p[v].values[i, j]) for j in range(ds.sizes["confidence"]) for v in ("group_var", "group_es")]
    assert lines == marks
    page.close()
    # backtest: the exceedances marked are the dataset's, for every portfolio
    path, ds = reports["backtest"]
    page, _ = open_page(browser, path)
    for k in range(ds.sizes["portfolio"]):
        marked = page.evaluate(f"document.getElementById('backtest-{k}').data[2].x.length")
        assert marked == int(ds["exceedance"].values[:, k].sum()) == int(ds["n_exceedances"].values[k])
    page.close()


def test_cascade_and_buffer_numbers_on_the_page_are_the_datasets(browser, reports):
    """The cascade's and the buffer calibration's figures as the browser shows them, against the dataset."""
    path, ds = reports["cascade"]
    page, problems = open_page(browser, path)
    cells = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('#cascade tbody tr'))"
                          ".map(r => [r.cells[0].textContent, Array.from(r.cells).slice(1).map(c => c.textContent)]))")
    for v in ("insurance_fund_draw", "adl_volume", "cascade_loss", "insurance_fund_need"):
        x = ds[v].values
        assert cells[v][:4] == [f"{w:,.0f}" for w in (x.mean(), np.median(x), np.quantile(x, 0.99), x.max())]
        assert cells[v][4] == f"{100 * (x > 0).mean():.2f}%"
    r = ds["cascade_rounds"].values
    assert cells["cascade_rounds"][3] == f"{r.max():.6g}" and cells["cascade_rounds"][0] == f"{r.mean():.6g}"
    need = np.sort(ds["insurance_fund_need"].values)[::-1]
    q = ds.attrs["margin_confidence"]
    m = math.ceil(round(need.size * (1 - q), 9))
    assert f": {need[m - 1]:,.0f} USD (VaR of insurance_fund_need" in page.text_content("#fund-needed")
    stresses = page.evaluate("Array.from(document.querySelectorAll('#cascade-stresses tbody tr'))"
                             ".map(r => [r.cells[0].textContent, r.cells[5].textContent, r.cells[7].textContent])")
    moves = ds["stress_cascade_price_move"]
    assert stresses == [[str(s), f"{float(c):,.0f}",
                         str(moves.sel(stress=s).to_series().idxmin()) if float(moves.sel(stress=s).min()) < 0
                         else ""] for s, c in zip(ds["stress"].values, ds["stress_cascade_loss"].values)]
    # the charts hold the dataset: rounds as shares of scenarios, the run's fund marked on the need
    values, counts = np.unique(ds["cascade_rounds"].values, return_counts=True)
    assert page.evaluate("document.getElementById('cascade-0').data[0].x") == values.tolist()
    np.testing.assert_allclose(page.evaluate("document.getElementById('cascade-0').data[0].y"),
                               counts / r.size, rtol=1e-15)
    assert page.evaluate("document.getElementById('cascade-3').layout.shapes.map(s => s.x0)") == [
        ds.attrs["cascade_insurance_fund"]]
    assert problems == []
    page.close()
    path, cal = reports["buffer"]
    page, problems = open_page(browser, path)
    shown = page.evaluate("Array.from(document.querySelectorAll('#required-buffer tbody tr'))"
                          ".map(r => Array.from(r.cells).slice(0, 4).map(c => c.textContent))")
    assert shown == [[str(p), f"{float(b):.6g}", f"{100 * float(cal['coverage'].sel(buffer=b, portfolio=p)):.3f}%",
                      f"{float(cal['mean_margin'].sel(buffer=b, portfolio=p)):,.0f}"]
                     for p, b in zip(cal["portfolio"].values, cal["required_buffer"].values)]
    # the frontier chart: one curve per portfolio through every grid point, a star at each required buffer
    for k, p in enumerate(cal["portfolio"].values):
        curve = page.evaluate(f"document.getElementById('frontier').data[{2 * k}]")
        assert curve["name"] == str(p) and curve["y"] == cal["coverage"].sel(portfolio=p).values.tolist()
        assert curve["x"] == cal["mean_margin"].sel(portfolio=p).values.tolist()
        star = page.evaluate(f"document.getElementById('frontier').data[{2 * k + 1}]")
        b = float(cal["required_buffer"].sel(portfolio=p))
        assert star["y"] == [float(cal["coverage"].sel(buffer=b, portfolio=p))]
    assert problems == []
    page.close()


def test_the_checks_see_a_broken_page(browser, tmp_path):
    """The console, error and network checks above do catch what they look for."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><h2>x</h2><img src="missing.png"><script>console.error("boom"); undefinedCall();'
                   "</script></body></html>")
    page, problems = open_page(browser, bad)
    assert any("boom" in p for p in problems) and any("undefinedCall" in p for p in problems)
    assert any("missing.png" in p for p in problems)
    assert not all(page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)"))
    page.close()
