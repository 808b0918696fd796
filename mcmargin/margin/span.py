"""SPAN-style scanning margin, the ``span`` model (docs/methodology.md, section 7).

Per underlying u (the *combined commodity*: every instrument on u and the
collateral held in u) a price scan range ``R_u`` (a log-return over the
horizon) and a vol scan range ``V_u`` (a log change of implied vol) define
16 risk-array scenarios that move u alone (others unchanged):

    j      1  2   3   4    5    6   7   8    9   10  11  12  13  14  15  16
    price  0  0  +1/3    -1/3    +2/3    -2/3    +1      -1      +2  -2   (x R_u)
    vol    +  -  +   -    +    -   +   -    +    -   +   -   +   -   0   0   (x V_u)
    weight 1 ...                                                    c   c

with ``c`` the cover fraction of the extreme moves (default 0.35).  Every
row (account, pooled group, one unit of an instrument) is revalued under
the 16 x U scenarios, counting only the positions on the scenario's own
underlying (:meth:`Span.grid_losses`), and then, per underlying:

- ``scan_u = max(0, max_j w_j L_{u,j})``;
- ``intra_u = intra_rate_u x min(sum_t max(D_{u,t}, 0), sum_t max(-D_{u,t}, 0))``,
  ``D_{u,t}`` the row's USD delta in expiry tier t (spot, perpetuals and
  collateral in the first tier);
- ``credit_u``: inter-commodity spreads between underlyings in priority
  order; a pair (a, b) with delta ratio (r_a, r_b) and credit rate k forms
  ``s = min(|D_a| / r_a, |D_b| / r_b)`` spreads where the remaining net
  deltas have opposite signs, and credits ``k s r_a WPR_a`` to a and
  ``k s r_b WPR_b`` to b, ``WPR_u = price_risk_u / |D_u|`` the weighted
  price risk (price risk = scan risk less time and volatility risk);
- ``som_u = short_option_minimum_u x sum over short options of |qty| x size x S_u``;
- ``req_u = max(scan_u + intra_u - credit_u, som_u)``.

``im = max(0, sum_u req_u) x (1 + buffer)``.  Equity already holds the
options' value, so net option value is only reported.  ``isolated_im``
margins each position alone by the same rules (one instrument: no intra
charge, no credit), from the long / short unit rows scaled by |qty| (every
part is positively homogeneous).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..common.audit import record_input
from ..common.settings import real_number
from ..errors import ConfigError, InputError
from .base import MarginInputs, MarginModel, MarginParams, Requirement, _da, register

METHODOLOGY = "span: SPAN-style 16-scenario scanning with spread charges and credits (docs/methodology.md section 7)"

#: Price move of each risk-array scenario, in multiples of the price scan range.
PRICE_MOVES = np.array([0, 0, 1 / 3, 1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3, 1, 1, -1, -1, 2, -2],
                       dtype=float)
#: Vol move of each scenario, in multiples of the vol scan range.
VOL_MOVES = np.array([1, -1] * 7 + [0, 0], dtype=float)
#: The two extreme scenarios (counted at the cover fraction).
EXTREME = np.array([False] * 14 + [True, True])
N_SCENARIOS = 16
#: Scenario whose price move is the same and vol move the opposite (scenarios 1-14); -1 for the extremes.
PAIRED = np.array([j ^ 1 for j in range(14)] + [-1, -1])

#: Own settings (``margin.span.*``) and their defaults (conf/margin_params/span.yaml).
DEFAULTS = dict(cover_fraction=0.35, intra_rate=0.02, short_option_minimum=0.01, tiers=(31.0, 92.0, 183.0),
                scan_quantile=0.99, credit_min_correlation=0.5, params=None)

#: How far the central difference for option deltas moves the log price.
DELTA_STEP = 1e-4

#: Scenarios drawn to estimate scan ranges and correlations of a scenario model that states no vols.
ESTIMATE_DRAWS = 20_000


@dataclasses.dataclass(frozen=True)
class UnderlyingParams:
    """SPAN parameters of one combined commodity (docs/methodology.md, section 7.2)."""

    price_scan_range: float       # log-return
    vol_scan_range: float         # log change of implied vol
    tiers: tuple                  # upper bounds of the expiry tiers, days; the last tier is open
    intra_rate: float             # charge per USD of matched delta across tiers
    short_option_minimum: float   # per short option contract, share of its underlying notional
    cover_fraction: float         # share of the extreme scenarios' loss counted


@dataclasses.dataclass(frozen=True)
class InterPair:
    """An inter-commodity spread: legs, USD delta ratio, credit rate, priority (1 first)."""

    legs: tuple
    delta_ratio: tuple
    credit_rate: float
    priority: int


@dataclasses.dataclass(frozen=True)
class SpanParameters:
    underlyings: dict             # asset -> UnderlyingParams
    pairs: tuple                  # InterPair, in priority order
    source: str

    def to_json(self) -> str:
        return json.dumps({"source": self.source,
                           "underlyings": {a: dataclasses.asdict(p) for a, p in self.underlyings.items()},
                           "inter_commodity": [dataclasses.asdict(p) for p in self.pairs]})


# --------------------------------------------------------------------------- parameter file
_UNDERLYING_KEYS = ("price_scan_range", "vol_scan_range", "tiers", "intra_rate", "short_option_minimum",
                    "cover_fraction")
_PAIR_KEYS = ("legs", "delta_ratio", "credit_rate", "priority")


def _tiers(value, where: Callable) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise where("expected a list of increasing tier bounds in days, e.g. [31, 92, 183]")
    out = []
    for i, x in enumerate(value):
        try:
            out.append(real_number(x, "tier", 0.0, low_open=True))
        except ConfigError:
            raise where(f"item {i}: expected a number of days > 0, got {x!r}") from None
    if any(b <= a for a, b in zip(out, out[1:])):
        raise where(f"tier bounds must increase, got {value!r}")
    return tuple(out)


def _check_entry(entry, base: str, allowed, required, err) -> None:
    """A parameter-file entry must be a mapping of ``allowed`` keys holding every ``required`` one."""
    if not isinstance(entry, Mapping):
        raise err(base)(f"expected a mapping of {', '.join(allowed)}, got {entry!r}")
    for k in entry:
        if k not in allowed:
            raise err(f"{base}.{k}")(f"unknown key; expected one of {', '.join(allowed)}")
    for k in required:
        if k not in entry:
            raise err(f"{base}.{k}")("is required")


def load_params(path: str, defaults: Mapping) -> dict:
    """The parameter file ``path`` (YAML), validated; errors name the file and the key.

    Layout (docs/methodology.md, section 7.2)::

        underlyings:
          BTC: {price_scan_range: 0.09, vol_scan_range: 0.17, tiers: [31, 92, 183],
                intra_rate: 0.02, short_option_minimum: 0.01, cover_fraction: 0.35}
        inter_commodity:
          - {legs: [BTC, ETH], delta_ratio: [1.0, 0.75], credit_rate: 0.6, priority: 1}

    ``price_scan_range`` and ``vol_scan_range`` are required per underlying;
    the other keys default to the model's settings (``margin.span.*``).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(str(path), "SPAN parameter file not found (margin.span.params)")
    record_input(p)
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError.from_yaml(str(path), exc) from None

    def err(key):
        return lambda msg: InputError(str(path), f"key {key}: {msg}")

    if not isinstance(raw, Mapping):
        raise InputError(str(path), "expected a mapping with keys underlyings and inter_commodity")
    for key in raw:
        if key not in ("underlyings", "inter_commodity"):
            raise err(key)("unknown key; expected underlyings, inter_commodity")
    table = raw.get("underlyings")
    if not isinstance(table, Mapping) or not table:
        raise err("underlyings")("expected a mapping asset -> parameters, with at least one asset")
    underlyings = {}
    for asset, entry in table.items():
        base = f"underlyings.{asset}"
        _check_entry(entry, base, _UNDERLYING_KEYS, ("price_scan_range", "vol_scan_range"), err)
        underlyings[str(asset)] = UnderlyingParams(
            price_scan_range=_number(entry["price_scan_range"], err(f"{base}.price_scan_range"), 0.0, 5.0, True),
            vol_scan_range=_number(entry["vol_scan_range"], err(f"{base}.vol_scan_range"), 0.0, 5.0),
            tiers=_tiers(entry.get("tiers", defaults["tiers"]), err(f"{base}.tiers")),
            intra_rate=_number(entry.get("intra_rate", defaults["intra_rate"]), err(f"{base}.intra_rate"), 0.0, 1.0),
            short_option_minimum=_number(entry.get("short_option_minimum", defaults["short_option_minimum"]),
                                         err(f"{base}.short_option_minimum"), 0.0, 1.0),
            cover_fraction=_number(entry.get("cover_fraction", defaults["cover_fraction"]),
                                   err(f"{base}.cover_fraction"), 0.0, 1.0))
    pairs = raw.get("inter_commodity") or []
    if not isinstance(pairs, list):
        raise err("inter_commodity")("expected a list of spreads")
    out = []
    for i, entry in enumerate(pairs):
        base = f"inter_commodity[{i}]"
        _check_entry(entry, base, _PAIR_KEYS, _PAIR_KEYS, err)
        legs = entry["legs"]
        if not (isinstance(legs, (list, tuple)) and len(legs) == 2 and legs[0] != legs[1]):
            raise err(f"{base}.legs")(f"expected two different underlyings, got {legs!r}")
        for leg in legs:
            if str(leg) not in underlyings:
                raise err(f"{base}.legs")(f"{leg!r} is not one of the file's underlyings")
        ratio = entry["delta_ratio"]
        if not (isinstance(ratio, (list, tuple)) and len(ratio) == 2):
            raise err(f"{base}.delta_ratio")(f"expected two numbers > 0, got {ratio!r}")
        ratio = tuple(_number(r, err(f"{base}.delta_ratio"), 0.0, None, True) for r in ratio)
        priority = entry["priority"]
        if isinstance(priority, bool) or not isinstance(priority, int) or priority < 1:
            raise err(f"{base}.priority")(f"expected a whole number >= 1, got {priority!r}")
        out.append(InterPair(tuple(str(x) for x in legs), ratio,
                             _number(entry["credit_rate"], err(f"{base}.credit_rate"), 0.0, 1.0), priority))
    prios = [p.priority for p in out]
    if len(set(prios)) != len(prios):
        raise err("inter_commodity")(f"two spreads share a priority: {prios}")
    return {"underlyings": underlyings, "pairs": tuple(sorted(out, key=lambda p: p.priority))}


