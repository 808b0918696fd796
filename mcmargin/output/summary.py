"""The short text summary a stress job prints."""

from __future__ import annotations

import numpy as np
import xarray as xr


def _money(x: float) -> str:
    return f"{x:,.0f}"


def summary(ds: xr.Dataset, top: int = 5) -> str:
    """Totals, netting benefits, largest requirements and largest calls.

    Every figure printed is a sum of a dataset variable (or a difference of
    two such sums), named beside it, so it can be checked against the dataset.
    With several margin models (a ``model`` dimension) a table compares them
    and the rest describes the primary (first) model.
    """
    models = []
    if "model" in ds.dims:
        models = _models_table(ds)
        ds = ds.isel(model=0)
    q = float(ds.attrs.get("margin_confidence", ds["confidence"][0]))
    singles = ds["group_members"] == 1
    pooled = ds["group"][~singles]
    im, gim = float(ds["im"].sum()), float(ds["group_im"].sum())
    name = ds.attrs.get("margin_model", "mc_es")
    label = f"(ES{q:g})" if name == "mc_es" else f"({name})"
    lines = [
        f"mcmargin stress run: {ds.sizes['account']:,} accounts, {int(pooled.size):,} multi-account groups, "
        f"{ds.attrs.get('n_scenarios', '?'):,} scenarios, backend {ds.attrs.get('backend', '?')}",
        f"  total equity                 {_money(float(ds['equity'].sum())):>20} USD",
        f"  total initial margin {label:<9}{_money(im):>20} USD (sum of im: accounts margined apart)",
        f"  total group initial margin   {_money(gim):>20} USD (sum of group_im: groups pooled)",
    ]
    if "isolated_im" in ds:
        iso = float(ds["isolated_im"].sum())
        lines += [
            f"  total isolated margin        {_money(iso):>20} USD (sum of isolated_im: each position alone, "
            "collateral excluded)",
            f"  netting benefit, accounts    {_money(float(ds['netting_benefit'].sum())):>20} USD "
            f"(sum of netting_benefit = isolated_im - im; {_pct(1 - im / max(iso, 1e-300))} of isolated)",
            f"  netting benefit, groups      {_money(iso - gim):>20} USD "
            f"(isolated_im - group_im, summed; {_pct(1 - gim / max(iso, 1e-300))} of isolated)",
            f"  cross-margin benefit         {_money(float(ds['group_netting_benefit'].sum())):>20} USD "
            "(sum of group_netting_benefit: pooling groups vs margining members apart)",
        ]
    if "collateral_im" in ds and name == "mc_es":      # mc_es figures, shown when mc_es is primary
        negative = int((ds["netting_benefit"] < 0).sum())
        lines += [
            f"  collateral margined alone    {_money(float(ds['collateral_im'].sum())):>20} USD "
            "(sum of collateral_im)",
            f"    {negative:,} accounts have a negative netting benefit: im covers positions and collateral "
            "together, isolated_im positions only, so risky collateral (not USD cash) raises im above "
            "isolated_im; collateral_im is that collateral's own requirement",
        ]
    if not models and "group_exceedance_prob" in ds:
        over, excess = _exceedance(ds, q)
        lines.append(f"  under the run's scenarios     {over:>19} pools exceed group_im more often than 1 - q; "
                     f"expected excess {excess} USD (sum of group_expected_excess)")
    lines += models
    lines.append(f"  margin calls                 {int((ds['group_margin_call'] > 0).sum()):>20,} groups, "
                 f"{_money(float(ds['group_margin_call'].sum()))} USD (sum of group_margin_call)")
    lines += _stress_lines(ds)
    lines += _cascade_lines(ds)
    lines += _table("largest requirements (group_im)", ds["group_im"], ds["group_equity"], top)
    lines += _table("largest margin calls (group_margin_call)", ds["group_margin_call"], ds["group_im"], top,
                    second="group_im")
    return "\n".join(lines)


