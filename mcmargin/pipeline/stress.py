"""One nightly stress run, from a book and a scenario model to a dataset.

Usable from Python without Hydra::

    from mcmargin import synthetic_book, build_scenarios, run_stress
    book = synthetic_book(n_accounts=1000)
    scen = build_scenarios(cfg["scenarios"], book.assets, book.market["vol"])
    ds = run_stress(book, scen)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import numpy as np
import xarray as xr

from ..aggregation import compile_book
from ..backend import get_backend
from ..common.logs import log_stage
from ..engine.graph import TASK_BUDGET, Chunking, compute_tails
from ..engine.kernels import select_kernel
from ..inputs.book import Book
from ..margin import MarginInputs, MarginParams, as_models, margin_dataset
from ..margin import attribution as explained
from ..tails import Limits, tail_size

log = logging.getLogger(__name__)

#: Fewest tail scenarios (m) an ES is reported without a warning.  ES is the
#: mean of the m largest losses; with fewer than about 20 its sampling error
#: (roughly the tail's dispersion over sqrt(m)) is a large share of the figure
#: and it moves from seed to seed.  FRTB-style backtests and the EBA's
#: guidance on ES both work with hundreds of tail observations; 20 is a
#: floor, not a target.
MIN_TAIL_SCENARIOS = 20


def check_tail_sizes(n_scenarios: int, confidences) -> list[str]:
    """A warning for each confidence whose tail holds fewer than :data:`MIN_TAIL_SCENARIOS` scenarios."""
    out = []
    for q in sorted(set(float(c) for c in confidences)):
        m = tail_size(n_scenarios, q)
        if m < MIN_TAIL_SCENARIOS:
            need = int(np.ceil(MIN_TAIL_SCENARIOS / (1.0 - q) - 1e-9))
            out.append(f"{n_scenarios:,} scenarios at q = {q:g} leave m = {m} tail scenario(s), fewer than "
                       f"{MIN_TAIL_SCENARIOS}: VaR and ES are then read off {m} loss(es), so they are dominated "
                       f"by sampling noise and change from seed to seed; use scenarios.n >= {need:,}")
    return out


def note_unused_haircuts(book: Book) -> str | None:
    """The note logged when the market has haircuts, which ``mc_es`` does not use."""
    m = book.market
    if "haircut" not in m or not (m["haircut"].to_numpy(dtype=float) != 0).any():
        return None
    return ("market.haircut is not used by the mc_es margin model: collateral is revalued in every scenario "
            "(its risk is in the simulated losses), so a haircut would count it twice; haircuts are kept for "
            "the haircut-based margin models")


def run_stress(book: Book, scenarios, *, margin=MarginParams(),
               confidences=(0.99, 0.995),
               backend: str = "numpy", fast_path: bool = True, chunking: Chunking = Chunking(),
               rate: float = 0.0, scheduler=None, include_scenarios: bool = False,
               budget: int = TASK_BUDGET, progress: bool = False,
               blocks_in_flight: int = 0, status=None, stresses=(), default_fund: float | None = None,
               reverse=None, cascade=None, loss_pools: int = 0, loss_bins: int = 50,
               loss_scenarios: int = 0, keep_dir=None, attribution: bool = True,
               tail_scenarios: int = 5) -> xr.Dataset:
    """Revalue ``book`` under ``scenarios`` and compute tails and margin.

    Parameters
    ----------
    book : Book
    scenarios : ScenarioModel
        Its ``assets`` must be the book's market assets, in order.
    margin : MarginModel, MarginParams or sequence of MarginModel
        The margin model(s) (:mod:`mcmargin.margin`), primary first; parameters alone mean
        ``mc_es`` with them.  Several models run in one pass over the same scenarios and give
        every model-dependent variable a leading ``model`` dimension.
    confidences : sequence of float
        q values of ``var``/``es``; the model's own confidences are always included.
    backend : str
        ``numpy``, ``jax``, ``cupy``, ``array_api_strict`` or ``auto``.
    fast_path : bool
        Fused compiled kernel on the numpy backend (the reference otherwise).
    chunking : Chunking
        Scenario chunk and row block sizes (0 = from the problem size).
    rate : float
        Black-Scholes rate.
    scheduler : optional
        dask scheduler name or ``distributed.Client``; default local threads.
    include_scenarios : bool
        Add ``shock`` and ``vol_shock`` (scenario, asset) to the dataset.
    budget : int
        Memory budget of one task (bytes), sizing chunks that are not set.
    progress : bool
        Progress bar on stderr for long runs.
    blocks_in_flight : int
        Row blocks folded at once (0 = twice the scheduler's threads); bounds
        the memory of the tails in flight and changes no result.
    status : StatusLadder, optional
        Thresholds of ``group_status`` (default 1.5, 1.2, 1.05).
    stresses : sequence of NamedStress
        Named stress scenarios (:mod:`mcmargin.scenarios.named`); their
        losses and Cover-1/Cover-2 are added (:func:`named_stress_variables`).
        Empty (the default): no stress variables.
    default_fund : float or None
        Default-fund size in USD: adds ``default_fund_required`` and the
        ``default_fund_size`` attribute (needs ``stresses``).
    reverse : (direction [asset], fund) or None
        Reverse stress: the smallest move along ``direction`` (log-return
        weights per market asset) at which Cover-2 exceeds ``fund`` USD
        (:func:`reverse_stress`).
    cascade : CascadeParams or None
        Liquidation cascades (:mod:`mcmargin.cascade`, docs/methodology.md
        section 14) in every scenario and named stress, against the primary
        model's ``group_mm``; None (the default): no cascade, nothing computed.
    loss_pools, loss_bins, loss_scenarios : int
        The binned loss distribution (``loss_bins`` bins) of the ``loss_pools``
        pools with the largest primary ``group_im`` over the first
        ``loss_scenarios`` scenarios (0: every one)
        (:func:`~mcmargin.pipeline.losses.loss_distribution_variables`); ``loss_pools=0``: none.
    keep_dir : path, optional
        Resume directory: finished row blocks are kept there and reused by a
        later call with the same inputs (:func:`mcmargin.engine.graph.compute_tails`).
    attribution : bool
        Add the Euler allocation of every pool's ES at ``margin.confidence``
        (``es_contribution`` along ``holding``, ``factor_contribution``) and
        its worst scenarios (``tail_scenarios``): :mod:`mcmargin.margin.attribution`.
    tail_scenarios : int
        Worst scenarios reported per pool (``output.tail_scenarios``).

    Returns
    -------
    xarray.Dataset
        The output contract of docs/architecture.md.
    """
    if tuple(scenarios.assets) != tuple(book.assets):
        raise ValueError("scenario columns must be the book's market assets in order")
    models = as_models(margin)
    confidences = sorted(set(float(q) for q in confidences).union(*(m.confidences() for m in models)))
    if attribution and float(models[0].params.confidence) not in confidences:
        # The allocation is of group_es at margin.confidence, which is then reported too.
        confidences = sorted(confidences + [float(models[0].params.confidence)])
    for warning in check_tail_sizes(scenarios.n, confidences):
        log.warning(warning)
    note = note_unused_haircuts(book) if "mc_es" in [m.name for m in models] else None
    if note:
        log.info(note)
    t0 = time.perf_counter()
    b = get_backend(backend)
    # Every account's and group's tails are reported (var, es); the model asks for any other rows.
    # Option time decay is in calendar days; history models count rows (trading days).
    compiled = compile_book(book, getattr(scenarios, "horizon_calendar_days", scenarios.horizon_days), rate,
                            row_kinds=("accounts", "groups") + sum((tuple(m.rows) for m in models), ()))
    # What each model reads besides the tails (its grid losses), and the pool limits (each model's
    # group_im) whose exceedances the pass counts: known before it for grid and closed-form models.
    inputs = MarginInputs(compiled, None, portfolio=book, scenarios=scenarios)
    each = [dataclasses.replace(inputs, grid_losses=m.grid_losses(inputs)) for m in models]
    # A grid or closed-form model's requirement reads no scenario: computed once, before the pass.
    each = [dataclasses.replace(i, requirement=m.requirements(i)) if m.reduction != "tail" else i
            for m, i in zip(models, each)]
    limits, columns = pool_limits(compiled, models, each)
    hold = explained.holdings(compiled) if attribution else None
    explain = (explained.request(compiled, models[0].params.confidence, int(tail_scenarios), scenarios.n, hold)
               if attribution else None)
    t1 = time.perf_counter()
    log_stage("compile_book", t1 - t0, rows=int(compiled.exposures.shape[0]))
    result = compute_tails(compiled, scenarios, confidences, backend=b.name, fast_path=fast_path,
                           chunking=chunking, scheduler=scheduler, budget=budget, progress=progress,
                           blocks_in_flight=blocks_in_flight, limits=limits, attribution=explain,
                           keep_dir=keep_dir)
    t2 = time.perf_counter()
    log_stage("tails", t2 - t1, scenarios=int(scenarios.n), kernel=select_kernel(b.name, fast_path).label)
    each = [dataclasses.replace(i, tails=result) for i in each]
    each = _with_exceedances(compiled, scenarios, models, each, result, columns,
                             dict(backend=b.name, fast_path=fast_path, chunking=chunking, scheduler=scheduler,
                                  budget=budget, blocks_in_flight=blocks_in_flight, keep_dir=keep_dir))
    ds = margin_dataset(each, models, status)
    if attribution:
        variables, coords = explained.dataset_variables(compiled, result, hold)
        ds = ds.assign_coords(coords).assign(variables)
    t_stress = time.perf_counter()
    if stresses:
        ds = ds.assign(named_stress_variables(compiled, book, stresses, ds["equity"].to_numpy(),
                                              ds["group_equity"].to_numpy(), default_fund))
        ds = ds.assign_coords(stress=[s.name for s in stresses], cover_rank=[1, 2])
        if default_fund is not None:
            ds.attrs["default_fund_size"] = float(default_fund)
        ds = ds.assign(_stress_buffers(ds))
    if reverse is not None:
        variables, attrs = reverse_stress_variables(compiled, book, ds["group_equity"].to_numpy(), *reverse)
        ds = ds.assign(variables).assign_coords(cover_rank=[1, 2])
        ds.attrs.update(attrs)
    t_stress = time.perf_counter() - t_stress
    t_cascade = time.perf_counter()
    if cascade is not None:
        ds = _with_cascade(ds, compiled, book, scenarios, cascade, stresses, b.name, scheduler,
                           result.chunking.scenarios)
    t_cascade = time.perf_counter() - t_cascade
    t_losses = time.perf_counter()
    if loss_pools > 0:
        from .losses import loss_distribution_variables

        gim = ds["group_im"].isel(model=0) if "model" in ds["group_im"].dims else ds["group_im"]
        ds = ds.assign(loss_distribution_variables(compiled, scenarios, gim.to_numpy(), loss_pools, loss_bins,
                                                          loss_scenarios))
    t_losses = time.perf_counter() - t_losses
    if include_scenarios:
        shock, vol_shock = scenarios.draw(0, scenarios.n, get_backend("numpy"))
        ds["shock"] = (("scenario", "asset"), np.asarray(shock),
                       {"long_name": "log-return of the asset over the horizon", "units": "1"})
        ds["vol_shock"] = (("scenario", "asset"), np.asarray(vol_shock),
                           {"long_name": "log change of the asset's implied volatility", "units": "1"})
        ds = ds.assign_coords(scenario=np.arange(scenarios.n))
    t3 = time.perf_counter()
    log_stage("margin", t3 - t2 - t_stress - t_losses - t_cascade, models=",".join(m.name for m in models))
    if stresses or reverse is not None:
        log_stage("named_stress", t_stress, stresses=len(stresses))
    timings = {"compile_book_s": t1 - t0, **result.timings, "margin_s": t3 - t2 - t_stress - t_losses,
               "named_stress_s": t_stress, "loss_distribution_s": t_losses, "total_s": t3 - t0}
    if cascade is not None:
        log_stage("cascade", t_cascade)
        timings["margin_s"] -= t_cascade
        timings["cascade_s"] = t_cascade
    ds.attrs.update(
        backend=b.name, device=b.device, kernel=select_kernel(b.name, fast_path).label,
        scenario_model=json.dumps(scenarios.describe()), seed=int(scenarios.seed),
        horizon_days=float(scenarios.horizon_days), valuation_date=book.valuation_date.isoformat(),
        chunk_scenarios=result.chunking.scenarios, chunk_rows=result.chunking.rows, tail_size_kept=result.tail_size,
        blocks_in_flight=int(result.timings["blocks_in_flight"]),
        timings=json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in timings.items()}),
        pricing_rate=float(rate))
    return ds


def _with_cascade(ds, compiled, book: Book, scenarios, params, stresses, backend, scheduler, draw_chunk):
    """``ds`` with the cascade's variables (per scenario, per stress, per pool, tails; methodology section 14)."""
    from ..cascade import run_cascade
    from ..scenarios.named import stress_matrices

    primary = ds.isel(model=0) if "model" in ds.dims else ds
    named = None
    if stresses:
        named = stress_matrices(stresses, compiled.assets, book.market["vol"].to_numpy(dtype=float))
    variables, attrs = run_cascade(compiled, book, scenarios, primary["group_mm"].to_numpy(),
                                   primary["group_equity"].to_numpy(), params, ds["confidence"].to_numpy(),
                                   float(ds.attrs["margin_confidence"]), backend=backend, scheduler=scheduler,
                                   stresses=named, draw_chunk=draw_chunk)
    ds = ds.assign(variables).assign_coords(scenario=np.arange(scenarios.n))
    ds.attrs.update(attrs)
    return ds


def named_stress_losses(compiled, book: Book, stresses):
    """``(names, account_loss [account x stress], group_loss [group x stress])``, USD, positive = loss.

    Instantaneous moves: every option keeps its expiry (revalued at horizon
    0), through the same :func:`~mcmargin.instruments.revaluation.revalue`
    and holdings product as a Monte Carlo scenario (``loss = -(E @ pnl.T)``).
    Cash assets (market vol 0) carry no risk factor in ``E``, so a stress
    that moves one (a de-peg) adds its collateral's USD value times
    expm1(move) directly.
    """
    from ..scenarios.named import stress_matrices

    vol = book.market["vol"].to_numpy(dtype=float)
    names, shock, vol_shock = stress_matrices(stresses, compiled.assets, vol)
    account_loss, group_loss = instantaneous_losses(compiled, vol, shock, vol_shock)
    return names, account_loss, group_loss


def instantaneous_losses(compiled, market_vol, shock, vol_shock):
    """``(account_loss [account x scenario], group_loss [group x scenario])`` of instantaneous moves.

    ``shock`` and ``vol_shock`` are ``[scenario x asset]`` log moves; options
    keep their expiry; cash collateral moves with its (de-peg) shock.
    """
    from ..instruments import revaluation

    vol = np.asarray(market_vol, dtype=float)
    nb = get_backend("numpy")
    options = dataclasses.replace(compiled.options, expiry_after=compiled.options.expiry)
    pnl = np.asarray(revaluation.revalue(nb, revaluation.BackendBook(options=options.on(nb)), shock, vol_shock))
    rows = np.concatenate([np.arange(compiled.accounts.size), compiled.group_row])
    # Every row's product, then the rows wanted: each row's sum is the same, and a dense [rows x stress]
    # gather is far cheaper than slicing the sparse matrix by a million rows.
    pnl_rows = np.asarray(compiled.exposures @ pnl.T)[rows]
    cash = np.flatnonzero((vol <= 0) & (shock != 0).any(axis=0))
    if cash.size:
        held = compiled.holdings[:, compiled.n_instruments + cash]
        pnl_rows = pnl_rows + np.asarray(held @ (compiled.prices[cash] * np.expm1(shock[:, cash])).T)[rows]
    loss = -pnl_rows + 0.0
    return loss[:compiled.accounts.size], loss[compiled.accounts.size:]


def cover2_of(group_loss, group_equity):
    """Cover-2 per scenario (column): the sum of the two largest ``max(0, group_loss - group_equity)``."""
    uncovered = np.maximum(0.0, group_loss - group_equity[:, None])
    if uncovered.shape[0] < 2:
        return uncovered.sum(axis=0)
    top = -np.partition(-uncovered, 1, axis=0)[:2]
    return top.sum(axis=0)


#: Reverse stress: moves scanned from 0 to this log-return magnitude (e^-5: prices fall 99.3%).
REVERSE_MAX_MOVE = 5.0
#: Points of the scan that brackets the root (and shows whether Cover-2 is monotone along the direction).
REVERSE_SCAN = 401


def reverse_stress(compiled, book: Book, group_equity, direction, fund: float, tolerance: float = 1e-4):
    """The smallest move along ``direction`` at which Cover-2 exceeds ``fund`` (docs/methodology.md, section 11).

    The scenario at move x is ``shock = x * direction`` (log-returns; vols
    unchanged, options keep their expiry).  Cover-2 is scanned on
    :data:`REVERSE_SCAN` points of [0, :data:`REVERSE_MAX_MOVE`]; the first
    scan point above the fund brackets the root with the point before, and
    bisection narrows it to ``tolerance``.  Returns ``(move, groups,
    monotone)``: move NaN when no scanned move exceeds the fund; ``groups``
    the two pools behind Cover-2 at the move; ``monotone`` False when Cover-2
    falls somewhere along the scan (an option book): the move is then the
    smallest root the scan found, not necessarily the only one.
    """
    vol = book.market["vol"].to_numpy(dtype=float)
    w = np.asarray(direction, dtype=float)

    def cover2(x):
        x = np.atleast_1d(np.asarray(x, dtype=float))
        _, group_loss = instantaneous_losses(compiled, vol, x[:, None] * w, np.zeros((x.size, w.size)))
        return cover2_of(group_loss, group_equity), group_loss

    grid = np.linspace(0.0, REVERSE_MAX_MOVE, REVERSE_SCAN)
    scanned, _ = cover2(grid)
    monotone = bool(np.all(np.diff(scanned) >= -1e-9 * np.maximum(1.0, np.abs(scanned[1:]))))
    above = np.flatnonzero(scanned > fund)
    if above.size == 0:
        return float("nan"), ["", ""], monotone
    if above[0] == 0:
        lo = hi = 0.0
    else:
        lo, hi = grid[above[0] - 1], grid[above[0]]
        while hi - lo > tolerance:
            mid = 0.5 * (lo + hi)
            if cover2(mid)[0][0] > fund:
                hi = mid
            else:
                lo = mid
    _, group_loss = cover2(hi)
    uncovered = np.maximum(0.0, group_loss[:, 0] - group_equity)
    order = np.argsort(-uncovered, kind="stable")[:2]
    labels = [str(compiled.groups[i]) if uncovered[i] > 0 else "" for i in order] + [""] * (2 - order.size)
    return float(hi), labels, monotone


def reverse_stress_variables(compiled, book: Book, group_equity, direction, fund: float) -> tuple[dict, dict]:
    """``(variables, attrs)`` of the reverse stress for the dataset."""
    move, groups, monotone = reverse_stress(compiled, book, group_equity, direction, fund)
    if not monotone:
        log.warning("reverse stress: Cover-2 is not monotone along the direction (options); the move reported is "
                    "the smallest root found on a scan of %d points", REVERSE_SCAN)
    variables = {
        "reverse_stress_move": ((), move, {"long_name": "smallest log-return move along reverse_stress.direction "
                                           "at which Cover-2 exceeds the fund (NaN: none up to "
                                           f"{REVERSE_MAX_MOVE:g})", "units": "1",
                                           "nonfinite": "nan: no move up to the scan's end exceeds the fund"}),
        "reverse_stress_groups": (("cover_rank",), np.array(groups, dtype=str),
                                  {"long_name": "pools behind Cover-2 at reverse_stress_move", "units": "1"}),
    }
    attrs = {"reverse_stress_fund": float(fund), "reverse_stress_monotone": int(monotone),
             "reverse_stress_direction": json.dumps(dict(zip(compiled.assets.astype(str).tolist(),
                                                             np.asarray(direction, dtype=float).tolist())))}
    return variables, attrs


def named_stress_variables(compiled, book: Book, stresses, equity, group_equity, default_fund=None) -> dict:
    """The dataset variables of the named stresses (README "Outputs"; docs/methodology.md section 11).

    Cover-1 is the largest ``group_uncovered_loss`` over every pool
    (singletons included), Cover-2 the sum of the two largest.
    """
    names, acc, grp = named_stress_losses(compiled, book, stresses)
    uncovered = np.maximum(0.0, acc - equity[:, None])
    group_uncovered = np.maximum(0.0, grp - group_equity[:, None])
    n_groups = group_uncovered.shape[0]
    order = np.argsort(-group_uncovered, axis=0, kind="stable")[:2]          # [rank x stress]
    top = np.take_along_axis(group_uncovered, order, axis=0)
    if n_groups < 2:
        top = np.concatenate([top, np.zeros((2 - n_groups, top.shape[1]))])
    labels = np.full((2, len(names)), "", dtype=object)
    labels[:min(2, n_groups)] = compiled.groups.astype(str)[order]
    labels[top <= 0] = ""                                                      # a pool that loses nothing is no cover
    cover1, cover2 = top[0], top[0] + top[1]

    def da(dims, values, long_name, units="USD"):
        return (dims, values, {"long_name": long_name, "units": units})

    out = {
        "stress_loss": da(("account", "stress"), acc, "loss of the account under the named stress "
                          "(positive = loss; positions and collateral, instantaneous)"),
        "uncovered_loss": da(("account", "stress"), uncovered, "max(0, stress_loss - equity)"),
        "group_stress_loss": da(("group", "stress"), grp, "loss of the pooled group under the named stress "
                                "(sum over members)"),
        "group_uncovered_loss": da(("group", "stress"), group_uncovered,
                                   "max(0, group_stress_loss - group_equity)"),
        "cover1": da(("stress",), cover1, "Cover-1: largest group_uncovered_loss over every pool"),
        "cover2": da(("stress",), cover2, "Cover-2: sum of the two largest group_uncovered_loss"),
        "cover_groups": da(("stress", "cover_rank"), labels.T.astype(str),
                           "pools behind cover1 (rank 1) and cover2 (ranks 1 and 2); empty: none uncovered", "1"),
    }
    if default_fund is not None:
        out["default_fund_required"] = da((), float(cover2.max()) if cover2.size else 0.0,
                                          "default fund Cover-2 needs: the largest cover2 over the stresses")
    return out


def _stress_buffers(ds: xr.Dataset) -> dict:
    """``group_required_buffer``, ``group_stress_coverage``, ``group_stress_margin_gap`` of the primary model."""
    from ..calibration.buffer import stress_buffer_variables

    primary = ds.isel(model=0) if "model" in ds.dims else ds
    return stress_buffer_variables(primary["group_im"].to_numpy(),
                                   ds["group_stress_loss"].transpose("group", "stress").to_numpy(),
                                   float(ds.attrs["margin_buffer"]))


def pool_limits(compiled, models, each):
    """The :class:`~mcmargin.tails.Limits` of a run: every model's ``group_im`` on its pool's row.

    Returns ``(limits, columns)``: ``columns[i]`` is model i's column of the
    run's exceedance counts, or None when they need a pass of their own
    (a tail model whose pool limit is not a function of the pool's own tail).
    """
    n_rows, pools = compiled.exposures.shape[0], compiled.group_row
    fixed, from_tails, where = [], [], []
    for model, inputs in zip(models, each):
        if model.reduction != "tail":
            limit = np.full(n_rows, np.nan)
            limit[pools] = (inputs.requirement or model.requirements(inputs)).group_im
            fixed.append(limit)
            where.append(("fixed", len(fixed) - 1))
            continue
        spec = model.pool_limit_from_tails(inputs)
        if spec is None:
            where.append(None)
            continue
        q, scale, offset = spec
        on_rows = np.full(n_rows, np.nan)
        on_rows[pools] = offset
        from_tails.append((float(q), float(scale), on_rows))
        where.append(("tails", len(from_tails) - 1))
    limits = Limits(np.stack(fixed, axis=1) if fixed else None, tuple(from_tails))
    columns = [None if w is None else (w[1] if w[0] == "fixed" else len(fixed) + w[1]) for w in where]
    return limits, columns


def _with_exceedances(compiled, scenarios, models, each, result, columns, engine):
    """Each model's inputs with its pools' exceedance share and expected excess (``pool_exceedance``).

    Counted in the tail pass where the limits allowed; the other models'
    ``group_im`` are counted now, in one more pass over the scenarios.
    """
    n, pools = scenarios.n, compiled.group_row
    late = [i for i, c in enumerate(columns) if c is None]
    hits, excess = result.hits, result.excess
    if late:
        each = list(each)
        limit = np.full((compiled.exposures.shape[0], len(late)), np.nan)
        for j, i in enumerate(late):
            each[i] = dataclasses.replace(each[i], requirement=models[i].requirements(each[i]))
            limit[pools, j] = each[i].requirement.group_im
        log.info("margin model(s) %s: exceedances counted in a pass of their own",
                 ", ".join(models[i].name for i in late))
        # A one-loss tail: the pass is there to count, not to select.
        again = compute_tails(compiled, scenarios, [1.0 - 1.0 / (n + 1)], limits=Limits(limit), **engine)
        columns = list(columns)
        for j, i in enumerate(late):
            columns[i] = hits.shape[1] + j
        hits, excess = np.concatenate([hits, again.hits], axis=1), np.concatenate([excess, again.excess], axis=1)
    return [dataclasses.replace(inputs, pool_exceedance=(hits[pools, c] / n, excess[pools, c] / n))
            for inputs, c in zip(each, columns)]
