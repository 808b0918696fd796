"""The parametric generators (gaussian, student_t) against their own definition (docs/methodology.md, section 2).

Shocks are drawn straight from the model (``draw_numpy``), never read back
from a run's output, and every estimate is held to ``K_SE`` = 3 standard
errors of itself on 200,000 draws (tests/oracles.py).  Each test is written
for one kind of error: horizon scaling and day count, drift convention, the
correlation factor (a transposed Cholesky factor breaks it), the vol-shock
spread, the sign of the spot-vol correlation, and the Student-t mixing scale
(sqrt((dof - 2) / W), so that each factor's marginal std is its vol).
"""

import math

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from conftest import CONF
from mcmargin.errors import ConfigError
from mcmargin.scenarios import build_scenarios
from oracles import assert_within, corr_se, mean_se, quantile_se, std_se, within

N = 200_000


def config_factors():
    """The default scenario config (conf/scenarios/gaussian.yaml): four correlated factors."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "scenarios" / "gaussian.yaml"))
    names = list(cfg["risk_factors"])
    return cfg, names


def model(kind="gaussian", n=N, seed=11, horizon_days=10, **over):
    cfg, names = config_factors()
    cfg.update(model=kind, n=n, seed=seed, horizon_days=horizon_days, **over)
    assets = (*names, "USDT")                      # a cash asset last: it never moves
    vols = [cfg["risk_factors"][a]["vol"] for a in names] + [0.0]
    return build_scenarios(cfg, assets, vols), cfg, names


@pytest.fixture(scope="module")
def gaussian():
    m, cfg, names = model("gaussian")
    return (*m.draw_numpy(), cfg, names)


@pytest.fixture(scope="module")
def student8():
    m, cfg, names = model("student_t", dof=8.0, seed=12)
    return (*m.draw_numpy(), cfg, names)


def horizon_scale(cfg, annual):
    return np.asarray(annual, float) * math.sqrt(cfg["horizon_days"] / cfg["days_per_year"])


def params(cfg, names, key):
    return np.array([cfg["risk_factors"][a][key] for a in names])


# ----------------------------------------------------------------- gaussian
def test_gaussian_return_std_is_vol_times_root_horizon(gaussian):
    shock, _, cfg, names = gaussian
    k = len(names)
    sd, se = std_se(shock[:, :k], kurtosis=3.0)
    assert_within(sd, horizon_scale(cfg, params(cfg, names, "vol")), se, "std of horizon log-returns")
    assert np.all(shock[:, k] == 0)


def test_gaussian_returns_are_normal(gaussian):
    shock, _, cfg, names = gaussian
    s = horizon_scale(cfg, params(cfg, names, "vol"))
    for j, a in enumerate(names):
        for p in (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999):
            want = s[j] * stats.norm.ppf(p)
            got, se = quantile_se(shock[:, j], p, stats.norm.pdf(stats.norm.ppf(p)) / s[j])
            assert_within(got, want, se, f"{a} {p}-quantile")


def test_gaussian_correlation_matrix(gaussian):
    """Every pair's correlation is the configured one (a transposed factor L^T L != C fails)."""
    shock, _, cfg, names = gaussian
    corr = np.asarray(cfg["correlation"])
    for i in range(len(names)):
        for j in range(i):
            r, se = corr_se(shock[:, i], shock[:, j])
            assert_within(r, corr[i, j], se, f"corr({names[i]}, {names[j]})")


def test_gaussian_vol_shock_spread_and_spot_vol_correlation(gaussian):
    shock, vol, cfg, names = gaussian
    k = len(names)
    nu, rho = params(cfg, names, "vol_of_vol"), params(cfg, names, "spot_vol_corr")
    corr = np.asarray(cfg["correlation"])
    sd, se = std_se(vol[:, :k], kurtosis=3.0)
    assert_within(sd, horizon_scale(cfg, nu), se, "std of vol shocks")
    assert np.all(vol[:, k] == 0)
    m, se = mean_se(vol[:, :k])
    assert_within(m, 0.0, se, "mean of vol shocks")
    for i in range(k):
        for j in range(k):
            # eta_i = rho_i eps_i + sqrt(1 - rho_i^2) Z_i, so corr(eta_i, eps_j) = rho_i C_ij
            r, se = corr_se(vol[:, i], shock[:, j])
            assert_within(r, rho[i] * corr[i, j], se, f"corr(vol {names[i]}, return {names[j]})")
            if j < i:
                r, se = corr_se(vol[:, i], vol[:, j])
                assert_within(r, rho[i] * rho[j] * corr[i, j], se, f"corr(vol {names[i]}, vol {names[j]})")
    assert np.all(rho < 0)          # the config's spot-vol correlations are negative: a sign flip must fail above


