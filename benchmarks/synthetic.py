"""How long the synthetic exchange takes to generate (moved out of the test suite: a timing is a benchmark).

``python -m benchmarks.synthetic [--accounts N ...]`` prints a Markdown table
of seconds per book size; ~0.2 s for 5,000 accounts on the project's 2-core
machine (a per-row Python loop sneaking in would show as seconds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from mcmargin.inputs.synthetic import synthetic_book

DATE = dt.date(2026, 11, 25)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, nargs="+", default=[5_000, 100_000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print("| accounts | best of %d (s) | positions |" % args.repeat)
    print("|---:|---:|---:|")
    for n in args.accounts:
        best, rows = float("inf"), 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            book = synthetic_book(n, valuation_date=DATE)
            best = min(best, time.perf_counter() - t0)
            rows = len(book.positions)
        print(f"| {n:,} | {best:.3f} | {rows:,} |")


if __name__ == "__main__":
    main()
