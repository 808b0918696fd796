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
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np
import xarray as xr

from ..common.settings import real_number
from ..errors import ConfigError
from ..tails import TailResult

REDUCTIONS = ("tail", "grid", "closed_form")


@dataclasses.dataclass(frozen=True)
class MarginParams:
    """Parameters every margin model shares."""

    confidence: float = 0.99
    buffer: float = 0.0
    maintenance_ratio: float = 0.75

    def __post_init__(self):
        # Parsed here too, so that the library used without Hydra gets the same checks (NaN fails them).
        checked = dict(confidence=real_number(self.confidence, "margin.confidence", 0.5, 1.0, low_open=True,
                                              high_open=True),
                       buffer=real_number(self.buffer, "margin.buffer", 0.0, 10.0),
                       maintenance_ratio=real_number(self.maintenance_ratio, "margin.maintenance_ratio", 0.0, 1.0,
                                                     low_open=True))
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
    """

    book: object
    tails: TailResult | None = None
    grid_losses: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Requirement:
    """A model's requirement per account and per group, plus the variables only it defines."""

    im: np.ndarray                                        # [account] USD, before nothing: buffer included
    group_im: np.ndarray                                  # [group]
    variables: dict = dataclasses.field(default_factory=dict)   # name -> (dims, values, attrs)
    coords: dict = dataclasses.field(default_factory=dict)      # extra coordinates its variables use


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

    def grid(self, assets, asset_vols):
        """``(shock, vol_shock)`` ``[grid x asset]`` of a ``"grid"`` model; None for the others."""
        return None

    @abc.abstractmethod
    def requirements(self, inputs: MarginInputs) -> Requirement:
        """Initial margin of every account and group, and the model's own variables."""

    def attrs(self) -> dict:
        """Dataset attributes (names that scripts read: keep them)."""
        p = self.params
        return dict(margin_model=self.name, methodology=self.methodology, margin_confidence=p.confidence,
                    margin_buffer=p.buffer, maintenance_ratio=p.maintenance_ratio)


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
    from . import mc_es  # noqa: F401  (registers the built-in models)

    return dict(_REGISTRY)


def build_margin_model(cfg: Mapping) -> MarginModel:
    """The model the ``margin`` config section names, with the shared parameters and its own keys."""
    models = known_models()
    name = cfg.get("model", "mc_es")
    if name not in models:
        raise ConfigError("margin.model", f"unknown margin model {name!r}; known: {', '.join(sorted(models))}")
    for key in ("confidence", "buffer", "maintenance_ratio"):
        if key not in cfg:
            raise ConfigError(f"margin.{key}", "is required")
    params = MarginParams(confidence=cfg["confidence"], buffer=cfg["buffer"],
                          maintenance_ratio=cfg["maintenance_ratio"])
    own = cfg.get(name) or {}
    if not isinstance(own, Mapping):
        raise ConfigError(f"margin.{name}", f"must be a mapping of the {name} model's settings, got {own!r}")
    return models[name].from_config(params, dict(own))


def as_model(margin) -> MarginModel:
    """A :class:`MarginModel` from a model, or from :class:`MarginParams` (the ``mc_es`` model with them)."""
    if isinstance(margin, MarginModel):
        return margin
    if isinstance(margin, MarginParams):
        return known_models()["mc_es"](margin)
    raise TypeError(f"margin must be a MarginModel or MarginParams, got {type(margin).__name__}")


def _da(values, dims, long_name, units="USD", **attrs):
    return (dims, values, {"long_name": long_name, "units": units, **attrs})


def margin_dataset(inputs: MarginInputs | TailResult, margin) -> xr.Dataset:
    """The account, group and model figures of a run as an xarray Dataset (docs/architecture.md, "Output").

    ``inputs`` is a :class:`MarginInputs` (or a run's :class:`~mcmargin.tails.TailResult`);
    ``margin`` a :class:`MarginModel` or :class:`MarginParams` (the ``mc_es`` model).
    """
    model = as_model(margin)
    if isinstance(inputs, TailResult):
        inputs = MarginInputs(inputs.book, inputs)
    book, result = inputs.book, inputs.tails
    req = model.requirements(inputs)
    acc = book.rows("accounts")
    equity = book.holdings[acc] @ book.unit_value
    group_index = book.group_of_account
    group_equity = np.bincount(group_index, weights=equity, minlength=book.groups.size)
    members = np.bincount(group_index, minlength=book.groups.size)
    mr = model.params.maintenance_ratio
    im, group_im = req.im, req.group_im
    data = {
        "equity": _da(equity, ("account",), "account equity: collateral plus position value"),
        "im": _da(im, ("account",), "initial margin requirement"),
        "mm": _da(im * mr, ("account",), "maintenance margin requirement"),
        "margin_call": _da(np.maximum(0.0, im - equity), ("account",), "margin call: max(0, im - equity)"),
        "account_group": (("account",), book.account_group.astype(str),
                          {"long_name": "margin group of the account (its own id when it has none)", "units": "1"}),
        "group_equity": _da(group_equity, ("group",), "sum of member equity"),
        "group_im": _da(group_im, ("group",), "initial margin of the pooled group"),
        "group_mm": _da(group_im * mr, ("group",), "maintenance margin of the pooled group"),
        "group_margin_call": _da(np.maximum(0.0, group_im - group_equity), ("group",),
                                 "group margin call: max(0, group_im - group_equity)"),
        "group_members": (("group",), members, {"long_name": "number of member accounts", "units": "1"}),
    }
    coords = {"account": book.accounts.astype(str), "group": book.groups.astype(str),
              "asset": book.assets.astype(str), "instrument": book.instruments.astype(str)}
    if result is not None:
        grp = book.group_row
        data["var"] = _da(result.var[acc], ("account", "confidence"), "value at risk: m-th largest loss")
        data["es"] = _da(result.es[acc], ("account", "confidence"), "expected shortfall: mean of the m largest losses")
        data["group_var"] = _da(result.var[grp], ("group", "confidence"), "value at risk of the pooled group")
        data["group_es"] = _da(result.es[grp], ("group", "confidence"), "expected shortfall of the pooled group")
        coords["confidence"] = ("confidence", np.array(list(result.confidences), dtype=float),
                                {"long_name": "confidence level q", "units": "1"})
    data.update(req.variables)
    coords.update(req.coords)
    ds = xr.Dataset(data, coords=coords)
    if "confidence" in ds.coords:
        ds["confidence"].attrs.update(long_name="confidence level q", units="1")
    ds.attrs.update(model.attrs())
    if result is not None:
        ds.attrs.update(n_scenarios=result.n_scenarios,
                        tail_definition="m = ceil(N (1 - q) - 1e-9); VaR = m-th largest loss; ES = mean of m largest")
    return ds
