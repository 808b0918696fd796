"""The sections of a report, each drawn from dataset variables and present only when they are.

Every section function takes the dataset (and the number of table rows) and
returns a :class:`~mcmargin.report.page.Section`, or None when the dataset
lacks its variables.  Every figure shown is a dataset variable, a sum of one,
or a count, named beside it, so the page can be checked against the dataset.
"""

from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from .page import Column, Figure, Section, Shown, chart, esc, key_values, money, number, share, table

#: Section titles, in page order (tests look for them on the page).
RUN, TOTALS, LOSSES, MODELS, STRESSES, CASCADE, BACKTEST, BUFFER = (
    "Run", "Totals", "Loss distribution of the largest pools", "Margin by model", "Named stresses",
    "Cascade", "Backtest", "Buffer calibration")

#: Colours of the Basel traffic-light zones.
ZONE_COLOURS = {"green": "rgba(46,160,67,0.10)", "yellow": "rgba(230,180,0,0.22)", "red": "rgba(210,40,40,0.22)"}


def strings(values) -> list[str]:
    """Labels as Python strings (StringDType, object and fixed-width arrays alike)."""
    return [str(v) for v in np.asarray(values).tolist()]


def pick(da: xr.DataArray, idx) -> list[str]:
    """The labels of ``da`` at positions ``idx`` of its one dimension, as strings.

    Rows are selected before they are converted: a million-row string
    variable read back from Zarr (an Arrow-backed array) costs about 0.6 s
    to convert whole, and a table needs twenty rows of it.
    """
    return strings(da.isel({da.dims[0]: np.asarray(idx, dtype=np.int64)}).values)


def primary(ds: xr.Dataset) -> xr.Dataset:
    """The primary (first) model's view of a stress dataset."""
    return ds.isel(model=0) if "model" in ds.dims else ds


def top_indices(values: np.ndarray, top: int, positive: bool = False) -> np.ndarray:
    """Indices of the ``top`` largest values, largest first (ties by position); only > 0 when ``positive``."""
    values = np.asarray(values, dtype=float)
    keep = np.flatnonzero(values > 0) if positive else np.flatnonzero(~np.isnan(values))
    if keep.size > top:
        # argpartition keeps a million-row table at O(n); the stable sort orders the few kept.
        part = np.argpartition(-values[keep], top - 1)[:top]
        cut = values[keep][part].min()
        keep = keep[values[keep] >= cut]
    order = np.argsort(-values[keep], kind="stable")
    return keep[order][:top]


def _attr_json(ds, key):
    try:
        return json.loads(ds.attrs[key])
    except (KeyError, TypeError, ValueError):
        return None


def _compact(value, limit: int = 120) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + " ..."


# ---------------------------------------------------------------------------- header


