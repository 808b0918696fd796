"""Liquidation cascades inside one block of scenarios (docs/methodology.md, section 14).

In each scenario, after the initial shock, every pool (margin group,
singletons included) whose equity falls below its maintenance margin is
liquidated whole; the round's forced sales, netted per underlying (options
by their delta), move prices by a square-root impact; every surviving pool
is revalued at the new prices, and so on until no new pool fails or
``max_rounds`` is reached.  A liquidated pool's loss beyond its equity
draws on the insurance fund (which the liquidation fees feed), and what the
fund cannot pay is auto-deleveraged against profitable opposite positions.

The kernel :func:`cascade_block` holds every pool of a block of scenarios
(the transpose of the tail engine's row blocks: the cascade couples all
pools within one scenario) and is written once against the array API, so
it runs on every backend.  Each round is one revaluation
(:func:`mcmargin.instruments.revaluation.revalue`, the engine's) and one
holdings product.  Every per-scenario figure is computed from that
scenario's row alone, and every sum over pools is a sequential cumulative
sum, so the results are the same bit for bit whatever the block size.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse as sp

from ..instruments import revaluation
from ..instruments.black_scholes import black_scholes_delta

#: Days per year of the daily volatility in the impact law (crypto trades every day; section 1's option time).
DAYS_PER_YEAR = 365.0


@dataclasses.dataclass(frozen=True)
class CascadeParams:
    """The ``cascade.*`` settings (docs/methodology.md, section 14; defaults in conf/stress.yaml).

    Attributes
    ----------
    impact_coefficient : float
        Y of the square-root law ``Δ log S = -sign(Q) Y σ_daily sqrt(|Q| / ADV)``.
    liquidation_fee : float
        Fee as a fraction of a liquidated pool's position notional, paid into the insurance fund
        while its equity lasts.
    insurance_fund : float
        Insurance fund before the cascade, USD.
    max_rounds : int
        Most liquidation rounds per scenario.
    spot_vol_sensitivity : float
        Log implied-vol change per log price move of impact (0: vols do not react).
    default_adv_usd : float
        Average daily volume, USD, of a risky asset whose market row has no ``adv``.
    scenario_block : int
        Scenarios per task (0 = from the number of pools); changes no result.
    """

    impact_coefficient: float = 1.0
    liquidation_fee: float = 0.015
    insurance_fund: float = 10_000_000.0
    max_rounds: int = 20
    spot_vol_sensitivity: float = 0.0
    default_adv_usd: float = 1.0e9
    scenario_block: int = 0


    @classmethod
    def from_config(cls, cfg) -> "CascadeParams | None":
        """The parameters of a ``cascade`` config section (checked key by key), or None when it is off."""
        from ..common.settings import STRESS_RULES, check_settings

        cfg = dict(cfg or {})
        check_settings({"cascade": cfg}, STRESS_RULES)
        if not cfg.get("enabled", False):
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in known})


@dataclasses.dataclass
class PoolBook:
    """What the cascade reads of a compiled book, per pool, on the host (NumPy / SciPy).

    Pools are the book's groups in order (``compiled.groups``), singletons included.
    """

    exposures: sp.csr_matrix      # [P x F] factor exposures of each pool (the engine's group rows)
    exposures_t: sp.csr_matrix    # [F x P] the same, transposed (forced trades of liquidated pools)
    equity: np.ndarray            # [P] equity before the shock, USD
    mm: np.ndarray                # [P] maintenance margin, USD (held at its pre-shock value)
    members: np.ndarray           # [P] accounts in the pool
    gross_usd: np.ndarray         # [P x A] sum over positions on asset a of |qty| x size x S0 (fee notional)
    gross_face: np.ndarray        # [P] sum over inverse contracts of |qty| x face value (USD, fixed)
    cash_usd: np.ndarray          # [P x K] USD value of cash collateral in the K cash assets (de-peg stresses)
    cash: np.ndarray              # [K] asset index of each cash asset (market vol 0)
    prices: np.ndarray            # [A] S0
    sigma_daily: np.ndarray       # [A] market vol / sqrt(365) (0 for cash: no impact)
    adv: np.ndarray               # [A] average daily volume, units of the asset
    factor_asset: np.ndarray      # [F] asset of each factor (market assets, then each option's underlying)
    options: object               # OptionBlock of the compiled book (pricing arrays)

    @property
    def n_pools(self) -> int:
        return self.equity.size

    @property
    def n_assets(self) -> int:
        return self.prices.size


def pool_book(compiled, book, group_mm, group_equity, params: CascadeParams) -> PoolBook:
    """The :class:`PoolBook` of ``compiled`` (a run's :class:`~mcmargin.aggregation.CompiledBook` of ``book``).

    ``group_mm`` and ``group_equity`` are per ``compiled.groups``; the market's
    ``vol`` and optional ``adv`` (units of the asset; missing:
    ``params.default_adv_usd / price``) set the impact.
    """
    rows = compiled.group_row
    if (rows < 0).any():
        raise ValueError("the cascade needs every pool's row: compile the book with the 'groups' row kind")
    exposures = compiled.exposures[rows].tocsr()
    exposures.sort_indices()
    holdings = compiled.holdings[rows].tocsr()
    market = book.market
    a = compiled.assets.size
    vol = market["vol"].to_numpy(dtype=float)
    prices = compiled.prices
    adv = market["adv"].to_numpy(dtype=float) if "adv" in market else np.full(a, np.nan)
    adv = np.where(np.isfinite(adv), adv, params.default_adv_usd / prices)
    # Fee notional: every position of every member, |qty| x its USD notional (size x S for spot, linear
    # contracts and options; the fixed face value for inverse contracts).  Gross holdings are taken per
    # account (members' opposite positions do not net) and summed per pool.
    n_ins, o = compiled.n_instruments, compiled.options
    n_lin = n_ins - o.n
    inverse = (book.instruments.set_index("instrument")["inverse"].reindex(compiled.instruments)
               .to_numpy(dtype=bool))
    lin = compiled.to_factors[:n_lin].tocoo()                 # linear column -> its asset, USD notional per contract
    col = np.concatenate([lin.row, n_lin + np.arange(o.n)])
    asset = np.concatenate([lin.col, np.asarray(o.asset, dtype=np.int64)])
    usd = np.abs(np.concatenate([lin.data, np.asarray(o.size, float) * np.asarray(o.spot, float)]))
    inv = inverse[col]
    per_asset = sp.csr_matrix((np.where(inv, 0.0, usd), (col, asset)), shape=(n_ins, a))
    face = np.zeros(n_ins)
    np.add.at(face, col[inv], usd[inv])
    acc = compiled.rows("accounts")
    pick = sp.csr_matrix((np.ones(compiled.accounts.size),
                          (compiled.group_of_account, np.arange(compiled.accounts.size))),
                         shape=(compiled.groups.size, compiled.accounts.size))
    gross = (pick @ abs(compiled.holdings[acc][:, :n_ins])).tocsr()
    cash = np.flatnonzero(vol <= 0)
    return PoolBook(exposures=exposures, exposures_t=exposures.T.tocsr(), equity=np.asarray(group_equity, float),
                    mm=np.asarray(group_mm, float),
                    members=np.bincount(compiled.group_of_account, minlength=compiled.groups.size),
                    gross_usd=np.asarray((gross @ per_asset).todense()), gross_face=np.asarray(gross @ face).ravel(),
                    cash_usd=np.asarray(holdings[:, n_ins + cash].todense()) * prices[cash], cash=cash,
                    prices=prices, sigma_daily=np.where(vol > 0, vol, 0.0) / math.sqrt(DAYS_PER_YEAR), adv=adv,
                    factor_asset=np.concatenate([np.arange(a), np.asarray(o.asset, dtype=np.int64)]), options=o)


@dataclasses.dataclass
class OnBackend:
    """The pool arrays on one backend (moved once per task), with the host :class:`PoolBook`."""

    b: object
    host: PoolBook
    exposures: object
    neg_threshold: object   # [P] mm - equity: a pool fails when its P&L is below it (loss > equity - mm)
    equity: object
    members: object         # [P] int64
    priced: object
    units_per_usd: object   # [A] 1 / S0
    sigma_daily: object
    adv: object
    asset_of_option: list   # per asset: option columns (host ints) on it


def to_backend(pools: PoolBook, backend) -> OnBackend:
    """:class:`OnBackend` of ``pools`` on ``backend`` (sparse where the backend has it, dense for the strict one)."""
    f = backend.asarray
    xp = backend.xp
    o = pools.options
    return OnBackend(
        b=backend, host=pools, exposures=_sparse(pools.exposures, backend),
        neg_threshold=-f(pools.equity - pools.mm), equity=f(pools.equity),
        members=xp.asarray(np.asarray(pools.members, dtype=np.int64)),
        priced=revaluation.BackendBook(options=o.on(backend)), units_per_usd=f(1.0 / pools.prices),
        sigma_daily=f(pools.sigma_daily), adv=f(pools.adv),
        asset_of_option=[np.flatnonzero(np.asarray(o.asset) == a) for a in range(pools.n_assets)])


def _sparse(m, backend):
    if backend.name == "numpy":
        return m
    if backend.name == "cupy":
        import cupyx.scipy.sparse as csp
        return csp.csr_matrix(m)
    if backend.name == "jax":
        from jax.experimental import sparse as jsp
        return jsp.BCSR.from_scipy_sparse(m)
    return backend.asarray(m.toarray())


@dataclasses.dataclass
class BlockResult:
    """Per scenario of a block (host NumPy arrays), and per pool counts over the block."""

    rounds: np.ndarray            # [S] rounds with at least one liquidation
    liquidated_accounts: np.ndarray
    insurance_fund_draw: np.ndarray
    adl_volume: np.ndarray
    cascade_loss: np.ndarray
    fund_need: np.ndarray         # [S] smallest insurance fund that avoids auto-deleveraging
    price_move: np.ndarray        # [S x A] log move added by impact
    first: np.ndarray             # [P] scenarios in which the pool is below mm after the shock (int)
    any_round: np.ndarray         # [P] scenarios in which the pool is liquidated in some round (int)


def _column_sum(xp, x):
    """Sum over pools (axis 0) of ``x`` [R x S], sequential: the same bits whatever S is."""
    if x.shape[0] == 0:
        return xp.zeros((x.shape[1],), dtype=xp.float64)
    return xp.cumulative_sum(x, axis=0)[-1, :]


def pool_pnl(on: OnBackend, shock, vol_shock):
    """USD P&L of every pool, ``[P x S]``, at ``shock``/``vol_shock`` ``[S x A]``: revaluation and one holdings product.

    Cash collateral moves only where a (de-peg) stress moves its asset: its USD value times expm1(shock).
    """
    b = on.b
    xp = b.xp
    pnl = revaluation.revalue(b, on.priced, shock, vol_shock)          # [S x F]
    out = on.exposures @ xp.permute_dims(pnl, (1, 0))                  # [P x S]
    host = on.host
    if host.cash.size:
        moved = np.flatnonzero(np.asarray(b.to_numpy(xp.any(xp.take(shock, xp.asarray(host.cash), axis=1) != 0.0,
                                                            axis=0))))
        for k in moved:
            col = b.asarray(host.cash_usd[:, k])
            out = out + col[:, None] * xp.expm1(shock[:, int(host.cash[k])])[None, :]
    return out


def _host_sparse_t(on: OnBackend, rows):
    """[F x R] transposed exposures of the pools ``rows`` (host ints), on the backend."""
    return _sparse(on.host.exposures[rows].T.tocsr(), on.b)


def cascade_block(on: OnBackend, shock, vol_shock, params: CascadeParams) -> BlockResult:
    """Run the cascade in each scenario of one block (``shock``, ``vol_shock``: ``[S x A]`` on ``on.b``).

    Rounds (docs/methodology.md, section 14): revalue every pool at the
    current prices (initial shock plus the impact so far); a surviving pool
    whose loss exceeds ``equity - mm`` is liquidated; fees and deficits go to
    the insurance fund, what it cannot pay is auto-deleveraged; prices move
    by the square-root impact of the round's net forced sales.  A scenario
    leaves the loop in the first round in which no pool fails, or after
    ``max_rounds``.  Only the scenarios still cascading are revalued in each
    round; deficits and fees are summed over the pools that fail somewhere
    in the block (a pool that does not fail in a scenario adds an exact 0).
    """
    b = on.b
    xp = b.xp
    n_s, n_a = shock.shape
    n_p = on.equity.shape[0]
    to_np = lambda x: np.asarray(b.to_numpy(x), dtype=float)  # noqa: E731
    res = BlockResult(rounds=np.zeros(n_s), liquidated_accounts=np.zeros(n_s), insurance_fund_draw=np.zeros(n_s),
                      adl_volume=np.zeros(n_s), cascade_loss=np.zeros(n_s), fund_need=np.zeros(n_s),
                      price_move=np.zeros((n_s, n_a)), first=np.zeros(n_p, dtype=np.int64),
                      any_round=np.zeros(n_p, dtype=np.int64))
    host = on.host
    idx = np.arange(n_s)                  # block positions of the scenarios still cascading
    x, v = shock, vol_shock
    impact = xp.zeros((n_s, n_a), dtype=xp.float64)
    alive = None                          # [P x S] not yet liquidated (None: round 1, every pool)
    fund = xp.full((n_s,), float(params.insurance_fund), dtype=xp.float64)
    zeros = lambda: xp.zeros((n_s,), dtype=xp.float64)  # noqa: E731
    totals = {k: zeros() for k in ("rounds", "draw", "adl", "loss", "fees", "need")}
    accounts = xp.zeros((n_s,), dtype=xp.int64)
    k_imp = float(params.impact_coefficient)
    for r in range(1, params.max_rounds + 1):
        moved_v = v + params.spot_vol_sensitivity * impact if params.spot_vol_sensitivity else v
        current = x + impact
        pnl = pool_pnl(on, current, moved_v)                       # [P x S]
        below = pnl < on.neg_threshold[:, None]                    # loss > equity - mm (negation is exact)
        fail = below if alive is None else alive & below
        going = np.asarray(b.to_numpy(xp.any(fail, axis=0)), dtype=bool)
        rows = np.flatnonzero(np.asarray(b.to_numpy(xp.any(fail, axis=1)), dtype=bool))
        cols = np.arange(idx.size)                                 # columns of ``pnl`` still cascading
        if not going.all():
            done = ~going
            _retire(res, b, idx[done], totals, accounts, impact, done)
            if not going.any():
                return res
            cols = np.flatnonzero(going)
            keep = xp.asarray(cols)
            idx = idx[going]
            x, v, impact, fund, current, moved_v = (xp.take(a, keep, axis=0)
                                                     for a in (x, v, impact, fund, current, moved_v))
            fail = xp.take(fail, keep, axis=1)
            alive = None if alive is None else xp.take(alive, keep, axis=1)
            totals = {k: xp.take(t, keep, axis=0) for k, t in totals.items()}
            accounts = xp.take(accounts, keep, axis=0)
        # The pools that fail in some scenario of the block this round: the only rows the sums need.
        rows_b = xp.asarray(rows)
        f_sub = xp.take(fail, rows_b, axis=0)                      # [R x S]
        pnl_sub = xp.take(pnl, rows_b, axis=0)
        if cols.size != pnl.shape[1]:
            pnl_sub = xp.take(pnl_sub, xp.asarray(cols), axis=1)
        counts = np.asarray(b.to_numpy(xp.sum(xp.astype(f_sub, xp.int64), axis=1)), dtype=np.int64)
        if r == 1:
            res.first[rows] += counts
        res.any_round[rows] += counts                               # a pool is liquidated once per scenario
        equity_sub = xp.take(on.equity, rows_b, axis=0)[:, None] + pnl_sub
        totals["rounds"] = totals["rounds"] + 1.0
        accounts = accounts + xp.sum(xp.where(f_sub, xp.take(on.members, rows_b, axis=0)[:, None], 0), axis=0)
        # Deficit: the loss beyond the pool's equity.  Fee: a share of its position notional at the
        # current prices, paid into the fund while the equity lasts.
        deficit = _column_sum(xp, xp.where(f_sub, xp.maximum(-equity_sub, 0.0), 0.0))
        price = xp.exp(current)                                    # S / S0
        notional = b.asarray(host.gross_face[rows])[:, None] + 0.0 * pnl_sub
        for a in range(n_a):
            notional = notional + b.asarray(host.gross_usd[rows, a])[:, None] * price[:, a][None, :]
        fee = params.liquidation_fee * notional
        paid = _column_sum(xp, xp.where(f_sub, xp.minimum(fee, xp.maximum(equity_sub, 0.0)), 0.0))
        fund = fund + paid
        draw = xp.minimum(deficit, fund)
        fund = fund - draw
        short = deficit - draw
        totals["loss"] = totals["loss"] + deficit
        totals["fees"] = totals["fees"] + paid
        totals["draw"] = totals["draw"] + draw
        totals["need"] = xp.maximum(totals["need"], totals["loss"] - totals["fees"])
        # Forced trades: each liquidated pool's position in units of every asset (linear exposure / S0,
        # collateral included; options by size x delta at the current prices), netted per underlying.
        factor_units = _factor_units(on, current, moved_v)                      # [S x F]
        per_factor = xp.permute_dims(_host_sparse_t(on, rows) @ xp.astype(f_sub, xp.float64), (1, 0))
        sold = _asset_units(on, per_factor * factor_units, n_a)                 # [S x A]
        alive = ~fail if alive is None else alive & ~fail
        if float(to_np(xp.max(short))) > 0:
            totals["adl"] = totals["adl"] + _adl_volume(on, pnl, cols, fail, alive, short, deficit, factor_units,
                                                        price, n_a)
        if k_imp:
            step = -xp.sign(sold) * k_imp * on.sigma_daily[None, :] * xp.sqrt(xp.abs(sold) / on.adv[None, :])
            impact = impact + step
    _retire(res, b, idx, totals, accounts, impact, np.ones(idx.size, dtype=bool))
    return res


def _retire(res: BlockResult, b, where, totals, accounts, impact, mask):
    """Write the results of the scenarios ``where`` (block positions; ``mask`` over the current state) to ``res``."""
    if where.size == 0:
        return
    xp = b.xp
    sel = xp.asarray(np.flatnonzero(mask))
    to_np = lambda x: np.asarray(b.to_numpy(x), dtype=float)  # noqa: E731
    res.rounds[where] = to_np(xp.take(totals["rounds"], sel, axis=0))
    res.liquidated_accounts[where] = to_np(xp.take(accounts, sel, axis=0))
    res.insurance_fund_draw[where] = to_np(xp.take(totals["draw"], sel, axis=0))
    res.adl_volume[where] = to_np(xp.take(totals["adl"], sel, axis=0))
    res.cascade_loss[where] = to_np(xp.take(totals["loss"], sel, axis=0))
    res.fund_need[where] = np.maximum(0.0, to_np(xp.take(totals["need"], sel, axis=0)))
    res.price_move[where] = to_np(xp.take(impact, sel, axis=0)) + 0.0


def _factor_units(on: OnBackend, current, moved_v):
    """Units of the underlying per unit of each factor exposure, ``[S x F]``: 1/S0 for an asset factor
    (its exposure is USD at today's price), size x Black-Scholes delta at current prices for an option."""
    b = on.b
    xp = b.xp
    n_s = current.shape[0]
    lin = xp.broadcast_to(on.units_per_usd[None, :], (n_s, on.units_per_usd.shape[0]))
    o = on.priced.options
    if o.strike.shape[0] == 0:
        return lin
    spot = o.spot * xp.exp(xp.take(current, o.asset, axis=1))
    vol = o.vol * xp.exp(xp.take(moved_v, o.asset, axis=1))
    delta = black_scholes_delta(xp, b.norm_cdf, spot, o.strike, o.expiry_after, vol, o.is_call, o.rate)
    alive = o.expiry_after > 0
    itm = xp.where(o.is_call, xp.astype(spot > o.strike, xp.float64), -xp.astype(spot < o.strike, xp.float64))
    delta = xp.where(alive, delta, itm)      # an option expired within the horizon: its intrinsic delta
    return xp.concat([lin, o.size * delta], axis=1)


def _asset_units(on: OnBackend, per_factor, n_a):
    """Per-factor units ``[S x F]`` summed into their assets ``[S x A]`` (options added in column order)."""
    xp = on.b.xp
    cols = [per_factor[:, a] for a in range(n_a)]
    for a in range(n_a):
        for j in on.asset_of_option[a]:
            cols[a] = cols[a] + per_factor[:, n_a + int(j)]
    return xp.stack(cols, axis=1)


def adl_ranking(profit, notional, equity, entry_notional):
    """ADL score of candidate pools (docs/methodology.md, section 14): higher is deleveraged first.

    ``score = (profit / entry_notional) x (notional / equity)`` for a profitable pool with positive
    equity and notional (the PNL-percentage x effective-leverage ranking BitMEX and Binance publish);
    ``-inf`` (never chosen) otherwise.
    """
    profit, notional, equity, entry = (np.asarray(a, dtype=float) for a in (profit, notional, equity, entry_notional))
    ok = (profit > 0) & (equity > 0) & (notional > 0) & (entry > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (profit / entry) * (notional / equity)
    return np.where(ok, score, -np.inf)


def _adl_volume(on: OnBackend, pnl, cols, fail, alive, short, deficit, factor_units, price, n_a):
    """USD notional closed by auto-deleveraging in each scenario of the round, ``[S]``.

    The share ``short / deficit`` of the bankrupt pools' positions (per asset, netted) that the fund
    could not take over is closed against surviving pools holding the opposite side at a profit, taken
    in :func:`adl_ranking` order; the volume is the units closed x the current price, capped by the
    opposite units available.  Scenarios without a shortfall get 0.  Done per scenario on the host
    (rare: only once the fund is exhausted).
    """
    b = on.b
    xp = b.xp
    host = on.host
    to_np = lambda x: np.asarray(b.to_numpy(x), dtype=float)  # noqa: E731
    short_h, deficit_h = to_np(short), to_np(deficit)
    out = np.zeros(short_h.size)
    scen = np.flatnonzero(short_h > 0)
    sel = xp.asarray(scen)
    pr = to_np(xp.take(pnl, xp.asarray(cols[scen]), axis=1))  # [P x s] (``pnl`` columns: ``cols``)
    eq = host.equity[:, None] + pr
    fl = to_np(xp.astype(xp.take(fail, sel, axis=1), xp.float64)) > 0
    al = to_np(xp.astype(xp.take(alive, sel, axis=1), xp.float64)) > 0
    fu = to_np(xp.take(factor_units, sel, axis=0))            # [s x F]
    px = to_np(xp.take(price, sel, axis=0)) * host.prices[None, :]
    entry = host.gross_usd.sum(axis=1) + host.gross_face      # position notional at today's prices
    f_asset = np.concatenate([np.arange(n_a), np.asarray(host.options.asset, dtype=np.int64)])
    to_asset = sp.csr_matrix((np.ones(f_asset.size), (np.arange(f_asset.size), f_asset)), shape=(f_asset.size, n_a))
    for j, s in enumerate(scen):
        units = np.asarray(((host.exposures @ sp.diags(fu[j])) @ to_asset).todense())   # [P x A]
        bankrupt = fl[:, j] & (eq[:, j] < 0)
        need = (short_h[s] / deficit_h[s]) * units[bankrupt].sum(axis=0)  # units the fund could not take over
        score = adl_ranking(pr[:, j], np.abs(units * px[j]).sum(axis=1), eq[:, j], entry)
        volume = 0.0
        for a in np.flatnonzero(need != 0):
            opposite = al[:, j] & (np.sign(units[:, a]) == -np.sign(need[a])) & np.isfinite(score)
            order = np.flatnonzero(opposite)[np.argsort(-score[opposite], kind="stable")]
            left = abs(need[a])
            for p in order:                                    # the ranked counterparties, in turn
                take = min(left, abs(units[p, a]))
                volume += take * px[j, a]
                left -= take
                if left <= 0:
                    break
        out[s] = volume
    return b.asarray(out)
