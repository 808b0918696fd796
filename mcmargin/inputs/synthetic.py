"""A deterministic synthetic exchange, for tests, benchmarks and demos.

:func:`synthetic_book` builds a whole book (instruments, market, positions,
collateral, margin groups) from a seed, vectorised so that 100,000 accounts
take a few seconds, and passes it through :func:`mcmargin.inputs.files.book_from_frames`
so it obeys exactly the rules of a book loaded from files.

The exchange lists four coins and one stablecoin (:data:`SYNTHETIC_ASSETS`).
Per coin: spot, a linear and an inverse perpetual, linear futures at three
expiries and one inverse future; option chains (linear and inverse) on BTC
and ETH, and a small linear chain on SOL.  Accounts follow five archetypes
(:data:`ARCHETYPES`): directional traders, hedged basis traders, option
sellers, market makers and whales.  Collateral is sized from a rough margin
estimate (:func:`rough_margin`) so that most accounts are adequately
collateralised and about 7% are short of margin; the engine, not this
estimate, decides who actually gets a margin call.

Sizes follow :mod:`mcmargin.instruments`: ``contract_size`` is in units of the
underlying for spot, linear contracts and options (inverse options too),
and in USD face value for inverse perpetuals and futures.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.special import ndtr

from ..instruments.black_scholes import black_scholes, black_scholes_delta
from .book import Book
from .files import book_from_frames, write_book

__all__ = ["SYNTHETIC_ASSETS", "ARCHETYPES", "DEFAULT_VALUATION_DATE", "synthetic_book", "account_archetypes",
           "rough_margin", "export_book"]


class SyntheticAsset(NamedTuple):
    """One market asset of the synthetic exchange."""

    asset: str
    price: float
    vol: float
    haircut: float


SYNTHETIC_ASSETS = (
    SyntheticAsset("BTC", 90_000.0, 0.55, 0.10),
    SyntheticAsset("ETH", 3_000.0, 0.70, 0.15),
    SyntheticAsset("SOL", 140.0, 0.90, 0.25),
    SyntheticAsset("BNB", 600.0, 0.60, 0.20),
    SyntheticAsset("USDT", 1.0, 0.0, 0.0),
)
"""Market of the synthetic exchange: prices in USD, annualised implied vols, haircuts."""

CASH = "USDT"

#: Average daily volume of each coin, units of the coin (market column ``adv``; the stablecoin has none).
#: Round figures of the order of a large venue's daily spot-and-perpetual volume (about 27, 15, 2 and
#: 1 billion USD): assumptions of the synthetic exchange, read by the liquidity add-on and the cascade's
#: price impact (docs/methodology.md, sections 6 and 14).
SYNTHETIC_ADV = {"BTC": 300_000.0, "ETH": 5_000_000.0, "SOL": 15_000_000.0, "BNB": 1_500_000.0}
COINS = tuple(a.asset for a in SYNTHETIC_ASSETS if a.asset != CASH)
ARCHETYPES = ("directional", "basis", "option_seller", "market_maker", "whale")
DEFAULT_VALUATION_DATE = dt.date(2026, 11, 25)

# Share of accounts per archetype.  Market makers hold ~25 positions each, so
# their share sets the size of the positions table (about 6 rows per account).
_ARCHETYPE_SHARE = np.array([0.45, 0.19, 0.18, 0.16, 0.02])
_COIN_WEIGHT = np.array([0.45, 0.30, 0.15, 0.10])        # how popular each coin is to trade
_LINEAR_SIZE = {"BTC": 0.01, "ETH": 0.1, "SOL": 1.0, "BNB": 0.1}
_INVERSE_FACE = {"BTC": 100.0, "ETH": 10.0, "SOL": 10.0, "BNB": 10.0}
_STRIKE_STEP = {"BTC": 1000.0, "ETH": 50.0, "SOL": 5.0, "BNB": 10.0}
_FUTURE_DAYS = (30, 90, 180)
_INVERSE_FUTURE_DAYS = 90
_MONEYNESS = (0.8, 0.9, 1.0, 1.1, 1.2)
# Option chains: (underlying, inverse, expiries in days, moneyness of the strikes).
_CHAINS = (
    ("BTC", False, (7, 30, 90, 180), _MONEYNESS),
    ("ETH", False, (7, 30, 90), _MONEYNESS),
    ("SOL", False, (30,), (0.9, 1.0, 1.1)),
    ("BTC", True, (30, 90), _MONEYNESS),
    ("ETH", True, (30,), _MONEYNESS),
)
_CHAIN_WEIGHT = np.array([0.40, 0.25, 0.10, 0.15, 0.10])  # how option sellers pick a chain
_SHORT_SHARE = 0.09      # of the accounts that can be short (not basis traders or whales): ~7% overall
_MARGIN_HORIZON = 10 / 365
_MARGIN_Z = 2.33         # one-sided 99% normal quantile


# ============================================================================ public API
def synthetic_book(n_accounts: int = 5000, seed: int = 7, valuation_date: dt.date = DEFAULT_VALUATION_DATE,
                   group_share: float = 0.2) -> Book:
    """Build a validated synthetic book.

    Parameters
    ----------
    n_accounts : int
        Number of accounts, ids ``A000001``, ``A000002``, ...
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same book.
    valuation_date : datetime.date
        Every expiry is dated relative to it.
    group_share : float
        Share of accounts linked into margin groups of 2 to 5 members,
        labelled ``G0001``, ...; the others have an empty group.

    Returns
    -------
    Book
        Validated by :func:`mcmargin.inputs.files.book_from_frames`; sources name the
        tables ``synthetic:<table>``.
    """
    if n_accounts < 1:
        raise ValueError(f"n_accounts must be >= 1, got {n_accounts}")
    if not 0.0 <= group_share <= 1.0:
        raise ValueError(f"group_share must be in [0, 1], got {group_share}")
    # Independent child streams: changing how one part is drawn leaves the others
    # (and account_archetypes) unchanged.
    archetype_rng, position_rng, collateral_rng, group_rng = np.random.default_rng(seed).spawn(4)
    listing = _Listing.build(valuation_date)
    archetype = _archetypes(archetype_rng, n_accounts)
    account, instrument, quantity = _positions(position_rng, listing, archetype)
    # Object, not pandas' inferred string type: the tables then share these str objects, through
    # validation into the book (mcmargin.inputs.files._plain_text).
    ids = pd.Index(_account_ids(n_accounts), dtype=object)
    # Text columns go to validation coded (categoricals of the ids): the same cells,
    # without hashing millions of strings to find what this function already knows.
    positions = pd.DataFrame({"account": pd.Categorical.from_codes(account, categories=ids),
                              "instrument": pd.Categorical.from_codes(
                                  instrument, categories=listing.table["instrument"].to_numpy(dtype=object)),
                              "quantity": quantity})
    collateral = _collateral(collateral_rng, listing, archetype, account, instrument, quantity, ids)
    accounts = pd.DataFrame({"account": pd.Categorical.from_codes(np.arange(n_accounts), categories=ids),
                             "group": pd.Series(_groups(group_rng, n_accounts, group_share), dtype=object)})
    market = pd.DataFrame({"asset": pd.Series([a.asset for a in SYNTHETIC_ASSETS], dtype=object),
                           "price": [a.price for a in SYNTHETIC_ASSETS], "vol": [a.vol for a in SYNTHETIC_ASSETS],
                           "haircut": [a.haircut for a in SYNTHETIC_ASSETS],
                           "adv": [SYNTHETIC_ADV.get(a.asset, np.nan) for a in SYNTHETIC_ASSETS]})
    sources = {name: f"synthetic:{name}" for name in ("instruments", "market", "positions", "collateral", "accounts")}
    return book_from_frames(listing.table, market, positions, collateral, accounts, valuation_date, sources)


def account_archetypes(n_accounts: int = 5000, seed: int = 7) -> pd.Series:
    """The archetype of every account of ``synthetic_book(n_accounts, seed, ...)``, indexed by account id."""
    archetype_rng = np.random.default_rng(seed).spawn(4)[0]
    codes = _archetypes(archetype_rng, n_accounts)
    return pd.Series(np.array(ARCHETYPES, dtype=object)[codes],
                     index=pd.Index(_account_ids(n_accounts), name="account"),
                     name="archetype", dtype=object)


def export_book(book: Book, directory: str | os.PathLike, fmt: str = "csv") -> dict[str, Path]:
    """Write a (synthetic) book as input files; see :func:`mcmargin.inputs.files.write_book`."""
    return write_book(book, directory, fmt)


def rough_margin(book: Book) -> pd.DataFrame:
    """A crude margin estimate per account, used only to size synthetic collateral.

    Margin ~ z * vol * sqrt(10 days) * |net USD delta| per underlying, plus a
    quarter of that rate on the notional of every option held (gamma and vega).
    Equity = collateral + spot + option premium at today's prices.  Neither
    is the engine's model; they make "short of margin" mean something when
    the book is generated.

    Returns
    -------
    pandas.DataFrame
        Indexed by account: ``margin``, ``equity``.
    """
    listing = _Listing.from_instruments(book)
    inst_index = pd.Index(listing.table["instrument"])
    pos = book.positions
    ids = book.account_ids
    account = pd.Index(ids).get_indexer(pos["account"])
    instrument = inst_index.get_indexer(pos["instrument"])
    margin, equity = _rough_margin(listing, account, instrument, pos["quantity"].to_numpy(), len(ids))
    prices = book.market.set_index("asset")["price"]
    coll = book.collateral
    value = coll["amount"].to_numpy() * prices.reindex(coll["asset"]).to_numpy()
    equity += np.bincount(pd.Index(ids).get_indexer(coll["account"]), weights=value, minlength=len(ids))
    return pd.DataFrame({"margin": margin, "equity": equity}, index=pd.Index(ids, name="account"))


# ============================================================================ instruments
class _Listing(NamedTuple):
    """The instruments table plus per-instrument arrays the generator needs."""

    table: pd.DataFrame
    coin: np.ndarray            # index of the underlying in the market (for the generator: in COINS)
    asset_rate: np.ndarray      # rough margin rate per market asset: z * vol * sqrt(horizon)
    kind: np.ndarray            # spot | perpetual | future | option
    inverse: np.ndarray
    unit_notional: np.ndarray   # USD notional of one contract: size * S, or face for inverse perps/futures
    unit_delta: np.ndarray      # USD delta of one contract (options: notional * Black-Scholes delta)
    unit_value: np.ndarray      # USD value of one contract held today: spot and option premium, else 0
    otm_put: np.ndarray         # [chain, expiry] -> instrument of the ~0.9-moneyness put, -1 if none
    otm_call: np.ndarray        # [chain, expiry] -> instrument of the ~1.1-moneyness call, -1 if none

    @classmethod
    def build(cls, valuation_date: dt.date) -> _Listing:
        rows = []
        for coin in COINS:
            rows += _delta_one_rows(coin, valuation_date)
        chain_rows = [_option_rows(chain, valuation_date) for chain in _CHAINS]
        for chain in chain_rows:
            rows += chain
        table = pd.DataFrame(rows)
        table["expiry"] = pd.to_datetime(table["expiry"]).astype("datetime64[ns]")
        for column in ("instrument", "kind", "underlying", "settle", "option_type"):
            table[column] = table[column].astype(object)
        table["vol"] = np.nan
        listing = cls._with_arrays(table, valuation_date)
        # Option sellers look up their legs by chain and expiry.
        index = {name: i for i, name in enumerate(table["instrument"])}
        n_exp = max(len(c[2]) for c in _CHAINS)
        put = np.full((len(_CHAINS), n_exp), -1)
        call = np.full((len(_CHAINS), n_exp), -1)
        for c, (coin, inverse, days, moneyness) in enumerate(_CHAINS):
            lo = int(np.argmin(np.abs(np.array(moneyness) - 0.9)))
            hi = int(np.argmin(np.abs(np.array(moneyness) - 1.1)))
            for e, d in enumerate(days):
                put[c, e] = index[_option_id(coin, inverse, valuation_date, d, _strike(coin, moneyness[lo]), "put")]
                call[c, e] = index[_option_id(coin, inverse, valuation_date, d, _strike(coin, moneyness[hi]), "call")]
        return listing._replace(otm_put=put, otm_call=call)

    @classmethod
    def from_instruments(cls, book: Book) -> _Listing:
        return cls._with_arrays(book.instruments, book.valuation_date, book.market)

    @classmethod
    def _with_arrays(cls, table: pd.DataFrame, valuation_date: dt.date, market: pd.DataFrame | None = None
                     ) -> _Listing:
        if market is None:
            market = pd.DataFrame(SYNTHETIC_ASSETS)
        assets = list(market["asset"])
        prices, vols = dict(zip(assets, market["price"])), dict(zip(assets, market["vol"]))
        underlying = table["underlying"].to_numpy(dtype=object)
        kind = table["kind"].to_numpy(dtype=object)
        inverse = table["inverse"].to_numpy(dtype=bool)
        size = table["contract_size"].to_numpy(dtype=float)
        spot = np.array([prices[u] for u in underlying])
        vol = np.where(np.isnan(table["vol"].to_numpy(dtype=float)), [vols[u] for u in underlying],
                       table["vol"].to_numpy(dtype=float))
        option = kind == "option"
        face = inverse & ~option
        unit_notional = np.where(face, size, size * spot)
        years = ((table["expiry"] - pd.Timestamp(valuation_date)).dt.days.to_numpy(dtype=float)) / 365.0
        value, delta = _black_scholes(spot, table["strike"].to_numpy(dtype=float), years, vol,
                                      table["option_type"].to_numpy(dtype=object) == "call")
        unit_delta = np.where(option, unit_notional * delta, unit_notional)
        unit_value = np.where(option, size * value, np.where(kind == "spot", unit_notional, 0.0))
        coin = pd.Index(assets).get_indexer(underlying)
        asset_rate = _MARGIN_Z * market["vol"].to_numpy(dtype=float) * np.sqrt(_MARGIN_HORIZON)
        empty = np.zeros((0, 0), dtype=int)
        return cls(table, coin, asset_rate, kind, inverse, unit_notional, np.nan_to_num(unit_delta),
                   np.nan_to_num(unit_value), empty, empty)


def _expiry(valuation_date: dt.date, days: int) -> dt.date:
    return valuation_date + dt.timedelta(days=days)


def _delta_one_rows(coin: str, valuation_date: dt.date) -> list[dict]:
    """Spot, linear and inverse perpetuals, linear futures and one inverse future on ``coin``."""
    def row(instrument, kind, settle, inverse, size, expiry=None):
        return dict(instrument=instrument, kind=kind, underlying=coin, settle=settle, inverse=inverse,
                    contract_size=size, expiry=expiry, strike=np.nan, option_type="")

    rows = [row(f"{coin}-USDT", "spot", CASH, False, 1.0),
            row(f"{coin}-PERP", "perpetual", CASH, False, _LINEAR_SIZE[coin]),
            row(f"{coin}-USD-INV-PERP", "perpetual", coin, True, _INVERSE_FACE[coin])]
    for days in _FUTURE_DAYS:
        expiry = _expiry(valuation_date, days)
        rows.append(row(f"{coin}-{expiry:%Y%m%d}-FUT", "future", CASH, False, _LINEAR_SIZE[coin], expiry))
    expiry = _expiry(valuation_date, _INVERSE_FUTURE_DAYS)
    rows.append(row(f"{coin}-USD-{expiry:%Y%m%d}-INV-FUT", "future", coin, True, _INVERSE_FACE[coin], expiry))
    return rows


def _strike(coin: str, moneyness: float) -> float:
    """A strike near ``moneyness`` x spot, on the coin's strike grid."""
    step = _STRIKE_STEP[coin]
    price = next(a.price for a in SYNTHETIC_ASSETS if a.asset == coin)
    return float(np.round(moneyness * price / step) * step)


