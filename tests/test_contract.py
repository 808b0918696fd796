"""The output dataset contract (README "Outputs", design.md), checked inside the repo on every run.

Names, dims, coordinate types, ``long_name`` / ``units`` attrs, run metadata
kept in attrs, and the identities between the figures, on a dataset written
to Zarr and to netCDF and read back.  (The external ../shared/tools
checker, when present, is run by tests/test_stress_job.py as well.)
"""

import json

import numpy as np
import pytest

from conftest import stress_config
from mcmargin.output.store import open_dataset, write_dataset

ACCOUNT = ("equity", "im", "mm", "isolated_im", "netting_benefit", "margin_call")
ACCOUNT_Q = ("var", "es")
GROUP = ("group_equity", "group_im", "group_mm", "group_margin_call", "group_members", "group_isolated_im",
         "group_netting_benefit")
GROUP_Q = ("group_var", "group_es")
DIMS = {**{v: ("account",) for v in ACCOUNT}, **{v: ("account", "confidence") for v in ACCOUNT_Q},
        **{v: ("group",) for v in GROUP}, **{v: ("group", "confidence") for v in GROUP_Q},
        "account_group": ("account",), "unit_es": ("instrument", "side"),
        "shock": ("scenario", "asset"), "vol_shock": ("scenario", "asset")}
BUFFER, RATIO = 0.1, 0.75          # conf/margin/mc_es.yaml, forced below so the identities name them


@pytest.fixture(scope="module")
def run():
    from jobs.stress import run as job
    return job(stress_config("portfolio.n_accounts=80", "scenarios.n=1500", "output.scenarios=true",
                             f"margin.buffer={BUFFER}", f"margin.maintenance_ratio={RATIO}"))


@pytest.fixture(scope="module", params=["zarr", "nc"])
def ds(request, run, tmp_path_factory):
    path = write_dataset(run, tmp_path_factory.mktemp("contract") / f"run.{request.param}")
    return open_dataset(path).load()


def test_names_dims_and_coordinates(ds):
    assert set(DIMS) <= set(ds.data_vars)
    for v, dims in DIMS.items():
        assert ds[v].dims == dims, v
    for c in ("account", "group", "asset", "instrument", "side"):
        assert all(isinstance(x, str) for x in ds[c].values.tolist()), c
        assert len(set(ds[c].values.tolist())) == ds.sizes[c], f"{c} labels repeat"
    assert ds["confidence"].dtype.kind == "f"
    assert ((ds["confidence"] > 0.5) & (ds["confidence"] < 1)).all()
    assert list(ds["confidence"].values) == sorted(ds["confidence"].values)
    assert ds["side"].values.tolist() == ["long", "short"]
    assert ds.sizes["scenario"] == 1500 and ds["scenario"].values.tolist() == list(range(1500))


def test_every_variable_has_long_name_and_units(ds):
    for v in ds.data_vars:
        assert ds[v].attrs.get("long_name"), v
        if v == "group_topup_amount":           # a quantity of each pool's own collateral asset
            assert ds[v].attrs["units"] == "units of group_topup_asset"
        elif v != "account_group":
            assert ds[v].attrs.get("units") in ("USD", "1"), v
    money = set(ACCOUNT + ACCOUNT_Q + GROUP + GROUP_Q + ("unit_es",)) - {"group_members"}
    assert all(ds[v].attrs["units"] == "USD" for v in money)
    assert ds["group_members"].attrs["units"] == "1" and ds["shock"].attrs["units"] == "1"
    assert ds["confidence"].attrs["units"] == "1" and ds["confidence"].attrs["long_name"]


def test_run_metadata_lives_in_attrs(ds):
    for key in ("config", "seed", "backend", "device", "versions", "timings", "chunk_scenarios", "chunk_rows",
                "created", "scenario_model", "margin_model", "tail_definition", "n_scenarios"):
        assert key in ds.attrs, key
    assert not any(w in v for v in ds.data_vars for w in ("time", "seconds", "chunk", "worker"))
    assert json.loads(ds.attrs["timings"])["total_s"] > 0
    assert json.loads(ds.attrs["scenario_model"])["n"] == ds.attrs["n_scenarios"] == 1500


