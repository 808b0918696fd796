"""Are two stress datasets the same numbers?  ``python -m benchmarks.compare_datasets A B``.

Used to check that a speed-up changed no figure: every data variable and
coordinate must have the same dims, dtype kind and values, bit for bit
(NaN equal to NaN), and every attribute must be equal except those that
describe the run rather than its results (timings, creation time, versions,
the resolved config, which holds ``output.path``).  Exit status 0 when
identical, 1 otherwise, with one line per difference.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

#: Attributes that differ between two runs of the same figures.
RUN_ATTRS = {"timings", "created", "versions", "config", "working_directory", "code_version", "git_commit", "git_dirty"}


def _values(v):
    a = v.values
    if a.dtype.kind in "OUT" or a.dtype.kind not in "biufcmM":
        return np.asarray([str(x) for x in a.ravel()], dtype=object).reshape(a.shape)
    return a


def differences(a, b, new_ok: bool = False) -> list[str]:
    """One line per variable, coordinate or attribute that differs between datasets ``a`` and ``b``.

    With ``new_ok``, variables only in ``b`` (added by a later version) are not differences.
    """
    out = []
    for name in sorted(set(a.variables) | set(b.variables)):
        if new_ok and name not in a.variables:
            continue
        if name not in a.variables or name not in b.variables:
            out.append(f"{name}: only in {'A' if name in a.variables else 'B'}")
            continue
        va, vb = a[name], b[name]
        if va.dims != vb.dims or va.shape != vb.shape:
            out.append(f"{name}: dims {va.dims}{va.shape} vs {vb.dims}{vb.shape}")
            continue
        xa, xb = _values(va), _values(vb)
        if xa.dtype.kind == "f" and xb.dtype.kind == "f":
            same = xa.dtype == xb.dtype and np.array_equal(xa.view(np.uint8), xb.view(np.uint8))
        else:
            same = np.array_equal(xa, xb)
        if not same:
            n = int(np.sum(np.asarray(xa != xb)))
            out.append(f"{name}: {n} of {xa.size} values differ")
    for key in sorted((set(a.attrs) | set(b.attrs)) - RUN_ATTRS):
        if a.attrs.get(key) != b.attrs.get(key):
            out.append(f"attrs[{key!r}]: {a.attrs.get(key)!r} vs {b.attrs.get(key)!r}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--new-ok", action="store_true", help="variables only in B (added since A) are not differences")
    args = ap.parse_args(argv)
    from mcmargin.output.store import open_dataset

    a, b = open_dataset(args.a).load(), open_dataset(args.b).load()
    diff = differences(a, b, args.new_ok)
    added = sorted(set(b.variables) - set(a.variables)) if args.new_ok else []
    for line in diff:
        print(line)
    print(f"{args.a} vs {args.b}: {'identical' if not diff else f'{len(diff)} difference(s)'} "
          f"({len(a.variables)} variables, {sum(v.size for v in a.variables.values()):,} values)"
          + (f"; added in B: {', '.join(added)}" if added else ""))
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
