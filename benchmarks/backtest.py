"""Speed of the backtest job, whole process: ``python -m benchmarks.backtest [--assets 30 --dates 7000 ...]``.

Writes a synthetic history (``--assets`` price columns, ``--dates``
business days of Student-t returns with volatility regimes) and a
portfolios file (``--portfolios`` books: long-only, long-short,
single-name, hedged, short, ...) into a temporary directory (not timed),
then times ``/usr/bin/time -v python -m jobs.backtest history=... portfolios=...
scenarios.n=N ...`` from start to exit: imports, loading, the margin of
every date, the tests, the dataset and the plots included.  Prints one
table row; append it to benchmarks/RESULTS.md by hand with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def write_inputs(directory: Path, assets: int, dates: int, portfolios: int, seed: int = 0):
    """A synthetic history and portfolios file in ``directory``; returns their paths."""
    g = np.random.default_rng(seed)
    vol = g.uniform(0.008, 0.03, assets)
    regime = np.exp(np.cumsum(g.normal(0, 0.03, dates)))          # slowly wandering market-wide vol
    regime /= regime.mean()
    beta = g.uniform(0.5, 1.5, assets)
    market = g.standard_t(4, dates) / np.sqrt(2)
    idio = g.standard_t(4, (dates, assets)) / np.sqrt(2)
    r = (beta * market[:, None] * 0.7 + idio * 0.7) * vol * regime[:, None]
    prices = 100 * np.exp(np.vstack([np.zeros(assets), np.cumsum(r, axis=0)]))
    names = [f"S{i:02d}" for i in range(assets)]
    idx = pd.bdate_range("1997-01-01", periods=dates + 1, name="date")
    history = directory / "history.csv"
    pd.DataFrame(prices, index=idx, columns=names).to_csv(history, float_format="%.6f")
    rows = []
    kinds = ("long_only", "long_short", "single_name", "hedged", "short")
    for p in range(portfolios):
        kind = kinds[p % len(kinds)]
        name = f"{kind}_{p}" if p >= len(kinds) else kind
        if kind == "long_only":
            rows += [(name, a, 10.0) for a in names]
        elif kind == "long_short":
            rows += [(name, a, 10.0 if i % 2 == 0 else -10.0) for i, a in enumerate(names)]
        elif kind == "single_name":
            rows.append((name, names[p % assets], 100.0))
        elif kind == "hedged":
            rows += [(name, names[0], -sum(beta[1:]) / beta[0] * 10.0)] + [(name, a, 10.0) for a in names[1:]]
        else:
            rows += [(name, a, -5.0) for a in names[: max(1, assets // 3)]]
    books = directory / "portfolios.csv"
    pd.DataFrame(rows, columns=["portfolio", "asset", "quantity"]).to_csv(books, index=False)
    return history, books


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="mcmargin-bt-") as tmp:
        d = Path(tmp)
        history, books = write_inputs(d, args.assets, args.dates, args.portfolios)
        out = d / "out" / "backtest.zarr"
        cmd = [sys.executable, "-m", "jobs.backtest", f"history={history}", f"portfolios={books}",
               f"scenarios.n={args.scenarios}", f"output.path={out}", *args.overrides]
        timed = ["/usr/bin/time", "-v", *cmd] if os.path.exists("/usr/bin/time") else cmd
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        t0 = time.perf_counter()
        res = subprocess.run(timed, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            sys.stderr.write(res.stderr)
            raise SystemExit(res.returncode)
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
        cpu = [float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", res.stderr)]
        pngs = sorted(p.name for p in out.parent.glob("*.png"))
        return {"wall_s": wall, "cpu_s": sum(cpu) if cpu else float("nan"),
                "max_rss_mb": int(rss.group(1)) / 1024 if rss else float("nan"), "plots": len(pngs),
                "command": " ".join(["python", "-m", "jobs.backtest", "history=H", "portfolios=P",
                                     f"scenarios.n={args.scenarios}", "output.path=O", *args.overrides]),
                "stdout": res.stdout}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=int, default=30)
    ap.add_argument("--dates", type=int, default=7000)
    ap.add_argument("--scenarios", type=int, default=10000)
    ap.add_argument("--portfolios", type=int, default=5)
    ap.add_argument("overrides", nargs="*", help="extra job overrides, e.g. scenarios.horizon_days=1")
    args = ap.parse_args(argv)
    r = run(args)
    print(r["stdout"])
    print(f"| {args.assets} assets x {args.dates} dates x {args.scenarios} scenarios, {args.portfolios} portfolios "
          f"| `{r['command']}` | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s | {r['max_rss_mb']:.0f} MB "
          f"| {r['plots']} |")


if __name__ == "__main__":
    main()
