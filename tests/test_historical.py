"""History-based scenario models (historical, fhs, t_copula) and fitted parametric parameters."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from mcmargin.backend import get_backend
from mcmargin.calibration import calibrate, fit_t_dof, save_params
from mcmargin.calibration.volatility import devolatize, filter_volatility
from mcmargin.errors import ConfigError, InputError
from mcmargin.stats.returns import daily_returns
from mcmargin.inputs.history import validate_history
from mcmargin.scenarios import build_scenarios

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ("BTC", "ETH", "SOL", "USDT")
VOLS = (0.55, 0.7, 0.9, 0.0)                 # USDT is cash
CORR = np.array([[1.0, 0.8, 0.6], [0.8, 1.0, 0.5], [0.6, 0.5, 1.0]])


def crypto_history(n=800, seed=0, vols=(0.6, 0.8, 1.0), dof=5.0, start="2022-01-01"):
    g = np.random.default_rng(seed)
    z = g.standard_normal((n, 3)) @ np.linalg.cholesky(CORR).T
    z *= np.sqrt((dof - 2) / g.chisquare(dof, n))[:, None]
    # a vol regime change halfway: FHS should rescale, historical should not
    scale = np.where(np.arange(n) < n // 2, 1.0, 0.5)[:, None]
    r = z * scale * np.asarray(vols) / math.sqrt(365)
    p = np.exp(np.vstack([np.zeros(3), np.cumsum(r, axis=0)])) * [60000, 3000, 100]
    idx = pd.date_range(start, periods=n + 1, freq="D", name="date")
    df = pd.DataFrame(p, index=idx, columns=["BTC", "ETH", "SOL"])
    df["USDT"] = 1.0
    df["VOL"] = 50 * np.exp(np.cumsum(g.standard_normal(n + 1) * 0.05))
    return validate_history(df, file="sim.csv")


@pytest.fixture(scope="module")
def hist():
    return crypto_history()


def cfg(model, **kw):
    base = dict(model=model, n=500, seed=3, horizon_days=1, params=None, lookback=400)
    base.update(kw)
    return base


def build(c, history, assets=ASSETS, vols=VOLS):
    return build_scenarios(c, assets, vols, history)


# ----------------------------------------------------------------------------- historical
def test_historical_is_every_overlapping_window_once(hist):
    m = build(cfg("historical", horizon_days=3, n=7), hist)
    assert m.n == 400 - 3 + 1                                   # N fixed by the data, not scenarios.n
    shock, vol = m.draw_numpy()
    logp = np.log(hist[["BTC", "ETH", "SOL"]].to_numpy())
    want = logp[-398:] - logp[-401:-3]                          # windows ending on the last 398 rows
    assert np.allclose(shock[:, :3], want, atol=1e-13)
    assert np.all(shock[:, 3] == 0) and np.all(vol[:, 3] == 0)  # cash
    d = m.describe()
    assert d["n"] == 398 and "ignored" in d["n_source"]
    assert d["scenario_end_dates"][-1] == str(hist.index[-1].date()) and len(d["scenario_end_dates"]) == 398
    json.dumps(d)


def test_historical_constant_price_series_gets_zero_not_nan(hist):
    # USDT treated as a moving asset (market vol > 0) with a constant price: zero shocks, finite
    m = build(cfg("historical"), hist, vols=(0.55, 0.7, 0.9, 0.01))
    shock, vol = m.draw_numpy()
    assert np.all(shock[:, 3] == 0) and np.all(vol[:, 3] == 0) and np.isfinite(shock).all()


def test_historical_stressed_period_alone_blended_and_floor():
    h = crypto_history(n=900, start="2020-01-01")
    alone = build(cfg("historical", stress_period="2020-02..2020-04", stress_weight=1.0), h)
    dates = pd.to_datetime(alone.describe()["scenario_end_dates"])
    assert dates.min() >= pd.Timestamp("2020-02-01") and dates.max() <= pd.Timestamp("2020-04-30")
    assert alone.n == 29 + 31 + 30
    blend = build(cfg("historical", stress_period={"start": "2020-02", "end": "2020-04"}, stress_weight=0.25), h)
    d = blend.describe()
    assert abs(d["stress_share"] - 0.25) < 0.005
    ends = pd.to_datetime(d["scenario_end_dates"])
    assert np.mean((ends >= "2020-02-01") & (ends <= "2020-04-30")) == pytest.approx(d["stress_share"])
    # floor at the vol of the whole history: the calm look-back (half vol) is scaled up to it
    plain = build(cfg("historical"), h)
    floored = build(cfg("historical", vol_floor_lookback=900), h)
    s0, s1 = plain.draw_numpy()[0][:, 0], floored.draw_numpy()[0][:, 0]
    ratio = floored.describe()["vol_floor_scale"]["BTC"]
    assert ratio > 1.2 and np.allclose(s1, s0 * ratio)


# ----------------------------------------------------------------------------- fhs
def test_fhs_bootstraps_whole_residual_vectors(hist):
    """Every FHS scenario (h = 1) is a row of look-back residuals times today's vol: dependence kept."""
    m = build(cfg("fhs", n=3000, ewma_lambda=0.94), hist)
    shock, _ = m.draw_numpy()
    r = daily_returns(hist[["BTC", "ETH", "SOL"]])
    vf = filter_volatility(r, "ewma", 0.94)
    z = devolatize(r, vf.sigma2).iloc[-400:].to_numpy()
    sigma = np.sqrt(vf.forecast.to_numpy())
    assert np.allclose(np.sqrt(m.sigma2), sigma)
    # each scenario is sigma * (one residual row): same row index for all assets
    ratio = shock[:, :3] / sigma
    match = np.abs(ratio[:, None, :] - z[None, :, :]).max(axis=2) < 1e-12
    assert match.any(axis=1).all()
    # hence the cross-sectional dependence of the residuals is preserved
    assert np.abs(np.corrcoef(shock[:, :3].T) - np.corrcoef(z.T)).max() < 0.05
    # and the vol is today's (the calm second half), not the look-back average
    assert np.allclose(shock[:, :3].std(axis=0), sigma * z.std(axis=0), rtol=0.08)