def _stress_lines(ds: xr.Dataset) -> list[str]:
    """Per named stress: Cover-1, Cover-2, the pools behind them and, with a default fund, whether Cover-2 exceeds it."""
    if "cover2" not in ds:
        return _reverse_lines(ds)
    fund = ds.attrs.get("default_fund_size")
    head = "  named stresses (cover1, cover2: uncovered pool losses, USD"
    head += f"; default fund {_money(float(fund))} USD):" if fund is not None else "):"
    out = [head]
    for name in ds["stress"].values:
        c1, c2 = float(ds["cover1"].sel(stress=name)), float(ds["cover2"].sel(stress=name))
        pools = ", ".join(str(g) for g in ds["cover_groups"].sel(stress=name).values if str(g)) or "none"
        line = f"    {str(name):<20}{_money(c1):>16}{_money(c2):>16}   pools {pools}"
        if fund is not None:
            line += "   Cover-2 EXCEEDS the fund" if c2 > float(fund) else "   within the fund"
        out.append(line)
    if fund is not None:
        out.append(f"    default fund required (largest cover2) {_money(float(ds['default_fund_required'])):>14} USD")
    return out + _stress_buffer_lines(ds) + _reverse_lines(ds)


def _stress_buffer_lines(ds: xr.Dataset, top: int = 5) -> list[str]:
    """The margin the venue would add for every pool to cover every named stress, and the pools needing most."""
    if "group_stress_margin_gap" not in ds:
        return []
    gap = ds["group_stress_margin_gap"]
    short = int((gap > 0).sum())
    out = [f"  margin to cover every named stress {_money(float(gap.sum())):>14} USD over {short:,} pools "
           f"(sum of group_stress_margin_gap; {int((ds['group_stress_coverage'] < 1).sum()):,} pools cover "
           "fewer than all stresses, group_stress_coverage < 1)"]
    order = np.argsort(-gap.to_numpy(), kind="stable")[:top]
    for i in order:
        if gap[i] <= 0:
            break
        b = float(ds["group_required_buffer"][i])
        out.append(f"    {str(gap['group'][i].item()):<12} {_money(float(gap[i])):>18} USD   group_required_buffer "
                   f"{'inf' if b == float('inf') else f'{b:.4f}'}   group_im {_money(float(_primary(ds)['group_im'][i]))}")
    return out


def _primary(ds: xr.Dataset) -> xr.Dataset:
    return ds.isel(model=0) if "model" in ds.dims else ds


def _cascade_lines(ds: xr.Dataset) -> list[str]:
    """The liquidation cascade (docs/methodology.md, section 14): fund draws, auto-deleveraging, the fund needed."""
    if "cascade_loss" not in ds:
        return []
    q = float(ds.attrs["cascade_fund_needed_confidence"])
    fund = float(ds.attrs["cascade_insurance_fund"])
    needed = float(ds.attrs["cascade_fund_needed"])
    out = [f"  liquidation cascade (insurance fund {_money(fund)} USD):",
           f"    mean liquidated accounts    {float(ds['liquidated_accounts'].mean()):>18,.1f}   "
           f"mean rounds {float(ds['cascade_rounds'].mean()):.2f} (liquidated_accounts, cascade_rounds)",
           f"    mean cascade loss           {_money(float(ds['cascade_loss'].mean())):>18} USD (cascade_loss)",
           f"    fund exhausted in           {100 * float(ds['insurance_fund_exhausted_prob']):>17.2f}% of scenarios "
           "(insurance_fund_exhausted_prob)",
           f"    insurance fund needed to avoid auto-deleveraging at q = {q:g}: {_money(needed)} USD "
           "(VaR of insurance_fund_need)"]
    if "stress_cascade_loss" in ds:
        for name in ds["stress"].values:
            s = ds.sel(stress=name)
            out.append(f"    {str(name):<22} rounds {int(s['stress_cascade_rounds']):>3}   accounts "
                       f"{int(s['stress_liquidated_accounts']):>7,}   loss {_money(float(s['stress_cascade_loss'])):>15}"
                       f"   fund draw {_money(float(s['stress_insurance_fund_draw'])):>13}   "
                       f"ADL {_money(float(s['stress_adl_volume'])):>15} USD")
    return out


