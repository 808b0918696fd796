"""The HTML report: sections present when their variables are, figures equal to the dataset's, self-contained,
written by jobs.report and, by default, by the stress, backtest and buffer-calibration jobs beside their datasets.

The cascade, backtest and buffer sections are checked on real tiny runs of the jobs (tests/report_data.py),
their figures against numpy over the dataset and, where one exists, an independent recomputation."""

import math
import re

import numpy as np
import pytest

import recompute
from conftest import run_job, stress_config
from report_data import backtest_dataset, backtest_run, buffer_dataset, buffer_run, cascade_run, read_page
from mcmargin.errors import ConfigError
from mcmargin.report import dataset_kind, render_report, report_path_for

STRESS_TITLES = ["Run", "Totals", "Loss distribution of the largest pools", "Margin by model", "Named stresses"]


@pytest.fixture(scope="module")
def stress_ds(exported_book):
    """A small stress run on the exported book: two models, a default fund, shocks kept, 3 pools' distributions."""
    from jobs.stress import run

    return run(stress_config("portfolio=files", f"portfolio.dir={exported_book}", "scenarios.n=1500",
                             "output.scenarios=true", "margin.models=[mc_es,span]", "default_fund.size=5e4",
                             "output.loss_pools=3", "output.loss_bins=20"))


@pytest.fixture(scope="module")
def cascade_ds():
    """The real tiny stress run with the cascade (report_data.CASCADE_RUN)."""
    return cascade_run()


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    """``(directory, backtest, calibration)``: a real backtest written to ``directory/bt.zarr`` and its buffer
    calibration at target coverage 0.995."""
    d = tmp_path_factory.mktemp("calibration")
    bt = backtest_run(d)
    return d, bt, buffer_run(bt)


def titles(html):
    return re.findall(r"<h2>(.*?)</h2>", html)


def money(x):
    return f"{float(x):,.0f}"


def test_kinds_and_sections_follow_the_variables(stress_ds):
    html = render_report(stress_ds)
    assert dataset_kind(stress_ds) == "stress"
    assert titles(html) == STRESS_TITLES
    one = stress_ds.isel(model=0).drop_vars(["cover1", "cover2", "cover_groups", "default_fund_required",
                                             "pool_loss_count", "pool_loss_edge"])
    assert titles(render_report(one)) == ["Run", "Totals"]
    assert dataset_kind(backtest_dataset()) == "backtest"
    assert titles(render_report(backtest_dataset())) == ["Run", "Backtest"]
    assert dataset_kind(buffer_dataset()) == "buffer"
    assert titles(render_report(buffer_dataset())) == ["Run", "Buffer calibration"]
    with pytest.raises(ConfigError, match="dataset"):
        render_report(stress_ds[["shock"]])


def test_real_runs_have_their_sections(cascade_ds, calibration):
    _, bt, cal = calibration
    assert titles(render_report(cascade_ds)) == STRESS_TITLES + ["Cascade"]
    assert (dataset_kind(bt), titles(render_report(bt))) == ("backtest", ["Run", "Backtest"])
    assert (dataset_kind(cal), titles(render_report(cal))) == ("buffer", ["Run", "Buffer calibration"])


@pytest.mark.parametrize("make", ["stress", "backtest", "buffer"])
def test_self_contained_with_plotly_inlined_once(cascade_ds, calibration, make):
    ds = {"stress": cascade_ds, "backtest": calibration[1], "buffer": calibration[2]}[make]
    html = render_report(ds)
    _, links = read_page(html)
    assert not [ln for ln in links if re.match(r"\s*(https?:)?//", ln[1], re.I)], links
    assert all(h.startswith("#") for _, h in links)          # only the page's own anchors
    assert html.count("plotly.js v") == 1                     # the bundle's banner: once, however many charts
    assert html.count('class="plotly-chart"') >= 1