@pytest.mark.parametrize("drift", ["zero", "martingale"])
def test_drift_convention(drift):
    """Mean log-return: 0 (``zero``) or -s^2/2 (``martingale``); a long horizon makes s^2/2 many SEs."""
    m, cfg, names = model("gaussian", drift=drift, horizon_days=90, seed=21)
    shock, _ = m.draw_numpy()
    s = horizon_scale(cfg, params(cfg, names, "vol"))
    mean, se = mean_se(shock[:, :len(names)])
    want = np.zeros_like(s) if drift == "zero" else -0.5 * s * s
    wrong = -0.5 * s * s if drift == "zero" else np.zeros_like(s)
    assert_within(mean, want, se, f"mean log-return, drift={drift}")
    assert not within(mean, wrong, se).any(), "the test cannot tell the drift conventions apart"
    # E[S'/S] = 1 under the martingale drift (Gaussian model)
    if drift == "martingale":
        g, se = mean_se(np.exp(shock[:, :len(names)]))
        assert_within(g, 1.0, se, "E[exp(shock)]")


@pytest.mark.parametrize("days_per_year", [365, 360, 252])
def test_days_per_year_scales_the_horizon(days_per_year):
    """One million draws of one factor: the std separates 365 from 360 days (0.7%) by > 6 SE."""
    c = dict(model="gaussian", n=1_000_000, seed=31, horizon_days=2, days_per_year=days_per_year,
             risk_factors={"BTC": {"vol": 0.6, "vol_of_vol": 1.0, "spot_vol_corr": -0.3}})
    shock, vol = build_scenarios(c, ("BTC",), [0.6]).draw_numpy()
    sd, se = std_se(shock, kurtosis=3.0)
    assert_within(sd, [0.6 * math.sqrt(2 / days_per_year)], se, "std with days_per_year")
    for other in {365, 360, 252} - {days_per_year}:
        assert not within(sd, 0.6 * math.sqrt(2 / other), se).any(), f"{days_per_year} vs {other} indistinguishable"
    vsd, vse = std_se(vol, kurtosis=3.0)
    assert_within(vsd, [1.0 * math.sqrt(2 / days_per_year)], vse, "vol-shock std with days_per_year")


# ----------------------------------------------------------------- student t
def test_student_t_marginal_std_is_the_vol(student8):
    """Marginal std = s_i exactly because the mixing scale is sqrt((dof - 2) / W); sqrt(dof / W) is 15% wide."""
    shock, vol, cfg, names = student8
    dof, k = 8.0, len(names)
    kurt = 3 + 6 / (dof - 4)
    sd, se = std_se(shock[:, :k], kurtosis=kurt)
    assert_within(sd, horizon_scale(cfg, params(cfg, names, "vol")), se, "Student-t marginal std")
    vsd, vse = std_se(vol[:, :k], kurtosis=kurt)
    assert_within(vsd, horizon_scale(cfg, params(cfg, names, "vol_of_vol")), vse, "Student-t vol-shock std")


def test_student_t_correlation_and_spot_vol(student8):
    shock, vol, cfg, names = student8
    corr, rho = np.asarray(cfg["correlation"]), params(cfg, names, "spot_vol_corr")
    for i in range(len(names)):
        r, se = corr_se(vol[:, i], shock[:, i])
        assert_within(r, rho[i], se, f"spot-vol corr {names[i]}")
        for j in range(i):
            r, se = corr_se(shock[:, i], shock[:, j])
            assert_within(r, corr[i, j], se, f"t corr({names[i]}, {names[j]})")


@pytest.fixture(scope="module")
def student5():
    m, cfg, names = model("student_t", dof=5.0, seed=13, horizon_days=2)
    return (*m.draw_numpy(), cfg, names)