def run_header(ds: xr.Dataset, kind: str, top: int) -> Section:
    """Date, book size, scenario model and parameters, backend and device, timings, versions, checksums."""
    a = ds.attrs
    pairs = [("dataset", {"stress": "stress run", "backtest": "backtest",
                          "buffer": "buffer calibration"}[kind])]
    if "created" in a:
        pairs.append(("created", a["created"]))
    if "valuation_date" in a:
        pairs.append(("valuation date", a["valuation_date"]))
    if "date" in ds.dims:
        d = ds["date"].values
        pairs.append(("dates", f"{np.datetime_as_string(d[0], unit='D')} to "
                               f"{np.datetime_as_string(d[-1], unit='D')} ({d.size:,} dates)"))
    for key in ("first_date", "last_date", "backtest_first_date", "backtest_last_date", "n_days",
                "backtest_source"):
        if key in a:
            pairs.append((key.replace("_", " "), a[key]))
    size = []
    for dim, word in (("account", "accounts"), ("group", "pools"), ("instrument", "instruments"),
                      ("asset", "assets"), ("portfolio", "portfolios"), ("scenario", "scenarios stored"),
                      ("stress", "named stresses"), ("buffer", "buffers on the grid")):
        if dim in ds.dims:
            size.append(f"{ds.sizes[dim]:,} {word}")
    if "group_members" in ds:
        size.insert(2, f"{int((ds['group_members'] > 1).sum()):,} multi-account pools")
    pairs.append(("size", ", ".join(size)))
    model = _attr_json(ds, "scenario_model")
    if not isinstance(model, dict):
        model = _attr_json(ds, "model")           # a backtest's model and its parameters
    if isinstance(model, dict):
        name = model.get("model", "?")
        params = {k: v for k, v in model.items() if k != "model"}
        pairs.append(("scenario model", name))
        pairs.append(("scenario parameters", "; ".join(f"{k} = {_compact(v)}" for k, v in params.items())))
    elif "model" in a:
        pairs.append(("model", _compact(a["model"], 400)))
    for key in ("n_scenarios", "seed", "horizon_days"):
        if key in a:
            pairs.append((key.replace("_", " "), f"{a[key]:,}" if key == "n_scenarios" else a[key]))
    if "margin_models" in a or "margin_model" in a:
        pairs.append(("margin model(s)", a.get("margin_models", a.get("margin_model"))))
    for key in ("margin_confidence", "margin_buffer", "backtest_buffer", "target_coverage", "significance",
                "test_stride", "maintenance_ratio", "default_fund_size", "cascade_insurance_fund"):
        if key in a:
            pairs.append((key.replace("_", " "), number(a[key], 10)))
    if "margin_apc" in a:
        pairs.append(("anti-procyclicality (margin.apc)", a["margin_apc"]))
    for key in ("backend", "device", "kernel", "cluster"):
        if key in a:
            pairs.append((key, a[key]))
    timings = _attr_json(ds, "timings")
    if isinstance(timings, dict):
        shown = {k: v for k, v in timings.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        pairs.append(("timings", ", ".join(f"{k} {number(v, 4)}" for k, v in shown.items())))
    for key in ("code_version", "git_commit", "created", "created_by"):
        if key in a:
            pairs.append((key.replace("_", " "), a[key]))
    if "versions" in a:
        versions = _attr_json(ds, "versions")      # a JSON mapping (the audit trail) or, from older runs, a line
        pairs.append(("package versions", ", ".join(f"{k} {v}" for k, v in versions.items())
                      if isinstance(versions, dict) else a["versions"]))
    checksums = []
    for k in sorted(a):
        if "checksum" in k.lower() or "sha256" in k.lower():
            parsed = _attr_json(ds, k)
            if isinstance(parsed, dict):
                checksums += [(f"sha256 {path}", str(digest)) for path, digest in parsed.items()]
            else:
                checksums.append((k.replace("_", " "), _compact(str(a[k]), 2000)))
    pairs += checksums
    if not checksums:
        pairs.append(("input checksums", "no input file (a synthetic book)" if "input_sha256" in a
                      else "none recorded in the dataset"))
    body = key_values("run", pairs)
    if "config" in a:
        body += f"<details><summary>resolved configuration</summary><pre>{esc(a['config'])}</pre></details>"
    return Section(RUN, body)


# ---------------------------------------------------------------------------- stress run


def totals(ds: xr.Dataset, top: int) -> Section | None:
    """Equity, margin, isolated margin, netting benefit, calls; the largest requirements and calls."""
    if "group_im" not in ds:
        return None
    p = primary(ds)
    q = float(p.attrs.get("margin_confidence", 0.99))
    im, gim = float(p["im"].sum()), float(p["group_im"].sum())
    rows = [("total equity", p["equity"].sum(), "sum of equity"),
            ("total initial margin, accounts apart", im, "sum of im"),
            ("total initial margin, pools", gim, "sum of group_im")]
    if "isolated_im" in p:
        iso = float(p["isolated_im"].sum())
        rows += [("total isolated margin", iso, "sum of isolated_im (each position alone)"),
                 ("netting benefit, accounts", p["netting_benefit"].sum(), "sum of netting_benefit"),
                 ("netting benefit, pools", iso - gim, "sum of isolated_im - sum of group_im"),
                 ("cross-margin benefit", p["group_netting_benefit"].sum(), "sum of group_netting_benefit")]
    rows += [("total maintenance margin, pools", p["group_mm"].sum(), "sum of group_mm"),
             ("margin calls", p["group_margin_call"].sum(), "sum of group_margin_call")]
    calls = int((p["group_margin_call"] > 0).sum())
    model = str(ds.attrs.get("margin_model", "")) or (strings(ds["model"].values)[0] if "model" in ds.dims else "")
    caption = (f"the primary margin model, {model} (every model side by side: {MODELS})" if "model" in ds.dims
               else f"margin model {model}" if model else "")
    body = table("totals", [Column("figure", numeric=False), Column("USD", money),
                            Column("from the dataset", numeric=False)],
                 [(k, float(v), n) for k, v, n in rows], caption=caption)
    body += (f'<p id="calls-count">{calls:,} pools have a margin call '
             f"(group_margin_call &gt; 0) of {p.sizes['group']:,}.</p>")
    if "group_exceedance_prob" in p and "model" not in ds.dims:
        over = int((p["group_exceedance_prob"] > 1 - q + 1e-12).sum())
        body += (f"<p>{over:,} pools lose more than their group_im in a larger share of the run's scenarios "
                 f"than 1 - q = {1 - q:.4g} (group_exceedance_prob); expected excess over all pools "
                 f"{money(p['group_expected_excess'].sum())} USD (sum of group_expected_excess).</p>")
    body += _largest_requirements(p, q, top) + _largest_calls(p, top)
    return Section(TOTALS, body)


def _es_at(p: xr.Dataset, q: float) -> np.ndarray | None:
    if "group_es" not in p or "confidence" not in p.dims:
        return None
    conf = p["confidence"].values
    j = int(np.argmin(np.abs(conf - q)))
    return p["group_es"].values[:, j] if abs(conf[j] - q) < 1e-12 else None


def _largest_requirements(p: xr.Dataset, q: float, top: int) -> str:
    gim = p["group_im"].values
    idx = top_indices(gim, top)
    groups = pick(p["group"], idx)
    es = _es_at(p, q)
    cols = [Column("pool", numeric=False), Column("members", lambda v: f"{v:,}"), Column("group_equity", money),
            Column("group_im", money), Column("group_mm", money), Column("group_margin_call", money)]
    data = [groups, p["group_members"].values[idx], p["group_equity"].values[idx], gim[idx],
            p["group_mm"].values[idx], p["group_margin_call"].values[idx]]
    if es is not None:
        cols.append(Column(f"group_es at q={q:g}", money))
        data.append(es[idx])
    if "group_exceedance_prob" in p:
        cols.append(Column("group_exceedance_prob", share))
        data.append(p["group_exceedance_prob"].values[idx])
    if "group_status" in p:
        cols.append(Column("group_status", numeric=False))
        data.append(pick(p["group_status"], idx))
    return (f"<h3>Largest requirements (top {len(idx)} of {gim.size:,} pools by group_im)</h3>"
            + table("largest-requirements", cols, list(zip(*data))))


def _largest_calls(p: xr.Dataset, top: int) -> str:
    call = p["group_margin_call"].values
    idx = top_indices(call, top, positive=True)
    cols = [Column("pool", numeric=False), Column("group_margin_call", money), Column("group_im", money),
            Column("group_equity", money)]
    data = [pick(p["group"], idx), call[idx], p["group_im"].values[idx], p["group_equity"].values[idx]]
    if "group_margin_ratio" in p:
        cols.append(Column("group_margin_ratio", lambda v: number(v, 4)))
        data.append(p["group_margin_ratio"].values[idx])
    if "group_status" in p:
        cols.append(Column("group_status", numeric=False))
        data.append(pick(p["group_status"], idx))
    if "group_topup_asset" in p:
        cols += [Column("top-up asset", numeric=False), Column("group_topup_amount", lambda v: number(v, 8))]
        data += [pick(p["group_topup_asset"], idx), p["group_topup_amount"].values[idx]]
    n = int((call > 0).sum())
    return (f"<h3>Largest margin calls (top {len(idx)} of {n:,} pools with a call)</h3>"
            + table("largest-calls", cols, list(zip(*data)) if idx.size else []))


def loss_distribution(ds: xr.Dataset, top: int) -> Section | None:
    """Binned loss distribution of the largest pools (``pool_loss_count``), with VaR and ES marked."""
    if "pool_loss_count" not in ds or "group_var" not in ds:
        return None
    p = primary(ds)
    conf = p["confidence"].values
    pools = strings(ds["loss_pool"].values)
    where = dict(zip(pools, p.indexes["group"].get_indexer(pools).tolist()))
    counts, edges = ds["pool_loss_count"].values, ds["pool_loss_edge"].values
    n = counts[0].sum() if counts.size else 0
    total = int(ds.attrs.get("n_scenarios", n))
    which = (f"every one of the run's {int(n):,} scenarios" if n >= total
             else f"the first {int(n):,} of the run's {total:,} scenarios (output.loss_scenarios)")
    body = (f"<p>Each pool's loss in {which}, binned "
            f"({counts.shape[1]} bins between its smallest and largest loss: pool_loss_count, pool_loss_edge); "
            "the lines mark the pool's VaR (group_var, dashed) and ES (group_es, solid) at each confidence.</p>")
    rows = []
    for k, pool in enumerate(pools):
        i = where[pool]
        centre = 0.5 * (edges[k, 1:] + edges[k, :-1])
        fig = Figure().add_bar(x=centre, y=counts[k] / max(n, 1), width=np.diff(edges[k]),
                               name="share of scenarios", marker={"color": "#4a7ab5"},
                               hovertemplate="loss %{x:,.0f} USD<br>share %{y:.4%}<extra></extra>")
        for j, q in enumerate(conf):
            for var, dash, label in (("group_var", "dash", "VaR"), ("group_es", "solid", "ES")):
                x = float(p[var].values[i, j])
                fig.add_vline(x, color="#b00020" if label == "ES" else "#e07b00", dash=dash,
                              text=f"{label} {q:g}")
        fig.update_layout(title=f"pool {pool}: loss over the horizon (USD)", xaxis_title="loss (USD)",
                          yaxis_title="share of scenarios (log scale: the tail shows)", showlegend=False, bargap=0,
                          yaxis={"type": "log"})
        body += chart(fig, f"loss-{k}", height=320)
        rows.append([pool, p["group_im"].values[i]] + [p["group_var"].values[i, j] for j in range(conf.size)]
                    + [p["group_es"].values[i, j] for j in range(conf.size)])
    cols = ([Column("pool", numeric=False), Column("group_im", money)]
            + [Column(f"group_var q={q:g}", money) for q in conf] + [Column(f"group_es q={q:g}", money) for q in conf])
    body += table("loss-pools", cols, rows)
    return Section(LOSSES, body)


def margin_models(ds: xr.Dataset, top: int) -> Section | None:
    """Several models side by side: totals, exceedance probability and expected excess of each."""
    if "model" not in ds.dims or ds.sizes["model"] < 2:
        return None
    q = float(ds.attrs.get("margin_confidence", 0.99))
    names = strings(ds["model"].values)
    rows = []
    for k, name in enumerate(names):
        m = ds.isel(model=k)
        iso = float(m["isolated_im"].sum()) if "isolated_im" in m else float("nan")
        gim = float(m["group_im"].sum())
        over = int((m["group_exceedance_prob"] > 1 - q + 1e-12).sum()) if "group_exceedance_prob" in m else -1
        excess = float(m["group_expected_excess"].sum()) if "group_expected_excess" in m else float("nan")
        rows.append((name, gim, iso, iso - gim, over, excess, float(m["group_margin_call"].sum())))
    body = table("models", [Column("model", numeric=False), Column("sum group_im", money),
                            Column("sum isolated_im", money), Column("netting benefit", money),
                            Column(f"pools exceeded (group_exceedance_prob > {1 - q:.4g})",
                                   lambda v: "-" if v < 0 else f"{v:,}"),
                            Column("expected excess (sum group_expected_excess)", money),
                            Column("sum group_margin_call", money)], rows,
                 caption="primary model first")
    fig = Figure().add_bar(x=names, y=[r[1] for r in rows], name="sum group_im", marker={"color": "#4a7ab5"})
    fig.add_bar(x=names, y=[r[5] for r in rows], name="expected excess", marker={"color": "#b00020"})
    fig.update_layout(title="total pool margin and expected excess by model (USD)", barmode="group")
    body += chart(fig, "models-chart", height=320)
    # The largest pools (by the primary model), each model's requirement beside the others.
    p = ds.isel(model=0)
    idx = top_indices(p["group_im"].values, top)
    cols, data = [Column("pool", numeric=False)], [pick(ds["group"], idx)]
    for k, name in enumerate(names):
        m = ds.isel(model=k)
        cols.append(Column(f"group_im {name}", money))
        data.append(m["group_im"].values[idx])
        if "group_exceedance_prob" in m:
            cols += [Column(f"exceedance prob {name}", share), Column(f"expected excess {name}", money)]
            data += [m["group_exceedance_prob"].values[idx], m["group_expected_excess"].values[idx]]
    body += (f"<h3>Largest pools by the primary model ({names[0]}), every model's figures</h3>"
             + table("models-pools", cols, list(zip(*data))))
    return Section(MODELS, body)


def named_stresses(ds: xr.Dataset, top: int) -> Section | None:
    """The stress table: Cover-1, Cover-2, the pools behind them, against the default fund."""
    if "cover2" not in ds:
        return None
    names = strings(ds["stress"].values)
    fund = ds.attrs.get("default_fund_size")
    c1, c2 = ds["cover1"].values, ds["cover2"].values
    pools = [", ".join(g for g in strings(ds["cover_groups"].values[i]) if g) or "none" for i in range(len(names))]
    cols = [Column("stress", numeric=False), Column("cover1", money), Column("cover2", money),
            Column("pools behind them", numeric=False)]
    data = [names, c1, c2, pools]
    if fund is not None:
        cols.append(Column("against the default fund", numeric=False))
        data.append(["Cover-2 EXCEEDS the fund" if v > float(fund) else "within the fund" for v in c2])
    body = table("stresses", cols, list(zip(*data)),
                 caption="uncovered pool losses (group_uncovered_loss), USD")
    if fund is not None:
        body += (f'<p id="fund">default fund {money(fund)} USD; required (largest cover2, default_fund_required) '
                 f"{money(ds['default_fund_required']) if 'default_fund_required' in ds else money(c2.max())} USD.</p>")
    fig = Figure().add_bar(x=names, y=c1, name="Cover-1", marker={"color": "#4a7ab5"})
    fig.add_bar(x=names, y=c2, name="Cover-2", marker={"color": "#e07b00"})
    if fund is not None:
        fig.add_hline(float(fund), text="default fund")
    fig.update_layout(title="Cover-1 and Cover-2 by named stress (USD)", barmode="group")
    body += chart(fig, "stresses-chart", height=340)
    if "reverse_stress_move" in ds:
        move = float(ds["reverse_stress_move"])
        if math.isnan(move):
            body += "<p>Reverse stress: no move along the direction makes Cover-2 exceed the fund.</p>"
        else:
            behind = ", ".join(g for g in strings(ds["reverse_stress_groups"].values) if g) or "none"
            body += (f"<p>Reverse stress: Cover-2 exceeds the fund from a move of {move:.4f} along the direction "
                     f"(reverse_stress_move), pools {esc(behind)}.</p>")
    if "group_required_buffer" in ds:
        body += _stress_buffers(primary(ds), top)
    return Section(STRESSES, body)


def _stress_buffers(p: xr.Dataset, top: int) -> str:
    """The pools whose margin covers the named stresses least: group_stress_margin_gap (USD) first.

    Ranked by the gap when the dataset has it (a pool with no margin needs an
    infinite buffer however small its stress loss), else by the buffer.
    """
    rb = p["group_required_buffer"].values
    gap = p["group_stress_margin_gap"].values if "group_stress_margin_gap" in p else None
    rank = gap if gap is not None else np.where(np.isinf(rb), np.finfo(float).max, rb)
    idx = top_indices(rank, top, positive=True)
    buffer = lambda v: "none (group_im is 0)" if math.isinf(v) else number(v, 6)   # noqa: E731
    cols = [Column("pool", numeric=False)]
    data = [pick(p["group"], idx)]
    if gap is not None:
        cols.append(Column("group_stress_margin_gap", money))
        data.append(gap[idx])
    cols += [Column("group_required_buffer", buffer), Column("group_im", money)]
    data += [rb[idx], p["group_im"].values[idx]]
    if "group_stress_loss" in p:
        cols.append(Column("largest group_stress_loss", money))
        data.append(p["group_stress_loss"].max("stress").values[idx])
    if "group_stress_coverage" in p:
        cols.append(Column("group_stress_coverage", share))
        data.append(p["group_stress_coverage"].values[idx])
    short = int((rb > float(p.attrs.get("margin_buffer", 0)) + 1e-12).sum())
    text = (f'<p id="stress-buffers">{short:,} of {rb.size:,} pools need a buffer above the configured '
            f"{number(p.attrs.get('margin_buffer', 0), 6)} for group_im to cover every named stress "
            f"(group_required_buffer), {int(np.isinf(rb).sum()):,} of them with no margin to scale")
    if gap is not None:
        text += f"; the margin to add is {money(gap.sum())} USD in all (sum of group_stress_margin_gap)"
    by = "group_stress_margin_gap" if gap is not None else "group_required_buffer"
    return (text + ".</p>" + f"<h3>Pools whose margin covers the named stresses least (by {by})</h3>"
            + table("required-buffers", cols, list(zip(*data)) if idx.size else []))


_CASCADE_VARS = ("cascade_rounds", "liquidated_accounts", "insurance_fund_draw", "adl_volume", "cascade_loss")


def _by_units(da: xr.DataArray):
    """USD to the dollar, counts and rounds as counts (to 6 significant digits: a mean is fractional)."""
    return money if da.attrs.get("units") == "USD" else (lambda v: number(v, 6))


def _cascade_params(ds: xr.Dataset) -> str:
    """The cascade's settings (attr ``cascade_params``, a dict written as text) as one line."""
    import ast

    raw = ds.attrs.get("cascade_params")
    if raw is None:
        return ""
    try:
        params = ast.literal_eval(str(raw))
    except (ValueError, SyntaxError):
        params = None
    text = "; ".join(f"{k} = {v:,g}" if isinstance(v, (int, float)) else f"{k} = {v}"
                     for k, v in params.items()) if isinstance(params, dict) else str(raw)
    return f'<p id="cascade-params">cascade settings (cascade.*): {esc(text)}.</p>'


def cascade(ds: xr.Dataset, top: int) -> Section | None:
    """Rounds, liquidations, insurance-fund draw and auto-deleveraging across scenarios and named stresses."""
    per_scenario = [v for v in (*_CASCADE_VARS, "insurance_fund_need") if v in ds and ds[v].dims == ("scenario",)]
    per_stress = [f"stress_{v}" for v in _CASCADE_VARS if f"stress_{v}" in ds]
    if not per_scenario and not per_stress:
        return None
    body = _cascade_params(ds)
    if per_scenario:
        n = ds[per_scenario[0]].size
        rows, fmts = [], []
        for v in per_scenario:
            x = ds[v].values.astype(float)
            rows.append((v, float(x.mean()), float(np.quantile(x, 0.5)), float(np.quantile(x, 0.99)),
                         float(x.max()), float((x > 0).mean())))
        # One format per column, so each row's figures are shown in their variable's units.
        cell = lambda v: number(v, 6)      # noqa: E731
        usd = {v for v in per_scenario if ds[v].attrs.get("units") == "USD"}
        rows = [(r[0], *[Shown(x, money(x) if r[0] in usd else cell(x)) for x in r[1:5]], r[5]) for r in rows]
        body += table("cascade", [Column("variable", numeric=False)]
                      + [Column(h) for h in ("mean", "median", "99th percentile", "max")]
                      + [Column("share of scenarios > 0", share)], rows,
                      caption=f"across the {n:,} Monte Carlo scenarios (USD for the draws, volumes and losses)")
        if "insurance_fund_exhausted_prob" in ds:
            body += (f'<p id="fund-exhausted">insurance fund exhausted in '
                     f"{share(ds['insurance_fund_exhausted_prob'])} of scenarios "
                     f"(insurance_fund_exhausted_prob).</p>")
        if "cascade_fund_needed" in ds.attrs:
            q = ds.attrs.get("cascade_fund_needed_confidence", ds.attrs.get("margin_confidence", ""))
            body += (f'<p id="fund-needed">insurance fund needed to avoid auto-deleveraging at q = {q}: '
                     f"{money(ds.attrs['cascade_fund_needed'])} USD (VaR of insurance_fund_need, "
                     f"attr cascade_fund_needed)"
                     + (f"; the run's fund: {money(ds.attrs['cascade_insurance_fund'])} USD"
                        if "cascade_insurance_fund" in ds.attrs else "") + ".</p>")
        for k, v in enumerate(v for v in ("cascade_rounds", "insurance_fund_draw", "adl_volume",
                                          "insurance_fund_need") if v in per_scenario):
            x = ds[v].values.astype(float)
            if v == "cascade_rounds":
                values, counts = np.unique(x, return_counts=True)
                fig = Figure().add_bar(x=values, y=counts / x.size, marker={"color": "#4a7ab5"})
            else:
                counts, edges = np.histogram(x, bins=40)
                fig = Figure().add_bar(x=0.5 * (edges[1:] + edges[:-1]), y=counts / x.size, width=np.diff(edges),
                                       marker={"color": "#4a7ab5"})
                if v == "insurance_fund_need" and "cascade_insurance_fund" in ds.attrs:
                    fig.add_vline(float(ds.attrs["cascade_insurance_fund"]), text="the run's insurance fund")
            unit = " (USD)" if v in usd else ""
            fig.update_layout(title=f"{v}{unit} across scenarios", yaxis_title="share of scenarios", bargap=0.05)
            body += chart(fig, f"cascade-{k}", height=300)
    tails = [v for v in ("insurance_fund_draw_var", "insurance_fund_draw_es", "adl_volume_es") if v in ds]
    if tails and "confidence" in ds[tails[0]].dims:
        conf = ds[tails[0]]["confidence"].values
        body += table("cascade-tails", [Column("confidence", lambda v: f"{v:g}")] + [Column(v, money) for v in tails],
                      [(q, *(float(ds[v].sel(confidence=q)) for v in tails)) for q in conf])
    if "cascade_price_move" in ds and "asset" in ds["cascade_price_move"].dims:
        move = ds["cascade_price_move"].transpose("scenario", "asset").values
        assets = strings(ds["asset"].values)
        rows = [(name, float(move[:, j].mean()), float(move[:, j].min()), float(np.quantile(move[:, j], 0.01)),
                 float(move[:, j].max()), float((move[:, j] != 0).mean())) for j, name in enumerate(assets)]
        signed = lambda v: f"{v:+.6f}" if v else "0"   # noqa: E731 - a log move: negative when sellers pushed down
        body += "<h3>Price moves added by the cascade's market impact</h3>" + table(
            "cascade-price-move", [Column("asset", numeric=False), Column("mean", signed), Column("min", signed),
                                   Column("1st percentile", signed), Column("max", signed),
                                   Column("share of scenarios moved", share)], rows,
            caption="cascade_price_move: the signed log price move the forced sales added, across scenarios")
    if per_stress:
        names = strings(ds["stress"].values)
        cols = [Column("stress", numeric=False)] + [Column(v, _by_units(ds[v])) for v in per_stress]
        data = [names, *(ds[v].values for v in per_stress)]
        if "stress_cascade_price_move" in ds:
            sm = ds["stress_cascade_price_move"]
            worst = sm.values.min(axis=sm.dims.index("asset"))
            at = np.asarray(sm["asset"].values)[sm.values.argmin(axis=sm.dims.index("asset"))]
            cols += [Column("largest fall added (stress_cascade_price_move)", lambda v: f"{v:+.6f}" if v else "0"),
                     Column("asset", numeric=False)]
            data += [worst, [str(x) if w < 0 else "" for x, w in zip(at, worst)]]
        body += "<h3>Named stresses</h3>" + table("cascade-stresses", cols, list(zip(*data)),
                                                  caption="USD for the draws, volumes and losses")
    if "group_liquidation_prob_cascade" in ds:
        p = primary(ds)
        lp = p["group_liquidation_prob_cascade"].values
        idx = top_indices(lp, top, positive=True)
        cols = [Column("pool", numeric=False), Column("group_liquidation_prob_cascade", share)]
        data = [pick(p["group"], idx), lp[idx]]
        if "group_liquidation_prob" in p:
            cols.append(Column("group_liquidation_prob (no cascade)", share))
            data.append(p["group_liquidation_prob"].values[idx])
        body += "<h3>Pools most often liquidated</h3>" + table("cascade-pools", cols,
                                                                list(zip(*data)) if idx.size else [])
    return Section(CASCADE, body)


# ---------------------------------------------------------------------------- backtest


_TESTS = ("coverage", "n_exceedances", "n_days", "kupiec_pvalue", "christoffersen_pvalue",
          "conditional_coverage_pvalue", "red_windows", "passed")

#: Procyclicality of the margin (issue 16), with and without anti-procyclicality when both are stored.
_PROCYCLICALITY = ("peak_to_trough", "max_increase_1d", "max_increase_30d")


def _zones(lights) -> list[str]:
    lights = np.asarray(lights)
    if lights.dtype.kind in "iuf":
        names = np.array(["green", "yellow", "red"])
        return names[np.clip(lights.astype(int), 0, 2)].tolist()
    return strings(lights)


def _runs(zones: list[str]):
    """(start index, end index, zone) of each run of equal zones."""
    out, start = [], 0
    for i in range(1, len(zones) + 1):
        if i == len(zones) or zones[i] != zones[start]:
            out.append((start, i - 1, zones[start]))
            start = i
    return out


def backtest(ds: xr.Dataset, top: int) -> Section | None:
    """Margin against realised loss over time per portfolio, exceedances and zones; the test table."""
    if not {"date", "portfolio"} <= set(ds.dims) or "loss" not in ds or "im" not in ds:
        return None
    portfolios = strings(ds["portfolio"].values)
    dates = ds["date"].values
    body = ""
    present = [v for v in _TESTS if v in ds]
    if present:
        cols = [Column("portfolio", numeric=False)]
        for v in present:
            if v == "passed":
                cols.append(Column("passed", lambda x: "yes" if x else "NO", numeric=False))
            elif v in ("n_exceedances", "n_days", "red_windows"):
                cols.append(Column(v, lambda x: f"{int(x):,}"))
            elif v == "coverage":
                cols.append(Column(v, lambda x: share(x, 3)))
            else:
                cols.append(Column(v, lambda x: number(x, 4)))
        body += table("backtest-tests", cols, list(zip(portfolios, *(ds[v].values for v in present))),
                      caption="tests per portfolio")
    pro = [v for m in _PROCYCLICALITY for v in (m, f"{m}_no_apc") if v in ds and ds[v].dims == ("portfolio",)]
    if pro:
        apc = ds.attrs.get("margin_apc", "none")
        body += table("backtest-procyclicality", [Column("portfolio", numeric=False)]
                      + [Column(v, lambda x: number(x, 6)) for v in pro],
                      list(zip(portfolios, *(ds[v].values for v in pro))),
                      caption=f"procyclicality of the margin (margin.apc={apc}; _no_apc: the same margin without it)")
    for k, name in enumerate(portfolios):
        d = ds.isel(portfolio=k)
        im, loss = d["im"].values, d["loss"].values
        fig = Figure()
        if "traffic_light" in d:
            zones = _zones(d["traffic_light"].values)
            for a, b, zone in _runs(zones):
                if zone in ("yellow", "red"):
                    fig.add_vrect(dates[a], dates[b], ZONE_COLOURS[zone])
        fig.add_scatter(x=dates, y=loss, mode="lines", name="realised loss", line=dict(color="#8a96a3", width=1))
        fig.add_scatter(x=dates, y=im, mode="lines", name="margin (im)", line=dict(color="#1f5fa8", width=1.5))
        hit = d["exceedance"].values.astype(bool) if "exceedance" in d else loss > im
        fig.add_scatter(x=dates[hit], y=loss[hit], mode="markers", name="exceedance",
                        marker=dict(color="#b00020", size=6, symbol="x"))
        fig.update_layout(title=f"{name}: margin against realised loss (yellow/red: traffic-light zone)",
                          yaxis_title="USD", legend=dict(orientation="h"))
        body += chart(fig, f"backtest-{k}", height=340)
    return Section(BACKTEST, body)


# ---------------------------------------------------------------------------- buffer calibration


def buffer_calibration(ds: xr.Dataset, top: int) -> Section | None:
    """The coverage/margin frontier per portfolio and the required buffer, its tests and procyclicality."""
    if not {"buffer", "portfolio"} <= set(ds.dims) or "coverage" not in ds or "mean_margin" not in ds:
        return None
    portfolios = strings(ds["portfolio"].values)
    grid = ds["buffer"].values
    by = lambda v: ds[v].transpose("buffer", "portfolio").values   # noqa: E731
    cov, mean = by("coverage"), by("mean_margin")
    body = ""
    target = ds.attrs.get("target_coverage", ds.attrs.get("buffer_target_coverage"))
    tests = [v for v in ("n_exceedances", "kupiec_pvalue", "christoffersen_pvalue", "red_windows") if v in ds]
    pro = [v for v in _PROCYCLICALITY if v in ds]
    count = lambda x: "-" if math.isnan(x) else f"{int(x):,}"      # noqa: E731 - NaN: no buffer passes
    fmt = {"n_exceedances": count, "red_windows": count}
    at = [None] * len(portfolios)                   # the grid index of each portfolio's required buffer
    if "required_buffer" in ds:
        rb = ds["required_buffer"].values
        for k in range(len(portfolios)):
            hit = np.flatnonzero(grid == rb[k]) if not math.isnan(rb[k]) else []
            at[k] = int(hit[0]) if len(hit) else None
        nan = float("nan")
        rows = [(name, rb[k], *((cov[j, k], mean[j, k], *(by(v)[j, k] for v in tests)) if j is not None
                                else (nan,) * (2 + len(tests))),
                 *(by(v)[0 if j is None else j, k] for v in pro)) for k, (name, j) in enumerate(zip(portfolios, at))]
        body += table("required-buffer", [Column("portfolio", numeric=False),
                                          Column("required_buffer", lambda v: "none on the grid" if math.isnan(v)
                                                 else number(v, 6)),
                                          Column("coverage there", lambda v: share(v, 3)),
                                          Column("mean_margin there", money)]
                      + [Column(f"{v} there", fmt.get(v, lambda x: number(x, 4))) for v in tests]
                      + [Column(v, lambda x: number(x, 6), note="the same at every buffer: a ratio of margins")
                         for v in pro], rows,
                      caption="the smallest buffer on the grid that passes every test (passed)"
                              + (f"; target coverage {float(target):g}" if target is not None else "")
                              + ("; procyclicality does not depend on the buffer" if pro else ""))
        none = [name for name, j in zip(portfolios, at) if j is None]
        if none:
            body += (f'<p id="no-buffer">No buffer on the grid (up to {number(grid.max(), 6)}) passes for '
                     f"{esc(', '.join(none))}: widen buffer.grid.</p>")
    fig = Figure()
    for k, name in enumerate(portfolios):
        fig.add_scatter(x=mean[:, k], y=cov[:, k], mode="lines+markers", name=name, marker=dict(size=4),
                        customdata=grid, hovertemplate="buffer %{customdata:.2f}<br>mean margin %{x:,.0f}"
                                                       "<br>coverage %{y:.4f}<extra>" + esc(name) + "</extra>")
        if at[k] is not None:
            j = at[k]
            fig.add_scatter(x=[mean[j, k]], y=[cov[j, k]], mode="markers", showlegend=False,
                            marker=dict(size=12, symbol="star", color="#b00020"),
                            hovertemplate=f"{esc(name)}: required buffer {grid[j]:.4g}<extra></extra>")
    if target is not None:
        fig.add_hline(float(target), text="target coverage")
    fig.update_layout(title="coverage against mean margin as the buffer grows (star: required buffer)",
                      xaxis_title="mean margin (USD)", yaxis_title="coverage")
    body += chart(fig, "frontier", height=400)
    # The frontier as a table: every grid point would be long; a few points per portfolio read well.
    step = max(1, int(math.ceil(grid.size / 11)))
    picks = set(range(0, grid.size, step)) | {grid.size - 1}
    extra = tests + (["passed"] if "passed" in ds else [])
    rows = []
    for k, name in enumerate(portfolios):
        for j in sorted(picks | ({at[k]} if at[k] is not None else set())):
            rows.append((name, grid[j], cov[j, k], mean[j, k], *(by(v)[j, k] for v in extra)))
    fmt["passed"] = lambda x: "yes" if x else "no"
    body += "<h3>The frontier at a few buffers (and at the required one)</h3>" + table(
        "frontier-table", [Column("portfolio", numeric=False), Column("buffer", lambda v: f"{v:.4g}"),
                           Column("coverage", lambda v: share(v, 3)), Column("mean_margin", money)]
        + [Column(v, fmt.get(v, lambda x: number(x, 4)), numeric=v != "passed") for v in extra], rows)
    return Section(BUFFER, body)


#: Every section, in page order (the header comes first and is always there).
SECTIONS = (totals, loss_distribution, margin_models, named_stresses, cascade, backtest, buffer_calibration)
