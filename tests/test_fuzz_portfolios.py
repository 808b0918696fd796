"""Fuzzing the backtest's loaders: the portfolios file, and a price history as the backtest uses it."""

import numpy as np
import pandas as pd
from hypothesis import event, given

from fuzz import FUZZ, Table, check_loader, dates, examples, file_forms, ids, in_temp_dir, numbers, \
    positive_numbers, table_edits, write_table
from mcmargin.errors import McMarginError

KNOWN = ("BTC", "ETH", "SOL")
PORTFOLIOS = Table(["portfolio", "asset", "quantity"],
                   [["long", "BTC", "3"], ["long", "ETH", "1.5"], ["hedge", "BTC", "1"], ["hedge", "ETH", "-0.5"],
                    ["single", "SOL", "-20"]])


def check_portfolios(pf, known=KNOWN):
    """What a correct result is: clean unique names, known assets in history order, finite quantities."""
    assert len(pf.names) >= 1 and len(set(pf.names)) == len(pf.names)
    assert all(n and n == n.strip() for n in pf.names)
    assert list(pf.assets) == [a for a in known if a in pf.assets] and len(pf.assets) >= 1
    assert pf.quantity.shape == (len(pf.names), len(pf.assets)) and np.isfinite(pf.quantity).all()


@FUZZ
@given(edit=table_edits(PORTFOLIOS, {"portfolio": ids(["long", "hedge", "single"]), "asset": ids(KNOWN),
                                     "quantity": numbers()}), form=file_forms())
def test_fuzz_portfolios(edit, form):
    from mcmargin.inputs.portfolios import load_portfolios

    with in_temp_dir() as d:
        path = write_table(edit, d / "portfolios", form)
        pf = check_loader(lambda: load_portfolios(path, KNOWN), files=[path])
    event("refused" if isinstance(pf, McMarginError) else "loaded")
    if isinstance(pf, McMarginError):
        return
    check_portfolios(pf)
    # Independently of the loader: each holding of the table as written, read back from its text cells.
    header = [h.strip() for h in edit.header]
    if all(header.count(c) == 1 for c in ("portfolio", "asset", "quantity")) and \
            all(len(r) == len(header) for r in edit.rows):
        col = {c: header.index(c) for c in ("portfolio", "asset", "quantity")}
        held = {(r[col["portfolio"]].strip(), r[col["asset"]].strip()): float(r[col["quantity"]].strip())
                for r in edit.rows}
        assert len(held) == len(edit.rows)                        # nothing dropped, nothing summed
        for (name, asset), q in held.items():
            assert pf.quantity[pf.names.index(name), pf.assets.index(asset)] == q
        assert np.count_nonzero(pf.quantity) == sum(q != 0 for q in held.values())

# ----------------------------------------------------------------------------- the backtest's history
_rng = np.random.default_rng(11)
_prices = 100 * np.exp(np.cumsum(_rng.normal(0, 0.02, (40, 2)), axis=0))
HISTORY = Table(["date", "BTC", "ETH"], [[d.date().isoformat(), repr(float(a)), repr(float(b))] for d, (a, b) in
                                         zip(pd.date_range("2026-09-01", periods=40), _prices)])


@examples(0.2)
@given(edit=table_edits(HISTORY, {"date": dates("2026-09-20"), "BTC": positive_numbers(), "ETH": positive_numbers()}),
       form=file_forms())
def test_fuzz_backtest_history(edit, form):
    """A fuzzed history through the whole backtest (load, portfolios against its columns, margins, tests)."""
    from mcmargin.backtest.run import BacktestSettings, run_backtest
    from mcmargin.inputs.history import load_history
    from mcmargin.inputs.portfolios import load_portfolios

    st = BacktestSettings(model="historical", n=50, seed=1, horizon=1, lookback=10, min_observations=5,
                          confidence=0.9, buffer=0.0, block_dates=16)
    with in_temp_dir() as d:
        path = write_table(edit, d / "history", form)
        books = d / "books.csv"
        books.write_text("portfolio,asset,quantity\nlong,BTC,1\nlong,ETH,2\nhedge,BTC,1\nhedge,ETH,-1\n")

        def backtest():
            history = load_history(path)
            return run_backtest(history, load_portfolios(books, list(history.columns)), st)

        ds = check_loader(backtest, files=[path, books])
    event("refused" if isinstance(ds, McMarginError) else "backtested")
    if isinstance(ds, McMarginError):
        return
    for name in ("im", "loss"):
        v = ds[name].values
        assert np.isfinite(v[~np.isnan(v)]).all()
    assert (ds["im"].values[np.isfinite(ds["im"].values)] >= 0).all()
