"""Fuzzing the book loaders (instruments, market, positions, collateral, accounts): tests/fuzz.py."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import VALUATION, small_frames_data
from fuzz import (check_loader, dates, examples, file_forms, ids, in_temp_dir, numbers, positive_numbers,
                  table_edits, table_of, write_table)
from mcmargin.errors import McMarginError
from mcmargin.inputs.files import load_book_dir

TABLES = ("instruments", "market", "positions", "collateral", "accounts")
BASE = dict(zip(TABLES, (table_of(f) for f in small_frames_data())))
ASSETS = ["BTC", "ETH", "USDT"]
INSTRUMENTS = [r[0] for r in BASE["instruments"].rows]
ACCOUNTS = ["a", "b", "c", "d", "e"]

VALUES = {
    "instruments": {"instrument": ids(INSTRUMENTS), "kind": st.sampled_from(["spot", "perpetual", "future", "option",
                                                                            "Option", " future", "swap"]),
                    "underlying": ids(ASSETS), "settle": ids(ASSETS), "inverse": st.sampled_from(
                        ["true", "false", "TRUE", "0", "1", "yes", "maybe", ""]),
                    "contract_size": positive_numbers(), "expiry": dates(), "strike": positive_numbers(2e5),
                    "option_type": st.sampled_from(["call", "put", "CALL", " put", "c", ""])},
    "market": {"asset": ids(ASSETS), "price": positive_numbers(2e5), "vol": positive_numbers(5.0),
               "haircut": numbers(-1, 2)},
    "positions": {"account": ids(ACCOUNTS), "instrument": ids(INSTRUMENTS), "quantity": numbers()},
    "collateral": {"account": ids(ACCOUNTS), "asset": ids(ASSETS), "amount": numbers()},
    "accounts": {"account": ids(ACCOUNTS), "group": ids(["G1", "G2", ""])},
}


def _plain():
    from fuzz import FileForm

    return FileForm()


def check_book(book) -> None:
    """What every book a loader returns must be: ids clean and unique, every figure finite and in range."""
    m, ins, pos, col, acc = book.market, book.instruments, book.positions, book.collateral, book.accounts
    for frame, key in ((m, "asset"), (ins, "instrument"), (acc, "account")):
        labels = frame[key].astype(str)
        assert labels.is_unique and (labels == labels.str.strip()).all() and (labels != "").all(), key
    assert np.isfinite(m["price"]).all() and (m["price"] > 0).all()
    assert np.isfinite(m["vol"]).all() and (m["vol"] >= 0).all()
    assert ((m["haircut"] >= 0) & (m["haircut"] <= 1)).all()
    assets = set(m["asset"])
    assert set(ins["underlying"]) <= assets and set(ins["settle"]) <= assets
    assert np.isfinite(ins["contract_size"]).all() and (ins["contract_size"] > 0).all()
    dated = ins["kind"].isin(["future", "option"])
    assert (ins.loc[dated, "expiry"] > np.datetime64(VALUATION)).all()          # nothing expired is priced
    opt = ins["kind"] == "option"
    assert np.isfinite(ins.loc[opt, "strike"]).all() and (ins.loc[opt, "strike"] > 0).all()
    assert ins.loc[opt, "option_type"].isin(["call", "put"]).all()
    assert set(pos["instrument"]) <= set(ins["instrument"]) and set(col["asset"]) <= assets
    assert np.isfinite(pos["quantity"]).all() and np.isfinite(col["amount"]).all()
    for frame in (pos, col):
        a = frame["account"].astype(str)
        assert (a == a.str.strip()).all() and (a != "").all()


def _expected_market(table):
    """The market an independent reader takes from the file: {asset: (price, vol)} when every cell is plain."""
    h = table.header
    if not {"asset", "price", "vol"} <= set(h) or len(set(h)) != len(h):
        return None
    out = {}
    for r in table.rows:
        if len(r) != len(h) or all(not c.strip() for c in r):
            return None
        try:
            price, vol = float(r[h.index("price")]), float(r[h.index("vol")])
        except ValueError:
            return None
        out[r[h.index("asset")].strip()] = (price, vol)
    return out


@pytest.mark.parametrize("table", TABLES)
@examples(1.0)
@given(data=st.data())
def test_fuzz_book_tables(table, data):
    edited = data.draw(table_edits(BASE[table], VALUES[table]), label=table)
    form = data.draw(file_forms(), label="form")
    with in_temp_dir() as d:
        paths = {}
        for name in TABLES:
            paths[name] = write_table(edited if name == table else BASE[name], d / name,
                                      form if name == table else _plain())
        result = check_loader(lambda: load_book_dir(d, VALUATION), files=list(paths.values()))
    if isinstance(result, McMarginError):
        return
    check_book(result)
    if table == "market":
        want = _expected_market(edited)
        if want is not None:
            got = {a: (p, v) for a, p, v in zip(result.market["asset"], result.market["price"], result.market["vol"])}
            assert got == want


@examples(0.2)
@given(data=st.data())
def test_fuzz_book_end_to_end(data):
    """A book that loads gives finite figures (or a clear error): revalued, margined, stressed."""
    from mcmargin.output.store import check_figures
    from mcmargin.pipeline.stress import run_stress
    from mcmargin.scenarios import build_scenarios
    from mcmargin.scenarios.named import load_stresses

    table = data.draw(st.sampled_from(TABLES), label="table")
    edited = data.draw(table_edits(BASE[table], VALUES[table], max_edits=2), label=table)
    with in_temp_dir() as d:
        for name in TABLES:
            write_table(edited if name == table else BASE[name], d / name, _plain())
        book = check_loader(lambda: load_book_dir(d, VALUATION))
    if isinstance(book, McMarginError):
        return
    scen = build_scenarios({"model": "gaussian", "n": 400, "seed": 3, "horizon_days": 2, "valuation_date": VALUATION,
                            "risk_factors": {}, "default_factor": {"vol": None, "vol_of_vol": 1.0,
                                                                    "spot_vol_corr": -0.3}},
                           book.assets, book.market["vol"].to_numpy())
    ds = check_loader(lambda: check_figures(run_stress(book, scen, stresses=load_stresses(["crash_2022_11"]),
                                                       default_fund=1e6)))
    assert not isinstance(ds, McMarginError), f"a book that loads must give finite figures: {ds}"
    assert math.isfinite(float(ds["group_im"].sum()))