def test_totals_and_largest_tables_equal_the_dataset(stress_ds):
    tables, _ = read_page(render_report(stress_ds, top=7))
    p = stress_ds.isel(model=0)
    sums = {"sum of equity": p["equity"].sum(), "sum of im": p["im"].sum(), "sum of group_im": p["group_im"].sum(),
            "sum of isolated_im (each position alone)": p["isolated_im"].sum(),
            "sum of netting_benefit": p["netting_benefit"].sum(),
            "sum of isolated_im - sum of group_im": p["isolated_im"].sum() - p["group_im"].sum(),
            "sum of group_netting_benefit": p["group_netting_benefit"].sum(), "sum of group_mm": p["group_mm"].sum(),
            "sum of group_margin_call": p["group_margin_call"].sum()}
    seen = {row[2][1]: row[1] for row in tables["totals"]}
    assert set(seen) == set(sums)
    for name, total in sums.items():
        assert float(seen[name][0]) == pytest.approx(float(total), rel=1e-12)
        assert seen[name][1] == money(total)
    # largest requirements: the 7 largest group_im, by brute force over every pool
    gim = p["group_im"].values
    want = sorted(range(gim.size), key=lambda i: (-gim[i], i))[:7]
    rows = tables["largest-requirements"]
    assert [r[0][1] for r in rows] == [str(p["group"].values[i]) for i in want]
    assert [float(r[3][0]) for r in rows] == [gim[i] for i in want]
    assert [r[3][1] for r in rows] == [money(gim[i]) for i in want]
    calls = p["group_margin_call"].values
    want = sorted([i for i in range(calls.size) if calls[i] > 0], key=lambda i: (-calls[i], i))[:7]
    assert [r[0][1] for r in tables["largest-calls"]] == [str(p["group"].values[i]) for i in want]
    assert [float(r[1][0]) for r in tables["largest-calls"]] == [calls[i] for i in want]


def test_models_and_stresses_tables_equal_the_dataset(stress_ds):
    tables, _ = read_page(render_report(stress_ds))
    q = stress_ds.attrs["margin_confidence"]
    for row, name in zip(tables["models"], stress_ds["model"].values):
        m = stress_ds.sel(model=name)
        assert row[0][1] == str(name)
        assert float(row[1][0]) == pytest.approx(float(m["group_im"].sum()), rel=1e-12)
        assert int(row[4][0]) == int((m["group_exceedance_prob"].values > 1 - q + 1e-12).sum())
        assert float(row[5][0]) == pytest.approx(float(m["group_expected_excess"].sum()), rel=1e-12)
    fund = 5e4
    for row, name in zip(tables["stresses"], stress_ds["stress"].values):
        s = stress_ds.sel(stress=name)
        assert row[0][1] == str(name)
        assert (float(row[1][0]), float(row[2][0])) == (float(s["cover1"]), float(s["cover2"]))
        assert row[2][1] == money(s["cover2"])
        pools = [str(g) for g in s["cover_groups"].values if str(g)]
        assert row[3][1] == (", ".join(pools) or "none")
        assert row[4][1] == ("Cover-2 EXCEEDS the fund" if float(s["cover2"]) > fund else "within the fund")
    assert any(float(s) > fund for s in stress_ds["cover2"].values)   # both verdicts are exercised
    assert any(float(s) <= fund for s in stress_ds["cover2"].values)


