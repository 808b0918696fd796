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
import re
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
    "mcmargin.instruments.exposure.xǁCompiledBookǁrows__mutmut_9": "slice(None, na) is slice(0, na)",
    "mcmargin.instruments.exposure.xǁCompiledBookǁrows__mutmut_11": "slice(na) is slice(0, na)",
    "mcmargin.instruments.black_scholes.x_black_scholes__mutmut_3":
        "expiry exactly 0 (>= instead of >): the alive lane has sd 0, so the flat branch returns the intrinsic value "
        "(discount exp(0) = 1), the same as the expired branch",
    "mcmargin.instruments.black_scholes.x_black_scholes__mutmut_12": _DEAD,
    "mcmargin.instruments.black_scholes.x_black_scholes__mutmut_23":
        "sd >= 0 keeps a zero sd, making d1 nan where vol sqrt(t) = 0; those lanes are replaced by the flat value",
    "mcmargin.instruments.black_scholes.x_black_scholes__mutmut_25": _DEAD,
    "mcmargin.instruments.black_scholes.x_black_scholes__mutmut_101": "vol / sqrt(t) > 0 iff vol > 0 on alive lanes (t > 0); dead lanes "
                                                    "are replaced by the intrinsic value",
    "mcmargin.margin.mc_es.x_margin_dataset__mutmut_41": "a zero quantity is never stored in the sparse holdings (and would "
                                                   "weigh |0|), so q <= 0 and q < 0 pick the same side",
    **{f"mcmargin.margin.mc_es.x_margin_dataset__mutmut_{i}": "groups are the sorted distinct labels of the accounts: the "
       "last group index always occurs, so bincount already has groups.size entries" for i in (99, 111, 118, 125)},
    "mcmargin.margin.mc_es.x_margin_dataset__mutmut_431": "the confidence coordinate was created with this long_name",
    "mcmargin.margin.mc_es.x_margin_dataset__mutmut_432": "the confidence coordinate was created with these units",
    **{f"mcmargin.instruments.exposure.x_compile_book__mutmut_{i}": "reset_index(drop=False) keeps the old index as an extra "
       "'index' column, which nothing reads (columns by name)" for i in (32, 37)},
    "mcmargin.instruments.exposure.x_compile_book__mutmut_127": "astype(None) is astype(float64)",
    "mcmargin.instruments.exposure.x_compile_book__mutmut_165": "every group label has a member: bincount already has groups.size "
                                                    "entries",
    **{f"mcmargin.instruments.exposure.x_compile_book__mutmut_{i}": "the inferred shape is the same: the last group and the last "
       "account both occur in the membership matrix" for i in (172, 174)},
    **{f"mcmargin.instruments.exposure.x_compile_book__mutmut_{i}": "the unit rows are converted to CSR by the vstack(format='csr') "
       "that follows; the format of the intermediate does not change a value" for i in (180, 182, 187, 189)},
    **{f"mcmargin.instruments.exposure.x_to_backend__mutmut_{i}": "BackendBook.prices is never read by the kernels"
       for i in (23, 46)},
    "mcmargin.instruments.exposure.x_to_backend__mutmut_41": "astype(None) is astype(float64)",
    "mcmargin.instruments.exposure.x_to_backend__mutmut_42": "the flags are exactly 0.0 or 1.0: > 0.5 and >= 0.5 agree",
    **{f"mcmargin.instruments.exposure.x_compile_book__mutmut_{i}": "scipy's vstack of CSR blocks returns CSR without format='csr'"
       for i in (195, 197)},
    **{f"mcmargin.instruments.exposure.x_compile_book__mutmut_{i}": "the -1 start of first_member is overwritten for every group "
       "(each has a member)" for i in (237, 238)},
    "mcmargin.instruments.exposure.x_compile_book__mutmut_250": "CompiledBook.prices only reaches BackendBook.prices, which the "
                                                    "kernels never read",
    "mcmargin.instruments.exposure.x_compile_book__mutmut_256": "CompiledBook.opt_expiry is a record: revaluation uses "
                                                    "opt_expiry_after and today's value opt_value",
    "mcmargin.instruments.exposure.x_compile_book__mutmut_304": "astype(None) is astype(float64)",
    "mcmargin.instruments.exposure.x_to_backend__mutmut_14": "with no options every pricing array is empty: a one-element index "
                                                 "broadcasts against them to an empty result",
    "mcmargin.instruments.exposure.x_to_backend__mutmut_4": "an empty index array through asarray(dtype=int64) is the same empty "
                                                "int64 array as zeros((0,), int64)",
    **{f"mcmargin.scenarios.parametric.x__fitted_params__mutmut_{i}": "cfg.get('params_fallback', None) and "
       "cfg.get('params_fallback') are None when the key is absent, and bool(None) is bool(False)" for i in (30, 32)},
    "mcmargin.scenarios.parametric.x__fitted_params__mutmut_61": "CalibrationSettings.from_cfg's prefix defaults to "
                                                              "'scenarios', the value dropped",
    **{f"mcmargin.scenarios.parametric.x__factor_params__mutmut_{i}": "changes only the label 'calibration' of an invalid "
       "value fitted on the fly, which calibrate cannot return: vol and vol_of_vol are finite and >= 0 or NaN (NaN is "
       "dropped by fitted_value), spot_vol_corr is a np.corrcoef value, clipped to [-1, 1]; with scenarios.params "
       "the label is unchanged" for i in (104, 111, 112)},
    "mcmargin.scenarios.parametric.x__factor_params__mutmut_239": "mixed=True from the start only adds a "
        "nearest_correlation() call where no fitted and configured values mix: that matrix is block-diagonal in PSD "
        "blocks (configured: check_correlation; fitted: devolatized_correlation / load_params repair it; identity "
        "for the rest), and nearest_correlation returns a PSD input as (c + c.T) / 2, bit for bit c for the "
        "symmetric corr built here",
    **{f"mcmargin.scenarios.parametric.x__factor_params__mutmut_{i}": "check_correlation converts the matrix with "
       "np.asarray(matrix, dtype=float) itself, so the dtype of the asarray before it changes nothing" for i in (232, 234)},
    "mcmargin.scenarios.parametric.x__factor_params__mutmut_263": "mixed = bool(fit_assets) and mixed |= bool(fit_assets) "
        "agree: mixed starts False and fit_assets does not change inside the loop",
}


