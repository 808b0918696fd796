"""Each kind of report opened in headless Chromium (Debian's package, driven by Playwright): every section's
title is on the page, every chart and image has loaded, the console shows no error, the tables sort, and the
numbers on the rendered page are the dataset's.

Chromium is the system browser (``.ci/run`` installs Debian's ``chromium`` when it is missing); Playwright's
own browser downloads are never used.  The tests skip, saying why, only where no Chromium can be found.
"""

import os
import shutil

import numpy as np
import pytest

from conftest import stress_config
from report_data import backtest_dataset, buffer_dataset, with_cascade
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
    """A report of each kind: a stress run (two models, a fund, distributions, cascade variables), a backtest
    and a buffer calibration; returns {kind: (path, dataset)}."""
    from jobs.stress import run

    d = tmp_path_factory.mktemp("reports")
    stress = with_cascade(run(stress_config("portfolio=files", f"portfolio.dir={exported_book}", "scenarios.n=1500",
                                            "output.scenarios=true", "margin.models=[mc_es,span]",
                                            "default_fund.size=5e4", "output.loss_pools=3")))
    out = {}
    for kind, ds in (("stress", stress), ("backtest", backtest_dataset()), ("buffer", buffer_dataset())):
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
    "stress": ["Run", "Totals", "Loss distribution of the largest pools", "Margin by model", "Named stresses",
               "Cascade"],
    "backtest": ["Run", "Backtest"],
    "buffer": ["Run", "Buffer calibration"],
}


@pytest.mark.parametrize("kind", ["stress", "backtest", "buffer"])
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
