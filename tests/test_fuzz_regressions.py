"""Regressions: each bug the fuzzer (tests/fuzz.py) found, as a fixed example."""

import pytest

from conftest import VALUATION, small_frames_data
from mcmargin.errors import ConfigError, InputError

TABLES = ("instruments", "market", "positions", "collateral", "accounts")


def _book_dir(tmp_path, positions_text=None):
    for name, frame in zip(TABLES, small_frames_data()):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    if positions_text is not None:
        (tmp_path / "positions.csv").write_text(positions_text)
    return tmp_path


@pytest.mark.parametrize("header", ["account,instrument,quantity,account", " account,instrument,quantity,account "])
def test_column_named_twice_in_a_header_is_an_error(tmp_path, header):
    # Was: stripped names collided and pandas raised AttributeError ('DataFrame' object has no attribute 'str');
    # an exact repeat was renamed "account.1" by pandas and the first column used without a word.
    from mcmargin.inputs.files import load_book_dir

    d = _book_dir(tmp_path, f"{header}\na,BTC-PERP,1.5,b\n")
    with pytest.raises(InputError) as e:
        load_book_dir(d, VALUATION)
    assert e.value.file.endswith("positions.csv") and e.value.row == 1 and e.value.column == "account"
    assert "appears 2 times in the header (columns 1, 4)" in str(e.value)


def test_column_named_twice_in_a_frame_is_an_error():
    from mcmargin.inputs.files import book_from_frames

    ins, mkt, pos, col, acc = small_frames_data()
    mkt = mkt.set_axis(["asset", "price", "price", "haircut"], axis=1)
    with pytest.raises(InputError, match="column 'price' appears more than once in the market table"):
        book_from_frames(ins, mkt, pos, col, acc, VALUATION)


@pytest.mark.parametrize("text, row", [(b"[1, 2", 1), (b"description: x\na: b: c\n", 2), (b"\t- tab", 1)])
@pytest.mark.parametrize("loader", ["stress", "span"])
def test_invalid_yaml_is_one_line_with_its_row(tmp_path, loader, text, row):
    # Was: PyYAML's multi-line message, the file's text quoted, printed as the job's error.
    path = tmp_path / "f.yaml"
    path.write_bytes(text)
    with pytest.raises(InputError) as e:
        _load(loader, path)
    assert "\n" not in str(e.value) and e.value.row == row and "not valid YAML" in str(e.value)


@pytest.mark.parametrize("loader", ["stress", "span"])
def test_yaml_file_not_in_utf8_is_an_error(tmp_path, loader):
    # Was: UnicodeDecodeError (a ValueError, not caught) and a traceback.
    path = tmp_path / "f.yaml"
    path.write_bytes("description: café\n".encode("latin-1"))
    with pytest.raises(InputError) as e:
        _load(loader, path)
    assert e.value.file == str(path) and "utf-8" in str(e.value)


def _load(loader, path):
    if loader == "stress":
        from mcmargin.scenarios.named import load_stress

        return load_stress(path)
    from mcmargin.margin.span import DEFAULTS, load_params

    return load_params(str(path), DEFAULTS)


def test_ragged_correlation_in_config_names_its_key():
    # Was: the rule accepted rows of numbers of any length, then NumPy raised ValueError (inhomogeneous shape).
    import numpy as np

    from mcmargin.common.settings import STRESS_RULES, check_settings
    from mcmargin.scenarios import build_scenarios

    ragged = [[1.0, 0.5], [0.5, 1.0, 0.2]]
    with pytest.raises(ConfigError, match=r"scenarios.correlation\[1\]: expected a square matrix: row 1 has 3 entries"):
        check_settings({"scenarios": {"correlation": ragged}}, STRESS_RULES)
    cfg = dict(model="gaussian", n=10, seed=1, horizon_days=2, correlation=ragged, valuation_date=VALUATION,
               risk_factors={"BTC": {"vol": 0.5, "vol_of_vol": 1.0, "spot_vol_corr": -0.3},
                             "ETH": {"vol": 0.6, "vol_of_vol": 1.0, "spot_vol_corr": -0.3}})
    with pytest.raises(ConfigError, match=r"scenarios.correlation(\[1\])?: expected a square matrix"):
        build_scenarios(cfg, np.array(["BTC", "ETH"], dtype=object), np.array([0.5, 0.6]))


