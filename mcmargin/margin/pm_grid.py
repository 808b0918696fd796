"""Crypto portfolio-margin grid, ``pm_grid`` (docs/methodology.md, section 8).

The book is revalued, instantly (no time decay), over a small fixed grid in
the style of Deribit's portfolio margin (OKX and Bybit work alike):

- price moves ``k / n x price_range`` of every risky asset, k = -n..n
  (9 buckets of +-16% by default), each with the implied vol of every option
  up, unchanged and down.  The vol shock is relative and scaled by the
  option's tenor: ``up = min(max_vol_up, vol_up x (30 / max(DTE, min_days))^p)``
  (likewise down with ``vol_down``, ``max_vol_down``), p = ``vega_power_short``
  when DTE <= 30, ``vega_power_long`` beyond; ``sigma' = sigma (1 + up)`` or
  ``sigma (1 - down)``;
- an extended table of large moves (``extended_moves``, vol up), each
  counted at ``extended_fraction x price_range / |move|`` of its loss (a
  linear position is charged ``extended_fraction x price_range`` of its
  notional there, never more than the core grid: the table binds on
  convex, short-option books, what it is for);
- ``scenario_loss = L + w(rho) x max(0, sum_u L_u - L)``: L the worst
  weighted grid loss with every underlying moving by the same bucket, L_u
  the worst loss of the positions on underlying u alone, ``w(rho) =
  sqrt((1 - rho) / 2)`` with rho the lowest return correlation between the
  underlyings held (the scenario model's, or ``correlation``).  One
  underlying: ``scenario_loss = L``; a dollar-neutral two-leg spread of equal
  ranges is charged ``w(rho) x`` its legs apart, the ratio of the spread's
  standard deviation to the sum of its legs';
- contingencies (USD): ``short_option_contingency x`` the underlying value of
  the net short options per (underlying, expiry, strike), calls and puts
  netted; ``futures_contingency x`` the offsetting notional of perpetuals and
  futures per underlying (``sum_u min(long_u, short_u)``);
  ``vega_contingency x`` the vega offset across expiries per underlying
  (``min(sum_e max(v_e, 0), sum_e max(-v_e, 0))``, v_e the net vega of expiry
  e in USD per vol point).

``im = max(0, scenario_loss + contingencies) x (1 + buffer)``.  Collateral is
not in the grid.  ``mode: cross`` margins all of a row's positions together
and values collateral with the market file's haircuts (``adjusted_equity =
equity - sum haircut x max(amount, 0) x price``); ``mode: segregated`` margins
the positions of each settlement currency apart and sums (no haircuts).
``isolated_im`` is each position margined alone under the same grid (the
requirement is positively homogeneous, so it is |qty| x that of one unit).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtr

from ..common.settings import PM_GRID_RULES
from ..errors import ConfigError
from ..instruments import black_scholes as pricing
from .base import MarginInputs, MarginModel, MarginParams, Requirement, _da, register

METHODOLOGY = "pm_grid: crypto portfolio-margin grid (docs/methodology.md section 8)"

MODES = ("cross", "segregated")

#: Every setting of ``margin.pm_grid`` with its default (conf/margin_params/pm_grid.yaml says the sources).
DEFAULTS = dict(mode="cross", price_range=0.16, buckets=4, vol_up=0.50, vol_down=0.25, vega_power_short=0.30,
                vega_power_long=0.13, min_days=1.0, max_vol_up=2.0, max_vol_down=0.75,
                extended_moves=(-0.66, -0.33, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0), extended_fraction=0.5,
                short_option_contingency=0.01, futures_contingency=0.01, vega_contingency=0.25, correlation=None)

#: Days of the tenor the vol shocks are quoted at.
REFERENCE_DAYS = 30.0


def check_setting(key: str, value, name: str = "margin.pm_grid"):
    """``value`` of setting ``key`` parsed and checked by :data:`~mcmargin.common.settings.PM_GRID_RULES`."""
    k = f"{name}.{key}"
    if key not in PM_GRID_RULES:
        raise ConfigError(k, "is not a setting of the pm_grid model; settings: " + ", ".join(DEFAULTS))
    out = PM_GRID_RULES[key](value, k)
    return int(out) if key == "buckets" else out


def tenor_vol_shocks(days, vol_up=0.50, vol_down=0.25, vega_power_short=0.30, vega_power_long=0.13, min_days=1.0,
                     max_vol_up=2.0, max_vol_down=0.75):
    """Relative vol shocks (up, down) of options with ``days`` to expiry: base x (30 / max(days, min_days))^p, capped."""
    d = np.maximum(np.asarray(days, dtype=float), min_days)
    p = np.where(d <= REFERENCE_DAYS, vega_power_short, vega_power_long)
    scale = (REFERENCE_DAYS / d) ** p
    return np.minimum(max_vol_up, vol_up * scale), np.minimum(max_vol_down, vol_down * scale)


def decorrelation_weight(rho):
    """w(rho) = sqrt((1 - rho) / 2): the share of the undiversified excess kept (0 at rho = 1, 1 at rho = -1)."""
    return np.sqrt((1.0 - np.clip(rho, -1.0, 1.0)) / 2.0)


@register("pm_grid")
class PmGrid(MarginModel):
    """Worst loss over a price x vol grid with tenor-scaled vol shocks, an extended table and contingencies."""

    rows = ("accounts", "groups")
    reduction = "grid"
    variables = ("pm_grid_scenario_loss", "pm_grid_decorrelation", "pm_grid_contingency",
                 "pm_grid_short_option_contingency", "pm_grid_futures_contingency", "pm_grid_vega_contingency",
                 "pm_grid_haircut", "pm_grid_worst_scenario", "pm_grid_move", "pm_grid_vol_state", "pm_grid_weight",
                 "pm_grid_vol_up", "pm_grid_vol_down")
    methodology = METHODOLOGY

    def __init__(self, params: MarginParams = MarginParams(), **settings):
        super().__init__(params)
        s = dict(DEFAULTS)
        for key, value in settings.items():
            s[key] = check_setting(key, value)
        self.settings = s

    @classmethod
    def from_config(cls, params: MarginParams, own: Mapping) -> "PmGrid":
        return cls(params, **dict(own))

    def confidences(self):
        return ()

    def attrs(self) -> dict:
        import json

        out = super().attrs()
        out["pm_grid_settings"] = json.dumps({k: list(v) if isinstance(v, tuple) else v
                                              for k, v in self.settings.items()})
        return out

    # ------------------------------------------------------------------ the grid
    def scenarios_table(self):
        """(move, vol_state, weight) of every grid scenario: core buckets x (up, same, down), then the extended table."""
        s = self.settings
        n, rng = s["buckets"], s["price_range"]
        moves, states, weights = [], [], []
        for k in range(-n, n + 1):
            for state in (1, 0, -1):
                moves.append(rng * k / n)
                states.append(state)
                weights.append(1.0)
        for m in s["extended_moves"]:
            moves.append(float(m))
            states.append(1)
            weights.append(s["extended_fraction"] * rng / abs(m))
        return np.array(moves), np.array(states, dtype=np.int64), np.array(weights)

    def grid(self, inputs: MarginInputs):
        """``(shock, vol_shock)`` [grid x asset]: the log price moves (vol shocks are per option: see grid_losses)."""
        moves, states, _ = self.scenarios_table()
        risky = (np.asarray(inputs.book.to_factors.getnnz(axis=0))[:inputs.book.assets.size] > 0)
        shock = np.log1p(moves)[:, None] * risky[None, :]
        return shock, np.zeros_like(shock)

    def vol_shocks(self, book):
        """Relative (up, down) vol shocks of every option of the compiled book, from its tenor."""
        s = self.settings
        days = np.asarray(book.options.expiry, dtype=float) * 365.0
        return tenor_vol_shocks(days, s["vol_up"], s["vol_down"], s["vega_power_short"], s["vega_power_long"],
                                s["min_days"], s["max_vol_up"], s["max_vol_down"])

    def factor_pnl(self, book) -> np.ndarray:
        """[grid x factor] P&L: the relative move of each moving asset, then one contract of each option."""
        moves, states, _ = self.scenarios_table()
        a = book.assets.size
        moving = np.zeros(a, dtype=bool)
        moving[np.unique(book.to_factors.tocoo().col[book.to_factors.tocoo().col < a])] = True
        asset_moves = moves[:, None] * moving[None, :]                      # [G x A]
        o = book.options
        if o.n == 0:
            return asset_moves
        up, down = self.vol_shocks(book)
        idx = np.asarray(o.asset, dtype=np.int64)
        spot = np.asarray(o.spot)[None, :] * (1.0 + asset_moves[:, idx])
        factor = np.where(states[:, None] > 0, 1.0 + up[None, :], np.where(states[:, None] < 0, 1.0 - down[None, :],
                                                                           1.0))
        vol = np.asarray(o.vol)[None, :] * factor
        value = pricing.black_scholes(np, ndtr, spot, np.asarray(o.strike)[None, :], np.asarray(o.expiry)[None, :],
                                      vol, np.asarray(o.is_call, dtype=bool)[None, :], o.rate)
        opt = np.asarray(o.size)[None, :] * (value - np.asarray(o.value)[None, :])
        return np.concatenate([asset_moves, opt], axis=1)

    def grid_losses(self, inputs: MarginInputs) -> np.ndarray:
        """[rows x grid] losses of the positions of every holdings row (collateral excluded), unweighted."""
        book = inputs.book
        return _losses(_position_exposures(book, book.holdings), self.factor_pnl(book))

    # ------------------------------------------------------------------ requirements
    def requirements(self, inputs: MarginInputs) -> Requirement:
        book, portfolio, s = inputs.book, inputs.portfolio, self.settings
        scale = 1.0 + self.params.buffer
        ni = book.n_instruments
        ctx = _Context(self, book, portfolio, inputs.scenarios)
        rows = ctx.margin(book.holdings[:, :ni].tocsr(),
                          joint=inputs.grid_losses if s["mode"] == "cross" else None)
        total = np.maximum(0.0, rows["scenario_loss"] + rows["contingency"])
        acc, grp = book.rows("accounts"), book.group_row
        im, group_im = total[acc] * scale, total[grp] * scale

        units = sp.vstack([sp.identity(ni, format="csr"), -sp.identity(ni, format="csr")], format="csr")
        unit = ctx.margin(units)
        unit_req = np.maximum(0.0, unit["scenario_loss"] + unit["contingency"]).reshape(2, ni).T   # [instrument x side]
        pos = book.holdings[acc][:, :ni].tocoo()
        side = (pos.data < 0).astype(int)
        isolated = np.bincount(pos.row, weights=np.abs(pos.data) * unit_req[pos.col, side],
                               minlength=book.accounts.size) * scale

        haircut = np.zeros(book.accounts.size)
        adjusted = None
        if s["mode"] == "cross":
            coll = book.holdings[acc][:, ni:].tocoo()
            cut = _haircuts(book, portfolio)
            haircut = np.bincount(coll.row, weights=np.maximum(coll.data, 0.0) * book.prices[coll.col] * cut[coll.col],
                                  minlength=book.accounts.size)
            equity = book.holdings[acc] @ book.unit_value
            adjusted = equity - haircut

        moves, states, weights = self.scenarios_table()
        up, down = self.vol_shocks(book)
        n_lin = ni - book.options.n
        vol_up = np.concatenate([np.zeros(n_lin), up])
        vol_down = np.concatenate([np.zeros(n_lin), down])
        acc_rows = {k: v[acc] for k, v in rows.items()}
        variables = {
            "pm_grid_scenario_loss": _da(acc_rows["scenario_loss"], ("account",),
                                         "pm_grid worst weighted grid loss of the positions, decorrelation included"),
            "pm_grid_decorrelation": _da(acc_rows["decorrelation"], ("account",),
                                         "pm_grid part of the scenario loss for underlyings that do not move together"),
            "pm_grid_contingency": _da(acc_rows["contingency"], ("account",), "pm_grid contingency add-ons, total"),
            "pm_grid_short_option_contingency": _da(acc_rows["short_option"], ("account",),
                                                    "pm_grid contingency on net short options per strike"),
            "pm_grid_futures_contingency": _da(acc_rows["futures"], ("account",),
                                               "pm_grid contingency on offsetting perpetuals and futures"),
            "pm_grid_vega_contingency": _da(acc_rows["vega"], ("account",),
                                            "pm_grid contingency on vega offset across expiries"),
            "pm_grid_haircut": _da(haircut, ("account",), "pm_grid collateral haircut (cross mode), USD"),
            "pm_grid_worst_scenario": (("account",), acc_rows["worst"].astype(np.int64),
                                       {"long_name": "pm_grid grid scenario of the worst joint loss", "units": "1"}),
            "pm_grid_move": _da(moves, ("pm_grid_scenario",), "pm_grid relative price move of every risky asset",
                                units="1"),
            "pm_grid_vol_state": (("pm_grid_scenario",), states,
                                  {"long_name": "pm_grid implied vol: 1 up, 0 unchanged, -1 down", "units": "1"}),
            "pm_grid_weight": _da(weights, ("pm_grid_scenario",), "pm_grid share of the scenario's loss counted",
                                  units="1"),
            "pm_grid_vol_up": _da(vol_up, ("instrument",), "pm_grid relative vol shock up (0 for linear instruments)",
                                  units="1"),
            "pm_grid_vol_down": _da(vol_down, ("instrument",),
                                    "pm_grid relative vol shock down (0 for linear instruments)", units="1"),
        }
        return Requirement(im, group_im, isolated_im=isolated, adjusted_equity=adjusted, variables=variables,
                           coords={"pm_grid_scenario": np.arange(moves.size)})


def _haircuts(book, portfolio) -> np.ndarray:
    """Haircut of every market asset (0 where the market file gives none)."""
    if portfolio is None or "haircut" not in portfolio.market:
        return np.zeros(book.assets.size)
    cut = dict(zip(portfolio.market["asset"], portfolio.market["haircut"].astype(float)))
    return np.array([cut.get(a, 0.0) for a in book.assets], dtype=float)


def _position_exposures(book, holdings) -> sp.csr_matrix:
    """Factor exposures of the position columns of ``holdings`` (collateral columns dropped)."""
    ni = book.n_instruments
    return (holdings[:, :ni] @ book.to_factors[:ni]).tocsr()


def _losses(exposures, pnl) -> np.ndarray:
    return -np.asarray(exposures @ pnl.T)


class _Context:
    """What the requirement of any set of position rows needs, built once per call of requirements."""

    def __init__(self, model: PmGrid, book, portfolio, scenarios):
        s = model.settings
        self.model, self.book, self.s = model, book, s
        self.pnl = model.factor_pnl(book)                                  # [G x F]
        _, _, self.weights = model.scenarios_table()
        ni, a = book.n_instruments, book.assets.size
        n_opt = book.options.n
        n_lin = ni - n_opt
        self.tf = book.to_factors[:ni].tocsr()                              # [I x F]
        self.factor_asset = np.concatenate([np.arange(a), np.asarray(book.options.asset, dtype=np.int64)])
        self.moving = [u for u in range(a) if (self.factor_asset[np.unique(self.tf.tocoo().col)] == u).any()]
        self.corr = _correlation(book, scenarios, s["correlation"])

        ins = _instrument_terms(book, portfolio)
        self.settle = ins["settle"]
        kind = ins["kind"]
        # Offsetting futures: USD notional of perpetuals and futures on their underlying (linear columns).
        deriv = np.flatnonzero(np.isin(kind[:n_lin], ("perpetual", "future")))
        tf_lin = self.tf[:n_lin, :a].tocsr()
        keep = sp.diags(np.isin(np.arange(n_lin), deriv).astype(float))
        self.notional = sp.vstack([keep @ tf_lin, sp.csr_matrix((n_opt, a))], format="csr")     # [I x A]
        # Short options: underlying value per contract on its (underlying, expiry, strike) key.
        o = book.options
        under_value = np.asarray(o.size) * np.asarray(o.spot)
        self.strike_keys = _key_matrix(n_lin, [(u, e, k) for u, e, k in zip(o.asset, o.expiry, o.strike)],
                                       under_value, ni)
        # Vega per vol point of one contract, on its (underlying, expiry) key; keys mapped to underlyings.
        vega = np.asarray(o.size) * _vega(o) * 0.01
        expiry_keys = [(int(u), float(e)) for u, e in zip(o.asset, o.expiry)]
        self.expiry_keys = _key_matrix(n_lin, expiry_keys, vega, ni)
        uniq = list(dict.fromkeys(expiry_keys))
        self.key_asset = sp.csr_matrix((np.ones(len(uniq)), (np.arange(len(uniq)), [u for u, _ in uniq])),
                                       shape=(len(uniq), a))

    def margin(self, positions: sp.csr_matrix, joint=None) -> dict:
        """Parts of the requirement of every row of ``positions`` [rows x instruments], by the model's mode."""
        if self.s["mode"] == "cross":
            return self._pool(positions, joint)
        parts, best = None, None
        for c in np.unique(self.settle):
            mask = sp.diags((self.settle == c).astype(float))
            one = self._pool((positions @ mask).tocsr())
            if parts is None:
                parts, best = one, one["scenario_loss"]
                continue
            # The worst scenario reported is that of the settlement pool with the largest scenario loss.
            parts["worst"] = np.where(one["scenario_loss"] > best, one["worst"], parts["worst"])
            best = np.maximum(best, one["scenario_loss"])
            parts = {k: (parts[k] + v if k != "worst" else parts[k]) for k, v in one.items()}
        return parts

    def _pool(self, positions: sp.csr_matrix, joint=None) -> dict:
        """The requirement parts of rows whose positions are margined together (one pool each)."""
        s, w = self.s, self.weights
        e = (positions @ self.tf).tocsr()
        e.eliminate_zeros()
        loss = _losses(e, self.pnl) if joint is None else np.asarray(joint)
        weighted = loss * w[None, :]
        worst = np.argmax(weighted, axis=1) if weighted.shape[1] else np.zeros(loss.shape[0], dtype=np.int64)
        joint_worst = np.maximum(0.0, weighted.max(axis=1))
        rows = positions.shape[0]
        alone_sum = np.zeros(rows)
        held = np.zeros((rows, self.book.assets.size), dtype=bool)
        ec = e.tocsc()
        for u in self.moving:
            cols = np.flatnonzero(self.factor_asset == u)
            eu = ec[:, cols]
            held[:, u] = np.asarray(abs(eu).sum(axis=1)).ravel() > 0
            lu = -np.asarray(eu @ self.pnl[:, cols].T) * w[None, :]
            alone_sum += np.maximum(0.0, lu.max(axis=1))
        n_held = held.sum(axis=1)
        rho = np.ones(rows)
        for i in range(held.shape[1]):
            for j in range(i + 1, held.shape[1]):
                both = held[:, i] & held[:, j]
                rho = np.where(both, np.minimum(rho, self.corr[i, j]), rho)
        decor = np.where(n_held > 1, decorrelation_weight(rho) * np.maximum(0.0, alone_sum - joint_worst), 0.0)

        net_strike = (positions @ self.strike_keys).tocsr()
        short_option = s["short_option_contingency"] * _row_sum(_part(net_strike, -1))
        offset = (_part(positions, 1) @ self.notional).minimum(_part(positions, -1) @ self.notional)
        futures = s["futures_contingency"] * _row_sum(offset)
        net_vega = (positions @ self.expiry_keys).tocsr()
        vega_offset = (_part(net_vega, 1) @ self.key_asset).minimum(_part(net_vega, -1) @ self.key_asset)
        vega = s["vega_contingency"] * _row_sum(vega_offset)
        contingency = short_option + futures + vega
        return dict(scenario_loss=joint_worst + decor, decorrelation=decor, contingency=contingency,
                    short_option=short_option, futures=futures, vega=vega, worst=worst)


