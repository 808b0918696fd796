"""Every output figure recomputed from the input files and the exported shocks, without mcmargin.

A reference implementation written from the README and docs/methodology.md
only: instruments are revalued one by one (options by a Black-Scholes
written out here; inverse options by a change of numeraire into coin,
checked against QuantLib in tests/test_stress_job.py), positions are dense
[account x instrument] quantities, losses a dense product, and VaR / ES
read off a full sort.  Vectorised with NumPy so it stays fast; no sparse
factor netting, no streaming tails, no mcmargin import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from oracles import tail_size


def bs_usd(spot, strike, t, vol, is_call, rate=0.0):
    """Black-Scholes in USD; intrinsic at ``spot`` where t <= 0."""
    spot, vol = np.asarray(spot, float), np.asarray(vol, float)
    t = np.broadcast_to(np.asarray(t, float), spot.shape)
    alive = t > 0
    tt = np.where(alive, t, 1.0)
    sd = vol * np.sqrt(tt)
    d1 = (np.log(spot / strike) + (rate + 0.5 * vol * vol) * tt) / sd
    d2 = d1 - sd
    df = np.exp(-rate * tt)
    v = spot * norm.cdf(d1) - strike * df * norm.cdf(d2) if is_call else \
        strike * df * norm.cdf(-d2) - spot * norm.cdf(-d1)
    intrinsic = np.maximum(spot - strike, 0.0) if is_call else np.maximum(strike - spot, 0.0)
    return np.where(alive, v, intrinsic)


def black76(f, k, t, vol, is_call):
    """Undiscounted Black price of an option on a forward f, strike k (t > 0)."""
    sd = vol * np.sqrt(t)
    d1 = (np.log(f / k) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    return f * norm.cdf(d1) - k * norm.cdf(d2) if is_call else k * norm.cdf(-d2) - f * norm.cdf(-d1)


def inverse_option_coin(spot, strike, t, vol, is_call):
    """Value in coin of a coin-settled (inverse) option paying (S_T - K)+ / S_T (call) or (K - S_T)+ / S_T.

    With the coin as numeraire, X = 1/S is a lognormal martingale with the
    same vol, and (S_T - K)+ / S_T = K (1/K - X_T)+: a call in coin is K
    puts on X struck at 1/K, a put K calls (rate 0 in both currencies).
    """
    spot, vol = np.asarray(spot, float), np.asarray(vol, float)
    t = np.broadcast_to(np.asarray(t, float), spot.shape)
    alive = t > 0
    tt = np.where(alive, t, 1.0)
    v = strike * black76(1.0 / spot, 1.0 / strike, tt, vol, not is_call)
    intrinsic = (np.maximum(spot - strike, 0.0) if is_call else np.maximum(strike - spot, 0.0)) / spot
    return np.where(alive, v, intrinsic)


def read_book(book_dir: Path):
    def table(name, **kw):
        for ext, reader in ((".csv", pd.read_csv), (".parquet", pd.read_parquet)):
            p = Path(book_dir) / f"{name}{ext}"
            if p.exists():
                return reader(p, **kw) if ext == ".csv" else reader(p)
        return None

    ins = table("instruments", dtype={"instrument": str}).set_index("instrument")
    mkt = table("market").set_index("asset")
    pos = table("positions", dtype={"account": str})
    col = table("collateral", dtype={"account": str})
    accs = table("accounts", dtype={"account": str, "group": str})
    accs = accs.fillna("") if accs is not None else pd.DataFrame(columns=["account", "group"])
    pos["account"], col["account"] = pos["account"].astype(str), col["account"].astype(str)
    return ins, mkt, pos, col, accs


def _flag(x):
    return str(x).strip().lower() in ("true", "1", "yes", "t", "y")


def unit_pnl(ins, mkt, shock, vol_shock, valuation, horizon_calendar_days, rate=0.0):
    """{instrument: (USD value today, USD P&L per scenario)} of one contract."""
    today = pd.Timestamp(valuation)
    out = {}
    for name, r in ins.iterrows():
        s0 = float(mkt.loc[r.underlying, "price"])
        s1 = s0 * np.exp(shock[r.underlying])
        size = float(r.contract_size)
        if r.kind == "option":
            t0 = (pd.Timestamp(r.expiry) - today).days / 365.0
            t1 = t0 - horizon_calendar_days / 365.0
            has_vol = "vol" in r.index and not pd.isna(r.vol)
            vol0 = float(r.vol) if has_vol else float(mkt.loc[r.underlying, "vol"])
            vol1 = vol0 * np.exp(vol_shock[r.underlying])
            call = str(r.option_type).strip().lower() == "call"
            if _flag(r.inverse):
                assert rate == 0.0, "the coin derivation assumes rate 0"
                v0 = s0 * inverse_option_coin(np.array(s0), r.strike, t0, vol0, call)
                v1 = s1 * inverse_option_coin(s1, r.strike, t1, vol1, call)
            else:
                v0 = bs_usd(np.array(s0), r.strike, t0, vol0, call, rate)
                v1 = bs_usd(s1, r.strike, t1, vol1, call, rate)
            out[name] = (size * float(v0), size * (v1 - v0))
        elif _flag(r.inverse):                       # face value in USD, P&L in coin worth S' each
            out[name] = (0.0, size * (1.0 / s0 - 1.0 / s1) * s1)
        else:
            out[name] = (size * s0 if r.kind == "spot" else 0.0, size * (s1 - s0))
    return out


def var_es(losses, q):
    """VaR (m-th largest) and ES (mean of the m largest) along the last axis; m = ceil(N(1-q) - 1e-9)."""
    losses = np.asarray(losses, float)
    m = tail_size(losses.shape[-1], q)
    worst = -np.sort(-losses, axis=-1)[..., :m]
    return worst[..., m - 1], worst.mean(axis=-1)


def recompute(book_dir, shock: pd.DataFrame, vol_shock: pd.DataFrame, *, accounts, confidences,
              valuation="2026-11-25", horizon_calendar_days=2.0, buffer=0.1, maintenance_ratio=0.75,
              margin_confidence=0.99, rate=0.0):
    """Every figure of the output contract, as a dict of NumPy arrays in the dataset's coordinate order."""
    ins, mkt, pos, col, accs = read_book(book_dir)
    accounts = [str(a) for a in accounts]
    n = shock.shape[0]
    units = unit_pnl(ins, mkt, {a: shock[a].to_numpy() for a in shock.columns},
                     {a: vol_shock[a].to_numpy() for a in vol_shock.columns}, valuation, horizon_calendar_days, rate)
    names = list(units)
    value0 = np.array([units[i][0] for i in names])
    pnl = np.stack([units[i][1] for i in names])                          # [instrument x scenario]
    a_idx = {a: k for k, a in enumerate(accounts)}
    i_idx = {i: k for k, i in enumerate(names)}
    qty = np.zeros((len(accounts), len(names)))
    np.add.at(qty, (pos["account"].map(a_idx).to_numpy(), pos["instrument"].map(i_idx).to_numpy()),
              pos["quantity"].to_numpy(float))
    assets = list(mkt.index)
    amt = np.zeros((len(accounts), len(assets)))
    np.add.at(amt, (col["account"].map(a_idx).to_numpy(), col["asset"].map({a: k for k, a in enumerate(assets)})
                    .to_numpy()), col["amount"].to_numpy(float))
    price = mkt["price"].to_numpy(float)
    col_pnl = np.stack([price[k] * np.expm1(shock[a].to_numpy()) if a in shock.columns else np.zeros(n)
                        for k, a in enumerate(assets)])                     # [asset x scenario]
    loss = -(qty @ pnl + amt @ col_pnl)                                    # [account x scenario]
    equity = qty @ value0 + amt @ price
    scale = 1.0 + buffer
    qs = [float(q) for q in confidences]

    out = {"equity": equity}
    tails = [var_es(loss, q) for q in qs]
    out["var"] = np.stack([t[0] for t in tails], axis=1)
    out["es"] = np.stack([t[1] for t in tails], axis=1)
    k = qs.index(float(margin_confidence))
    es_m = out["es"][:, k]
    out["im"] = np.maximum(0.0, es_m) * scale
    out["mm"] = out["im"] * maintenance_ratio
    out["margin_call"] = np.maximum(0.0, out["im"] - equity)
    # unit_es: one long and one short contract of every instrument
    unit = np.stack([var_es(-pnl, margin_confidence)[1], var_es(pnl, margin_confidence)[1]], axis=1)
    out["unit_es"] = unit
    out["instruments"] = names
    # isolated: each position alone, its own ES from its own losses (no homogeneity assumed)
    r, c = np.nonzero(qty)
    pos_es = var_es(-qty[r, c][:, None] * pnl[c], margin_confidence)[1]
    out["isolated_im"] = np.bincount(r, weights=np.maximum(0.0, pos_es), minlength=len(accounts)) * scale
    out["netting_benefit"] = out["isolated_im"] - out["im"]
    # groups: every label, a singleton account labelled by its id
    group_of = {a: a for a in accounts}
    group_of.update({str(a): str(g) for a, g in zip(accs["account"], accs["group"]) if str(g).strip()})
    out["account_group"] = np.array([group_of[a] for a in accounts])
    groups = sorted(set(group_of.values()))
    member = np.array([[group_of[a] == g for a in accounts] for g in groups], dtype=float)   # [group x account]
    gloss = member @ loss
    gt = [var_es(gloss, q) for q in qs]
    out["groups"] = groups
    out["group_var"] = np.stack([t[0] for t in gt], axis=1)
    out["group_es"] = np.stack([t[1] for t in gt], axis=1)
    out["group_im"] = np.maximum(0.0, out["group_es"][:, k]) * scale
    out["group_mm"] = out["group_im"] * maintenance_ratio
    out["group_equity"] = member @ equity
    out["group_margin_call"] = np.maximum(0.0, out["group_im"] - out["group_equity"])
    out["group_members"] = member.sum(axis=1)
    out["group_isolated_im"] = member @ out["isolated_im"]
    out["group_netting_benefit"] = member @ out["im"] - out["group_im"]
    out["loss"] = loss
    return out