def _option_id(coin: str, inverse: bool, valuation_date: dt.date, days: int, strike: float, option_type: str) -> str:
    expiry = _expiry(valuation_date, days)
    return f"{coin}-{'INV-' if inverse else ''}{expiry:%Y%m%d}-{strike:.12g}-{option_type[0].upper()}"


def _option_rows(chain, valuation_date: dt.date) -> list[dict]:
    """Calls and puts of one chain; inverse options settle in the coin (Deribit style)."""
    coin, inverse, days_list, moneyness = chain
    rows = []
    for days in days_list:
        for m in moneyness:
            strike = _strike(coin, m)
            for option_type in ("call", "put"):
                rows.append(dict(instrument=_option_id(coin, inverse, valuation_date, days, strike, option_type),
                                 kind="option", underlying=coin, settle=coin if inverse else CASH, inverse=inverse,
                                 contract_size=1.0, expiry=_expiry(valuation_date, days), strike=strike,
                                 option_type=option_type))
    return rows


def _black_scholes(spot, strike, years, vol, is_call):
    """Black-Scholes value and delta (zero rate) from the package's one pricer; NaN where not an option."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (black_scholes(np, ndtr, spot, strike, years, vol, is_call),
                black_scholes_delta(np, ndtr, spot, strike, years, vol, is_call))


# ============================================================================ accounts
def _account_ids(n: int) -> np.ndarray:
    """``A000001``, ``A000002``, ... ``A{n}`` (at least six digits), as an object array of str."""
    width = max(6, len(str(n)))
    # The code points of every id at once (one formatted string a time is 0.5 s a million).
    number = np.arange(1, n + 1, dtype=np.int64)[:, None]
    code = np.empty((n, 1 + width), dtype=np.uint32)
    code[:, 0] = ord("A")
    code[:, 1:] = ord("0") + number // 10 ** np.arange(width - 1, -1, -1, dtype=np.int64) % 10
    return code.view(f"<U{1 + width}").ravel().astype(object)


def _archetypes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Archetype code of each account; the first five accounts cover every archetype."""
    codes = rng.choice(len(ARCHETYPES), size=n, p=_ARCHETYPE_SHARE)
    head = min(n, len(ARCHETYPES))
    codes[:head] = np.arange(head)   # small books still show every behaviour
    return codes