def test_student_t_marginal_quantiles_follow_the_t_law(student5):
    """shock_i / s_i ~ sqrt((dof - 2) / dof) t(dof): tail quantiles to 3 SE on 200k draws."""
    shock, _, cfg, names = student5
    dof = 5.0
    s = horizon_scale(cfg, params(cfg, names, "vol"))
    c = math.sqrt((dof - 2) / dof)
    for j, a in enumerate(names):
        for p in (0.001, 0.005, 0.01, 0.05, 0.25, 0.75, 0.95, 0.99, 0.995, 0.999):
            t = stats.t.ppf(p, dof)
            got, se = quantile_se(shock[:, j], p, stats.t.pdf(t, dof) / (c * s[j]))
            assert_within(got, c * s[j] * t, se, f"{a} {p}-quantile (t, dof 5)")


def test_student_t_mixing_is_shared_by_all_factors(student5):
    """A multivariate t: eps' C^-1 eps (dof / ((dof - 2) k)) ~ F(k, dof) with eps = shock / s.

    Independent mixing per factor, or a wrong scale, gives another law.
    """
    shock, _, cfg, names = student5
    dof, k = 5.0, len(names)
    eps = shock[:, :k] / horizon_scale(cfg, params(cfg, names, "vol"))
    d2 = np.einsum("ni,ij,nj->n", eps, np.linalg.inv(np.asarray(cfg["correlation"])), eps)
    f = d2 * dof / ((dof - 2) * k)
    law = stats.f(k, dof)
    for p in (0.01, 0.1, 0.5, 0.9, 0.99, 0.999):
        got, se = quantile_se(f, p, law.pdf(law.ppf(p)))
        assert_within(got, law.ppf(p), se, f"{p}-quantile of the Mahalanobis F statistic")


def test_student_t_tail_es_of_the_shock(student5):
    """ES of the standardised loss -shock / (c s) at 0.99 and 0.995 against the t closed form."""
    from oracles import student_t_es, tail_size
    shock, _, cfg, names = student5
    dof = 5.0
    s = horizon_scale(cfg, params(cfg, names, "vol"))
    c = math.sqrt((dof - 2) / dof)
    loss = -shock[:, 0] / (c * s[0])
    srt = np.sort(loss)[::-1]
    for q in (0.99, 0.995):
        m = tail_size(loss.size, q)
        es, var = srt[:m].mean(), srt[m - 1]
        se = math.sqrt((srt[:m].var() + q * (es - var) ** 2) / (loss.size * (1 - q)))
        assert_within(es, student_t_es(q, dof), se, f"t ES at {q}")


def test_student_t_dof_must_exceed_two():
    from mcmargin.errors import ConfigError
    with pytest.raises(ConfigError, match="scenarios.dof"):
        model("student_t", dof=2.0, n=10)


# ----------------------------------------------------------------- defaults, bounds and fitted parameters
def test_defaults_are_365_days_and_zero_drift():
    """Without days_per_year and drift keys: 365 days and zero drift (module docstring), in the factory and the class."""
    from mcmargin.scenarios.parametric import ParametricScenarios
    c = dict(model="gaussian", n=200_000, seed=3, horizon_days=30, risk_factors={"BTC": {"vol": 0.6}})
    m = build_scenarios(c, ("BTC",), [0.6])
    direct = ParametricScenarios(("BTC",), ("BTC",), [0.6], [0.0], [0.0], [[1.0]], n=200_000, seed=3, horizon_days=30)
    for model in (m, direct):
        assert model.days_per_year == 365.0 and model.describe()["drift"] == "zero"
        shock, _ = model.draw_numpy()
        sd, se = std_se(shock, kurtosis=3.0)
        assert_within(sd, [0.6 * math.sqrt(30 / 365)], se, "default day count")
        mean, se = mean_se(shock)
        assert_within(mean, [0.0], se, "default drift")


@pytest.mark.parametrize("dpy,ok", [(0, False), (-1, False), (0.5, True), (1, True)])
def test_days_per_year_must_be_positive(dpy, ok):
    from mcmargin.errors import ConfigError
    c = dict(model="gaussian", n=10, seed=3, horizon_days=1, days_per_year=dpy, risk_factors={"BTC": {"vol": 0.6}})
    if ok:
        assert build_scenarios(c, ("BTC",), [0.6]).days_per_year == dpy
    else:
        with pytest.raises(ConfigError, match="scenarios.days_per_year"):
            build_scenarios(c, ("BTC",), [0.6])


