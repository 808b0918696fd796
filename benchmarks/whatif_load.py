"""Load benchmark of the what-if service: p99 latency at a fixed request rate, from a second process on loopback.

    python -m benchmarks.whatif_load run [--scenarios 100000] [--rate 200] [--duration 60]
    python -m benchmarks.whatif_load client --url http://127.0.0.1:8000 --account BIG [--rate R] [--duration S]
    python -m benchmarks.whatif_load book DIR

``run`` writes the benchmark book (an account ``BIG`` with 50 positions,
pooled with two others, beside 200 small accounts; 100 instruments on four
assets), runs ``python -m jobs.stress ... output.cube=`` on it, starts
``python -m jobs.serve`` as its own process and drives it with the client
from this one.  The client is a bounded open-loop asyncio client on
plain asyncio streams (keep-alive HTTP/1.1, a few tens of microseconds of
its own per request): request i is due at ``start + i / rate`` whatever
the answers before it, at most ``--in-flight`` requests are out at once (a
request over the bound waits for a connection and its wait counts in its
latency, so a slow server cannot hide its queue), and latency runs from the
request's due time to its answer.  Nothing is dropped: every request is sent and counted, and
any answer other than 200 (or a transport error) is a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ASSETS = {"BTC": (90_000.0, 0.55), "ETH": (3_000.0, 0.70), "SOL": (150.0, 0.90), "BNB": (600.0, 0.60),
          "USDT": (1.0, 0.0)}
EXPIRIES = ("2026-12-25", "2027-03-26")


def write_book(directory, seed: int = 7) -> dict:
    """The benchmark book's CSV files in ``directory``; returns ``{"account": "BIG", "instruments": [...]}``."""
    import pandas as pd

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for asset, (price, _) in list(ASSETS.items())[:4]:
        rows += [dict(instrument=f"{asset}-SPOT", kind="spot", underlying=asset, settle="USDT", inverse=False,
                      contract_size=1, expiry="", strike=np.nan, option_type=""),
                 dict(instrument=f"{asset}-PERP", kind="perpetual", underlying=asset, settle="USDT", inverse=False,
                      contract_size=1, expiry="", strike=np.nan, option_type=""),
                 dict(instrument=f"{asset}-INV", kind="perpetual", underlying=asset, settle=asset, inverse=True,
                      contract_size=100, expiry="", strike=np.nan, option_type="")]
        rows += [dict(instrument=f"{asset}-F{e[:7]}", kind="future", underlying=asset, settle="USDT", inverse=False,
                      contract_size=1, expiry=e, strike=np.nan, option_type="") for e in EXPIRIES]
        for e in EXPIRIES:
            for k in (0.8, 0.9, 1.0, 1.1, 1.2):
                for t in ("call", "put"):
                    rows.append(dict(instrument=f"{asset}-{e[:7]}-{k * price:g}-{t[0].upper()}", kind="option",
                                     underlying=asset, settle="USDT", inverse=False, contract_size=1, expiry=e,
                                     strike=k * price, option_type=t))
    ins = pd.DataFrame(rows)
    mkt = pd.DataFrame(dict(asset=list(ASSETS), price=[p for p, _ in ASSETS.values()],
                            vol=[v for _, v in ASSETS.values()], haircut=0.0))
    rng = np.random.default_rng(seed)
    ids = ins["instrument"].to_numpy()
    price = ins["underlying"].map({a: p for a, (p, _) in ASSETS.items()}).to_numpy()

    def holdings(account, n):
        pick = rng.choice(ids.size, n, replace=False)
        qty = rng.choice([-1, 1], n) * np.round(rng.uniform(0.5, 5.0, n) * 20_000 / price[pick], 3)
        return [dict(account=account, instrument=ids[i], quantity=max(abs(q), 0.001) * np.sign(q))
                for i, q in zip(pick, qty)]

    pos = holdings("BIG", 50) + holdings("BIG2", 10) + holdings("BIG3", 10)
    for i in range(200):
        pos += holdings(f"S{i:04d}", 5)
    accounts = ["BIG", "BIG2", "BIG3"] + [f"S{i:04d}" for i in range(200)]
    col = pd.DataFrame(dict(account=accounts, asset="USDT", amount=[5e6, 1e6, 1e6] + [2e5] * 200))
    acc = pd.DataFrame(dict(account=["BIG", "BIG2", "BIG3"], group="POOL"))
    for name, t in (("instruments", ins), ("market", mkt), ("positions", pd.DataFrame(pos)), ("collateral", col),
                    ("accounts", acc)):
        t.to_csv(d / f"{name}.csv", index=False)
    return {"account": "BIG", "instruments": ids.tolist()}