def test_loss_distribution_is_the_pools_losses_binned(stress_ds, exported_book):
    """The binned distribution against the pools' losses recomputed from the files and the stored shocks
    (tests/recompute.py), and the VaR marked on it against the m-th largest of those losses."""
    ref = recompute.recompute(exported_book, stress_ds["shock"].to_pandas(), stress_ds["vol_shock"].to_pandas(),
                              accounts=stress_ds["account"].values, confidences=stress_ds["confidence"].values)
    groups = [str(g) for g in ref["groups"]]
    member = np.array([[g == str(a) for a in ref["account_group"]] for g in groups], dtype=float)
    group_loss = member @ ref["loss"]
    p = stress_ds.isel(model=0)
    gim = p["group_im"].values
    top = sorted(range(gim.size), key=lambda i: (-gim[i], i))[:3]
    assert [str(x) for x in stress_ds["loss_pool"].values] == [groups[i] for i in top]
    for k, i in enumerate(top):
        x = group_loss[i]
        edges = stress_ds["pool_loss_edge"].values[k]
        np.testing.assert_allclose(edges[[0, -1]], [x.min(), x.max()], rtol=1e-9)
        counts = stress_ds["pool_loss_count"].values[k]
        assert counts.sum() == x.size
        # the same bins over the recomputed losses: equal up to a loss within rounding of an edge
        ref_counts = np.histogram(np.clip(x, edges[0], edges[-1]), edges)[0]
        assert np.abs(counts - ref_counts).sum() <= 2 * np.isclose(x[:, None], edges[None, 1:-1], rtol=1e-9).sum()
        for j, q in enumerate(stress_ds["confidence"].values):
            var, es = recompute.var_es(x, q)
            assert float(p["group_var"].values[i, j]) == pytest.approx(var, rel=1e-9)
            assert float(p["group_es"].values[i, j]) == pytest.approx(es, rel=1e-9)
    tables, _ = read_page(render_report(stress_ds))
    assert [r[0][1] for r in tables["loss-pools"]] == [groups[i] for i in top]
    assert "every one of the run's 1,500 scenarios" in render_report(stress_ds)


def test_loss_distribution_of_the_first_scenarios(stress_ds, exported_book):
    """output.loss_scenarios=700: the first 700 scenarios by index are binned, the same losses as in the full run."""
    from jobs.stress import run

    ds = run(stress_config("portfolio=files", f"portfolio.dir={exported_book}", "scenarios.n=1500",
                           "output.loss_pools=2", "output.loss_bins=10", "output.loss_scenarios=700",
                           "stress_tests.names=[]"))
    ref = recompute.recompute(exported_book, stress_ds["shock"].to_pandas().iloc[:700],
                              stress_ds["vol_shock"].to_pandas().iloc[:700], accounts=stress_ds["account"].values,
                              confidences=[0.99])
    groups = [str(g) for g in ref["groups"]]
    for k, pool in enumerate(ds["loss_pool"].values):
        member = np.array([str(g) == str(pool) for g in ref["account_group"]], dtype=float)
        x = member @ ref["loss"]
        assert ds["pool_loss_count"].values[k].sum() == 700
        np.testing.assert_allclose(ds["pool_loss_edge"].values[k][[0, -1]], [x.min(), x.max()], rtol=1e-9)
    assert str(ds["loss_pool"].values[0]) in groups
    assert "the first 700 of the run's 1,500 scenarios" in render_report(ds)


def m_th_largest(x, q):
    """VaR as the cascade defines it: the m-th largest of ``x``, m = ceil(n (1 - q)) (a plain sort)."""
    m = math.ceil(round(x.size * (1 - q), 9))
    return np.sort(x)[::-1][m - 1]