def diff(name: str) -> tuple[str, str]:
    """The removed and the added source line of a mutant (first of each)."""
    lines = mutmut("show", name).splitlines()
    minus = next((x[1:].strip() for x in lines if x.startswith("- ") or x.startswith("-    ")), "")
    plus = next((x[1:].strip() for x in lines if x.startswith("+ ") or x.startswith("+    ")), "")
    return minus, plus


_STRING = re.compile(r'"[^"]*"')


def classify(name: str) -> tuple[str, str]:
    """("equivalent" | "metadata" | "open", reason) of a surviving mutant."""
    if name in EQUIVALENT:
        return "equivalent", EQUIVALENT[name]
    minus, plus = diff(name)
    def no_dtype(x):
        return re.sub(r"dtype=[\w.]+", "", x).replace(" ", "").replace(",)", ")").replace(",,", ",")
    if "dtype" in minus and "zeros(" not in minus and no_dtype(minus) == no_dtype(plus):
        return "equivalent", ("drops a dtype= on data that already has it (validated float/int/str columns, "
                              "float lists); NumPy infers the same dtype")
    if re.sub(r"slice\(0, ", "slice(None, ", minus) == plus or re.sub(r"slice\(0, ([^)]*)\)", r"slice(\1)", minus) == plus:
        return "equivalent", "slice(None, n) and slice(n) are slice(0, n)"
    if _STRING.sub('""', minus) == _STRING.sub('""', plus) and minus != plus and \
            any(k in minus for k in ("long_name", "_da(", "tail_definition", "methodology", "margin_model", '"units"')):
        return "metadata", "changes a descriptive text (long_name, attrs), not a figure or a dim"
    if any(k in minus for k in ("tail_definition=", "methodology=", "margin_model=")):
        return "metadata", "drops or changes a descriptive attr, not a figure"
    return "open", f"`{minus}` -> `{plus}`"


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
    kinds = {n: classify(n) for n in survivors}
    equivalent = [n for n in survivors if kinds[n][0] == "equivalent"]
    metadata = [n for n in survivors if kinds[n][0] == "metadata"]
    open_ = [n for n in survivors if kinds[n][0] == "open"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    lines = [f"## Mutation testing ({dt.date.today().isoformat()}, commit {commit})", "",
             f"`{command}`: mutmut over the modules in `[tool.mutmut] only_mutate` against the fast oracle "
             "tests in `pytest_add_cli_args_test_selection` (pyproject.toml).", "",
             f"**Score: {killed} of {checked} checked mutants killed ({100 * killed / max(checked, 1):.1f}%)**; "
             f"{len(equivalent)} surviving mutants are equivalent (below, with the reason), so "
             f"{100 * (killed + len(equivalent)) / max(checked, 1):.1f}% are killed or equivalent; "
             f"{len(metadata)} change only descriptive text (long_name, attrs), "
             f"{100 * (killed + len(equivalent) + len(metadata)) / max(checked, 1):.1f}% with those; "
             f"{len(open_)} open. {total['not checked']} not checked (run stopped), "
             f"{total['no tests']} with no test reaching them.", "",
             "| module | mutants | killed | timeout | survived | no tests | not checked |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for mod in sorted(by_module):
        c = by_module[mod]
        lines.append(f"| {mod} | {sum(c.values())} | {c['killed']} | {c['timeout']} | {c['survived']} | "
                     f"{c['no tests']} | {c['not checked']} |")
    if equivalent:
        lines += ["", "Equivalent survivors:", ""] + [f"- `{n}`: {kinds[n][1]}" for n in equivalent]
    if metadata:
        lines += ["", "Descriptive-text survivors (no figure, no dim changes):", ""] + [f"- `{n}`" for n in metadata]
    if open_:
        lines += ["", "Open survivors (each needs a test):", ""] + [f"- `{n}`: {kinds[n][1]}" for n in open_]
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