def test_the_job_on_a_malformed_file_exits_2_and_writes_nothing(tmp_path):
    from conftest import run_job

    (tmp_path / "book").mkdir()
    d = _book_dir(tmp_path / "book", "account,instrument,quantity,account\na,BTC-PERP,1.5,b\n")
    p = run_job("jobs.stress", "portfolio=files", f"portfolio.dir={d}", "output.path=out/run.zarr", "backend=numpy",
                cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    errors = [x for x in p.stderr.splitlines() if x.startswith("mcmargin: error:")]
    assert len(errors) == 1 and "positions.csv, row 1, column 'account'" in errors[0]
    assert not (tmp_path / "out").exists()                 # no dataset, lock, debris or directory


@pytest.mark.parametrize("scenarios, key", [
    ({"risk_factors": True}, "scenarios.risk_factors"),
    ({"risk_factors": {"BTC": True}}, "scenarios.risk_factors.BTC"),
    ({"risk_factors": {"BTC": {"vol": 0.5}}, "default_factor": [1]}, "scenarios.default_factor"),
])
def test_config_section_of_the_wrong_type_names_its_key(scenarios, key):
    # Was: TypeError ('bool' object is not iterable) or AttributeError ('bool' object has no attribute 'get').
    import numpy as np

    from mcmargin.scenarios import build_scenarios

    cfg = dict(model="gaussian", n=10, seed=1, horizon_days=2, valuation_date=VALUATION, **scenarios)
    with pytest.raises(ConfigError, match=rf"{key}: expected a mapping"):
        build_scenarios(cfg, np.array(["BTC"], dtype=object), np.array([0.5]))


@pytest.mark.parametrize("status", [True, "ab", [1, 2]])
def test_margin_status_of_the_wrong_type_names_its_key(status):
    # Was: TypeError / ValueError from dict(...) on a bool, a string or a list.
    from mcmargin.pipeline.config import status_from_config

    with pytest.raises(ConfigError, match="margin.status: expected a mapping"):
        status_from_config({"status": status})


def test_config_key_with_a_newline_is_shown_on_one_line():
    # Was: "config key margin.status.\n: ..." printed over two lines.
    from mcmargin.pipeline.config import status_from_config

    with pytest.raises(ConfigError) as e:
        status_from_config({"status": {"\n": 1.0}})
    assert "\n" not in str(e.value) and "'margin.status.\\n'" in str(e.value)


@pytest.mark.parametrize("header, where", [(" portfolio,asset,quantity,portfolio", "1, 4"),
                                           ("portfolio,asset,quantity,quantity ", "3, 4")])
def test_portfolios_column_named_twice_is_an_error_naming_it(tmp_path, header, where):
    # Was (fuzz, tests/test_fuzz_portfolios.py): AttributeError ('DataFrame' object has no attribute 'tolist'),
    # the stripped header holding two "portfolio" columns.
    from mcmargin.errors import InputError
    from mcmargin.inputs.portfolios import load_portfolios

    path = tmp_path / "books.csv"
    path.write_text(header + "\nlong,BTC,3,long\nhedge,BTC,1,hedge\n")
    column = header.split(",")[-1].strip()
    with pytest.raises(InputError, match=rf"column '{column}' appears 2 times in the header \(columns {where}\)") as e:
        load_portfolios(path, ["BTC"])
    assert e.value.file == str(path) and e.value.row == 1 and e.value.column == column


def test_date_only_history_in_a_backtest_is_refused_by_name(tmp_path):
    # Found by the history fuzz test once its base table held numbers (it held "np.float64(...)" cells, so every
    # example was refused): a history with a date column only loads with no price column (the loader's contract);
    # the backtest then refuses each holding of the portfolios file, saying the history has no columns.
    from mcmargin.inputs.history import load_history
    from mcmargin.inputs.portfolios import load_portfolios

    (tmp_path / "h.csv").write_text("date\n2026-10-01\n2026-10-02\n")
    (tmp_path / "p.csv").write_text("portfolio,asset,quantity\nlong,BTC,1\n")
    history = load_history(tmp_path / "h.csv")
    assert history.shape == (2, 0)
    with pytest.raises(InputError, match=r"unknown asset 'BTC': not a price column of the history \(columns: none\)"
                       ) as e:
        load_portfolios(tmp_path / "p.csv", list(history.columns))
    assert (e.value.row, e.value.column) == (2, "asset")