@pytest.fixture(scope="module")
def fitted_history():
    from test_historical import crypto_history
    return crypto_history()


def test_history_calibrates_vols_and_the_joint_dof(fitted_history):
    """With history=..., the fitted vols replace the configured ones and (student_t) the fitted joint dof
    replaces scenarios.dof; the fit is the calibration of the same settings."""
    from mcmargin.calibration import calibrate
    from mcmargin.calibration.fit import CalibrationSettings
    cfg, _ = config_factors()
    assets, vols = ("BTC", "ETH", "SOL", "USDT"), (0.55, 0.7, 0.9, 0.0)
    base = dict({k: v for k, v in cfg.items() if k not in ("risk_factors", "correlation")}, n=100, seed=1,
                horizon_days=2, default_factor={"vol": None, "vol_of_vol": 1.0, "spot_vol_corr": -0.3})
    for kind, fit_dof in (("gaussian", False), ("student_t", True)):
        c = dict(base, model=kind, **({"dof": 4.0} if kind == "student_t" else {}))
        m = build_scenarios(c, assets, vols, fitted_history)
        want = calibrate(fitted_history, CalibrationSettings.from_cfg(c, "scenarios", fit_dof=fit_dof),
                         assets=["BTC", "ETH", "SOL"])
        np.testing.assert_allclose(m.vol, want["vol"].sel(asset=["BTC", "ETH", "SOL"]).values, rtol=1e-12)
        assert not np.allclose(m.vol, vols[:3], rtol=1e-3)
        if kind == "student_t":
            fitted = float(want["mvt_dof"])
            assert math.isfinite(fitted) and fitted != 4.0
            assert m.dof == pytest.approx(max(fitted, 2.0 + 1e-6), rel=1e-12)


@pytest.mark.parametrize("fitted,want", [(1.5, 2.0 + 1e-6), (2.5, 2.5), (7.0, 7.0)])
def test_fitted_joint_dof_is_floored_just_above_two(monkeypatch, fitted, want):
    """A fitted joint dof replaces scenarios.dof, floored at 2 + 1e-6 so the variance stays finite."""
    from mcmargin.scenarios import parametric
    real = parametric._factor_params

    def with_fit(*a, **k):
        factors, p, corr = real(*a, **k)
        return factors, dict(p, mvt_dof=fitted), corr
    monkeypatch.setattr(parametric, "_factor_params", with_fit)
    c = dict(model="student_t", dof=4.0, n=10, seed=1, horizon_days=1, risk_factors={"BTC": {"vol": 0.6}})
    assert build_scenarios(c, ("BTC",), [0.6]).dof == pytest.approx(want, rel=1e-15, abs=0)


@pytest.mark.parametrize("kind,extra", [("gaussian", {"drift": "martingale", "days_per_year": 360}),
                                        ("student_t", {"dof": 5.0, "days_per_year": 252})])
def test_described_parameters_rebuild_the_same_draws(kind, extra):
    """The model's description (the dataset's ``scenario_model`` attr) is complete: a model built from it alone
    draws the same numbers, bit for bit."""
    import json
    m, cfg, names = model(kind, n=3000, seed=17, horizon_days=3, **extra)
    d = json.loads(json.dumps(m.describe()))
    assert d["model"] == kind and d["factors"] == names
    rebuilt = dict(model=d["model"], n=d["n"], seed=d["seed"], horizon_days=d["horizon_days"],
                   days_per_year=d["days_per_year"], drift=d["drift"], correlation=d["correlation"],
                   risk_factors={f: {"vol": v, "vol_of_vol": w, "spot_vol_corr": r} for f, v, w, r in
                                 zip(d["factors"], d["vol"], d["vol_of_vol"], d["spot_vol_corr"])},
                   **({"dof": d["dof"]} if d["dof"] is not None else {}))
    again = build_scenarios(rebuilt, m.assets, [*(cfg["risk_factors"][a]["vol"] for a in names), 0.0])
    for a, b in zip(m.draw_numpy(), again.draw_numpy()):
        np.testing.assert_array_equal(a, b)
    assert (d["dof"] is None) == (kind == "gaussian")