def test_fhs_multi_row_horizon_stress_floor_and_implied_vol(hist):
    base = build(cfg("fhs", n=2000, horizon_days=2), hist)
    s, v = base.draw_numpy()
    assert np.allclose(s[:, :3].std(axis=0), np.sqrt(2 * base.sigma2[:3]), rtol=0.12)
    # stressed vol of the first (wild) half blended at 25%
    stressed = build(cfg("fhs", n=200, stress_period="2022-01..2022-12", stress_weight=0.25), hist)
    d = stressed.describe()
    for a in ("BTC", "ETH", "SOL"):
        assert d["vol"][a] == pytest.approx(0.75 * d["forecast_vol"][a] + 0.25 * d["stressed_vol"][a])
        assert d["stressed_vol"][a] > d["forecast_vol"][a]
    floored = build(cfg("fhs", n=200, vol_floor_lookback=800), hist)
    d = floored.describe()
    assert all(d["vol"][a] == pytest.approx(max(d["forecast_vol"][a], d["floor_vol"][a])) for a in ("BTC", "SOL"))
    # implied vol of BTC from the VOL column (filtered log changes), parametric for the others
    iv = build(cfg("fhs", n=1000, implied_vol_columns={"BTC": "VOL"},
                   risk_factors={"ETH": {"vol_of_vol": 2.0, "spot_vol_corr": -0.5}}), hist)
    s, v = iv.draw_numpy()
    d = iv.describe()
    assert d["implied_vol_columns"] == {"BTC": "VOL"} and set(d["parametric_vol"]) == {"ETH", "SOL"}
    assert d["parametric_vol"]["ETH"]["vol_of_vol"] == 2.0
    assert v[:, 0].std() == pytest.approx(d["vol"]["VOL"] / math.sqrt(365), rel=0.15)
    assert v[:, 1].std() == pytest.approx(2.0 * math.sqrt(1 / 365), rel=0.1)
    assert np.corrcoef(s[:, 1], v[:, 1])[0, 1] == pytest.approx(-0.5, abs=0.1)
    assert np.all(v[:, 3] == 0)


