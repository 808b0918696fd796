"""The short text summary a stress job prints."""

from __future__ import annotations

import numpy as np
import xarray as xr


def _money(x: float) -> str:
    return f"{x:,.0f}"


def summary(ds: xr.Dataset, top: int = 5) -> str:
    """Totals, largest requirements, largest calls and netting benefit."""
    q = float(ds.attrs.get("margin_confidence", ds["confidence"][0]))
    singles = ds["group_members"] == 1
    pooled = ds["group"][~singles]
    lines = [
        f"mcmargin stress run: {ds.sizes['account']:,} accounts, {int(pooled.size):,} multi-account groups, "
        f"{ds.attrs.get('n_scenarios', '?'):,} scenarios, backend {ds.attrs.get('backend', '?')}",
        f"  total equity                 {_money(float(ds['equity'].sum())):>20} USD",
        f"  total initial margin (ES{q:g}) {_money(float(ds['im'].sum())):>20} USD (accounts margined apart)",
        f"  total group initial margin   {_money(float(ds['group_im'].sum())):>20} USD (groups pooled)",
        f"  total isolated margin        {_money(float(ds['isolated_im'].sum())):>20} USD (each position alone)",
        f"  netting benefit              {_money(float(ds['isolated_im'].sum() - ds['group_im'].sum())):>20} USD "
        f"({_pct(1 - float(ds['group_im'].sum()) / max(float(ds['isolated_im'].sum()), 1e-300))} of isolated)",
        f"  cross-margin benefit         {_money(float(ds['group_netting_benefit'].sum())):>20} USD "
        "(pooling groups vs margining members apart)",
        f"  margin calls                 {int((ds['group_margin_call'] > 0).sum()):>20,} groups, "
        f"{_money(float(ds['group_margin_call'].sum()))} USD",
    ]
    lines += _table("largest requirements (group_im)", ds["group_im"], ds["group_equity"], top)
    lines += _table("largest margin calls (group_margin_call)", ds["group_margin_call"], ds["group_im"], top,
                    second="group_im")
    return "\n".join(lines)


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