def _number(value, where, low, high, low_open=False):
    try:
        return real_number(value, "x", low, high, low_open=low_open)
    except ConfigError:
        rng = f"in {'(' if low_open else '['}{low:g}, {high:g}]" if high is not None else f"> {low:g}"
        raise where(f"expected a finite number {rng}, got {value!r}") from None



# --------------------------------------------------------------------------- the model
@register("span")
class Span(MarginModel):
    """SPAN-style scanning (module docstring; docs/methodology.md, section 7)."""

    rows = ("accounts", "groups", "long", "short")
    reduction = "grid"
    variables = ("span_scan_risk", "span_intra_commodity_charge", "span_inter_commodity_credit",
                 "span_short_option_minimum", "span_net_option_value")
    methodology = METHODOLOGY

    def __init__(self, params: MarginParams = MarginParams(), *, cover_fraction=0.35, intra_rate=0.02,
                 short_option_minimum=0.01, tiers=(31.0, 92.0, 183.0), scan_quantile=0.99,
                 credit_min_correlation=0.5, params_file=None):
        super().__init__(params)
        key = "margin.span."
        self.cover_fraction = real_number(cover_fraction, key + "cover_fraction", 0.0, 1.0)
        self.intra_rate = real_number(intra_rate, key + "intra_rate", 0.0, 1.0)
        self.short_option_minimum = real_number(short_option_minimum, key + "short_option_minimum", 0.0, 1.0)
        self.scan_quantile = real_number(scan_quantile, key + "scan_quantile", 0.5, 1.0, low_open=True,
                                         high_open=True)
        self.credit_min_correlation = real_number(credit_min_correlation, key + "credit_min_correlation", -1.0, 1.0)

        def bad_tiers(msg):
            return ConfigError(key + "tiers", msg)
        self.tiers = _tiers(list(tiers) if isinstance(tiers, tuple) else tiers, bad_tiers)
        if params_file is not None and (not isinstance(params_file, str) or not params_file.strip()):
            raise ConfigError(key + "params", f"expected a path or null, got {params_file!r}")
        self.params_file = params_file
        # Read and check the file now, so a bad file fails before any work.
        self._file = load_params(params_file, self._defaults()) if params_file else None
        self._cache: dict = {}

    def _defaults(self) -> dict:
        return dict(cover_fraction=self.cover_fraction, intra_rate=self.intra_rate,
                    short_option_minimum=self.short_option_minimum, tiers=self.tiers)

    @classmethod
    def from_config(cls, params: MarginParams, own: Mapping) -> "Span":
        own = dict(own)
        kw = {k: own.pop(k) for k in list(own) if k in DEFAULTS}
        super().from_config(params, own)          # refuses any other key
        if "params" in kw:
            kw["params_file"] = kw.pop("params")
        return cls(params, **kw)

    def confidences(self):
        return ()

    # ----------------------------------------------------------------- parameters
    def parameters(self, inputs: MarginInputs) -> SpanParameters:
        """The SPAN parameters of the run: the file's, else derived from the scenario model (section 7.3)."""
        # Kept with the objects themselves (not their ids, which a later run may reuse).
        key = (inputs.portfolio, inputs.scenarios, inputs.book)
        cached = self._cache.get("key")
        if cached is None or any(a is not b for a, b in zip(cached, key)):
            self._cache = {"key": key, "value": self._parameters(inputs)}
        return self._cache["value"]

    def _underlyings(self, inputs) -> list[str]:
        """The combined commodities: market assets that move, and any underlying of an option."""
        m = inputs.portfolio.market
        risky = set(m["asset"][m["vol"].to_numpy(dtype=float) > 0])
        ins = inputs.portfolio.instruments
        risky |= set(ins["underlying"][ins["kind"] == "option"])
        return [a for a in m["asset"] if a in risky]

    def _parameters(self, inputs) -> SpanParameters:
        names = self._underlyings(inputs)
        if self._file is not None:
            missing = [a for a in names if a not in self._file["underlyings"]]
            if missing:
                raise InputError(self.params_file, f"key underlyings.{missing[0]}: the book's underlying "
                                                   f"{missing[0]} has no SPAN parameters (every moving asset needs "
                                                   "an entry)")
            return SpanParameters({a: self._file["underlyings"][a] for a in names},
                                  tuple(p for p in self._file["pairs"] if set(p.legs) <= set(names)),
                                  f"file {self.params_file}")
        return self.derived_parameters(inputs, names)

    def derived_parameters(self, inputs, names) -> SpanParameters:
        """Defaults from the scenario model (docs/methodology.md, section 7.3)."""
        from scipy.special import ndtri

        scen = inputs.scenarios
        if scen is None:
            raise ValueError("the span model needs margin.span.params or the run's scenario model for its defaults")
        z = float(ndtri(self.scan_quantile))
        market = inputs.portfolio.market.set_index("asset")
        d = scen.describe()
        k = len(names)
        corr = np.eye(k)
        if all(x in d for x in ("factors", "vol", "vol_of_vol", "correlation")):
            root_h = math.sqrt(float(d["horizon_days"]) / float(d.get("days_per_year", 365.0)))
            factors = list(d["factors"])
            pos = {a: factors.index(a) for a in names if a in factors}
            vol = {a: d["vol"][pos[a]] if a in pos else float(market.loc[a, "vol"]) for a in names}
            vov = {a: d["vol_of_vol"][pos[a]] if a in pos else 0.0 for a in names}
            price_range = {a: z * vol[a] * root_h for a in names}
            vol_range = {a: z * vov[a] * root_h for a in names}
            c = np.asarray(d["correlation"], dtype=float)
            for i, a in enumerate(names):
                for j, b in enumerate(names):
                    if i != j and a in pos and b in pos:
                        corr[i, j] = c[pos[a], pos[b]]
            how = (f"derived from the scenario model ({d.get('model')}): R = z({self.scan_quantile:g}) x vol x "
                   "sqrt(h / days_per_year), V = the same with vol-of-vol, credit rates from its correlations")
        else:
            # A model that states no vols (historical, fhs): the horizon moves of its own draws.
            shock, vol_shock = scen.draw_numpy(0, min(scen.n, ESTIMATE_DRAWS))
            col = [list(scen.assets).index(a) for a in names]
            s, v = np.asarray(shock)[:, col], np.asarray(vol_shock)[:, col]
            sd, vsd = s.std(axis=0), v.std(axis=0)
            price_range = {a: z * float(sd[i]) for i, a in enumerate(names)}
            vol_range = {a: z * float(vsd[i]) for i, a in enumerate(names)}
            ok = sd > 0
            if ok.sum() > 1:
                sub = np.corrcoef(s[:, ok], rowvar=False)
                idx = np.flatnonzero(ok)
                corr[np.ix_(idx, idx)] = sub
            how = (f"estimated from {s.shape[0]} draws of the scenario model ({d.get('model')}): R = z("
                   f"{self.scan_quantile:g}) x std of the horizon log-return, V = the same for the vol shock, "
                   "credit rates from the sample correlations")
        under = {a: UnderlyingParams(price_scan_range=float(price_range[a]), vol_scan_range=float(vol_range[a]),
                                     tiers=self.tiers, intra_rate=self.intra_rate,
                                     short_option_minimum=self.short_option_minimum,
                                     cover_fraction=self.cover_fraction) for a in names}
        pairs = []
        for i, a in enumerate(names):
            for j in range(i + 1, k):
                b, rho = names[j], float(corr[i, j])
                ra, rb = price_range[a], price_range[b]
                if rho < self.credit_min_correlation or rho <= 0 or ra <= 0 or rb <= 0:
                    continue
                top = max(ra, rb)
                pairs.append(InterPair((a, b), (rb / top, ra / top), default_credit_rate(rho), 0))
        pairs.sort(key=lambda p: -p.credit_rate)
        pairs = tuple(dataclasses.replace(p, priority=n + 1) for n, p in enumerate(pairs))
        return SpanParameters(under, pairs, how)

    # ----------------------------------------------------------------- the grid
    def grid(self, inputs: MarginInputs):
        """``(shock, vol_shock)`` [16 U x asset]: the 16 risk-array scenarios of each underlying in turn."""
        par = self.parameters(inputs)
        assets = list(inputs.book.assets)
        names = list(par.underlyings)
        shock = np.zeros((N_SCENARIOS * len(names), len(assets)))
        vol_shock = np.zeros_like(shock)
        for n, a in enumerate(names):
            p = par.underlyings[a]
            block = slice(N_SCENARIOS * n, N_SCENARIOS * (n + 1))
            shock[block, assets.index(a)] = PRICE_MOVES * p.price_scan_range
            vol_shock[block, assets.index(a)] = VOL_MOVES * p.vol_scan_range
        return shock, vol_shock

    def grid_losses(self, inputs: MarginInputs) -> np.ndarray:
        """``[rows x 16 U]`` losses; scenario block u counts only the factors on underlying u.

        Revaluing the whole book under a block would add the time decay of
        the options on every other underlying to u's risk array, once per
        underlying; SPAN's risk arrays are per combined commodity.
        """
        from ..backend import get_backend
        from ..instruments import revaluation

        book = inputs.book
        shock, vol_shock = self.grid(inputs)
        nb = get_backend("numpy")
        pnl = np.asarray(revaluation.revalue(nb, revaluation.to_backend(book, nb), shock, vol_shock), dtype=float)
        names = list(self.parameters(inputs).underlyings)
        factor_asset = _factor_asset(book)
        block_asset = np.repeat([list(book.assets).index(a) for a in names], N_SCENARIOS)
        pnl = np.where(block_asset[:, None] == factor_asset[None, :], pnl, 0.0)
        return -np.asarray(book.exposures @ pnl.T)

    # ----------------------------------------------------------------- requirements
    def requirements(self, inputs: MarginInputs) -> Requirement:
        book = inputs.book
        par = self.parameters(inputs)
        losses = inputs.grid_losses if inputs.grid_losses is not None else self.grid_losses(inputs)
        parts = self.parts(inputs, losses, par)
        scale = 1.0 + self.params.buffer
        total = np.maximum(0.0, parts["requirement"])
        acc, grp = book.rows("accounts"), book.group_row
        im = total[acc] * scale
        group_im = total[grp] * scale

        # Each position alone: one unit long or short, scaled by |qty| (every part is positively homogeneous).
        unit = np.stack([total[book.rows("long")], total[book.rows("short")]], axis=1)
        positions = book.holdings[acc][:, :book.n_instruments].tocoo()
        side = (positions.data < 0).astype(int)
        per_position = np.abs(positions.data) * unit[positions.col, side]
        isolated = np.bincount(positions.row, weights=per_position, minlength=book.accounts.size) * scale

        variables = {}
        labels = {"scan_risk": "SPAN scan risk: worst weighted risk-array loss, summed over underlyings",
                  "intra_commodity_charge": "SPAN intra-commodity (calendar) spread charge, summed over underlyings",
                  "inter_commodity_credit": "SPAN inter-commodity spread credit, summed over underlyings",
                  "short_option_minimum": "SPAN short option minimum, summed over underlyings",
                  "net_option_value": "net option value (long minus short options at market; already in equity)"}
        for part, text in labels.items():
            values = parts[part]
            variables[f"span_{part}"] = _da(values[acc], ("account",), text, buffer="not applied")
            variables[f"group_span_{part}"] = _da(values[grp], ("group",), text + " (pooled group)",
                                                  buffer="not applied")
        return Requirement(im, group_im, isolated_im=isolated, variables=variables,
                           attrs={"span_parameters": par.to_json()})

    def parts(self, inputs: MarginInputs, losses: np.ndarray, par: SpanParameters) -> dict:
        """Every row's SPAN figures before the buffer, ``[rows]`` each, and per underlying ``[rows x U]``."""
        book, portfolio = inputs.book, inputs.portfolio
        names = list(par.underlyings)
        nu = len(names)
        n_rows = book.holdings.shape[0]
        if nu == 0:
            zero = np.zeros(n_rows)
            nov = _net_option_value(book)
            return dict(requirement=zero, scan_risk=zero, intra_commodity_charge=zero, inter_commodity_credit=zero,
                        short_option_minimum=zero, net_option_value=nov)
        L = np.asarray(losses, dtype=float).reshape(n_rows, nu, N_SCENARIOS)
        cover = np.array([par.underlyings[a].cover_fraction for a in names])
        weights = np.where(EXTREME[None, :], cover[:, None], 1.0)                 # [U x 16]
        weighted = L * weights[None]
        active = np.argmax(weighted, axis=2)                                       # [rows x U]
        worst = np.take_along_axis(weighted, active[..., None], axis=2)[..., 0]
        scan = np.maximum(0.0, worst)

        # Price risk = scan risk - time risk - volatility risk (SPAN's split), within [0, scan].
        time_risk = 0.5 * (L[..., 0] + L[..., 1])
        paired = PAIRED[active]
        pair_loss = np.take_along_axis(L, np.maximum(paired, 0)[..., None], axis=2)[..., 0]
        active_loss = np.take_along_axis(L, active[..., None], axis=2)[..., 0]
        vol_risk = np.where(paired >= 0, 0.5 * np.abs(active_loss - pair_loss), 0.0)
        price_risk = np.clip(scan - time_risk - vol_risk, 0.0, scan)

        deltas, n_tiers = _tier_deltas(book, portfolio, names, par)                # [rows x U x T]
        long_d = np.maximum(deltas, 0.0).sum(axis=2)
        short_d = np.maximum(-deltas, 0.0).sum(axis=2)
        intra_rate = np.array([par.underlyings[a].intra_rate for a in names])
        intra = intra_rate[None, :] * np.minimum(long_d, short_d)

        net = deltas.sum(axis=2)                                                  # [rows x U]
        with np.errstate(divide="ignore", invalid="ignore"):
            wpr = np.where(np.abs(net) > 0, price_risk / np.abs(net), 0.0)
        credit = np.zeros_like(net)
        remaining = net.copy()
        index = {a: i for i, a in enumerate(names)}
        for pair in par.pairs:
            a, b = index[pair.legs[0]], index[pair.legs[1]]
            ra, rb = pair.delta_ratio
            da, db = remaining[:, a], remaining[:, b]
            opposite = (da * db) < 0
            spreads = np.where(opposite, np.minimum(np.abs(da) / ra, np.abs(db) / rb), 0.0)
            credit[:, a] += pair.credit_rate * spreads * ra * wpr[:, a]
            credit[:, b] += pair.credit_rate * spreads * rb * wpr[:, b]
            remaining[:, a] = da - np.sign(da) * spreads * ra
            remaining[:, b] = db - np.sign(db) * spreads * rb

        som = _short_option_minimum(book, names, par)                              # [rows x U]
        per_underlying = np.maximum(scan + intra - credit, som)
        return dict(requirement=per_underlying.sum(axis=1), scan_risk=scan.sum(axis=1),
                    intra_commodity_charge=intra.sum(axis=1), inter_commodity_credit=credit.sum(axis=1),
                    short_option_minimum=som.sum(axis=1), net_option_value=_net_option_value(book),
                    scan_by_underlying=scan, intra_by_underlying=intra, credit_by_underlying=credit,
                    som_by_underlying=som, delta_by_tier=deltas)

    def attrs(self) -> dict:
        out = super().attrs()
        out.update(span_cover_fraction=self.cover_fraction, span_intra_rate=self.intra_rate,
                   span_short_option_minimum=self.short_option_minimum, span_params_file=self.params_file or "")
        return out