def test_params_file_supplies_the_fitted_vols_and_correlation(fitted_history, tmp_path):
    """scenarios.params (a jobs.calibrate dataset) replaces the configured vols and correlations of the assets it
    covers; an asset it does not cover keeps its configured vol when asked (params_fallback), else it is an error."""
    from mcmargin.calibration import calibrate, save_params
    ds = calibrate(fitted_history, {"lookback": 400}, assets=["BTC", "ETH"])
    path = save_params(ds, tmp_path / "p.nc")
    c = dict(model="gaussian", n=100, seed=1, horizon_days=2, params=str(path),
             risk_factors={"BTC": {"vol": 0.1}, "ETH": {"vol": 0.2}, "SOL": {"vol": 0.9}})
    with pytest.raises(ConfigError, match="risky asset.s. SOL"):
        build_scenarios(c, ("BTC", "ETH", "SOL", "USDT"), (0.55, 0.7, 0.9, 0.0))
    m = build_scenarios(dict(c, params_fallback=True), ("BTC", "ETH", "SOL", "USDT"), (0.55, 0.7, 0.9, 0.0))
    np.testing.assert_allclose(m.vol[:2], ds["vol"].sel(asset=["BTC", "ETH"]).values, rtol=1e-12)
    assert m.vol[2] == 0.9
    assert m.correlation[0, 1] == pytest.approx(float(ds["correlation"].sel(asset="ETH", asset_b="BTC")), rel=1e-12)
    assert m.correlation[0, 2] == 0.0


# ----------------------------------------- on-the-fly calibration (history=..., no scenarios.params)
def history_cfg(**over):
    """A gaussian config with no configured factors: every moving asset is fitted or takes default_factor."""
    return dict(dict(model="gaussian", n=100, seed=1, horizon_days=2,
                     default_factor={"vol": None, "vol_of_vol": 1.0, "spot_vol_corr": -0.3}), **over)


def test_history_fit_uses_the_scenario_calibration_settings(fitted_history):
    """The on-the-fly fit takes its settings from the scenarios section (here a short look-back and a faster
    EWMA decay), not the calibration defaults."""
    from mcmargin.calibration import calibrate
    from mcmargin.calibration.fit import CalibrationSettings
    assets, vols = ("BTC", "ETH", "SOL", "USDT"), (0.55, 0.7, 0.9, 0.0)
    c = history_cfg(lookback=120, ewma_lambda=0.8)
    m = build_scenarios(c, assets, vols, fitted_history)
    want = calibrate(fitted_history, CalibrationSettings.from_cfg(c, "scenarios", fit_dof=False),
                     assets=["BTC", "ETH", "SOL"])
    default = calibrate(fitted_history, None, assets=["BTC", "ETH", "SOL"])
    np.testing.assert_allclose(m.vol, want["vol"].values, rtol=1e-12)
    np.testing.assert_allclose(m.correlation, want["correlation"].values, rtol=1e-12)
    assert not np.allclose(m.vol, default["vol"].values, rtol=1e-3)
    assert not np.allclose(m.correlation, default["correlation"].values, rtol=1e-3)


@pytest.mark.parametrize("fit_dof", [False, True])
def test_history_fit_fits_the_dof_only_when_asked(fitted_history, fit_dof):
    """fit_dof=False (gaussian) skips the Student-t dof fit: no marginal or joint dof comes back; fit_dof=True
    (student_t, t_copula) returns them."""
    from mcmargin.scenarios.parametric import _factor_params
    factors, p, _ = _factor_params(history_cfg(), ("BTC", "ETH", "SOL", "USDT"), (0.55, 0.7, 0.9, 0.0),
                                   fitted_history, fit_dof=fit_dof)
    assert factors == ["BTC", "ETH", "SOL"] and p["source"] == ["fitted"] * 3
    if fit_dof:
        from mcmargin.calibration import calibrate
        from mcmargin.calibration.fit import CalibrationSettings
        want = calibrate(fitted_history, CalibrationSettings.from_cfg(history_cfg(), "scenarios", fit_dof=True),
                         assets=factors)
        assert all(d is not None and math.isfinite(d) and d > 2 for d in p["dof"])
        assert p["dof"] == [float(want["dof"].sel(asset=a)) for a in factors]
        assert p["mvt_dof"] == float(want["mvt_dof"]) and math.isfinite(p["mvt_dof"])
        assert p["copula_dof"] == float(want["copula_dof"]) and math.isfinite(p["copula_dof"])
    else:
        assert p["dof"] == [None, None, None] and p["mvt_dof"] is None and p["copula_dof"] is None


