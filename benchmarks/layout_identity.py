"""Does a refactor change any figure?  Stress datasets of two commits, compared bit for bit.

    python -m benchmarks.layout_identity BEFORE [AFTER] [--work DIR]

Each commit is checked out into a temporary git worktree and every case
below is run there with this virtual environment's Python (``python -m
jobs.stress`` started inside the worktree imports that worktree's
``mcmargin``).  The cases cover the default run, a 20,000-account run, a
book read from files (exported by BEFORE, so the two commits price the very
same input even if the synthetic exchange changed), both kernels and every
scenario model, the history models on a price history this script writes.
Every dataset of AFTER must equal BEFORE's in every data variable,
coordinate and result attribute (:mod:`benchmarks.compare_datasets`).
Exit status 0 when all are identical.  AFTER defaults to the working tree.

Used for the package reorganisation (issue 11): before = the commit that
preceded it, after = the reorganised tree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: (name, overrides): every case runs with engine.progress=false.
CASES = (
    ("default", []),
    ("accounts_20k", ["portfolio.n_accounts=20000"]),
    ("files_20k", ["portfolio=files", "portfolio.dir={work}/book_20k"]),
    ("reference_student_t", ["scenarios=student_t", "engine.fast_path=false", "portfolio.n_accounts=2000"]),
    ("historical", ["scenarios=historical", "history={work}/history.csv", "portfolio.n_accounts=2000"]),
    ("fhs", ["scenarios=fhs", "history={work}/history.csv", "portfolio.n_accounts=2000", "scenarios.n=5000"]),
    ("t_copula", ["scenarios=t_copula", "history={work}/history.csv", "portfolio.n_accounts=2000",
                  "scenarios.n=5000"]),
)


def write_history(path: Path, days: int = 900, seed: int = 3) -> None:
    """A daily price history of the synthetic exchange's assets: correlated fat-tailed log returns."""
    rng = np.random.default_rng(seed)
    assets = ["BTC", "ETH", "SOL", "BNB"]
    corr = np.array([[1, .8, .7, .6], [.8, 1, .75, .6], [.7, .75, 1, .55], [.6, .6, .55, 1]])
    z = rng.standard_t(5, size=(days, 4)) @ np.linalg.cholesky(corr).T * np.array([.03, .035, .05, .03]) / 1.3
    prices = np.exp(np.cumsum(z, axis=0)) * np.array([60000.0, 3000.0, 150.0, 600.0])
    dates = np.datetime64("2026-11-25") - np.arange(days)[::-1]
    lines = ["date," + ",".join(assets + ["USDT"])]
    lines += [f"{d}," + ",".join(f"{p:.6f}" for p in row) + ",1.0" for d, row in zip(dates, prices)]
    path.write_text("\n".join(lines) + "\n")


def run_cases(tree: Path, out: Path, work: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, overrides in CASES:
        args = [o.format(work=work) for o in overrides]
        cmd = [sys.executable, "-m", "jobs.stress", *args, f"output.path={out / name}.zarr", "engine.progress=false"]
        done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{name} failed in {tree}:\n{done.stderr[-2000:]}")
        print(f"  {tree.name}: {name} written", flush=True)


def _worktree(commit: str, where: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", str(where), commit], cwd=ROOT, check=True,
                   capture_output=True)
    return where


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", help="commit before the change")
    ap.add_argument("after", nargs="?", help="commit after it (default: this working tree)")
    ap.add_argument("--work", help="directory for the books, history and datasets (default: a temporary one)")
    ap.add_argument("--new-ok", action="store_true",
                    help="variables only in AFTER (added by a later issue) are listed, not differences")
    args = ap.parse_args(argv)
    from benchmarks.compare_datasets import differences
    from mcmargin.output.store import open_dataset

    work = Path(args.work or tempfile.mkdtemp(prefix="layout-identity-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    write_history(work / "history.csv")
    trees = {"before": _worktree(args.before, work / "tree-before")}
    trees["after"] = _worktree(args.after, work / "tree-after") if args.after else ROOT
    try:
        export = [sys.executable, "-m", "jobs.stress", "portfolio.n_accounts=20000", f"portfolio.export={work}/book_20k"]
        subprocess.run(export, cwd=trees["before"], check=True, capture_output=True)
        for side, tree in trees.items():
            run_cases(tree, work / side, work)
        failed = 0
        for name, _ in CASES:
            a = open_dataset(work / "before" / f"{name}.zarr").load()
            b = open_dataset(work / "after" / f"{name}.zarr").load()
            diff = differences(a, b, new_ok=args.new_ok)
            failed += bool(diff)
            added = sorted(set(b.data_vars) - set(a.data_vars))
            print(f"{name:>20}: {'identical' if not diff else '; '.join(diff)} "
                  f"({len(a.data_vars)} variables, {sum(v.size for v in a.data_vars.values()):,} values)"
                  + (f"; added: {', '.join(added)}" if added else ""))
        return 1 if failed else 0
    finally:
        for side, tree in trees.items():
            if tree != ROOT:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