def default_credit_rate(rho: float) -> float:
    """Credit rate of a spread whose legs carry equal scan risk, from their correlation (section 7.3).

    Under jointly normal moves the spread's risk is ``x sqrt(2 (1 - rho))``
    where each leg alone carries ``x``: the credit is the share of the two
    legs' summed risk that the spread does not carry.
    """
    return float(1.0 - math.sqrt(max(0.0, (1.0 - rho) / 2.0)))


def _factor_asset(book) -> np.ndarray:
    """The market asset each risk factor moves with: assets, then each option's underlying."""
    return np.concatenate([np.arange(book.assets.size), np.asarray(book.options.asset, dtype=np.int64)])


def _option_columns(book) -> slice:
    n_opt = book.options.n
    return slice(book.n_instruments - n_opt, book.n_instruments)


def _option_delta(book) -> np.ndarray:
    """USD delta (dV/dlog S over the horizon) of one contract of each option, by central difference."""
    from ..backend import get_backend
    from ..instruments import options as option_family

    if book.options.n == 0:
        return np.zeros(0)
    nb = get_backend("numpy")
    shock = np.array([[DELTA_STEP], [-DELTA_STEP]]) * np.ones((1, book.assets.size))
    pnl = np.asarray(option_family.revalue(nb, book.options.on(nb), nb.asarray(shock), nb.asarray(np.zeros_like(shock))))
    return (pnl[0] - pnl[1]) / (2.0 * DELTA_STEP)