@pytest.mark.parametrize("key,value", [("vol_method", "nope"), ("ewma_lambda", 1.5), ("lookback", 1)])
def test_history_fit_errors_name_the_scenarios_key(fitted_history, key, value):
    """An invalid calibration setting of the on-the-fly fit is reported under its scenarios.* key, both by the
    settings check of build_scenarios and by the fit's own settings parser (reached directly through
    _factor_params, as the t-copula does)."""
    from mcmargin.scenarios.parametric import _factor_params
    c = history_cfg(**{key: value})
    with pytest.raises(ConfigError) as exc:
        build_scenarios(c, ("BTC", "USDT"), (0.55, 0.0), fitted_history)
    assert exc.value.key == f"scenarios.{key}"
    with pytest.raises(ConfigError) as exc:
        _factor_params(c, ("BTC", "USDT"), (0.55, 0.0), fitted_history)
    assert exc.value.key == f"scenarios.{key}"


def test_history_fit_leaves_out_implied_vol_columns_and_absent_assets(fitted_history):
    """A history column named in scenarios.implied_vol_columns is an implied vol, not a price: a book asset of
    that name is not fitted from it (it takes default_factor, here its market vol), nor is an asset the history
    lacks (BNB); the price columns are fitted."""
    assets, vols = ("BTC", "ETH", "VOL", "BNB", "USDT"), (0.55, 0.7, 0.45, 0.65, 0.0)
    from mcmargin.scenarios.parametric import _factor_params
    c = history_cfg(implied_vol_columns={"BTC": "VOL"})
    factors, p, corr = _factor_params(c, assets, vols, fitted_history)
    assert factors == ["BTC", "ETH", "VOL", "BNB"]
    assert p["source"] == ["fitted", "fitted", "default", "default"]
    assert p["vol"][2:] == [0.45, 0.65]
    assert p["dof"] == [None] * 4 and p["mvt_dof"] is None     # fit_dof defaults to False
    np.testing.assert_array_equal(corr[2:, :], np.eye(4)[2:, :])
    m = build_scenarios(c, assets, vols, fitted_history)
    assert list(m.vol[2:]) == [0.45, 0.65]


def test_params_file_columns_map_to_book_assets(fitted_history, tmp_path):
    """scenarios.asset_map relabels the calibration dataset's assets: a column named for one asset supplies the
    fitted vol and correlation of the book asset it is mapped to; errors about the file name its path."""
    from mcmargin.calibration import calibrate, save_params
    ds = calibrate(fitted_history, {"lookback": 400}, assets=["BTC", "ETH"])
    path = save_params(ds, tmp_path / "vendor.nc")
    assets, vols = ("WBTC", "ETH", "USDT"), (0.4, 0.3, 0.0)
    c = dict(model="gaussian", n=100, seed=1, horizon_days=2, params=str(path),
             risk_factors={"WBTC": {"vol": 0.1}, "ETH": {"vol": 0.2}})
    m = build_scenarios(dict(c, asset_map={"BTC": "WBTC"}), assets, vols)
    np.testing.assert_allclose(m.vol, ds["vol"].sel(asset=["BTC", "ETH"]).values, rtol=1e-12)
    assert m.correlation[0, 1] == pytest.approx(float(ds["correlation"].sel(asset="ETH", asset_b="BTC")), rel=1e-12)
    # unmapped, the file covers no WBTC: the error names the file and the asset
    with pytest.raises(ConfigError, match="risky asset.s. WBTC") as exc:
        build_scenarios(c, assets, vols)
    assert str(path) in str(exc.value)
    # a mapped column the file lacks: the error names the file
    with pytest.raises(ConfigError, match="scenarios.asset_map") as exc:
        build_scenarios(dict(c, asset_map={"XBT": "WBTC"}), assets, vols)
    assert str(path) in str(exc.value) and "XBT" in str(exc.value)


