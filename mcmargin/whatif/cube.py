"""The night's cube (``output.cube``): what rebuilds any pool's scenario loss vector without redoing the night.

Every loss of the nightly run is ``loss = -(E @ pnl.T)`` with ``E = H @
to_factors`` (docs/architecture.md, "Revaluation").  The cube stores the
three pieces, float64, so a pool's losses are rebuilt exactly (up to the
order of the sum) and a trade of ``q`` units of column ``c`` moves them by
``-q x (pnl @ to_factors[c])``:

- ``factor_pnl(scenario, factor)``: the P&L of every risk factor in every
  scenario (market assets: expm1 of the shock; options: one contract);
- ``to_factors_*(link)``: the sparse map from position columns (instruments,
  then collateral assets) to factors, and ``unit_value(column)``;
- ``holding_*(holding)``: every account's quantities and collateral amounts;
- ``shock``/``vol_shock(scenario, asset)``: the draws, so the instruments can be
  revalued on them at intraday prices and vols (``POST /reprice``);
- the instrument terms and market table the re-pricing compiles from;
- the night's figures per account and pool at ``margin.confidence``.

Only the ``mc_es`` margin model without add-ons is supported
(:func:`check_cube_margin`): its requirement is a function of the pool's own
loss vector alone.  The liquidity and close-out add-ons depend on the book's
deltas and the netting cap on the standalone requirements; a cube of a run
with any of them on is refused, naming ``output.cube``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from ..aggregation import compile_book
from ..backend import get_backend
from ..errors import ConfigError
from ..inputs.book import Book
from ..instruments import revaluation

#: Dataset attribute that marks a cube (and its layout version).
CUBE_FORMAT = "mcmargin-whatif-cube 1"
#: Scenarios revalued at once when the cube's factor P&L is formed (keeps the option passes in cache).
REVALUE_BLOCK = 4096
#: Variables of a run's dataset that mean an ``mc_es`` add-on was on (the service refuses those runs).
ADD_ON_VARIABLES = ("mc_es_liquidity_addon", "mc_es_closeout_cost", "mc_es_netting_cap")
#: Account figures of the night copied into the cube (at ``margin.confidence`` for var and es).
ACCOUNT_FIGURES = ("equity", "im", "mm", "margin_call", "isolated_im", "var", "es")
GROUP_FIGURES = ("group_equity", "group_im", "group_mm", "group_margin_call", "group_var", "group_es",
                 "group_members")


def check_cube_margin(models, key: str = "output.cube") -> None:
    """Refuse, naming ``key``, a run whose primary margin model the what-if service cannot reproduce exactly.

    The service supports ``mc_es`` without add-ons (``im = max(0, ES_q) x
    (1 + buffer)``, from the pool's own losses).  ``models`` are
    :class:`~mcmargin.margin.MarginModel` objects, primary first.
    """
    primary = models[0]
    if primary.name != "mc_es":
        raise ConfigError(key, f"the what-if service supports the mc_es margin model only; the run's primary "
                               f"model is {primary.name} (set margin.model=mc_es, or leave output.cube=null)")
    a = getattr(primary, "add_ons", None)
    on = [k for k, v in (("margin.mc_es.liquidity_addon", a and a.liquidity),
                         ("margin.mc_es.closeout_cost", a and a.closeout),
                         ("margin.mc_es.max_netting", a is not None and a.max_netting is not None)) if v]
    if on:
        raise ConfigError(key, f"the what-if service reproduces mc_es without add-ons only, and {', '.join(on)} "
                               "is on (its requirement depends on more than the pool's losses); switch it off or "
                               "leave output.cube=null")


def _da(dims, values, long_name, units="USD", **attrs):
    return (dims, values, {"long_name": long_name, "units": units, **attrs})


def _primary(ds: xr.Dataset) -> xr.Dataset:
    return ds.isel(model=0) if "model" in ds.dims else ds


def build_cube(book: Book, scenarios, ds: xr.Dataset) -> xr.Dataset:
    """The cube of a finished nightly run (module docstring), float64.

    Parameters
    ----------
    book : Book
        The run's validated book.
    scenarios : ScenarioModel
        The run's scenario model (its draws depend only on (seed, scenario index)).
    ds : xarray.Dataset
        The run's dataset (:func:`~mcmargin.pipeline.stress.run_stress`): the night's figures,
        the margin parameters and the pricing rate are read from it.

    Raises
    ------
    ConfigError
        ``output.cube``: the run's primary margin model is not ``mc_es`` without add-ons.
    """
    model = ds.attrs.get("margin_model")
    if model != "mc_es":
        raise ConfigError("output.cube", f"the what-if service supports the mc_es margin model only; the run's "
                                         f"primary model is {model}")
    on = [v for v in ds.data_vars if any(v.endswith(a) for a in ADD_ON_VARIABLES)]
    if on:
        raise ConfigError("output.cube", f"the what-if service reproduces mc_es without add-ons only; the run has "
                                         f"{', '.join(sorted(on))}")
    rate = float(ds.attrs.get("pricing_rate", 0.0))
    horizon = float(getattr(scenarios, "horizon_calendar_days", scenarios.horizon_days))
    compiled = compile_book(book, horizon, rate, row_kinds=("accounts",))
    nb = get_backend("numpy")
    shock, vol_shock = (np.asarray(a, dtype=np.float64) for a in scenarios.draw(0, scenarios.n, nb))
    priced = revaluation.to_backend(compiled, nb)
    pnl = np.empty((scenarios.n, compiled.n_factors))
    for a in range(0, scenarios.n, REVALUE_BLOCK):
        pnl[a:a + REVALUE_BLOCK] = np.asarray(revaluation.revalue(nb, priced, shock[a:a + REVALUE_BLOCK],
                                                                  vol_shock[a:a + REVALUE_BLOCK]))

    n_ins = compiled.n_instruments
    option_ids = compiled.instruments[n_ins - compiled.options.n:]
    factors = np.concatenate([compiled.assets, option_ids]).astype(str)
    columns = np.concatenate([compiled.instruments, compiled.assets]).astype(str)
    column_kind = np.array(["instrument"] * n_ins + ["collateral"] * compiled.assets.size)
    links = compiled.to_factors.tocoo()
    held = compiled.holdings[compiled.rows("accounts")].tocoo()
    order = np.lexsort((held.col, held.row))

    ins = book.instruments.set_index("instrument").loc[compiled.instruments]
    mkt = book.market.set_index("asset").loc[compiled.assets]
    night = _primary(ds)
    q = float(ds.attrs["margin_confidence"])
    data = {
        "factor_pnl": _da(("scenario", "factor"), pnl, "P&L of one unit of each risk factor in each scenario "
                          "(asset factors: expm1 of the shock, per USD of exposure; option factors: one contract)",
                          units="USD per unit of factor exposure"),
        "shock": _da(("scenario", "asset"), shock, "log-return of the asset over the horizon", units="1"),
        "vol_shock": _da(("scenario", "asset"), vol_shock, "log change of the asset's implied volatility",
                         units="1"),
        "to_factors_column": _da(("link",), links.row.astype(np.int64), "position column of the link (index)",
                                 units="1"),
        "to_factors_factor": _da(("link",), links.col.astype(np.int64), "risk factor of the link (index)",
                                 units="1"),
        "to_factors_exposure": _da(("link",), links.data.astype(np.float64), "exposure of one unit of the column "
                                   "to the factor (USD notional for asset factors, contracts for option factors)",
                                   units="USD or contracts"),
        "unit_value": _da(("column",), compiled.unit_value, "value of one unit of the column today"),
        "column_kind": _da(("column",), column_kind, "instrument or collateral", units="1"),
        "holding_account": _da(("holding",), held.row[order].astype(np.int64), "account of the holding (index)",
                               units="1"),
        "holding_column": _da(("holding",), held.col[order].astype(np.int64), "position column of the holding "
                              "(index)", units="1"),
        "holding_quantity": _da(("holding",), held.data[order].astype(np.float64), "signed contracts (instrument) "
                                "or amount (collateral)", units="contracts or units of the asset"),
        "account_group": _da(("account",), compiled.account_group.astype(str), "margin group of the account",
                             units="1"),
        "price": _da(("asset",), compiled.prices, "price of the asset at the close"),
        "vol": _da(("asset",), mkt["vol"].to_numpy(dtype=float), "implied vol of the asset at the close", units="1"),
        "instrument_kind": _da(("instrument",), ins["kind"].to_numpy(dtype=str), "kind", units="1"),
        "instrument_underlying": _da(("instrument",), ins["underlying"].to_numpy(dtype=str), "underlying", units="1"),
        "instrument_settle": _da(("instrument",), ins["settle"].to_numpy(dtype=str), "settlement asset", units="1"),
        "instrument_inverse": _da(("instrument",), ins["inverse"].to_numpy(dtype=bool), "inverse contract",
                                  units="1"),
        "instrument_contract_size": _da(("instrument",), ins["contract_size"].to_numpy(dtype=float),
                                        "contract size", units="units of the underlying, or USD face value"),
        "instrument_expiry": _da(("instrument",), ins["expiry"].dt.strftime("%Y-%m-%d").fillna("")
                                 .to_numpy(dtype=str), "expiry date (ISO; empty: none)", units="1"),
        "instrument_strike": _da(("instrument",), ins["strike"].to_numpy(dtype=float), "strike (NaN: not an "
                                 "option)", nonfinite="nan: not an option"),
        "instrument_option_type": _da(("instrument",), ins["option_type"].to_numpy(dtype=str), "call or put",
                                      units="1"),
        "instrument_vol": _da(("instrument",), ins["vol"].to_numpy(dtype=float), "the instrument's own vol (NaN: "
                              "the market's)", units="1", nonfinite="nan: the market vol applies"),
    }
    for name in ACCOUNT_FIGURES + GROUP_FIGURES:
        if name not in night:
            continue
        v = night[name]
        if "confidence" in v.dims:
            v = v.sel(confidence=q)
        data[f"night_{name}"] = (v.dims, v.to_numpy(), {**v.attrs, "long_name": "the night's " +
                                                        v.attrs.get("long_name", name)})
    coords = {"scenario": np.arange(scenarios.n), "factor": factors, "asset": compiled.assets.astype(str),
              "instrument": compiled.instruments.astype(str), "column": columns,
              "account": compiled.accounts.astype(str), "group": compiled.groups.astype(str)}
    cube = xr.Dataset(data, coords=coords)
    for name, long_name in (("scenario", "scenario index"), ("factor", "risk factor: market assets, then options"),
                            ("column", "position column: instruments, then collateral assets")):
        cube[name].attrs.update(long_name=long_name, units="1")
    cube.attrs.update(
        cube_format=CUBE_FORMAT, margin_model="mc_es", margin_confidence=q,
        margin_buffer=float(ds.attrs["margin_buffer"]), maintenance_ratio=float(ds.attrs["maintenance_ratio"]),
        pricing_rate=rate, horizon_calendar_days=horizon, valuation_date=book.valuation_date.isoformat(),
        n_scenarios=int(scenarios.n), seed=int(scenarios.seed), scenario_model=json.dumps(scenarios.describe()),
        methodology="what-if cube: loss = -(H @ to_factors) @ factor_pnl.T; mc_es im = max(0, ES_q) x "
                    "(1 + buffer); the What-if service section of docs/architecture.md")
    return cube


def strings(variable) -> np.ndarray:
    """A string variable as NumPy unicode (Zarr v3 reads them back as NumPy's variable-width StringDType)."""
    return np.array(variable.to_numpy().tolist(), dtype=str)


def load_cube(path) -> xr.Dataset:
    """Open a cube written by ``output.cube``, in memory.

    Raises
    ------
    ConfigError
        ``cube``: the path is missing or is not a cube.
    """
    from pathlib import Path

    p = Path(str(path)).expanduser()
    if not p.exists():
        raise ConfigError("cube", f"{p} does not exist (write one with python -m jobs.stress output.cube={p})")
    try:
        cube = xr.open_zarr(p).load()
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a cube"; the message says which
        raise ConfigError("cube", f"{p} is not a readable Zarr cube ({type(exc).__name__}: {exc})") from None
    if cube.attrs.get("cube_format") != CUBE_FORMAT:
        raise ConfigError("cube", f"{p} is not a what-if cube written by output.cube (cube_format "
                                  f"{cube.attrs.get('cube_format')!r}, expected {CUBE_FORMAT!r})")
    return cube


def instruments_book(cube: xr.Dataset, prices=None, vols=None) -> Book:
    """A :class:`Book` of the cube's instruments and market alone (no positions), for re-pricing.

    ``prices`` and ``vols`` ([asset] arrays) replace the night's marks.
    """
    ins = pd.DataFrame({
        "instrument": strings(cube["instrument"]).astype(object),
        "kind": strings(cube["instrument_kind"]).astype(object),
        "underlying": strings(cube["instrument_underlying"]).astype(object),
        "settle": strings(cube["instrument_settle"]).astype(object),
        "inverse": cube["instrument_inverse"].to_numpy().astype(bool),
        "contract_size": cube["instrument_contract_size"].to_numpy().astype(float),
        "expiry": pd.to_datetime(pd.Series(strings(cube["instrument_expiry"])).replace("", None)),
        "strike": cube["instrument_strike"].to_numpy().astype(float),
        "option_type": strings(cube["instrument_option_type"]).astype(object),
        "vol": cube["instrument_vol"].to_numpy().astype(float),
        "spread": np.full(cube.sizes["instrument"], np.nan),
    })
    n = cube.sizes["asset"]
    mkt = pd.DataFrame({
        "asset": strings(cube["asset"]).astype(object),
        "price": cube["price"].to_numpy().astype(float) if prices is None else np.asarray(prices, dtype=float),
        "vol": cube["vol"].to_numpy().astype(float) if vols is None else np.asarray(vols, dtype=float),
        "haircut": np.zeros(n), "adv": np.full(n, np.nan),
    })
    empty = {c: pd.DataFrame({k: pd.Series(dtype=t) for k, t in cols.items()}) for c, cols in (
        ("positions", {"account": object, "instrument": object, "quantity": float}),
        ("collateral", {"account": object, "asset": object, "amount": float}),
        ("accounts", {"account": object, "group": object}))}
    import datetime as dt

    return Book(instruments=ins, market=mkt, valuation_date=dt.date.fromisoformat(cube.attrs["valuation_date"]),
                **empty)