def _part(m, sign: int) -> sp.csr_matrix:
    """The positive (sign 1) or negated negative (sign -1) entries of sparse ``m``, as a sparse matrix >= 0."""
    out = sp.csr_matrix(m, copy=True)
    out.data = np.maximum(sign * out.data, 0.0)
    out.eliminate_zeros()
    return out


def _row_sum(m) -> np.ndarray:
    return np.asarray(sp.csr_matrix(m).sum(axis=1)).ravel()


def _key_matrix(n_lin, keys, values, n_instruments) -> sp.csr_matrix:
    """[instrument x key] with ``values`` at each option's key (rows of linear instruments empty)."""
    uniq = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    cols = np.array([uniq[k] for k in keys], dtype=np.int64)
    return sp.csr_matrix((np.asarray(values, dtype=float), (n_lin + np.arange(len(keys)), cols)),
                         shape=(n_instruments, len(uniq)))


def _vega(o) -> np.ndarray:
    """dV/dsigma per unit of underlying, Black-Scholes: S phi(d1) sqrt(T)."""
    t = np.maximum(np.asarray(o.expiry, dtype=float), 1e-12)
    spot, vol = np.asarray(o.spot, dtype=float), np.asarray(o.vol, dtype=float)
    d1 = (np.log(spot / np.asarray(o.strike)) + (o.rate + 0.5 * vol * vol) * t) / (vol * np.sqrt(t))
    return spot * np.exp(-0.5 * d1 * d1) / np.sqrt(2.0 * np.pi) * np.sqrt(t)