# ------------------------------------------------ which value applies to each factor (_factor_params)
def test_factor_source_and_fallbacks(fitted_history):
    """Each factor's parameters come from the fit, else its risk_factors entry, else default_factor; an entry
    without vol_of_vol or spot_vol_corr (and no default_factor) has neither: 0 and 0."""
    from mcmargin.scenarios.parametric import _factor_params
    c = dict(risk_factors={"BNB": {"vol": 0.6, "vol_of_vol": 1.2, "spot_vol_corr": -0.2}, "DOGE": {"vol": 0.9}},
             default_factor={"vol": None, "vol_of_vol": 1.0, "spot_vol_corr": -0.3})
    factors, p, _ = _factor_params(c, ("BTC", "BNB", "XRP", "USDT"), (0.55, 0.6, 0.7, 0.0), fitted_history)
    assert factors == ["BTC", "BNB", "XRP"] and p["source"] == ["fitted", "config", "default"]
    assert p["vol"][1:] == [0.6, 0.7] and p["vol_of_vol"][1:] == [1.2, 1.0] and p["spot_vol_corr"][1:] == [-0.2, -0.3]
    m = build_scenarios(dict(model="gaussian", n=10, seed=1, horizon_days=1, risk_factors={"DOGE": {"vol": 0.9}}),
                        ("DOGE",), (0.8,))
    assert list(m.vol) == [0.9] and list(m.vol_of_vol) == [0.0] and list(m.spot_vol_corr) == [0.0]


def test_unnamed_factor_without_default_is_an_error_unless_fitted(fitted_history):
    """Without default_factor, a risky asset needs a risk_factors entry, unless the fit covers it."""
    c = dict(model="gaussian", n=10, seed=1, horizon_days=1, risk_factors={"BTC": {"vol": 0.6}})
    with pytest.raises(ConfigError, match="have vol > 0 but no risk factor") as exc:
        build_scenarios(c, ("BTC", "XRP", "USDT"), (0.55, 0.7, 0.0))
    assert exc.value.key == "scenarios.risk_factors" and "XRP" in str(exc.value)
    m = build_scenarios(dict(c, risk_factors={}), ("BTC", "ETH", "USDT"), (0.55, 0.7, 0.0), fitted_history)
    assert m.factors == ("BTC", "ETH")


def test_invalid_value_in_a_params_file_names_the_file(fitted_history, tmp_path):
    """A params file's vol_of_vol or spot_vol_corr out of range is an error that names the file it came from."""
    from mcmargin.calibration import calibrate, save_params
    ds = calibrate(fitted_history, {"lookback": 400}, assets=["BTC", "ETH"])
    for var, bad in (("spot_vol_corr", 1.5), ("vol_of_vol", -0.5)):
        d = ds.copy(deep=True)
        d[var] = ("asset", np.array([0.0, bad]))
        path = save_params(d, tmp_path / f"{var}.nc")
        c = dict(model="gaussian", n=10, seed=1, horizon_days=1, params=str(path), risk_factors={})
        with pytest.raises(ConfigError, match=f"invalid value {bad}") as exc:
            build_scenarios(c, ("BTC", "ETH", "USDT"), (0.55, 0.7, 0.0))
        assert exc.value.key == f"scenarios.risk_factors.ETH.{var}"
        assert f"scenarios.params ({path})" in str(exc.value)


@pytest.mark.parametrize("where,key,bad", [("risk_factors", "vol", -0.1), ("risk_factors", "vol_of_vol", -1.0),
                                           ("risk_factors", "vol", math.inf), ("risk_factors", "spot_vol_corr", 1.5),
                                           ("risk_factors", "spot_vol_corr", -1.01),
                                           ("default_factor", "vol", -0.1), ("default_factor", "vol_of_vol", math.inf),
                                           ("default_factor", "spot_vol_corr", -2.0)])
