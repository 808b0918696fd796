"""What every margin model provides, the registry that builds them, and the dataset they share.

A margin model (docs/architecture.md, "How to add a margin model") says:

- which blocks of holdings rows it needs (:attr:`MarginModel.rows`, from
  :data:`mcmargin.aggregation.ROW_KINDS`): the engine takes tails of those
  rows only;
- how it reduces scenario losses: :attr:`MarginModel.reduction` is
  ``"tail"`` (the exact streaming VaR/ES of the engine, at the confidences
  of :meth:`MarginModel.confidences`), ``"grid"`` (the worst loss over a
  small fixed set of scenarios of its own, :meth:`MarginModel.grid`) or
  ``"closed_form"`` (from the book alone);
- which dataset variables it writes (:attr:`MarginModel.variables`), from
  :meth:`MarginModel.requirements`.

Every model gets the parameters every methodology shares,
:class:`MarginParams` (``margin.confidence``, ``margin.buffer``,
``margin.maintenance_ratio``), and may read keys of its own from
``margin.<name>``.  :func:`margin_dataset` adds what does not depend on
the model: equity, ``mm``, margin calls, group membership, and the tail
measures ``var``/``es`` of every account and group at every confidence.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np
import pandas as pd
import xarray as xr

from ..common.settings import real_number
from ..errors import ConfigError
from ..output.store import NONFINITE
from ..tails import TailResult

REDUCTIONS = ("tail", "grid", "closed_form")


@dataclasses.dataclass(frozen=True)
class MarginParams:
    """Parameters every margin model shares."""

    confidence: float = 0.99
    buffer: float = 0.0
    maintenance_ratio: float = 0.75
    #: ``margin.apc`` (docs/methodology.md, section 15): none | buffer | stress_weight | floor.
    apc: str = "none"
    #: Where ``buffer`` came from when ``margin.buffer`` named a calibration dataset, and its portfolio.
    buffer_source: str | None = None
    buffer_portfolio: str | None = None
    #: ``margin.buffer`` before the APC buffer was folded into ``buffer`` (a single-date run), else None.
    buffer_before_apc: float | None = None

    def __post_init__(self):
        # Parsed here too, so that the library used without Hydra gets the same checks (NaN fails them).
        checked = dict(confidence=real_number(self.confidence, "margin.confidence", 0.5, 1.0, low_open=True,
                                              high_open=True),
                       buffer=real_number(self.buffer, "margin.buffer", 0.0, 10.0),
                       maintenance_ratio=real_number(self.maintenance_ratio, "margin.maintenance_ratio", 0.0, 1.0,
                                                     low_open=True))
        from ..calibration.apc import apc_option

        apc_option(self.apc)
        for name, value in checked.items():
            object.__setattr__(self, name, value)


@dataclasses.dataclass(frozen=True)
class MarginInputs:
    """What a model's :meth:`~MarginModel.requirements` reads.

    Attributes
    ----------
    book : CompiledBook
        Holdings rows (:meth:`~mcmargin.aggregation.CompiledBook.rows`), columns, accounts and groups.
    tails : TailResult or None
        VaR and ES of every row at ``tails.confidences`` (``"tail"`` models).
    grid_losses : numpy.ndarray or None
        ``[rows x grid scenarios]`` losses under the model's own grid (``"grid"`` models).
    portfolio : Book or None
        The validated input book (instrument terms, market prices, vols and haircuts, positions).
    scenarios : ScenarioModel or None
        The run's scenario model, for defaults derived from it (``describe()``, ``horizon_days``).
    pool_exceedance : (numpy.ndarray, numpy.ndarray) or None
        Per group, under the run's scenarios: the share whose pool loss exceeds
        the model's ``group_im``, and the mean of ``max(0, loss - group_im)``.
    requirement : Requirement or None
        The model's requirement when it was already computed (a grid or
        closed-form model's, before the pass, for its pool limits).
    """

    book: object
    tails: TailResult | None = None
    grid_losses: np.ndarray | None = None
    portfolio: object = None
    scenarios: object = None
    pool_exceedance: tuple | None = None
    requirement: object = None


@dataclasses.dataclass(frozen=True)
class Requirement:
    """A model's requirement per account and per group, plus the variables only it defines.

    Attributes
    ----------
    im, group_im : numpy.ndarray
        Initial margin of every account and every pool, USD, buffer included.
    isolated_im : numpy.ndarray or None
        Every position of the account margined alone under the same model,
        summed (collateral excluded); gives ``netting_benefit`` and the
        group counterparts.
    adjusted_equity : numpy.ndarray or None
        Equity with the model's collateral haircuts, for models that apply
        them; margin calls are then taken against it.
    variables : dict
        The model's own variables, ``name -> (dims, values, attrs)``, named
        ``<model>_<part>`` (the core's ``mc_es`` keeps its historical names).
    coords : dict
        Extra coordinates its variables use.
    attrs : dict
        Dataset attributes of its own (named ``<model>_<what>``), e.g. the parameters it used.
    """

    im: np.ndarray
    group_im: np.ndarray
    isolated_im: np.ndarray | None = None
    adjusted_equity: np.ndarray | None = None
    variables: dict = dataclasses.field(default_factory=dict)
    coords: dict = dataclasses.field(default_factory=dict)
    attrs: dict = dataclasses.field(default_factory=dict)


class MarginModel(abc.ABC):
    """A margin methodology (see the module docstring).  Subclass, set the class attributes, register."""

    #: Registry name, the value of ``margin.model``.
    name: ClassVar[str]
    #: Blocks of holdings rows the model reads (accounts are always built).
    rows: ClassVar[tuple[str, ...]] = ("accounts", "groups")
    #: How it reduces scenario losses: one of :data:`REDUCTIONS`.
    reduction: ClassVar[str] = "tail"
    #: Dataset variables it writes besides the shared ones of :func:`margin_dataset`.
    variables: ClassVar[tuple[str, ...]] = ()
    #: One line for the dataset's ``methodology`` attribute (with the section of docs/methodology.md).
    methodology: ClassVar[str] = ""
    #: Whether the dataset gets ``liquidation_price(group, asset)`` against this model's ``group_mm``
    #: (:mod:`.liquidation`, docs/methodology.md section 10); a model may set it per instance.
    liquidation_price: bool = False

    def __init__(self, params: MarginParams = MarginParams()):
        self.params = params

    @classmethod
    def from_config(cls, params: MarginParams, own: Mapping) -> "MarginModel":
        """The model from the shared parameters and its own keys (``margin.<name>``); refuse unknown keys."""
        if own:
            raise ConfigError(f"margin.{cls.name}.{next(iter(own))}", f"is not a setting of the {cls.name} model")
        return cls(params)

    def confidences(self) -> tuple[float, ...]:
        """Confidences whose tails the model reads (``"tail"`` models)."""
        return (self.params.confidence,)

    def grid(self, inputs: "MarginInputs"):
        """``(shock, vol_shock)`` ``[grid x asset]`` (log-returns, log vol changes) of a ``"grid"`` model."""
        return None

    def grid_losses(self, inputs: "MarginInputs") -> np.ndarray | None:
        """``[rows x grid]`` losses of every holdings row under :meth:`grid`, else None.

        A grid is a handful of deterministic scenarios (SPAN-style scans), so
        its losses are materialised and :meth:`requirements` reduces them as
        the model defines.  A model whose scenarios are not per-asset shocks
        (e.g. vol shocks scaled by each option's tenor) overrides this.
        """
        grid = self.grid(inputs) if self.reduction == "grid" else None
        if grid is None:
            return None
        from ..backend import get_backend
        from ..instruments import revaluation

        book = inputs.book
        shock, vol_shock = (np.asarray(a, dtype=float) for a in grid)
        nb = get_backend("numpy")
        pnl = revaluation.revalue(nb, revaluation.to_backend(book, nb), shock, vol_shock)
        return -np.asarray(book.exposures @ np.asarray(pnl).T)

    @abc.abstractmethod
    def requirements(self, inputs: MarginInputs) -> Requirement:
        """Initial margin of every account and group, and the model's own variables."""

    def pool_limit_from_tails(self, inputs: "MarginInputs"):
        """``(confidence, scale, offset[group])`` when a ``"tail"`` model's ``group_im`` is
        ``scale x max(0, ES_confidence(pool)) + offset`` with ``offset`` known before the run (from
        the book alone); its exceedances are then counted from the kept tail in the same pass.
        None (the default): they are counted in a pass of their own once ``group_im`` is known."""
        return None

    def attrs(self) -> dict:
        """Dataset attributes (names that scripts read: keep them)."""
        p = self.params
        out = dict(margin_model=self.name, methodology=self.methodology, margin_confidence=p.confidence,
                   margin_buffer=p.buffer, maintenance_ratio=p.maintenance_ratio, margin_apc=p.apc)
        if p.buffer_source is not None:
            out.update(margin_buffer_source=p.buffer_source, margin_buffer_portfolio=str(p.buffer_portfolio))
        if p.buffer_before_apc is not None:
            out.update(margin_buffer_before_apc=p.buffer_before_apc)
        return out


# name -> MarginModel subclass
_REGISTRY: dict[str, type[MarginModel]] = {}


def register(name: str) -> Callable:
    """Class decorator adding a margin model under ``name`` (its ``margin.model`` value)."""
    def deco(cls):
        if cls.reduction not in REDUCTIONS:
            raise ValueError(f"{cls.__name__}.reduction must be one of {REDUCTIONS}, got {cls.reduction!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def known_models() -> dict[str, type[MarginModel]]:
    """Every registered model: the built-in ones and any registered since (a test's, a user's)."""
    from . import mc_es, pm_grid, span, tiered  # noqa: F401  (registers the built-in models)

    return dict(_REGISTRY)


#: Keys of the ``margin`` section besides one section per model.
SHARED_KEYS = ("model", "models", "confidence", "buffer", "maintenance_ratio", "status", "buffer_portfolio", "apc")


def build_margin_models(cfg: Mapping, fold_apc: bool = False) -> list[MarginModel]:
    """The models the ``margin`` config section runs, primary first.

    ``margin.models`` (a list; default: ``[margin.model]``) names them in
    order; each gets the shared parameters and its own section ``margin.<name>``.
    ``margin.buffer`` may name a calibration dataset (:func:`.buffers.resolve_buffer`).
    ``fold_apc``: with ``margin.apc=buffer``, fold the 25% APC buffer into
    ``buffer`` (a single margin date, which has no path to release it along;
    docs/methodology.md, section 15).
    """
    models = known_models()
    for key in ("confidence", "buffer", "maintenance_ratio"):
        if key not in cfg:
            raise ConfigError(f"margin.{key}", "is required")
    names = cfg.get("models") or [cfg.get("model", "mc_es")]
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ConfigError("margin.models", f"must be a list of model names, got {names!r}")
    if len(set(names)) != len(names):
        raise ConfigError("margin.models", f"names a model twice: {list(names)}")
    for key in cfg:
        if key not in SHARED_KEYS and key not in models:
            raise ConfigError(f"margin.{key}", f"is not a margin setting nor a model; models: {', '.join(sorted(models))}")
    from ..calibration.apc import apc_option, effective_buffer
    from ..calibration.buffer import resolve_buffer

    resolved, source = resolve_buffer(dict(cfg))
    apc = apc_option(cfg.get("apc"))
    buffer = real_number(resolved["buffer"], "margin.buffer", 0.0, 10.0)
    folded = fold_apc and apc == "buffer"
    if folded and effective_buffer(buffer, apc) > 10.0:
        raise ConfigError("margin.buffer", f"with margin.apc=buffer the buffer applied, (1 + {buffer:g}) x 1.25 - 1, "
                                           "must stay within 10")
    params = MarginParams(confidence=cfg["confidence"], buffer=effective_buffer(buffer, apc) if folded else buffer,
                          maintenance_ratio=cfg["maintenance_ratio"], apc=apc,
                          buffer_source=source.get("margin_buffer_source"),
                          buffer_portfolio=source.get("margin_buffer_portfolio"),
                          buffer_before_apc=buffer if folded else None)
    out = []
    for i, name in enumerate(names):
        key = "margin.model" if "models" not in cfg or not cfg.get("models") else f"margin.models[{i}]"
        if name not in models:
            raise ConfigError(key, f"unknown margin model {name!r}; known: {', '.join(sorted(models))}")
        own = cfg.get(name) or {}
        if not isinstance(own, Mapping):
            raise ConfigError(f"margin.{name}", f"must be a mapping of the {name} model's settings, got {own!r}")
        out.append(models[name].from_config(params, dict(own)))
    return out


def build_margin_model(cfg: Mapping) -> MarginModel:
    """The primary model of the ``margin`` config section (the first of :func:`build_margin_models`)."""
    return build_margin_models(cfg)[0]


def as_model(margin) -> MarginModel:
    """A :class:`MarginModel` from a model, or from :class:`MarginParams` (the ``mc_es`` model with them)."""
    if isinstance(margin, MarginModel):
        return margin
    if isinstance(margin, MarginParams):
        return known_models()["mc_es"](margin)
    raise TypeError(f"margin must be a MarginModel or MarginParams, got {type(margin).__name__}")


def as_models(margin) -> list[MarginModel]:
    """A list of models, primary first, from one model, parameters, or a sequence of models."""
    if isinstance(margin, (MarginModel, MarginParams)):
        return [as_model(margin)]
    models = [as_model(m) for m in margin]
    if not models:
        raise ValueError("no margin model to run")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"a margin model is named twice: {names}")
    return models


def _da(values, dims, long_name, units="USD", **attrs):
    return (dims, values, {"long_name": long_name, "units": units, **attrs})


#: Relative size below which a difference of two margins is rounding, reported as exactly 0.
#: A single-position account's ``im`` (the ES of q x unit losses) and its ``isolated_im``
#: (|q| x the unit ES) are equal by definition but summed in another order, so they differ by
#: a few ulps (1e-16 relative); this floor keeps such exact cancellations exact, whatever the
#: chunking.  Real netting is many orders of magnitude larger.
ROUNDING_FLOOR = 1e-12


def margin_saving(apart, together):
    """``apart - together``, exactly 0 where the two differ by no more than rounding (ROUNDING_FLOOR)."""
    diff = apart - together
    scale = np.maximum(np.abs(apart), np.abs(together))
    return np.where(np.abs(diff) <= ROUNDING_FLOOR * scale, 0.0, diff)


#: Variables that depend on the margin model: with several models they get a leading ``model`` dimension.
MODEL_VARIABLES = ("im", "mm", "margin_call", "isolated_im", "netting_benefit", "adjusted_equity",
                   "group_im", "group_mm", "group_margin_call", "group_isolated_im", "group_netting_benefit",
                   "group_adjusted_equity", "group_exceedance_prob", "group_expected_excess", "liquidation_price")


def _requirement_variables(book, model: MarginModel, req: Requirement, equity, group_equity, haircuts: bool,
                           exceedance=None):
    """The model-dependent variables of one model (:data:`MODEL_VARIABLES` it defines)."""
    group_index = book.group_of_account
    mr = model.params.maintenance_ratio
    im, group_im = req.im, req.group_im
    adjusted = equity if req.adjusted_equity is None else req.adjusted_equity
    group_adjusted = (group_equity if req.adjusted_equity is None else
                      np.bincount(group_index, weights=adjusted, minlength=book.groups.size))
    out = {
        "im": _da(im, ("account",), "initial margin requirement"),
        "mm": _da(im * mr, ("account",), "maintenance margin requirement"),
        "margin_call": _da(np.maximum(0.0, im - adjusted), ("account",),
                           "margin call: max(0, im - equity)" if not haircuts else
                           "margin call: max(0, im - adjusted_equity)"),
        "group_im": _da(group_im, ("group",), "initial margin of the pooled group"),
        "group_mm": _da(group_im * mr, ("group",), "maintenance margin of the pooled group"),
        "group_margin_call": _da(np.maximum(0.0, group_im - group_adjusted), ("group",),
                                 "group margin call: max(0, group_im - group_equity)" if not haircuts else
                                 "group margin call: max(0, group_im - group_adjusted_equity)"),
    }
    if haircuts:
        out["adjusted_equity"] = _da(adjusted, ("account",), "account equity with the model's collateral haircuts")
        out["group_adjusted_equity"] = _da(group_adjusted, ("group",), "sum of member adjusted_equity")
    if exceedance is not None:
        prob, expected = exceedance
        out["group_exceedance_prob"] = _da(prob, ("group",), "share of scenarios whose pool loss exceeds group_im",
                                           units="1")
        out["group_expected_excess"] = _da(expected, ("group",), "mean over scenarios of max(0, pool loss - group_im)")
    if model.liquidation_price:
        from . import liquidation

        out["liquidation_price"] = liquidation.dataset_variable(book, group_im * mr)
    if req.isolated_im is not None:
        isolated = req.isolated_im
        group_isolated = np.bincount(group_index, weights=isolated, minlength=book.groups.size)
        group_sum_im = np.bincount(group_index, weights=im, minlength=book.groups.size)
        out["isolated_im"] = _da(isolated, ("account",), "initial margin of each position margined alone, summed")
        out["netting_benefit"] = _da(margin_saving(isolated, im), ("account",), "isolated_im minus im")
        out["group_isolated_im"] = _da(group_isolated, ("group",), "sum of member isolated_im")
        out["group_netting_benefit"] = _da(margin_saving(group_sum_im, group_im), ("group",),
                                           "sum of member im (margined apart) minus group_im (pooled)")
    return out


def _stack(per_model: list[dict], names: list[str]) -> dict:
    """One variable per name with a leading ``model`` dimension; a model that lacks one gets NaN there."""
    out = {}
    for name in [v for v in MODEL_VARIABLES if any(v in m for m in per_model)]:
        dims, values, attrs = next(m[name] for m in per_model if name in m)
        stacked = np.stack([np.asarray(m[name][1], dtype=float) if name in m else np.full(np.shape(values), np.nan)
                            for m in per_model])
        if not all(name in m for m in per_model):
            missing = ", ".join(n for n, m in zip(names, per_model) if name not in m)
            attrs = {**attrs, NONFINITE: f"nan: not defined by the model(s) {missing}"}
        out[name] = (("model",) + tuple(dims), stacked, attrs)
    return out


def _id_index(ids) -> pd.Index:
    """Ids (str) as a pandas object index."""
    ids = np.asarray(ids)
    return pd.Index(ids if ids.dtype == object else ids.astype(object), dtype=object)


def margin_dataset(inputs: MarginInputs | TailResult, margin, ladder=None) -> xr.Dataset:
    """The account, group and model figures of a run as an xarray Dataset (docs/architecture.md, "Output").

    Parameters
    ----------
    inputs : MarginInputs or TailResult, or a sequence of them (one per model)
        What the models read (a run's :class:`~mcmargin.tails.TailResult` alone for tail models);
        every item has the same book and tails, a grid model's its own grid losses.
    margin : MarginModel, MarginParams or sequence of MarginModel
        The model(s), primary first; parameters alone mean ``mc_es`` with them.  With one model
        no variable has a ``model`` dimension; with several, every variable of
        :data:`MODEL_VARIABLES` gets a leading one (coordinate: the model names in order).
    ladder : StatusLadder, optional
        Thresholds of ``group_status`` (:mod:`.status`), from the primary model's margin ratios.
    """
    models = as_models(margin)
    each = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs] * len(models)
    if len(each) != len(models):
        raise ValueError(f"{len(each)} inputs for {len(models)} models")
    each = [MarginInputs(i.book, i) if isinstance(i, TailResult) else i for i in each]
    book, result = each[0].book, each[0].tails
    reqs = [m.requirements(i) if i.requirement is None else i.requirement for m, i in zip(models, each)]
    acc = book.rows("accounts")
    equity = book.holdings[acc] @ book.unit_value
    group_index = book.group_of_account
    group_equity = np.bincount(group_index, weights=equity, minlength=book.groups.size)
    members = np.bincount(group_index, minlength=book.groups.size)
    haircuts = any(r.adjusted_equity is not None for r in reqs)
    per_model = [_requirement_variables(book, m, r, equity, group_equity, haircuts, i.pool_exceedance)
                 for m, r, i in zip(models, reqs, each)]
    data = {
        "equity": _da(equity, ("account",), "account equity: collateral plus position value"),
        "account_group": (("account",), book.account_group.astype(str),
                          {"long_name": "margin group of the account (its own id when it has none)", "units": "1"}),
        "group_equity": _da(group_equity, ("group",), "sum of member equity"),
        "group_members": (("group",), members, {"long_name": "number of member accounts", "units": "1"}),
    }
    data.update(per_model[0] if len(models) == 1 else _stack(per_model, [m.name for m in models]))
    # Account and group ids as object indexes: as NumPy unicode, pandas would turn a million of them into
    # its own string type (0.4 s) and xarray back into unicode at every read of the coordinate (0.13 s).
    coords = {"account": _id_index(book.accounts), "group": _id_index(book.groups),
              "asset": book.assets.astype(str), "instrument": book.instruments.astype(str)}
    if len(models) > 1:
        coords["model"] = ("model", np.array([m.name for m in models]),
                           {"long_name": "margin model (the first is the primary one)", "units": "1"})
    if result is not None:
        grp = book.group_row
        data["var"] = _da(result.var[acc], ("account", "confidence"), "value at risk: m-th largest loss")
        data["es"] = _da(result.es[acc], ("account", "confidence"), "expected shortfall: mean of the m largest losses")
        data["group_var"] = _da(result.var[grp], ("group", "confidence"), "value at risk of the pooled group")
        data["group_es"] = _da(result.es[grp], ("group", "confidence"), "expected shortfall of the pooled group")
        coords["confidence"] = ("confidence", np.array(list(result.confidences), dtype=float),
                                {"long_name": "confidence level q", "units": "1"})
    for req in reqs:
        data.update(req.variables)
        coords.update(req.coords)
    ds = xr.Dataset(data, coords=coords)
    if "confidence" in ds.coords:
        ds["confidence"].attrs.update(long_name="confidence level q", units="1")
    ds.attrs.update(models[0].attrs())
    if len(models) > 1:
        ds.attrs.update(margin_models=",".join(m.name for m in models),
                        methodologies=json.dumps({m.name: m.methodology for m in models}))
    for req in reqs:
        ds.attrs.update(req.attrs)
    if result is not None:
        ds.attrs.update(n_scenarios=result.n_scenarios,
                        tail_definition="m = ceil(N (1 - q) - 1e-9); VaR = m-th largest loss; ES = mean of m largest")
    return _with_status(ds, book, ladder)


def _with_status(ds: xr.Dataset, book, ladder=None) -> xr.Dataset:
    """Margin ratios, ``group_status`` and the top-up each pool owes, from the primary model (:mod:`.status`)."""
    from .status import StatusLadder, margin_ratio, topup

    ladder = ladder or StatusLadder()
    primary = ds.isel(model=0) if "model" in ds.dims else ds
    equity = primary["adjusted_equity" if "adjusted_equity" in primary else "equity"].values
    group_equity = primary["group_adjusted_equity" if "group_adjusted_equity" in primary else "group_equity"].values
    ratio = margin_ratio(equity, primary["mm"].values)
    group_ratio = margin_ratio(group_equity, primary["group_mm"].values)
    asset, amount = topup(book, primary["group_margin_call"].values)
    infinite = {NONFINITE: "inf: no maintenance margin (mm = 0)"}
    ds["margin_ratio"] = _da(ratio, ("account",), "equity over the primary model's mm", units="1", **infinite)
    ds["group_margin_ratio"] = _da(group_ratio, ("group",), "pool equity over the primary model's group_mm",
                                   units="1", **infinite)
    ds["group_status"] = (("group",), ladder.status(group_ratio),
                          {"long_name": "status of the pool on the margin-ratio ladder (healthy, warning, "
                                        "reduce_only, liquidation)", "units": "1",
                           "thresholds": json.dumps(dataclasses.asdict(ladder))})
    ds["group_topup_asset"] = (("group",), asset, {"long_name": "the pool's main collateral asset, in which a "
                                                                "call is due", "units": "1"})
    ds["group_topup_amount"] = _da(amount, ("group",), "group_margin_call in units of group_topup_asset",
                                   units="units of group_topup_asset")
    return ds