def members(ds):
    return ds["account_group"].rename("group")


def group_sum(ds, v):
    return ds[v].groupby(members(ds)).sum().sel(group=ds["group"]).values


def test_account_identities(ds):
    q = float(ds.attrs["margin_confidence"])
    close = dict(rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(ds["im"], np.maximum(0, ds["es"].sel(confidence=q)) * (1 + BUFFER), **close)
    np.testing.assert_allclose(ds["mm"], ds["im"] * RATIO, **close)
    np.testing.assert_allclose(ds["margin_call"], np.maximum(0, ds["im"] - ds["equity"]), **close)
    np.testing.assert_allclose(ds["netting_benefit"], ds["isolated_im"] - ds["im"], **close)
    assert (ds["isolated_im"] >= 0).all() and (ds["im"] >= 0).all()
    # ES >= VaR at each q; both grow with q (the m largest of a shrinking tail)
    assert (ds["es"] >= ds["var"] - 1e-9).all() and (ds["group_es"] >= ds["group_var"] - 1e-9).all()
    for v in ("var", "es", "group_var", "group_es"):
        assert (ds[v].diff("confidence") >= -1e-9).all(), v


def test_group_identities(ds):
    close = dict(rtol=1e-12, atol=1e-6)
    labels, groups = set(ds["account_group"].values.tolist()), set(ds["group"].values.tolist())
    assert labels == groups                                  # every group has a member, every label is a group
    np.testing.assert_allclose(ds["group_equity"], group_sum(ds, "equity"), **close)
    np.testing.assert_allclose(ds["group_isolated_im"], group_sum(ds, "isolated_im"), **close)
    np.testing.assert_allclose(ds["group_netting_benefit"], group_sum(ds, "im") - ds["group_im"], **close)
    np.testing.assert_array_equal(ds["group_members"], ds["account"].groupby(members(ds)).count()
                                  .sel(group=ds["group"]).values)
    np.testing.assert_allclose(ds["group_mm"], ds["group_im"] * RATIO, **close)
    np.testing.assert_allclose(ds["group_margin_call"], np.maximum(0, ds["group_im"] - ds["group_equity"]), **close)
    q = float(ds.attrs["margin_confidence"])
    np.testing.assert_allclose(ds["group_im"], np.maximum(0, ds["group_es"].sel(confidence=q)) * (1 + BUFFER),
                               **close)
    assert int(ds["group_members"].sum()) == ds.sizes["account"] and (ds["group_members"] > 1).any()
    # a singleton group is its member, bit for bit
    single = ds["group"].values[ds["group_members"].values == 1]
    for v, w in (("im", "group_im"), ("es", "group_es"), ("var", "group_var"), ("equity", "group_equity")):
        np.testing.assert_array_equal(ds[v].sel(account=single).values, ds[w].sel(group=single).values)
    # pooling never costs more than margining the members apart (ES is subadditive on one scenario set)
    assert (ds["group_netting_benefit"] >= -1e-6).all()


def test_cash_never_moves_and_unit_es(ds):
    assert (ds["shock"].sel(asset="USDT") == 0).all() and (ds["vol_shock"].sel(asset="USDT") == 0).all()
    assert np.isfinite(ds["unit_es"]).all()
    # one long and one short unit cannot both gain in the tail: their ES sum is >= 0
    assert (ds["unit_es"].sum("side") >= -1e-9).all()


def test_no_scenario_dimension_unless_asked():
    from jobs.stress import run as job
    ds = job(stress_config("portfolio.n_accounts=10", "scenarios.n=200"))
    assert "scenario" not in ds.dims and "shock" not in ds and "vol_shock" not in ds