def test_fhs_late_start_and_garch(hist):
    h = hist.copy()
    h.iloc[:600, 2] = np.nan                                  # SOL starts late: 201 prices left
    m = build(cfg("fhs", vol_method="garch", lookback=None, n=100), h)
    d = m.describe()
    assert d["residual_rows"] == 200 and d["vol_method"] == "garch"
    assert np.isfinite(m.draw_numpy()[0]).all()
    h.iloc[:790, 2] = np.nan
    with pytest.raises(InputError, match="only .* complete residual row"):
        build(cfg("fhs"), h)


# ----------------------------------------------------------------------------- every model
@pytest.mark.parametrize("model,extra", [
    ("historical", {"horizon_days": 2}),
    ("fhs", {"horizon_days": 3}),
    ("t_copula", {"default_factor": {"vol": None, "vol_of_vol": 1.0, "spot_vol_corr": -0.3}}),
])
def test_chunking_and_backends_do_not_change_scenarios(hist, model, extra):
    m = build(cfg(model, n=300, **extra), hist)
    s, v = m.draw_numpy()
    assert s.shape == (m.n, 4) and v.shape == (m.n, 4) and np.isfinite(s).all() and np.isfinite(v).all()
    parts = [m.draw_numpy(a, b) for a, b in ((0, 7), (7, 150), (150, m.n))]
    assert np.array_equal(np.vstack([p[0] for p in parts]), s)
    assert np.array_equal(np.vstack([p[1] for p in parts]), v)
    for name in ("jax", "array_api_strict"):
        b = get_backend(name)
        s2, v2 = m.draw(0, m.n, b)
        assert np.allclose(b.to_numpy(s2), s, atol=1e-14) and np.allclose(b.to_numpy(v2), v, atol=1e-14)
    again = build(cfg(model, n=300, **extra), hist)
    assert np.array_equal(again.draw_numpy()[0], s)


# ----------------------------------------------------------------------------- t copula and fitted parameters
def test_t_copula_marginals_and_dependence():
    corr = [[1.0, 0.7, 0.3], [0.7, 1.0, 0.2], [0.3, 0.2, 1.0]]
    c = dict(model="t_copula", n=20000, seed=1, horizon_days=365, copula_dof=4.0, marginal_dof=5.0,
             risk_factors={"BTC": {"vol": 0.5, "dof": 3.0}, "ETH": {"vol": 0.8}, "SOL": {"vol": 1.0, "dof": 30.0}},
             correlation=corr)
    m = build_scenarios(c, ASSETS, VOLS)
    s, v = m.draw_numpy()
    assert np.all(s[:, 3] == 0)
    assert np.allclose(s[:, :3].std(axis=0), [0.5, 0.8, 1.0], rtol=0.08)          # vol is the marginal std
    nu = [fit_t_dof(s[:, j])["dof"] for j in range(3)]
    assert nu[0] == pytest.approx(3.0, abs=0.6) and nu[1] == pytest.approx(5.0, abs=1.5) and nu[2] > 12
    from scipy.stats import spearmanr
    rho_s = spearmanr(s[:, :3]).statistic
    want = 6 / math.pi * np.arcsin(np.asarray(corr) / 2)                       # Gaussian-copula approximation
    assert np.abs(rho_s - want).max() < 0.05
    assert m.describe()["marginal_dof"] == [3.0, 5.0, 30.0]