def _groups(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """Group label of each account ("" for none): groups of 2-5 random accounts."""
    labels = np.full(n, "", dtype=object)
    n_grouped = int(round(share * n))
    if n_grouped < 2:
        return labels
    members = rng.permutation(n)[:n_grouped]
    sizes = rng.integers(2, 6, size=n_grouped // 2 + 1)
    sizes = sizes[np.cumsum(sizes) <= n_grouped]
    remainder = n_grouped - int(sizes.sum())
    if remainder >= 2:   # the leftover (< 5) forms one more group; a single leftover stays alone
        sizes = np.append(sizes, remainder)
    members = members[:int(sizes.sum())]
    width = max(4, len(str(len(sizes))))
    names = np.array([f"G{g:0{width}d}" for g in range(1, len(sizes) + 1)], dtype=object)
    labels[members] = np.repeat(names, sizes)
    return labels


def _choose(rng: np.random.Generator, weights: np.ndarray, n: int, k: int) -> np.ndarray:
    """``k`` distinct instruments per account, with probability proportional to ``weights``.

    Gumbel top-k: adding Gumbel noise to log-weights and keeping the k largest
    samples without replacement, for all accounts at once.
    """
    live = np.flatnonzero(weights > 0)
    picks = np.empty((n, k), dtype=np.int64)
    # Drawn a block of accounts at a time: the same stream (uniforms are drawn in
    # order, row after row), without an [accounts x instruments] array in memory.
    block = max(1, _CHOOSE_CELLS // max(weights.size, 1))
    for a0 in range(0, n, block):
        a1 = min(n, a0 + block)
        u = rng.random((a1 - a0, weights.size))  # drawn for every column: the stream must not change
        if k > live.size:                        # zero-weight columns needed too: rank them all
            with np.errstate(divide="ignore"):
                keys = np.log(weights)[None, :] - np.log(-np.log(u))
            picks[a0:a1] = _k_largest(keys, k)
            continue
        # Zero weights have key -inf and are never among the k largest when k
        # columns have positive weight, so only those are ranked: the same picks
        # in the same order (keys are distinct with probability 1), at a
        # fraction of the cost on a listing where most instruments do not fit.
        keys = np.log(weights[live])[None, :] - np.log(-np.log(u[:, live]))
        picks[a0:a1] = live[_k_largest(keys, k)]
    return picks


def _k_largest(keys: np.ndarray, k: int) -> np.ndarray:
    """Columns of the ``k`` largest keys of each row, largest first: ``np.argsort(-keys, axis=1)[:, :k]`` for
    distinct keys, by a partition and a sort of the ``k`` (Gumbel keys are distinct with probability 1)."""
    if k >= keys.shape[1]:
        return np.argsort(-keys, axis=1)[:, :k]
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)


#: Uniforms drawn at once by :func:`_choose` (4 MiB).
_CHOOSE_CELLS = 1 << 19


def _contracts(notional: np.ndarray, instrument: np.ndarray, listing: _Listing) -> np.ndarray:
    """Signed USD notional -> contracts: whole inverse contracts, else lots of 0.001, never zero."""
    raw = notional / listing.unit_notional[instrument]
    inverse = (listing.inverse & (listing.kind != "option"))[instrument]     # per instrument, then spread
    lot = np.where(inverse, 1.0, 0.001)
    q = np.where(inverse, np.round(raw), np.round(raw, 3))
    return np.where(q == 0, np.sign(notional) * lot, q)


def _weights(listing: _Listing, kinds: dict[tuple[str, bool], float], coin_weight=_COIN_WEIGHT) -> np.ndarray:
    """Instrument weights: a weight per (kind, inverse) times the popularity of the coin."""
    w = np.zeros(len(listing.kind))
    for (kind, inverse), weight in kinds.items():
        w[(listing.kind == kind) & (listing.inverse == inverse)] = weight
    return w * np.asarray(coin_weight, dtype=float)[listing.coin]


def _positions(rng: np.random.Generator, listing: _Listing, archetype: np.ndarray):
    """Positions of every account: (account index, instrument index, quantity), sorted by account."""
    blocks = []
    for code, build in enumerate((_directional, _basis, _option_seller, _market_maker, _whale)):
        who = np.flatnonzero(archetype == code)
        if who.size:
            blocks.append(build(rng, listing, who))
    account = np.concatenate([b[0] for b in blocks])
    instrument = np.concatenate([b[1] for b in blocks])
    quantity = np.concatenate([b[2] for b in blocks])
    # By account, then instrument, ties in drawing order: np.lexsort((instrument, account)), as one
    # stable sort of a combined key (a few times faster on millions of rows).
    order = np.argsort(account.astype(np.int64) * len(listing.kind) + instrument, kind="stable")
    return account[order], instrument[order], quantity[order]


def _flatten(who: np.ndarray, picks: np.ndarray, notional: np.ndarray, keep: np.ndarray, listing: _Listing):
    """Rows of the kept (account, instrument) cells of an [account x slot] block."""
    account = np.broadcast_to(who[:, None], picks.shape)[keep]
    instrument = picks[keep]
    return account, instrument, _contracts(notional[keep], instrument, listing)


def _directional(rng, listing, who):
    """1-4 leveraged perpetuals/futures, mostly in one direction."""
    n = who.size
    weights = _weights(listing, {("perpetual", False): 3.0, ("perpetual", True): 1.0, ("future", False): 1.0,
                                 ("future", True): 0.5})
    picks = _choose(rng, weights, n, 4)
    count = rng.integers(1, 5, size=n)
    equity = rng.lognormal(np.log(20_000), 1.0, size=n)
    leverage = rng.uniform(2.0, 12.0, size=n)
    view = rng.choice([-1.0, 1.0], size=n)
    sign = np.where(rng.random((n, 4)) < 0.8, view[:, None], -view[:, None])
    notional = sign * (equity * leverage / count)[:, None] * rng.uniform(0.5, 1.5, size=(n, 4))
    return _flatten(who, picks, notional, np.arange(4)[None, :] < count[:, None], listing)


def _basis(rng, listing, who):
    """Long spot, short a perpetual or future of the same coin for the same USD delta (1-2 coins)."""
    n = who.size
    coins = _choose(rng, _COIN_WEIGHT, n, 2)                 # two distinct coins, the second used by 30%
    keep = np.stack([np.ones(n, dtype=bool), rng.random(n) < 0.3], axis=1)
    notional = rng.lognormal(np.log(50_000), 1.0, size=(n, 1)) * rng.uniform(1.0, 3.0, size=(n, 2))
    spot = _instrument_of(listing, coins, "spot", False)
    hedges = [(k, inv) for k in ("perpetual", "future") for inv in (False, True)]
    hedge_kind = rng.choice(len(hedges), size=(n, 2), p=[0.45, 0.3, 0.15, 0.1])
    hedge = np.zeros_like(coins)
    for h, (kind, inverse) in enumerate(hedges):
        candidates = _instrument_table(listing, kind, inverse)      # [coin, slot]
        slot = rng.integers(0, candidates.shape[1], size=coins.shape)
        hedge = np.where(hedge_kind == h, candidates[coins, slot], hedge)
    long_leg = _flatten(who, spot, notional, keep, listing)
    short_leg = _flatten(who, hedge, -notional, keep, listing)
    return tuple(np.concatenate(pair) for pair in zip(long_leg, short_leg))


def _instrument_table(listing: _Listing, kind: str, inverse: bool) -> np.ndarray:
    """[coin, slot] -> instrument of that kind; each coin lists the same number of them."""
    per_coin = [np.flatnonzero((listing.coin == c) & (listing.kind == kind) & (listing.inverse == inverse))
                for c in range(len(COINS))]
    return np.stack(per_coin)


def _instrument_of(listing: _Listing, coins: np.ndarray, kind: str, inverse: bool) -> np.ndarray:
    return _instrument_table(listing, kind, inverse)[coins, 0]


def _option_seller(rng, listing, who):
    """Short strangles (60%) or short puts, on one expiry of one chain."""
    n = who.size
    chain = rng.choice(len(_CHAINS), size=n, p=_CHAIN_WEIGHT)
    n_expiries = np.array([len(c[2]) for c in _CHAINS])
    expiry = np.floor(rng.random(n) * n_expiries[chain]).astype(int)
    legs = np.stack([listing.otm_put[chain, expiry], listing.otm_call[chain, expiry]], axis=1)
    keep = np.stack([np.ones(n, dtype=bool), rng.random(n) < 0.6], axis=1)
    equity = rng.lognormal(np.log(30_000), 1.0, size=n)
    # Option quantities are in coins: sell about 0.5-2x the account's equity in notional.
    notional = -(equity[:, None] * rng.uniform(0.5, 2.0, size=(n, 2)))
    return _flatten(who, legs, notional, keep, listing)


def _market_maker(rng, listing, who):
    """10-40 small two-sided positions spread over the whole listing."""
    n = who.size
    weights = _weights(listing, {("spot", False): 2.0, ("perpetual", False): 4.0, ("perpetual", True): 2.0,
                                 ("future", False): 1.5, ("future", True): 1.0, ("option", False): 0.5,
                                 ("option", True): 0.5}, coin_weight=np.ones(len(COINS)))
    picks = _choose(rng, weights, n, 40)
    count = rng.integers(10, 41, size=n)
    equity = rng.lognormal(np.log(200_000), 0.8, size=n)
    sign = rng.choice([-1.0, 1.0], size=(n, 40))
    notional = sign * equity[:, None] * rng.uniform(0.02, 0.2, size=(n, 40))
    return _flatten(who, picks, notional, np.arange(40)[None, :] < count[:, None], listing)


def _whale(rng, listing, who):
    """2-5 very large positions in BTC and ETH spot, perpetuals, futures and options."""
    n = who.size
    weights = _weights(listing, {("spot", False): 2.0, ("perpetual", False): 2.0, ("perpetual", True): 2.0,
                                 ("future", False): 1.0, ("future", True): 1.0, ("option", False): 0.1,
                                 ("option", True): 0.1}, coin_weight=[0.6, 0.4, 0.0, 0.0])
    picks = _choose(rng, weights, n, 5)
    count = rng.integers(2, 6, size=n)
    equity = rng.lognormal(np.log(20_000_000), 0.7, size=n)
    view = rng.choice([-1.0, 1.0], size=n)
    sign = np.where(rng.random((n, 5)) < 0.7, view[:, None], -view[:, None])
    notional = sign * (equity * rng.uniform(1.0, 5.0, size=n) / count)[:, None]
    return _flatten(who, picks, notional, np.arange(5)[None, :] < count[:, None], listing)


# ============================================================================ collateral
def _rough_margin(listing: _Listing, account: np.ndarray, instrument: np.ndarray, quantity: np.ndarray,
                  n_accounts: int) -> tuple[np.ndarray, np.ndarray]:
    """Rough margin and position equity (spot + option premium) of each account; see :func:`rough_margin`."""
    coin = listing.coin[instrument]
    n_assets = listing.asset_rate.size
    # Net USD delta per (account, underlying): hedged legs offset, as in a portfolio margin.
    net_delta = np.bincount(account * n_assets + coin, weights=quantity * listing.unit_delta[instrument],
                            minlength=n_accounts * n_assets).reshape(n_accounts, n_assets)
    margin = np.abs(net_delta) @ listing.asset_rate
    option = (listing.kind == "option")[instrument]
    rate = listing.asset_rate[coin]
    gamma_vega = np.where(option, np.abs(quantity) * listing.unit_notional[instrument] * rate * 0.25, 0.0)
    margin += np.bincount(account, weights=gamma_vega, minlength=n_accounts)
    equity = np.bincount(account, weights=quantity * listing.unit_value[instrument], minlength=n_accounts)
    return margin, equity


def _collateral(rng, listing, archetype, account, instrument, quantity, ids) -> pd.DataFrame:
    """Multi-asset collateral worth a random multiple of each account's rough margin.

    About 7% of accounts (never basis traders, whose spot already covers them, nor
    whales) get less than their margin so that some margin calls happen.
    """
    n = archetype.size
    margin, equity = _rough_margin(listing, account, instrument, quantity, n)
    can_be_short = ~np.isin(archetype, (ARCHETYPES.index("basis"), ARCHETYPES.index("whale")))
    short = can_be_short & (rng.random(n) < _SHORT_SHARE)
    cover = np.where(short, rng.uniform(0.2, 0.7, size=n), rng.uniform(1.5, 4.0, size=n))
    # Collateral tops position equity up to cover x margin; every account keeps some.
    value = np.maximum(cover * margin - equity, np.where(short, 0.05, 0.25) * margin + 100.0)

    # Which assets each account holds (columns: coins then USDT) and their shares of the value.
    hold_p = np.array([[0.30, 0.20, 0.10, 0.10],     # directional
                       [0.10, 0.05, 0.02, 0.02],     # basis
                       [0.30, 0.20, 0.10, 0.05],     # option sellers (plus their underlying, below)
                       [0.50, 0.50, 0.30, 0.30],     # market makers
                       [0.80, 0.70, 0.20, 0.20]])    # whales
    hold = np.zeros((n, len(COINS) + 1), dtype=bool)
    hold[:, :-1] = rng.random((n, len(COINS))) < hold_p[archetype]
    sellers = np.flatnonzero(archetype == ARCHETYPES.index("option_seller"))
    first_option = _first_instrument(account, instrument, n)
    hold[sellers, np.maximum(listing.coin[first_option[sellers]], 0)] = True   # collateral in the underlying
    hold[:, -1] = (rng.random(n) < 0.9) | ~hold[:, :-1].any(axis=1)
    share = np.where(hold, rng.gamma(1.0, size=hold.shape), 0.0)
    share[:, -1] *= 2.0                                # stablecoin is the usual margin currency
    share /= share.sum(axis=1, keepdims=True)
    prices = np.array([a.price for a in SYNTHETIC_ASSETS if a.asset != CASH] + [1.0])
    amount = np.round(value[:, None] * share / prices[None, :], 6)
    rows, cols = np.nonzero(hold)
    assets = np.array(list(COINS) + [CASH], dtype=object)
    return pd.DataFrame({"account": pd.Categorical.from_codes(rows, categories=ids),
                         "asset": pd.Categorical.from_codes(cols, categories=assets), "amount": amount[rows, cols]})


def _first_instrument(account: np.ndarray, instrument: np.ndarray, n: int) -> np.ndarray:
    """An instrument held by each account (its first row; 0 for accounts without positions)."""
    first = np.zeros(n, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, account[1:] != account[:-1]]) if account.size else np.array([], int)
    first[account[starts]] = instrument[starts]
    return first
