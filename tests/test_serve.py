"""The what-if service: the stress job's ``output.cube``, ``jobs.serve`` on loopback, every endpoint, bad requests.

The figures themselves are checked against nightly reruns in tests/test_whatif.py; here the HTTP layer
must hand them through unchanged, answer every client mistake with a 4xx and a one-line ``error``, and
never a 5xx (schemathesis generates requests from the OpenAPI schema).
"""

import asyncio
import json
import math

import numpy as np
import pytest
import xarray as xr

from conftest import run_job

fastapi = pytest.importorskip("fastapi", reason="the serve extra (make test installs it)")
from fastapi.testclient import TestClient  # noqa: E402

from benchmarks.whatif_load import free_port, load, start_server  # noqa: E402
from mcmargin.whatif.app import asgi  # noqa: E402
from mcmargin.whatif.calculator import Calculator  # noqa: E402
from mcmargin.whatif.cube import load_cube  # noqa: E402

TOKEN = "s3cret-token"
JSON = {"content-type": "application/json"}
RUN = ["portfolio.n_accounts=30", "portfolio.seed=5", "scenarios.n=2000", "backend=numpy", "stress_tests.names=[]",
       "engine.progress=false"]


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """The stress job run as a process with output.cube: (dataset path, cube path)."""
    d = tmp_path_factory.mktemp("night")
    done = run_job("jobs.stress", *RUN, f"output.path={d / 'stress.zarr'}", f"output.cube={d / 'cube.zarr'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"what-if cube written to {d / 'cube.zarr'}" in done.stdout
    return d / "stress.zarr", d / "cube.zarr"


@pytest.fixture(scope="module")
def calc(night):
    return Calculator(load_cube(night[1]))


@pytest.fixture(scope="module")
def client(calc):
    with TestClient(asgi(calc, token=TOKEN, max_body_bytes=4096, max_trades=20),
                    headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


@pytest.fixture(scope="module")
def ids(calc):
    """A pooled account, its group, an instrument it holds and one it does not."""
    g = next(i for i, m in enumerate(calc.members) if m.size > 1)
    a = int(calc.members[g][0])
    held = set(calc.holdings[a].indices[calc.holdings[a].indices < calc.instruments.size])
    other = next(c for c in range(calc.instruments.size) if c not in held)
    return dict(account=str(calc.accounts[a]), group=str(calc.groups[g]),
                held=str(calc.instruments[min(held)]), other=str(calc.instruments[other]))


def test_whatif_over_http_hands_the_figures_through(client, calc, ids, night):
    ds = xr.open_zarr(night[0])
    body = {"account": ids["account"], "trades": [{"instrument": ids["other"], "quantity": 2.5},
                                                  {"instrument": ids["held"], "quantity": -1}]}
    r = client.post("/whatif", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out == json.loads(json.dumps(calc.whatif([(ids["other"], 2.5), (ids["held"], -1.0)],
                                                    account=ids["account"])))
    assert math.isclose(out["im_before"], float(ds["im"].sel(account=ids["account"])), rel_tol=1e-9)
    assert math.isclose(out["group_im_before"], float(ds["group_im"].sel(group=ids["group"])), rel_tol=1e-9)
    assert out["group"] == ids["group"] and len(out["drivers"]) == 5
    for key in ("im_before", "im_after", "mm_after", "margin_call_after", "group", "group_im_before",
                "group_im_after", "group_margin_call_after", "marginal_im", "drivers"):
        assert key in out
    by_group = client.post("/whatif", json={"group": ids["group"], "trades": body["trades"]}).json()
    assert by_group["account"] == str(calc.accounts[calc.members[calc.group_index[ids["group"]]][0]])


def test_account_group_max_size_and_reprice(client, calc, ids, night):
    ds = xr.open_zarr(night[0])
    acc = client.get(f"/account/{ids['account']}").json()
    for name in ("im", "mm", "equity", "margin_call", "isolated_im"):
        assert acc["night"][name] == float(ds[name].sel(account=ids["account"]))
    assert acc["night"]["es"] == float(ds["es"].sel(account=ids["account"], confidence=0.99))
    assert math.isclose(sum(h["contribution"] for h in acc["attribution"]["es_contribution"]),
                        acc["night"]["es"], rel_tol=1e-9)
    grp = client.get(f"/group/{ids['group']}").json()
    assert grp["night"]["group_im"] == float(ds["group_im"].sel(group=ids["group"]))
    assert ids["account"] in grp["members"] and len(grp["attribution"]["tail_scenarios"]) == 5
    size = client.post("/max_size", json={"account": ids["account"], "instrument": ids["other"], "side": "sell"})
    assert size.status_code == 200 and size.json() == json.loads(json.dumps(
        calc.max_size(ids["other"], "sell", account=ids["account"])))
    risky = [a for a, v in zip(calc.assets, calc.cube["vol"].values) if v > 0][0]
    price = float(calc.cube["price"].sel(asset=risky))
    moved = client.post("/reprice", json={"prices": {risky: price * 1.02}})
    assert moved.status_code == 200 and moved.json()["marks"] == "intraday" and moved.json()["latency_ms"] > 0
    assert client.get(f"/account/{ids['account']}").json()["marks"] == "intraday"
    back = client.post("/reprice", json={})
    assert back.json()["marks"] == "night"
    assert client.get(f"/account/{ids['account']}").json()["now"]["im"] == pytest.approx(acc["night"]["im"],
                                                                                        rel=1e-9)


def _bad_requests(ids):
    a, i = ids["account"], ids["other"]

    def whatif(q):
        return {"account": a, "trades": [{"instrument": i, "quantity": q}]}

    return {
        "unknown account": ("post", "/whatif", {"json": {"account": "NOPE", "trades": [{"instrument": i,
                                                                                       "quantity": 1}]}},
                            422, "unknown account 'NOPE'"),
        "unknown instrument": ("post", "/whatif", {"json": {"account": a, "trades": [{"instrument": "NOPE",
                                                                                     "quantity": 1}]}},
                               422, "unknown instrument 'NOPE'"),
        "unknown group": ("post", "/max_size", {"json": {"group": "NOPE", "instrument": i, "side": "buy"}}, 422,
                          "unknown group"),
        "NaN quantity": ("post", "/whatif", {"content": json.dumps(whatif(float("nan"))), "headers": JSON}, 422,
                         "finite"),
        "infinite quantity": ("post", "/whatif", {"content": json.dumps(whatif(float("inf"))), "headers": JSON},
                              422, "finite"),
        "huge quantity": ("post", "/whatif", {"json": whatif(1e300)}, 422, "less than or equal"),
        "quantity as text": ("post", "/whatif", {"json": whatif("5")}, 422, "quantity"),
        "malformed JSON": ("post", "/whatif", {"content": b'{"account": "x", "trades": [', "headers": {
            "content-type": "application/json"}}, 422, "malformed JSON"),
        "not JSON at all": ("post", "/whatif", {"content": b"account=x", "headers": {
            "content-type": "application/x-www-form-urlencoded"}}, 422, "JSON object"),
        "extra field": ("post", "/whatif", {"json": {**whatif(1), "price": 3}}, 422, "price"),
        "no trades": ("post", "/whatif", {"json": {"account": a, "trades": []}}, 422, "trades"),
        "too many trades": ("post", "/whatif", {"json": {"account": a, "trades": [
            {"instrument": i, "quantity": 1}] * 21}}, 422, "at most 20"),
        "account and group": ("post", "/whatif", {"json": {**whatif(1), "group": ids["group"]}}, 422,
                              "exactly one of account and group"),
        "bad side": ("post", "/max_size", {"json": {"account": a, "instrument": i, "side": "hold"}}, 422, "side"),
        "oversized payload": ("post", "/whatif", {"content": b"{" + b" " * 5000 + b"}", "headers": {
            "content-type": "application/json"}}, 413, "larger than 4096 bytes"),
        "oversized, no length": ("post", "/whatif", {"content": iter([b"{", b" " * 3000, b" " * 3000, b"}"]),
                                                     "headers": JSON},
                                 413, "larger than 4096 bytes"),
        "wrong token": ("post", "/whatif", {"json": whatif(1), "headers": {"Authorization": "Bearer nope"}}, 401,
                        "bearer token"),
        "no token": ("get", f"/account/{a}", {"headers": {"Authorization": ""}}, 401, "bearer token"),
        "unknown account (path)": ("get", "/account/NOPE", {}, 404, "unknown account 'NOPE'"),
        "unknown group (path)": ("get", "/group/NOPE", {}, 404, "unknown group 'NOPE'"),
        "negative price": ("post", "/reprice", {"json": {"prices": {"BTC": -5}}}, 422, "out of range"),
        "unknown asset": ("post", "/reprice", {"json": {"prices": {"XYZ": 5}}}, 422, "unknown asset"),
        "NaN vol": ("post", "/reprice", {"content": b'{"vols": {"BTC": NaN}}', "headers": JSON}, 422, "finite"),
    }


BAD = list(_bad_requests(dict(account="a", other="i", group="g")))


@pytest.mark.parametrize("case", BAD)
def test_bad_requests_get_a_4xx_with_a_clear_message(client, ids, case):
    method, path, kw, status, words = _bad_requests(ids)[case]
    r = getattr(client, method)(path, **kw)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert client.post("/whatif", json={"account": ids["account"], "trades": [
        {"instrument": ids["other"], "quantity": 1}]}).status_code == 200        # still serving


def test_schemathesis_finds_no_server_error(calc):
    """Requests generated from /openapi.json (valid and invalid): never a 5xx, and every answer as documented."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

    app = asgi(calc, token=TOKEN)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in schemathesis.GenerationMode:         # valid requests and invalid ones

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def run(case):
                case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                                       checks=[not_a_server_error, status_code_conformance,
                                               response_schema_conformance])

            run()
        checked += 1
    assert checked == 5


def test_serve_job_on_loopback_with_a_token_and_a_short_load(night, calc, ids):
    """``python -m jobs.serve`` as its own process on 127.0.0.1; a second process (this one) drives it."""
    import httpx

    port = free_port()
    server = start_server(night[1], port, TOKEN)
    try:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/openapi.json").json()["info"]["title"].startswith("mcmargin")
        body = {"account": ids["account"], "trades": [{"instrument": ids["other"], "quantity": 1}]}
        assert httpx.post(f"{url}/whatif", json=body).status_code == 401
        r = httpx.post(f"{url}/whatif", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["im_after"] == calc.whatif([(ids["other"], 1.0)],
                                                                            account=ids["account"])["im_after"]
        out = asyncio.run(load(url, ids["account"], [ids["other"], ids["held"]], rate=40, duration=2, token=TOKEN))
        assert out["failures"] == 0 and out["answered"] == out["requests"] == 80, out
        assert np.isfinite(out["p99"])
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("overrides, words", [
    ([], "cube: is required"),
    (["cube=/nonexistent/cube.zarr"], "does not exist"),
    (["cube=x.zarr", "serve.port=70000"], "serve.port"),
    (["cube=x.zarr", "+serve.colour=blue"], "serve.colour"),
])
def test_serve_job_config_errors_exit_2(overrides, words):
    done = run_job("jobs.serve", *overrides)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr


def test_stress_job_refuses_a_cube_it_cannot_serve(tmp_path):
    done = run_job("jobs.stress", *RUN, f"output.path={tmp_path / 's.zarr'}", f"output.cube={tmp_path / 'c.zarr'}",
                   "margin.mc_es.closeout_cost=true")
    assert done.returncode == 2 and "output.cube" in done.stderr and "closeout_cost" in done.stderr
    same = run_job("jobs.stress", *RUN, f"output.path={tmp_path / 's.zarr'}", f"output.cube={tmp_path / 's.zarr'}")
    assert same.returncode == 2 and "output.cube" in same.stderr
    netcdf = run_job("jobs.stress", *RUN, f"output.path={tmp_path / 's.zarr'}", f"output.cube={tmp_path / 'c.nc'}")
    assert netcdf.returncode == 2 and "output.cube" in netcdf.stderr and "Zarr" in netcdf.stderr
    assert sorted(tmp_path.iterdir()) == []
