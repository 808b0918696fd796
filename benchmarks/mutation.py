"""Write the mutation score of the last ``mutmut run`` to benchmarks/RESULTS.md (``make mutate``).

Reads the per-mutant results with ``mutmut results --all true``, counts
killed, survived, timed-out and untested mutants per module, and appends a
section with the score, the command, the commit and every surviving
mutant: those listed in :data:`EQUIVALENT` with the reason they cannot
change a figure, the others as open (each needs a test).

``python -m benchmarks.mutation [--no-record]``
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"

#: Surviving mutants that change no figure, with the reason (mutant name -> why it is equivalent).
_DEAD = "the placeholder only keeps lanes finite that the final where() replaces (expired: intrinsic; zero sd: flat)"
EQUIVALENT: dict[str, str] = {
    "mcmargin.tails.x_sorted_tail__mutmut_5": "np.sort's default axis is the last, which is axis 1 of a 2-D tail",
    "mcmargin.exposure.xǁCompiledBookǁrows__mutmut_4": "slice(None, na) is slice(0, na)",
    "mcmargin.pricing.x_black_scholes__mutmut_3":
        "expiry exactly 0 (>= instead of >): the alive lane has sd 0, so the flat branch returns the intrinsic value "
        "(discount exp(0) = 1), the same as the expired branch",
    "mcmargin.pricing.x_black_scholes__mutmut_12": _DEAD,
    "mcmargin.pricing.x_black_scholes__mutmut_23":
        "sd >= 0 keeps a zero sd, making d1 nan where vol sqrt(t) = 0; those lanes are replaced by the flat value",
    "mcmargin.pricing.x_black_scholes__mutmut_25": _DEAD,
}


def mutmut(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False).stdout


def results() -> dict[str, str]:
    out = {}
    for line in mutmut("results", "--all", "true").splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            out[name] = status
    return out


def module_of(name: str) -> str:
    return name.split(".x")[0].split(".xǁ")[0]


def report(res: dict[str, str], command: str) -> str:
    by_module = collections.defaultdict(collections.Counter)
    for name, status in res.items():
        by_module[module_of(name)][status] += 1
    total = collections.Counter()
    for c in by_module.values():
        total.update(c)
    checked = sum(v for k, v in total.items() if k not in ("not checked", "skipped"))
    killed = total["killed"] + total["timeout"]
    survivors = sorted(n for n, s in res.items() if s == "survived")
    equivalent = [n for n in survivors if n in EQUIVALENT]
    open_ = [n for n in survivors if n not in EQUIVALENT]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    lines = [f"## Mutation testing ({dt.date.today().isoformat()}, commit {commit})", "",
             f"`{command}`: mutmut over the modules in `[tool.mutmut] only_mutate` against the fast oracle "
             "tests in `pytest_add_cli_args_test_selection` (pyproject.toml).", "",
             f"**Score: {killed} of {checked} checked mutants killed ({100 * killed / max(checked, 1):.1f}%)**; "
             f"{len(equivalent)} surviving mutants are equivalent (below, with the reason), so "
             f"{100 * (killed + len(equivalent)) / max(checked, 1):.1f}% are killed or equivalent; "
             f"{len(open_)} open. {total['not checked']} not checked (run stopped), "
             f"{total['no tests']} with no test reaching them.", "",
             "| module | mutants | killed | timeout | survived | no tests | not checked |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for mod in sorted(by_module):
        c = by_module[mod]
        lines.append(f"| {mod} | {sum(c.values())} | {c['killed']} | {c['timeout']} | {c['survived']} | "
                     f"{c['no tests']} | {c['not checked']} |")
    if equivalent:
        lines += ["", "Equivalent survivors:", ""] + [f"- `{n}`: {EQUIVALENT[n]}" for n in equivalent]
    if open_:
        lines += ["", "Open survivors (each needs a test):", ""] + [f"- `{n}`" for n in open_]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-record", action="store_true", help="print only")
    ap.add_argument("--command", default="make mutate")
    args = ap.parse_args(argv)
    res = results()
    if not res:
        sys.exit("no mutmut results: run `make mutate` (or `python -m mutmut run`) first")
    text = report(res, args.command)
    print(text)
    if not args.no_record:
        with RESULTS.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