class _Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a request costs a write and two reads.

    The client's own cost per request is a few tens of microseconds, so on a
    shared machine the measurement is of the server (an HTTP library client
    costs a millisecond or more of CPU per request, as much as the what-if).
    """

    def __init__(self, host: str, port: int, headers: dict):
        self.host, self.port = host, port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.head}"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.close()
        return status, payload

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(url: str, account: str, instruments, rate: float, duration: float, in_flight: int = 32,
               token: str | None = None, seed: int = 1) -> dict:
    """Drive ``POST /whatif`` at ``rate`` requests/s for ``duration`` s; latency percentiles in ms and failures.

    ``in_flight`` workers, each with its own keep-alive connection, take the
    requests in turn: request i goes out at its due time ``start + i / rate``,
    or as soon as a worker is free if every worker is busy then (its wait
    counts in its latency).
    """
    from urllib.parse import urlsplit

    rng = np.random.default_rng(seed)
    n = int(round(rate * duration))
    bodies = []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        bodies.append(json.dumps({"account": account, "trades": [
            {"instrument": str(rng.choice(instruments)), "quantity": float(np.round(rng.uniform(-10, 10), 3) or 1.0)}
            for _ in range(k)]}).encode())
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    where = urlsplit(url)
    latency = np.full(n, np.nan)
    failures: list[str] = []
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    warm = _Connection(where.hostname, where.port, headers)
    await warm.post("/whatif", bodies[0])                   # connection, caches
    warm.close()
    start = time.perf_counter() + 0.05

    async def worker():
        conn = _Connection(where.hostname, where.port, headers)
        while not queue.empty():
            i = queue.get_nowait()
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                status, payload = await conn.post("/whatif", bodies[i])
                if status != 200:
                    failures.append(f"{status}: {payload[:200]!r}")
                    continue
            except Exception as exc:  # noqa: BLE001 - a transport failure is a failed request, counted
                failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                continue
            latency[i] = time.perf_counter() - due
        conn.close()

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - start
    done = latency[np.isfinite(latency)] * 1e3
    pct = {f"p{p}": float(np.percentile(done, p)) if done.size else float("nan") for p in (50, 90, 99, 99.9)}
    return {"requests": n, "answered": int(done.size), "failures": len(failures), "first_failures": failures[:3],
            "rate": rate, "achieved_rate": n / elapsed, "duration_s": elapsed, **pct,
            "max": float(done.max()) if done.size else float("nan")}


async def reprice_latency(port: int, token: str | None, times: int = 3) -> list:
    """Wall ms of ``POST /reprice`` (BTC 1 % up, ETH vol 0.75, then back to the night), as the client sees it."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    conn = _Connection("127.0.0.1", port, headers)
    out = []
    for body in ([{"prices": {"BTC": ASSETS["BTC"][0] * 1.01}, "vols": {"ETH": 0.75}}, {}] * times)[:times]:
        t = time.perf_counter()
        status, _ = await conn.post("/reprice", json.dumps(body).encode())
        assert status == 200
        out.append(round(1e3 * (time.perf_counter() - t), 1))
    conn.close()
    return out


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cube, port: int, token: str | None = None, cwd=None, timeout: float = 120.0):
    """``python -m jobs.serve cube=...`` as a process of its own; returns it once it answers."""
    import httpx

    cmd = [sys.executable, "-m", "jobs.serve", f"cube={cube}", f"serve.port={port}"]
    if token:
        cmd.append(f"serve.token={token}")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen(cmd, cwd=cwd or root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited {proc.returncode}: {proc.stderr.read()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1.0)
            return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the service did not answer in time")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.whatif_load", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("book")
    b.add_argument("dir")
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--account", default="BIG")
    c.add_argument("--instruments", default=None, help="comma-separated; default: the account's own holdings")
    r = sub.add_parser("run")
    r.add_argument("--scenarios", type=int, default=100_000)
    r.add_argument("--dir", default=None)
    for q in (c, r):
        q.add_argument("--rate", type=float, default=200.0)
        q.add_argument("--duration", type=float, default=60.0)
        q.add_argument("--in-flight", type=int, default=32)
        q.add_argument("--token", default=None)
    a = p.parse_args(argv)
    if a.cmd == "book":
        print(json.dumps(write_book(a.dir)))
        return
    if a.cmd == "client":
        import httpx

        instruments = a.instruments.split(",") if a.instruments else None
        if instruments is None:
            h = {"authorization": f"Bearer {a.token}"} if a.token else {}
            held = httpx.get(f"{a.url}/account/{a.account}", headers=h, timeout=60).json()
            instruments = [x["name"] for x in held["attribution"]["es_contribution"] if x["kind"] == "instrument"]
        out = asyncio.run(load(a.url, a.account, instruments, a.rate, a.duration, a.in_flight, a.token))
        print(json.dumps(out, indent=1))
        return
    root = Path(__file__).resolve().parents[1]
    work = Path(a.dir or tempfile.mkdtemp(prefix="whatif-bench-"))
    book = write_book(work / "book")
    t = time.perf_counter()
    if not (work / "cube.zarr").exists():          # --dir of an earlier run: its night is reused
        subprocess.run([sys.executable, "-m", "jobs.stress", "portfolio=files", f"portfolio.dir={work / 'book'}",
                        f"scenarios.n={a.scenarios}", f"output.path={work / 'stress.zarr'}",
                        f"output.cube={work / 'cube.zarr'}", "stress_tests.names=[]", "engine.progress=false"],
                       cwd=root, check=True, stdout=subprocess.DEVNULL)
        print(f"nightly run with the cube: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    port = free_port()
    t = time.perf_counter()
    server = start_server(work / "cube.zarr", port, a.token, cwd=root)
    print(f"service up in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    try:
        held = [i for i in book["instruments"]]
        cpu0, own0 = process_cpu(server.pid), time.process_time()
        out = asyncio.run(load(f"http://127.0.0.1:{port}", book["account"], held, a.rate, a.duration,
                               a.in_flight, a.token))
        out["server_cpu_ms_per_request"] = 1e3 * (process_cpu(server.pid) - cpu0) / out["requests"]
        out["client_cpu_ms_per_request"] = 1e3 * (time.process_time() - own0) / out["requests"]
        out["reprice_ms"] = asyncio.run(reprice_latency(port, a.token))
    finally:
        server.terminate()
        server.wait(timeout=30)
    out.update(scenarios=a.scenarios, positions=50, cpu_count=os.cpu_count(), load_average=os.getloadavg())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