def test_cascade_figures_equal_the_dataset(cascade_ds):
    """Every cascade figure on the page against numpy over the real run's variables; the fund needed and the
    exhausted share against a sort and a count of insurance_fund_need."""
    ds = cascade_ds
    html = render_report(ds)
    tables, _ = read_page(html)
    rows = {r[0][1]: r for r in tables["cascade"]}
    assert list(rows) == ["cascade_rounds", "liquidated_accounts", "insurance_fund_draw", "adl_volume",
                          "cascade_loss", "insurance_fund_need"]
    for v, r in rows.items():
        x = ds[v].values.astype(float)
        want = [x.mean(), np.median(x), np.quantile(x, 0.99), x.max(), (x > 0).mean()]
        assert [float(c[0]) for c in r[1:]] == pytest.approx(want, rel=1e-12)
        shown = [money(w) if ds[v].attrs["units"] == "USD" else f"{w:.6g}" for w in want[:4]]
        assert [c[1] for c in r[1:5]] == shown
    assert float(ds["adl_volume"].max()) > 0 and float(ds["cascade_rounds"].max()) >= 2    # exercised
    # the fund that avoids auto-deleveraging at q, and the share of scenarios that exhaust the run's fund
    need, fund, q = ds["insurance_fund_need"].values, 3e3, ds.attrs["margin_confidence"]
    assert f"at q = {q}: {money(m_th_largest(need, q))} USD" in html
    assert f"the run's fund: {money(fund)} USD" in html
    assert f"insurance fund exhausted in {100 * (need > fund).mean():.2f}% of scenarios" in html
    tails = tables["cascade-tails"]
    assert [float(r[0][0]) for r in tails] == list(ds["confidence"].values)
    draw = ds["insurance_fund_draw"].values
    assert [float(r[1][0]) for r in tails] == pytest.approx([m_th_largest(draw, c) for c in ds["confidence"].values],
                                                            rel=1e-15)
    # the price moves: signed log moves per asset, the falls negative
    move = ds["cascade_price_move"]
    for r in tables["cascade-price-move"]:
        x = move.sel(asset=r[0][1]).values
        assert [float(c[0]) for c in r[1:]] == pytest.approx(
            [x.mean(), x.min(), np.quantile(x, 0.01), x.max(), (x != 0).mean()], rel=1e-12, abs=0)
        assert r[2][1] == (f"{x.min():+.6f}" if x.min() else "0")
    assert (move.values < 0).any() and [r[0][1] for r in tables["cascade-price-move"]] == [
        str(a) for a in ds["asset"].values]
    # the named stresses: every variable as stored, and the largest fall the cascade added, with its asset
    st = tables["cascade-stresses"]
    names = [str(x) for x in ds["stress"].values]
    assert [r[0][1] for r in st] == names
    for j, v in enumerate(("stress_cascade_rounds", "stress_liquidated_accounts", "stress_insurance_fund_draw",
                           "stress_adl_volume", "stress_cascade_loss"), start=1):
        assert [float(r[j][0]) for r in st] == list(ds[v].values)
    assert [r[4][1] for r in st] == [money(x) for x in ds["stress_adl_volume"].values]
    for r, name in zip(st, names):
        m = ds["stress_cascade_price_move"].sel(stress=name).to_series()
        assert float(r[6][0]) == m.min() and r[7][1] == (m.idxmin() if m.min() < 0 else "")
    # the pools most often liquidated, by brute force over every pool
    lp = ds["group_liquidation_prob_cascade"].values
    want = sorted([i for i in range(lp.size) if lp[i] > 0], key=lambda i: (-lp[i], i))[:20]
    assert [r[0][1] for r in tables["cascade-pools"]] == [str(ds["group"].values[i]) for i in want]
    assert [float(r[1][0]) for r in tables["cascade-pools"]] == [lp[i] for i in want]


def test_stress_buffers_equal_the_dataset(cascade_ds):
    """The pools whose margin covers the named stresses least: the margin gap recomputed from group_stress_loss
    and group_im, the ranking by brute force."""
    p = cascade_ds.isel(model=0)
    html = render_report(cascade_ds, top=8)
    rows = read_page(html)[0]["required-buffers"]
    gim, loss = p["group_im"].values, p["group_stress_loss"].values
    gap = np.maximum(0.0, loss.max(axis=1) - gim)
    np.testing.assert_allclose(p["group_stress_margin_gap"].values, gap, rtol=1e-12, atol=1e-9)
    want = sorted([i for i in range(gap.size) if gap[i] > 0], key=lambda i: (-gap[i], i))[:8]
    assert [r[0][1] for r in rows] == [str(p["group"].values[i]) for i in want]
    assert [r[1][1] for r in rows] == [money(gap[i]) for i in want]
    assert [float(r[3][0]) for r in rows] == [gim[i] for i in want]
    assert [float(r[4][0]) for r in rows] == [loss[i].max() for i in want]
    # the buffer shown rescales group_im to the largest stress loss: group_im (1 + b) / (1 + b0) = max loss
    b0 = p.attrs["margin_buffer"]
    for r, i in zip(rows, want):
        b = float(r[2][0])
        assert gim[i] * (1 + b) / (1 + b0) == pytest.approx(loss[i].max(), rel=1e-9) or (b == 0 and gap[i] == 0)
    rb = p["group_required_buffer"].values
    assert (f"{int((rb > b0 + 1e-12).sum()):,} of {rb.size:,} pools need a buffer above the configured "
            f"{b0:g}") in html
    assert f"the margin to add is {money(gap.sum())} USD in all" in html