def _instrument_terms(book, portfolio) -> dict:
    """``kind`` and ``settle`` of the compiled book's instruments, in column order."""
    if portfolio is None:
        raise ValueError("pm_grid needs the input book (MarginInputs.portfolio) for instrument kinds and settlement")
    ins = portfolio.instruments.set_index("instrument")
    ids = list(book.instruments)
    return {"kind": ins.loc[ids, "kind"].to_numpy(dtype=object).astype(str),
            "settle": ins.loc[ids, "settle"].to_numpy(dtype=object).astype(str)}


def _correlation(book, scenarios, fixed) -> np.ndarray:
    """[asset x asset] return correlation: ``fixed`` off the diagonal if set, else the scenario model's (0 where none)."""
    a = book.assets.size
    if fixed is not None:
        out = np.full((a, a), float(fixed))
        np.fill_diagonal(out, 1.0)
        return out
    out = np.eye(a)
    factors = getattr(scenarios, "factors", None)
    corr = getattr(scenarios, "correlation", None)
    if factors is None or corr is None:
        return out
    corr = np.asarray(corr, dtype=float)
    index = {str(x): i for i, x in enumerate(book.assets)}
    pos = [(index.get(str(f)), k) for k, f in enumerate(factors)]
    for i, ki in pos:
        for j, kj in pos:
            if i is not None and j is not None:
                out[i, j] = corr[ki, kj]
    return out