def test_invalid_factor_value_names_its_key(where, key, bad):
    """_factor_params checks every value it applies (also when reached without the job's settings check) and
    names the config key it came from; the range ends (vol 0, vol_of_vol 0, spot_vol_corr +-1) are valid."""
    from mcmargin.scenarios.parametric import _factor_params
    good = {"vol": 0.0, "vol_of_vol": 0.0, "spot_vol_corr": -1.0}
    for ok in (good, dict(good, spot_vol_corr=1.0)):
        assert _factor_params(dict(risk_factors={"BTC": ok}), ("BTC",), (0.5,))[1]["vol"] == [0.0]
        assert _factor_params(dict(default_factor=ok), ("BTC",), (0.5,))[1]["spot_vol_corr"] == [ok["spot_vol_corr"]]
    entry = {**good, "vol": 0.5, key: bad}
    c = {"risk_factors": {"BTC": entry}} if where == "risk_factors" else {"default_factor": entry}
    want = f"scenarios.risk_factors.BTC.{key}" if where == "risk_factors" else f"scenarios.default_factor.{key}"
    with pytest.raises(ConfigError, match=f"invalid value") as exc:
        _factor_params(c, ("BTC",), (0.5,))
    assert exc.value.key == want and f"({want})" in str(exc.value)


def test_infinite_market_vol_is_an_error_naming_the_asset():
    """default_factor vol: null takes the asset's market vol, which must be finite: the error says so."""
    from mcmargin.scenarios.parametric import _factor_params
    with pytest.raises(ConfigError, match=r"invalid value inf \(market vol of BTC\)") as exc:
        _factor_params(dict(default_factor={"vol": None}), ("BTC",), (math.inf,))
    assert exc.value.key == "scenarios.risk_factors.BTC.vol"


def test_marginal_dof_from_the_fit_else_the_risk_factor_entry(fitted_history):
    """A factor's marginal Student-t dof (used by the t-copula) is the fitted one where the fit covers it, else
    its risk_factors entry's dof, else None."""
    from mcmargin.scenarios.parametric import _factor_params
    c = dict(risk_factors={"BTC": {"vol": 0.5, "dof": 4.5}, "BNB": {"vol": 0.6, "dof": 3.5}, "XRP": {"vol": 0.7}})
    assets, vols = ("BTC", "BNB", "XRP", "USDT"), (0.5, 0.6, 0.7, 0.0)
    assert _factor_params(c, assets, vols)[1]["dof"] == [4.5, 3.5, None]
    _, p, _ = _factor_params(c, assets, vols, fitted_history, fit_dof=True)
    assert p["source"] == ["fitted", "config", "config"]
    assert p["dof"][1:] == [3.5, None] and p["dof"][0] != 4.5 and math.isfinite(p["dof"][0])


def test_mixed_fitted_and_configured_correlations_are_repaired(fitted_history):
    """Fitted correlations between fitted assets and configured ones elsewhere can mix into a matrix that is not
    PSD: it is replaced by the nearest correlation matrix (a PSD mix is kept as it is)."""
    from mcmargin.scenarios.parametric import _factor_params
    from mcmargin.stats.correlation import nearest_correlation
    h = fitted_history.drop(columns=["SOL"])
    names = ["BTC", "ETH", "SOL"]
    c = dict(risk_factors={a: {"vol": 0.5} for a in names},
             correlation=[[1.0, -0.8, 0.85], [-0.8, 1.0, -0.85], [0.85, -0.85, 1.0]])
    factors, p, corr = _factor_params(c, (*names, "USDT"), (0.5, 0.6, 0.7, 0.0), h)
    assert p["source"] == ["fitted", "fitted", "config"]
    from mcmargin.calibration import calibrate
    from mcmargin.calibration.fit import CalibrationSettings
    fitted = calibrate(h, CalibrationSettings.from_cfg(c, "scenarios", fit_dof=False), assets=["BTC", "ETH"])
    fit = float(fitted["correlation"].sel(asset="ETH", asset_b="BTC"))
    assert fit > 0.5                                    # the fit (about 0.8) replaces the configured -0.8
    raw = np.array([[1.0, fit, 0.85], [fit, 1.0, -0.85], [0.85, -0.85, 1.0]])
    assert np.linalg.eigvalsh(raw).min() < -0.1
    np.testing.assert_allclose(corr, nearest_correlation(raw), rtol=0, atol=1e-12)
    assert np.linalg.eigvalsh(corr).min() > -1e-10 and not np.allclose(corr, raw, atol=1e-3)