def test_backtest_table_equals_the_dataset():
    ds = backtest_dataset()
    tables, _ = read_page(render_report(ds))
    rows = tables["backtest-tests"]
    assert [r[0][1] for r in rows] == ["calm", "crisis"]
    for r, k in zip(rows, range(2)):
        assert float(r[1][0]) == float(ds["coverage"].values[k])
        assert int(r[2][0]) == int(ds["n_exceedances"].values[k]) == int(ds["exceedance"].values[:, k].sum())
        assert float(r[4][0]) == float(ds["kupiec_pvalue"].values[k])
        assert int(r[7][0]) == int(ds["red_windows"].values[k])
        assert r[8][1] == ("yes" if ds["passed"].values[k] else "NO")
    assert int(ds["red_windows"].values[1]) > 0


def test_backtest_procyclicality_equals_a_recomputation(calibration):
    """peak_to_trough and the largest 1- and 30-date increases, with and without anti-procyclicality, against
    the ratios recomputed from the stored margin (im; without APC: max(0, es) (1 + buffer))."""
    _, bt, _ = calibration
    rows = read_page(render_report(bt))[0]["backtest-procyclicality"]
    assert [r[0][1] for r in rows] == [str(x) for x in bt["portfolio"].values]
    no_apc = np.maximum(0.0, bt["es"].values) * (1 + float(bt.attrs["margin_buffer"]))
    for k, r in enumerate(rows):
        for j, im in ((1, bt["im"].values[:, k]), (2, no_apc[:, k])):
            got = [float(r[j][0]), float(r[j + 2][0]), float(r[j + 4][0])]
            want = [im.max() / im.min(), (im[1:] / im[:-1]).max() - 1, (im[30:] / im[:-30]).max() - 1]
            assert got == pytest.approx(want, rel=1e-12)
    assert float(rows[0][1][0]) < float(rows[0][2][0])       # APC damps the swings on this history


def test_buffer_section_equals_a_recomputation_from_the_backtest(calibration):
    """The required buffer, its coverage and mean margin, and the frontier rows against the backtest's stored
    im and loss rescaled by hand: margin at b = im (1 + b) / (1 + b0)."""
    _, bt, cal = calibration
    html = render_report(cal)
    tables, _ = read_page(html)
    b0 = float(bt.attrs["margin_buffer"])
    grid = cal["buffer"].values
    for k, r in enumerate(tables["required-buffer"]):
        name = str(cal["portfolio"].values[k])
        assert r[0][1] == name
        passed = cal["passed"].sel(portfolio=name).values
        b = grid[np.argmax(passed)]                          # the smallest passing buffer
        assert float(r[1][0]) == b and r[1][1] == f"{b:.6g}"
        im, loss = bt["im"].sel(portfolio=name).values, bt["loss"].sel(portfolio=name).values
        margin = im * (1 + b) / (1 + b0)
        assert float(r[2][0]) == pytest.approx((loss <= margin).mean(), rel=1e-12)
        assert r[3][1] == money(margin.mean())
        assert int(r[4][0]) == int((loss > margin).sum())
    assert [float(r[1][0]) for r in tables["required-buffer"]] == [0.07, 0.17, 0.23]
    frontier = tables["frontier-table"]
    for r in frontier:
        b, name = float(r[1][0]), r[0][1]
        im, loss = bt["im"].sel(portfolio=name).values, bt["loss"].sel(portfolio=name).values
        margin = im * (1 + b) / (1 + b0)
        assert float(r[2][0]) == pytest.approx((loss <= margin).mean(), rel=1e-12)
        assert float(r[3][0]) == pytest.approx(margin.mean(), rel=1e-12)
        assert r[8][1] == ("yes" if bool(cal["passed"].sel(buffer=b, portfolio=name)) else "no")
    assert {(r[0][1], float(r[1][0])) for r in frontier} >= {("long", 0.07), ("short", 0.17), ("hedged", 0.23)}
    assert {r[8][1] for r in frontier} == {"yes", "no"}