def test_parametric_models_take_params_file_or_history(hist, tmp_path):
    ds = calibrate(hist, {"lookback": 400}, assets=["BTC", "ETH"])
    path = save_params(ds, tmp_path / "p.nc")
    gcfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "scenarios" / "gaussian.yaml"))
    # SOL and XRP are not in the file: they take the configured values only when asked (issue 10).
    gcfg.update(n=200, params=path, params_fallback=True)
    assets, vols = ("BTC", "ETH", "SOL", "XRP", "USDT"), (0.5, 0.6, 0.9, 0.75, 0.0)
    m = build_scenarios(gcfg, assets, vols)
    d = m.describe()
    assert d["factors"] == ["BTC", "ETH", "SOL", "XRP"]
    assert d["vol"][:2] == pytest.approx(ds["vol"].values.tolist())             # from the dataset
    assert d["vol"][2] == 0.90 and d["vol"][3] == 0.75                           # config, then market vol
    corr = np.array(d["correlation"])
    assert corr[0, 1] == pytest.approx(float(ds["correlation"][0, 1]))
    assert corr[0, 3] == 0 and corr[0, 2] == pytest.approx(0.7, abs=0.05)         # config entry (repaired mix)
    # on the fly, from the history, when no params file is given
    gcfg.update(params=None)
    m2 = build_scenarios(gcfg, ASSETS, VOLS, hist)
    assert m2.describe()["vol"] == pytest.approx(calibrate(hist, gcfg, assets=["BTC", "ETH", "SOL"])["vol"].values)
    scfg = dict(gcfg, model="student_t", dof=4)
    assert build_scenarios(scfg, ASSETS, VOLS, hist).describe()["dof"] != 4        # fitted joint dof
    # fhs takes the dataset's vol as today's forecast (residuals still from the history)
    f = build(cfg("fhs", params=path, params_fallback=True), hist)
    assert math.sqrt(f.sigma2[0]) == pytest.approx(float(ds["vol"].sel(asset="BTC")) / math.sqrt(365))
    assert "p.nc" in f.describe()["vol_forecast_from"]
    # without default_factor an unnamed moving asset is still an error
    del gcfg["default_factor"]
    with pytest.raises(ConfigError, match="XRP"):
        build_scenarios(gcfg, assets, vols)


# ----------------------------------------------------------------------------- errors and configs
def test_errors_name_the_key_or_file(hist):
    with pytest.raises(ConfigError, match="history"):
        build(cfg("fhs"), None)
    with pytest.raises(InputError, match="sim.csv.*XRP"):
        build(cfg("historical"), hist, assets=("BTC", "XRP"), vols=(0.5, 0.7))
    with pytest.raises(ConfigError, match="scenarios.horizon_days.*rows"):
        build(cfg("fhs", horizon_days=1.5), hist)
    with pytest.raises(ConfigError, match="scenarios.params"):
        build(cfg("historical", params="x.nc"), hist)
    with pytest.raises(InputError, match="stressed period gfc"):
        build(cfg("fhs", stress_period="gfc"), hist)
    with pytest.raises(ConfigError, match="scenarios.stress_weight"):
        build(cfg("fhs", stress_period="2022-01..2022-06", stress_weight=1.5), hist)
    with pytest.raises(ConfigError, match="scenarios.stress_period"):
        build(cfg("historical", stress_period="crash"), hist)
    with pytest.raises(InputError, match="no column 'VIX'"):
        build(cfg("fhs", implied_vol_columns={"BTC": "VIX"}), hist)
    with pytest.raises(ConfigError, match="scenarios.ewma_lambda"):
        build(cfg("fhs", ewma_lambda=0), hist)


@pytest.mark.parametrize("name", ["t_copula", "historical", "fhs"])
def test_config_files_hold_every_key(name, hist):
    raw = OmegaConf.load(ROOT / "conf" / "scenarios" / f"{name}.yaml")
    if "defaults" in raw:
        raw = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "scenarios" / "gaussian.yaml"), raw)
        del raw["defaults"]
    c = OmegaConf.to_container(raw)
    assert {"model", "n", "seed", "horizon_days", "params"} <= set(c) and c["model"] == name
    if name != "t_copula":
        for key in ("lookback", "ewma_lambda" if name == "fhs" else "lookback", "stress_period", "stress_weight",
                    "vol_floor_lookback", "implied_vol_columns", "default_factor"):
            assert key in c
    c.update(n=100, lookback=300)
    m = build(c, hist)                                      # the defaults build a model
    assert np.isfinite(m.draw_numpy()[0]).all()


# ----------------------------------------------------------------------------- against their definitions
# Each model's draws against what its definition implies, to 3 standard errors (tests/oracles.py), on
# 200,000 draws (or windows), with the inputs of the definition recomputed here from the prices.
from scipy import stats  # noqa: E402

from oracles import assert_within, corr_se, quantile_se, std_se  # noqa: E402

N_DEF = 200_000
N_HIST = 100_000           # daily rows of a simulated history (pandas dates end in 2262)


