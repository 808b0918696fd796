"""Resume benchmark, whole process: kill a run at a share of its wall time, start it again, time the restart.

    python -m benchmarks.resume --accounts 200000 --scenarios 50000 --kill-at 0.7

1. an uninterrupted run (wall time T);
2. the same run started afresh and SIGKILLed at ``kill-at`` x T;
3. the same command again: it resumes from the kept row blocks; its wall
   time is reported as a share of T (issue 17: at most 0.6 for a kill at
   0.7 on 200,000 x 50,000, at most 0.4 for a kill at 0.8 on 1,000,000 x
   100,000), and its dataset is compared with the uninterrupted one, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _command(out: Path, accounts: int, scenarios: int, extra) -> list[str]:
    return [sys.executable, "-m", "jobs.stress", f"portfolio.n_accounts={accounts}", f"scenarios.n={scenarios}",
            "backend=numpy", "engine.progress=false", f"output.path={out}", *extra]


def _timed(cmd, cwd, kill_after: float | None = None) -> tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    _, err = p.communicate()
    if p.returncode not in (0, -9):
        raise SystemExit(f"run failed ({p.returncode}): {err[-2000:]}")
    return time.perf_counter() - t0, p.returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=200_000)
    ap.add_argument("--scenarios", type=int, default=50_000)
    ap.add_argument("--kill-at", type=float, default=0.7)
    ap.add_argument("extra", nargs="*", help="more overrides")
    a = ap.parse_args(argv)
    from mcmargin.output.compare import differences
    from mcmargin.output.store import open_dataset

    d = Path(tempfile.mkdtemp(prefix="mcmargin-resume-bench-"))
    try:
        full, _ = _timed(_command(d / "full.zarr", a.accounts, a.scenarios, a.extra), d)
        killed_at, rc = _timed(_command(d / "run.zarr", a.accounts, a.scenarios, a.extra), d, a.kill_at * full)
        work = d / ".run.zarr.work"
        kept = sum(1 for _ in work.rglob("block-*.pkl")) if work.exists() else 0
        resumed, _ = _timed(_command(d / "run.zarr", a.accounts, a.scenarios, a.extra), d)
        with open_dataset(d / "full.zarr") as x, open_dataset(d / "run.zarr") as y:
            x, y = x.load(), y.load()
            diff = differences(x, y)
            timings = json.loads(y.attrs["timings"])
        print(f"| {a.accounts:,} x {a.scenarios:,} | {full:.1f} s | {a.kill_at:.0%}: killed at {killed_at:.1f} s "
              f"(rc {rc}), {kept} of {timings['blocks']} blocks kept | {resumed:.1f} s = {resumed / full:.2f} T "
              f"({timings['blocks_resumed']} blocks loaded) | {'bit-identical' if not diff else diff} |")
        return 0 if not diff else 1
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