def test_buffer_table_equals_the_dataset():
    ds = buffer_dataset()
    tables, _ = read_page(render_report(ds))
    rows = tables["required-buffer"]
    assert float(rows[0][1][0]) == float(ds["required_buffer"].values[0]) == 0.4
    assert rows[0][2][0] == repr(float(ds["coverage"].sel(buffer=0.4, portfolio="a")))
    assert rows[1][1][1] == "none on the grid"


def test_report_path_is_named_after_the_dataset():
    assert str(report_path_for("out/stress.zarr")) == "out/stress.html"
    assert str(report_path_for("out/run.nc")) == "out/run.html"
    assert str(report_path_for("out/store")) == "out/store.html"


def test_stress_job_writes_its_report_beside_the_dataset(tmp_path):
    out = tmp_path / "out" / "stress.zarr"
    p = run_job("jobs.stress", "portfolio.n_accounts=60", "scenarios.n=1000", "backend=numpy", f"output.path={out}")
    assert p.returncode == 0, p.stderr
    page = tmp_path / "out" / "stress.html"
    assert page.is_file() and f"report written to {page} (" in p.stdout
    assert titles(page.read_text()) == ["Run", "Totals", "Loss distribution of the largest pools", "Named stresses"]
    other = tmp_path / "off.zarr"
    p = run_job("jobs.stress", "portfolio.n_accounts=60", "scenarios.n=1000", "backend=numpy",
                f"output.path={other}", "output.report=false", "output.loss_pools=0")
    assert p.returncode == 0, p.stderr
    assert other.exists() and not (tmp_path / "off.html").exists() and "report" not in p.stdout
    # jobs.report renders the stored dataset again, to a path of one's choice
    again = tmp_path / "again.html"
    p = run_job("jobs.report", f"dataset={out}", f"output.path={again}", "output.top=3")
    assert p.returncode == 0, p.stderr
    tables, _ = read_page(again.read_text())
    assert len(tables["largest-requirements"]) == 3
    p = run_job("jobs.report", f"dataset={other}")
    assert p.returncode == 0 and (tmp_path / "off.html").is_file()
    assert titles((tmp_path / "off.html").read_text()) == ["Run", "Totals", "Named stresses"]


@pytest.mark.parametrize("args,key", [
    ([], "dataset"),
    (["dataset=/nonexistent/x.zarr"], "dataset"),
    (["dataset={tmp}"], "dataset"),                       # a directory that is no dataset
    (["dataset={ds}", "output.path={tmp}"], "output.path"),  # a directory where the page should go
    (["dataset={ds}", "output.top=0"], "output.top"),
])
def test_report_job_errors_exit_2_and_write_nothing(tmp_path, stress_ds, args, key):
    from mcmargin.output.store import write_dataset

    ds_path = tmp_path / "d" / "s.nc"
    write_dataset(stress_ds.drop_vars(["shock", "vol_shock"]), ds_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(tmp=empty, ds=ds_path) for a in args]
    before = sorted(tmp_path.rglob("*"))
    p = run_job("jobs.report", *args)
    assert p.returncode == 2 and f"config key {key}" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_stress_job_refuses_a_report_path_that_is_a_directory(tmp_path):
    (tmp_path / "stress.html").mkdir()
    p = run_job("jobs.stress", "portfolio.n_accounts=20", "scenarios.n=200", "backend=numpy",
                f"output.path={tmp_path / 'stress.zarr'}")
    assert p.returncode == 2 and "stress.html" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "stress.zarr").exists()


def test_header_names_the_run_and_its_input_files(stress_ds, exported_book):
    """The header's checksums are the files' own sha256 (hashlib over the bytes, here), with the run's facts."""
    import hashlib
    import json

    html = render_report(stress_ds)
    sums = json.loads(stress_ds.attrs["input_sha256"])
    want = {str(f.resolve()): hashlib.sha256(f.read_bytes()).hexdigest() for f in exported_book.iterdir()
            if f.suffix == ".csv"}
    assert sums == want and len(want) == 5
    for path, digest in want.items():
        assert f"<tr><th>sha256 {path}</th><td>{digest}</td></tr>" in html
    for text in (f"{stress_ds.sizes['account']:,} accounts", "<th>scenario model</th><td>gaussian</td>",
                 "<th>backend</th><td>numpy</td>", "compute_s", f"mcmargin {json.loads(stress_ds.attrs['versions'])['mcmargin']}", "1,500"):
        assert text in html, text


