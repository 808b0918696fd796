"""Liquidation prices of margin pools, for any margin model (docs/methodology.md, section 10).

``liquidation_price(group, asset)``: the price of ``asset`` at which the
pool's equity falls to its maintenance margin ``mm``, with

- every other market price held at today's value;
- every collateral amount held fixed: collateral *in that asset* is
  revalued at the new price (a BTC deposit loses value as BTC falls),
  collateral in other assets is not;
- ``mm`` held at today's value (the model is not re-run at the new price);
- equity as a function of the price x of the asset, S today:
  ``equity(x) = equity(S) + D (x / S - 1) + sum_options q c (BS(x) - BS(S))``
  where D is the pool's USD exposure to the asset through spot, linear and
  inverse contracts (inverse: their USD face value, as in revaluation) and
  collateral, exact for those; options by Black-Scholes at today's vol and
  expiry (:func:`mcmargin.instruments.black_scholes.black_scholes`).

Which price: the one nearest today's at which equity is below ``mm``, i.e.
where ``equity(x) - mm`` first crosses zero going down from S or going up
from S, whichever is nearer.  A pool already below ``mm`` today has today's
price.  NaN means **none**: no price in ``(0, 10 x S)`` brings the pool
below ``mm`` (a pool with no exposure to the asset, or one that the asset
moving that far cannot hurt enough).

Vectorised: without options on the asset the crossing is the closed form
``x = S (1 - (equity - mm) / D)``; with options, ``equity - mm`` is
evaluated on a grid of prices (steps of S/200 below spot and 9 S/450 above),
the first sign change on each side brackets the crossing, and regula falsi
(Illinois rule, the bracket kept) narrows it to rounding.  A crossing and a
recrossing both inside one grid step are not seen (a window narrower than
0.5% of spot below or 2% above).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..instruments.black_scholes import black_scholes

#: Prices searched: (0, UPPER x spot).
UPPER = 10.0
#: Grid nodes below spot (S (1 - j / GRID_DOWN)) and above (S (1 + (UPPER - 1) j / GRID_UP)).
GRID_DOWN = 200
GRID_UP = 450
#: Most root-finding steps in a bracket of one grid step (regula falsi, Illinois rule).
MAX_STEPS = 40
#: Pools per block on the grid (memory: BLOCK x nodes x 8 bytes).
BLOCK = 4096

LONG_NAME = "price of the asset at which the pool's equity falls to its mm (other prices, collateral and mm fixed)"
#: Declared non-finite values (the dataset's ``nonfinite`` attribute, read by the output checks).
NONFINITE_NOTE = "nan: none, no price in (0, 10 x spot) brings the pool's equity below its mm"


def linear_exposure(book, holdings) -> np.ndarray:
    """``[rows x assets]`` USD exposure D of each row to each asset through linear columns and collateral.

    Linear contracts: their USD notional on their underlying (face value for
    inverse ones); collateral: amount x price, cash included (a stablecoin's
    price is a price too).  Options are not linear and are left out.
    """
    n_ins, a = book.n_instruments, book.assets.size
    n_lin = n_ins - book.options.n
    lin = book.to_factors[:n_lin, :a]
    to_assets = sp.vstack([lin, sp.csr_matrix((book.options.n, a)), sp.diags(book.prices, format="csr")],
                          format="csr")
    return np.asarray((holdings @ to_assets).todense()).reshape(holdings.shape[0], a)


def _options(book):
    from scipy.special import ndtr

    o = book.options
    arr = {k: np.asarray(getattr(o, k), dtype=float) for k in ("spot", "strike", "expiry", "vol", "size", "value")}
    arr["asset"] = np.asarray(o.asset, dtype=np.int64)
    arr["is_call"] = np.asarray(o.is_call, dtype=float) > 0.5
    arr["rate"] = float(o.rate)
    arr["ndtr"] = ndtr
    return arr


def _option_change(o, idx, price):
    """USD change of one contract of options ``idx`` when their underlying moves to ``price`` (broadcast)."""
    value = black_scholes(np, o["ndtr"], price, o["strike"][idx], o["expiry"][idx], o["vol"][idx], o["is_call"][idx],
                          o["rate"])
    return o["size"][idx] * (value - o["value"][idx])


def liquidation_prices(book, group_mm) -> np.ndarray:
    """``[group x asset]`` liquidation prices (module docstring), NaN for none.

    Parameters
    ----------
    book : CompiledBook
        Its ``group_row`` rows hold every pool's holdings.
    group_mm : array
        Maintenance margin of every pool today (``book.groups`` order), USD.
    """
    holdings = book.holdings[book.group_row].tocsr()
    holdings.eliminate_zeros()
    return pool_liquidation_prices(book, holdings, np.asarray(group_mm, dtype=float))


def pool_liquidation_prices(book, holdings, mm) -> np.ndarray:
    """Liquidation prices of the rows of ``holdings`` (columns of ``book``) against their ``mm``."""
    prices = np.asarray(book.prices, dtype=float)
    n, n_assets = holdings.shape[0], prices.size
    margin0 = holdings @ book.unit_value - mm            # equity - mm today
    exposure = linear_exposure(book, holdings)
    out = np.full((n, n_assets), np.nan)
    below = margin0 < 0
    out[below] = prices
    o = _options(book)
    n_lin = book.n_instruments - book.options.n
    opt_holdings = holdings[:, n_lin:book.n_instruments].tocsc()
    for a in range(n_assets):
        s = prices[a]
        opts = np.flatnonzero(o["asset"] == a)
        qa = opt_holdings[:, opts].tocsr()
        qa.eliminate_zeros()
        has_options = np.diff(qa.indptr) > 0
        # Linear only: equity(x) - mm = margin0 + D (x / S - 1), one crossing at most.
        lin = ~below & ~has_options & (exposure[:, a] != 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = s * (1.0 - margin0[lin] / exposure[lin, a])
        out[lin, a] = np.where((x > 0) & (x < UPPER * s), x, np.nan)
        rows = np.flatnonzero(~below & has_options)
        for start in range(0, rows.size, BLOCK):
            r = rows[start:start + BLOCK]
            out[r, a] = _search(o, opts, qa[r], margin0[r], exposure[r, a], s)
    return out


def _search(o, opts, q, margin0, exposure, s):
    """Nearest crossing of ``equity - mm`` for pools holding options on the asset (grid, then root-finding)."""
    down = np.concatenate([1.0 - np.arange(1, GRID_DOWN) / GRID_DOWN, [1e-9]])
    up = np.concatenate([1.0 + (UPPER - 1.0) * np.arange(1, GRID_UP) / GRID_UP, [UPPER * (1.0 - 1e-12)]])
    found = []
    for side in (down, up):
        change = _option_change(o, opts[:, None], s * side[None, :])          # [options x nodes]
        f = margin0[:, None] + exposure[:, None] * (side - 1.0)[None, :] + np.asarray(q @ change)
        hit = f < 0
        rows = np.flatnonzero(hit.any(axis=1))
        j = np.argmax(hit[rows], axis=1)
        nodes = np.concatenate([[1.0], side])
        f_nodes = np.concatenate([margin0[:, None], f], axis=1)
        x = np.full(margin0.size, np.nan)
        x[rows] = _solve(o, opts, q[rows], margin0[rows], exposure[rows], s, s * nodes[j], s * nodes[j + 1],
                         f_nodes[rows, j], f_nodes[rows, j + 1])
        found.append(x)
    x_down, x_up = found
    nearer_up = np.isnan(x_down) | (x_up - s < s - x_down)
    return np.where(nearer_up, x_up, x_down)


def _solve(o, opts, q, margin0, exposure, s, lo, hi, f_lo, f_hi):
    """The crossing in ``[lo, hi]`` (``f(lo) >= 0 > f(hi)`` per row): Illinois regula falsi, bracket kept.

    Each step keeps a sign-changing bracket; when the same end is kept twice
    its value is halved (the Illinois rule), so convergence is superlinear on
    these smooth functions.  Stops when ``|f|`` is at rounding (1e-13 of the
    terms) or every bracket within it in every row, or after
    :data:`MAX_STEPS` steps, and returns the point of the last step.
    """
    coo = q.tocoo()
    ins = opts[coo.col]
    side = np.zeros(lo.size)                           # -1: lo kept last step, +1: hi kept
    tolerance = 1e-13 * (np.abs(margin0) + np.abs(exposure) + np.abs(f_lo) + np.abs(f_hi))
    x = hi.copy()
    for _ in range(MAX_STEPS):
        x = np.where(f_lo - f_hi > 0, (lo * f_hi - hi * f_lo) / np.where(f_lo - f_hi > 0, f_hi - f_lo, 1.0), hi)
        x = np.clip(x, np.minimum(lo, hi), np.maximum(lo, hi))
        value = np.bincount(coo.row, weights=coo.data * _option_change(o, ins, x[coo.row]), minlength=x.size)
        f = margin0 + exposure * (x / s - 1.0) + value
        neg = f < 0
        # f < 0: x replaces hi; lo kept (halve f_lo if lo was kept last time too).
        f_lo = np.where(neg & (side == -1), 0.5 * f_lo, f_lo)
        f_hi = np.where(~neg & (side == 1), 0.5 * f_hi, f_hi)
        hi, f_hi = np.where(neg, x, hi), np.where(neg, f, f_hi)
        lo, f_lo = np.where(neg, lo, x), np.where(neg, f_lo, f)
        side = np.where(neg, -1, 1)
        if (np.abs(f) <= tolerance).all() or (np.abs(hi - lo) <= 1e-13 * s).all():
            break
    return x


def dataset_variable(book, group_mm):
    """``liquidation_price(group, asset)`` as a dataset variable ``(dims, values, attrs)``."""
    return (("group", "asset"), liquidation_prices(book, group_mm),
            {"long_name": LONG_NAME, "units": "USD", "nonfinite": NONFINITE_NOTE})