def gaussian_history(n, vols, corr, seed, freq="D"):
    """Log-normal prices with known daily vols vol / sqrt(365) and correlation, ending 2026-11-25."""
    g = np.random.default_rng(seed)
    r = g.standard_normal((n, len(vols))) @ np.linalg.cholesky(np.asarray(corr)).T * np.asarray(vols) / math.sqrt(365)
    p = np.exp(np.vstack([np.zeros(len(vols)), np.cumsum(r, axis=0)])) * 100.0
    idx = pd.date_range(end="2026-11-25", periods=n + 1, freq=freq, name="date")
    return validate_history(pd.DataFrame(p, index=idx, columns=["BTC", "ETH"]), file="known.csv"), r


def test_historical_windows_have_the_simulated_vol_and_correlation():
    """Historical simulation over 100,000 daily rows of known vol and correlation: every window once, so
    the std of the h-row returns is vol sqrt(h / 365) and their correlation the simulated one (SE from
    the non-overlapping windows); parametric vol shocks: std nu sqrt(h / ppy), spot-vol correlation rho."""
    vols, corr, h = (0.6, 0.9), [[1.0, 0.7], [0.7, 1.0]], 3
    hist_, _ = gaussian_history(N_HIST, vols, corr, seed=41)
    c = cfg("historical", horizon_days=h, lookback=None, default_factor={"vol_of_vol": 1.2, "spot_vol_corr": -0.4})
    m = build(c, hist_, assets=("BTC", "ETH"), vols=(0.5, 0.5))
    assert m.n == N_HIST - h + 1
    shock, vol = m.draw_numpy()
    logp = np.log(hist_[["BTC", "ETH"]].to_numpy())
    np.testing.assert_allclose(shock, logp[h:] - logp[:-h], rtol=0, atol=1e-12)     # the definition, exactly
    iid = shock[::h]                                                                 # non-overlapping windows
    sd, se = std_se(iid, kurtosis=3.0)
    assert_within(sd, np.asarray(vols) * math.sqrt(h / 365), se, "std of the history's h-row returns")
    r, se = corr_se(iid[:, 0], iid[:, 1])
    assert_within(r, 0.7, se, "correlation of the history's windows")
    ppy = m.describe()["periods_per_year"]
    assert ppy == 365
    for j in range(2):
        vsd, vse = std_se(vol[:, j], kurtosis=3.0)
        assert_within(vsd, 1.2 * math.sqrt(h / ppy), vse, "parametric vol-shock std")
        r, se = corr_se(vol[:, j], shock[:, j])
        assert_within(r, -0.4, se, "spot-vol correlation of the historical model")


def ewma_forecast(r, lam):
    """EWMA variance written out: sigma2[t+1] = lam sigma2[t] + (1 - lam) r[t]^2, ex ante; started on the
    first 30 returns' mean square (the start is forgotten after a few hundred rows: lam^400 ~ 1e-11)."""
    s2 = np.empty_like(r)
    cur = np.mean(r[:30] ** 2, axis=0)
    for t in range(r.shape[0]):
        s2[t] = cur
        cur = lam * cur + (1 - lam) * r[t] ** 2
    return s2, cur


@pytest.mark.parametrize("horizon", [1, 2])
def test_fhs_matches_its_definition(horizon):
    """FHS (EWMA 0.94, 400-row look-back) on a simulated history: residuals z_t = r_t / sigma_t and today's
    forecast recomputed here; one row: E[shock shock'] = sigma sigma' mean(z z'); two rows: E[shock^2] =
    sigma^2 m2 + 2 sigma m1 E[z_a sigma_2] + m2 E[sigma_2^2] with sigma_2^2 = (1 - lam) sigma^2 z_a^2 + lam sigma^2
    (the EWMA recursion, omega = 0), expectations over the finite residual set."""
    lam = 0.94
    hist_, _ = gaussian_history(1000, (0.6, 0.9), [[1.0, 0.6], [0.6, 1.0]], seed=42)
    m = build(cfg("fhs", n=N_DEF, seed=8, horizon_days=horizon, ewma_lambda=lam, lookback=400), hist_,
              assets=("BTC", "ETH"), vols=(0.5, 0.5))
    shock, _ = m.draw_numpy()
    r = np.diff(np.log(hist_[["BTC", "ETH"]].to_numpy()), axis=0)
    s2, forecast = ewma_forecast(r, lam)
    z = (r / np.sqrt(s2))[-400:]
    np.testing.assert_allclose(m.sigma2, forecast, rtol=1e-8)
    np.testing.assert_allclose(np.sort(m.residuals, axis=0), np.sort(z, axis=0), rtol=1e-8, atol=1e-12)
    m2 = (z ** 2).mean(axis=0)
    sq = shock ** 2
    if horizon == 1:
        want = forecast * m2
    else:
        # exact expectations over the finite residual set: z_a, z_b independent uniform rows
        sig1 = np.sqrt(forecast)
        var2 = (1 - lam) * (sig1 * z) ** 2 + lam * forecast          # sigma_2^2 given the first row z_a
        m1 = z.mean(axis=0)
        want = forecast * m2 + 2 * sig1 * m1 * (z * np.sqrt(var2)).mean(axis=0) + m2 * var2.mean(axis=0)
    got, se = sq.mean(axis=0), sq.std(axis=0) / math.sqrt(N_DEF)
    assert_within(got, want, se, f"E[shock^2] of FHS over {horizon} row(s)")
    if horizon == 1:
        cross = shock[:, 0] * shock[:, 1]
        want = math.sqrt(forecast[0] * forecast[1]) * (z[:, 0] * z[:, 1]).mean()
        assert_within(cross.mean(), want, cross.std() / math.sqrt(N_DEF), "E[shock_1 shock_2] of FHS")