def _column_terms(book, portfolio, names, par):
    """Per holdings column: its underlying (index into ``names``, -1 if none), tier, USD delta of one unit."""
    n_ins = book.n_instruments
    ins = portfolio.instruments.set_index("instrument").loc[list(book.instruments)]
    index = {a: i for i, a in enumerate(names)}
    under = np.array([index.get(a, -1) for a in ins["underlying"]] + [index.get(a, -1) for a in book.assets])
    days = (ins["expiry"] - np.datetime64(portfolio.valuation_date)).dt.days.to_numpy(dtype=float)
    tier = np.zeros(under.size, dtype=np.int64)
    for i in range(n_ins):
        if under[i] >= 0 and not np.isnan(days[i]):
            tier[i] = int(np.searchsorted(np.asarray(par.underlyings[names[under[i]]].tiers), days[i], side="left"))
    # USD delta per unit: linear columns and collateral their notional on the asset factor, options by difference.
    tf = book.to_factors.tocsc()
    delta = np.asarray(tf[:, :book.assets.size].sum(axis=1)).ravel()
    opt = _option_columns(book)
    delta[opt] = _option_delta(book)
    return under, tier, delta


def _tier_deltas(book, portfolio, names, par):
    """``[rows x U x T]`` USD delta of every row per underlying and expiry tier."""
    under, tier, delta = _column_terms(book, portfolio, names, par)
    n_tiers = max(len(p.tiers) for p in par.underlyings.values()) + 1
    cols = np.flatnonzero(under >= 0)
    m = sp.csr_matrix((delta[cols], (cols, under[cols] * n_tiers + tier[cols])),
                      shape=(under.size, len(names) * n_tiers))
    d = np.asarray((book.holdings @ m).toarray())
    return d.reshape(-1, len(names), n_tiers), n_tiers


def _short_option_minimum(book, names, par) -> np.ndarray:
    """``[rows x U]``: per underlying, rate x (short option contracts x size x S)."""
    opt = _option_columns(book)
    if book.options.n == 0:
        return np.zeros((book.holdings.shape[0], len(names)))
    index = {a: i for i, a in enumerate(names)}
    u = np.array([index[book.assets[a]] for a in np.asarray(book.options.asset)])
    rate = np.array([par.underlyings[a].short_option_minimum for a in names])
    per_contract = rate[u] * np.asarray(book.options.size) * np.asarray(book.options.spot)
    m = sp.csr_matrix((per_contract, (np.arange(u.size), u)), shape=(u.size, len(names)))
    shorts = -book.holdings[:, opt].minimum(0)
    return np.asarray((shorts @ m).toarray())


def _net_option_value(book) -> np.ndarray:
    """``[rows]``: value of the row's options at market (long positive, short negative)."""
    opt = _option_columns(book)
    return np.asarray(book.holdings[:, opt] @ book.unit_value[opt]).ravel()