def test_backtest_job_writes_its_report_beside_the_dataset(tmp_path):
    """The backtest job (a real dataset, not one built to the spec) writes bt.html beside bt.zarr by default."""
    from test_backtest import gaussian_history

    gaussian_history(300).reset_index().to_csv(tmp_path / "prices.csv", index=False)
    (tmp_path / "books.csv").write_text("portfolio,asset,quantity\nlong,A,3\nlong,B,1\nhedge,A,1\nhedge,B,-0.5\n")
    out = tmp_path / "bt.zarr"
    p = run_job("jobs.backtest", f"history={tmp_path / 'prices.csv'}", f"portfolios={tmp_path / 'books.csv'}",
                f"output.path={out}", "scenarios.n=200", "scenarios.lookback=250", "scenarios.horizon_days=1",
                "backtest.plots=false")
    assert p.returncode == 0, p.stderr
    page = (tmp_path / "bt.html").read_text()
    assert titles(page) == ["Run", "Backtest"]
    from mcmargin.output.store import open_dataset

    ds = open_dataset(out).load()
    tables, _ = read_page(page)
    assert [r[0][1] for r in tables["backtest-tests"]] == [str(x) for x in ds["portfolio"].values]
    assert [int(r[2][0]) for r in tables["backtest-tests"]] == [int(x) for x in ds["n_exceedances"].values]
    assert f"<th>sha256 history</th>" not in page and ds.attrs["history_sha256"] in page


def test_calibrate_buffer_job_writes_its_report_beside_the_dataset(calibration, tmp_path):
    """jobs.calibrate_buffer on a stored backtest writes cal.html beside cal.zarr by default (a grid on which
    one book has no passing buffer); output.report=false writes none; a report path that is a directory stops
    the job before any work (exit 2, nothing written)."""
    from mcmargin.output.store import open_dataset

    d, bt, _ = calibration
    grid = "buffer.grid={start: 0, stop: 0.2, step: 0.01}"
    out = tmp_path / "cal.zarr"
    p = run_job("jobs.calibrate_buffer", f"backtest_path={d / 'bt.zarr'}", grid, "buffer.target_coverage=0.995",
                f"output.path={out}", "output.plots=false")
    assert p.returncode == 0, p.stderr
    page = (tmp_path / "cal.html").read_text()
    assert "written: " in p.stdout and "cal.html" in p.stdout
    assert titles(page) == ["Run", "Buffer calibration"]
    ds = open_dataset(out).load()
    rows = read_page(page)[0]["required-buffer"]
    assert [r[0][1] for r in rows] == ["long", "short", "hedged"]
    assert [r[1][1] for r in rows] == ["0.07", "0.17", "none on the grid"]
    np.testing.assert_array_equal([float(r[1][0]) for r in rows], ds["required_buffer"].values)
    assert "No buffer on the grid (up to 0.2) passes for hedged: widen buffer.grid." in page
    assert f"<th>backtest source</th><td>{d / 'bt.zarr'}</td>" in page
    off = tmp_path / "off.zarr"
    p = run_job("jobs.calibrate_buffer", f"backtest_path={d / 'bt.zarr'}", grid, f"output.path={off}",
                "output.plots=false", "output.report=false")
    assert p.returncode == 0, p.stderr
    assert off.exists() and not (tmp_path / "off.html").exists() and ".html" not in p.stdout
    (tmp_path / "dir.html").mkdir()
    before = sorted(tmp_path.rglob("*"))
    p = run_job("jobs.calibrate_buffer", f"backtest_path={d / 'bt.zarr'}", f"output.path={tmp_path / 'dir.zarr'}")
    assert p.returncode == 2 and "config key output.report" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert sorted(tmp_path.rglob("*")) == before