def test_t_copula_matches_its_definition():
    """t copula (copula dof 8, marginal dof 5 and 12) on 200,000 draws: marginal quantiles of the unit-variance
    t laws scaled by vol sqrt(h / D); mapped back through the copula's t, the correlation is C and the
    Mahalanobis statistic follows F(k, copula dof); vol shocks: std nu sqrt(h / D), spot-vol correlation rho."""
    corr = np.array([[1.0, 0.6], [0.6, 1.0]])
    c = dict(model="t_copula", n=N_DEF, seed=4, horizon_days=10, copula_dof=8.0, marginal_dof=5.0,
             risk_factors={"BTC": {"vol": 0.5, "vol_of_vol": 1.1, "spot_vol_corr": -0.35},
                           "ETH": {"vol": 0.8, "dof": 12.0, "vol_of_vol": 1.3, "spot_vol_corr": -0.2}},
             correlation=corr.tolist())
    m = build_scenarios(c, ("BTC", "ETH", "USDT"), (0.5, 0.8, 0.0))
    shock, vol = m.draw_numpy()
    s = np.array([0.5, 0.8]) * math.sqrt(10 / 365)
    nus, nu_c = np.array([5.0, 12.0]), 8.0
    unit = np.sqrt((nus - 2) / nus)
    t_back = np.empty((N_DEF, 2))
    for j in range(2):
        law = stats.t(nus[j], scale=unit[j] * s[j])
        for p in (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999):
            got, se = quantile_se(shock[:, j], p, law.pdf(law.ppf(p)))
            assert_within(got, law.ppf(p), se, f"t_copula marginal {j} {p}-quantile")
        u = stats.t.cdf(shock[:, j] / (unit[j] * s[j]), nus[j])
        t_back[:, j] = stats.t.ppf(u, nu_c)
        vsd, vse = std_se(vol[:, j])
        assert_within(vsd, [1.1, 1.3][j] * math.sqrt(10 / 365), vse, "t_copula vol-shock std")
        r, se = corr_se(vol[:, j], shock[:, j] / s[j])
        # eta = rho X + sqrt(1 - rho^2) Z with X the unit-variance marginal: corr(eta, X) = rho
        assert_within(r, [-0.35, -0.2][j], se, "t_copula spot-vol correlation")
    assert np.all(shock[:, 2] == 0) and np.all(vol[:, 2] == 0)
    r, se = corr_se(t_back[:, 0], t_back[:, 1])
    assert_within(r, 0.6, se, "correlation of the copula's t")
    f = np.einsum("ni,ij,nj->n", t_back, np.linalg.inv(corr), t_back) / 2
    law = stats.f(2, nu_c)
    for p in (0.01, 0.5, 0.9, 0.99, 0.999):
        got, se = quantile_se(f, p, law.pdf(law.ppf(p)))
        assert_within(got, law.ppf(p), se, f"{p}-quantile of the copula's Mahalanobis F statistic")