#: Figures compared, with their dims in the dataset.
FIGURES = ("equity", "im", "mm", "isolated_im", "netting_benefit", "margin_call", "var", "es", "unit_es",
           "group_equity", "group_im", "group_mm", "group_var", "group_es", "group_margin_call", "group_members",
           "group_isolated_im", "group_netting_benefit")


def dims_of(v):
    """The dims of figure ``v`` in the output contract (README "Outputs")."""
    if v == "unit_es":
        return ("instrument", "side")
    base = ("group",) if v.startswith("group_") else ("account",)
    return base + (("confidence",) if v.split("_")[-1] in ("var", "es") else ())


def assert_matches(ds, ref, rtol=1e-9, atol=1e-6):
    """Every figure of ``ds`` equals the recompute ``ref`` (coordinates aligned by label), with its dims."""
    assert [str(g) for g in ds["group"].values] == ref["groups"]
    for v in FIGURES:
        assert ds[v].dims == dims_of(v), (v, ds[v].dims)
    assert ds["account_group"].dims == ("account",)
    assert [float(q) for q in ds["confidence"].values] == sorted(float(q) for q in ds["confidence"].values)
    assert [str(g) for g in ds["account_group"].values] == list(ref["account_group"])
    for v in FIGURES:
        got = ds[v]
        if "instrument" in got.dims:
            got = got.sel(instrument=ref["instruments"], side=["long", "short"])
        np.testing.assert_allclose(got.values, ref[v], rtol=rtol, atol=atol, err_msg=v)
    return True


def horizon_calendar_days(rows, periods_per_year):
    """Calendar days a horizon of ``rows`` history rows spans: rows x 365 / rows per year."""
    return rows * 365.0 / periods_per_year

