"""Books and scenarios of the benchmark size points.

Books come from the synthetic exchange (:func:`mcmargin.synthetic.synthetic_book`),
which lists 134 instruments (106 of them options).  It has no knob for the
number of instruments, so a point with ``K`` instruments keeps the exchange's
``K`` most traded instruments (ranked once, on a fixed 5,000-account book, so
every point with the same ``K`` lists the same instruments) and drops the
positions in the others: an exchange that lists only those ``K``.  Accounts
keep their collateral.  With ``K = 60`` an account holds about 4.4 positions
on average (6.0 with all 134).

Scenarios are the project's default Gaussian model
(``conf/scenarios/gaussian.yaml``) with ``n`` overridden.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCENARIO_CONFIG = ROOT / "conf" / "scenarios" / "gaussian.yaml"
BOOK_SEED = 7
RANKING_ACCOUNTS = 5000


@functools.lru_cache(maxsize=None)
def instrument_ranking() -> tuple:
    """Instrument ids from most to least traded (ties by id) on a fixed book."""
    from mcmargin.inputs.synthetic import synthetic_book

    book = synthetic_book(RANKING_ACCOUNTS, seed=BOOK_SEED)
    counts = book.positions["instrument"].value_counts()
    ids = list(book.instruments["instrument"])
    return tuple(sorted(ids, key=lambda i: (-int(counts.get(i, 0)), str(i))))


def make_book(n_accounts: int, n_instruments: int | None = None, seed: int = BOOK_SEED):
    """Synthetic book of ``n_accounts``, restricted to ``n_instruments`` (None: all)."""
    from mcmargin.inputs.synthetic import synthetic_book

    book = synthetic_book(n_accounts, seed=seed)
    if n_instruments is None or n_instruments >= len(book.instruments):
        return book
    keep = set(instrument_ranking()[:n_instruments])
    ins = book.instruments[book.instruments["instrument"].isin(keep)].reset_index(drop=True)
    pos = book.positions[book.positions["instrument"].isin(keep)].reset_index(drop=True)
    return dataclasses.replace(book, instruments=ins, positions=pos)


def scenario_config(n: int) -> dict:
    with open(SCENARIO_CONFIG) as f:
        cfg = yaml.safe_load(f)
    cfg["n"] = int(n)
    return cfg


def make_scenarios(book, n: int):
    from mcmargin import build_scenarios

    return build_scenarios(scenario_config(n), book.assets, book.market["vol"].to_numpy(dtype=float))