def _reverse_lines(ds: xr.Dataset) -> list[str]:
    """The reverse stress: the smallest move along its direction at which Cover-2 exceeds the fund."""
    if "reverse_stress_move" not in ds:
        return []
    move = float(ds["reverse_stress_move"])
    fund = _money(float(ds.attrs["reverse_stress_fund"]))
    if move != move:
        return [f"  reverse stress: no move along the direction (up to a log-return of 5) makes Cover-2 exceed {fund} USD"]
    pools = ", ".join(str(g) for g in ds["reverse_stress_groups"].values if str(g)) or "none"
    note = "" if int(ds.attrs.get("reverse_stress_monotone", 1)) else " (Cover-2 is not monotone: the smallest root found)"
    return [f"  reverse stress: Cover-2 exceeds {fund} USD from a move of {move:.4f} along the direction "
            f"(each asset's log-return = its weight x the move), pools {pools}{note}"]


def _models_table(ds: xr.Dataset) -> list[str]:
    """Per model: total margin, netting benefit, pools exceeded too often, the venue's expected excess."""
    q = float(ds.attrs.get("margin_confidence", 0.99))
    out = [f"  margin models (primary first; pools exceeded = group_exceedance_prob > {1 - q:.4g}):",
           f"    {'model':<12}{'sum group_im':>18}{'sum isolated_im':>18}{'netting benefit':>18}"
           f"{'pools exceeded':>16}{'expected excess':>18}{'sum group calls':>18}"]
    for name in ds["model"].values:
        m = ds.sel(model=name)
        iso = float(m["isolated_im"].sum()) if "isolated_im" in m else float("nan")
        gim = float(m["group_im"].sum())
        over, excess = _exceedance(m, q)
        out.append(f"    {str(name):<12}{_money(gim):>18}{_money(iso):>18}{_money(iso - gim):>18}"
                   f"{over:>16}{excess:>18}{_money(float(m['group_margin_call'].sum())):>18}")
    return out


def _exceedance(ds: xr.Dataset, q: float) -> tuple[str, str]:
    """(pools whose exceedance probability is above 1 - q, sum of group_expected_excess), as printed."""
    if "group_exceedance_prob" not in ds:
        return "-", "-"
    over = int((ds["group_exceedance_prob"] > 1 - q + 1e-12).sum())
    return f"{over:,}", _money(float(ds["group_expected_excess"].sum()))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _table(title, values, other, top, second="group_equity"):
    order = np.argsort(-values.to_numpy(), kind="stable")[:top]
    out = [f"  {title}:"]
    for i in order:
        if values[i] <= 0:
            break
        out.append(f"    {str(values['group'][i].item()):<12} {_money(float(values[i])):>18} USD"
                   f"   {second} {_money(float(other[i]))}")
    if len(out) == 1:
        out.append("    none")
    return out


#: Stages of the run table, in the order they run (timings attribute key -> label).
_STAGES = (("load_inputs_s", "load inputs"), ("compile_book_s", "compile book"), ("compute_s", "tails (engine)"),
           ("margin_s", "margin"), ("named_stress_s", "named stresses"), ("calibrate_s", "calibrate"),
           ("job_s", "whole job (before writing)"))


def run_table(ds: xr.Dataset) -> str:
    """The run as a table: what ran (seed, backend, code, inputs) and each stage's seconds.

    Read from the audit attributes (mcmargin/common/audit.py); stages the
    run did not have are left out.
    """
    import json

    timings = json.loads(ds.attrs.get("timings", "{}"))
    inputs = json.loads(ds.attrs.get("input_sha256", "{}"))
    commit = str(ds.attrs.get("git_commit", ""))[:12] or "not a git checkout"
    if int(ds.attrs.get("git_dirty", 0)):
        commit += " (with local changes)"
    rows = [("seed", str(ds.attrs.get("seed", "?"))),
            ("backend", f"{ds.attrs.get('backend', '?')} on {ds.attrs.get('device', '?')}"),
            ("code", f"mcmargin {ds.attrs.get('code_version', '?')}, {commit}"),
            ("input files", f"{len(inputs)} (sha256 in input_sha256)" if inputs else "none (synthetic book)")]
    rows += [(label, f"{float(timings[key]):10.3f} s") for key, label in _STAGES if key in timings]
    width = max(len(k) for k, _ in rows)
    rule = "  " + "-" * (width + 2 + max(len(v) for _, v in rows))
    return "\n".join([f"  {'run':<{width}}  (timings attribute: seconds per stage)", rule]
                     + [f"  {k:<{width}}  {v}" for k, v in rows])
