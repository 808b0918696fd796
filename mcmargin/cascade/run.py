"""The cascade over a run's scenarios and named stresses, scheduled with dask, and its dataset variables.

One task per block of scenarios draws that block's shocks (the same
counter-based draws as the tail engine: scenario i's shock depends only on
the seed and i) and runs :func:`~.model.cascade_block` over every pool.
Tasks are independent and their results are put together in scenario
order, per-pool counts summed as integers, so the figures are the same bit
for bit whatever the block size, scheduler or worker count.  Memory: the
pools' arrays once, plus a few ``[pools x block]`` arrays per task in flight.
"""

from __future__ import annotations

import dataclasses
import uuid

import dask
import numpy as np

from ..backend import get_backend
from ..tails import tail_size, var_es
from .model import BlockResult, CascadeParams, PoolBook, cascade_block, pool_book, to_backend

#: Memory of one task's ``[pools x block]`` P&L array (bytes), sizing blocks when ``cascade.scenario_block`` is 0.
#: Measured on the 100,000-account synthetic book (1,000 scenarios, one thread): blocks of 195 scenarios
#: (128 MB) spent 1.9 s of system time (fresh pages each round) beside 1.8 s of user time; 64 to 128
#: (44 to 88 MB) about 2.5 to 2.8 s in all; 24 (16 MB) more user time per scenario (NumPy call overhead).
BLOCK_BUDGET = 48 * 2**20

METHODOLOGY = "docs/methodology.md, section 14"


def block_size(params: CascadeParams, n_scenarios: int, n_pools: int) -> int:
    """Scenarios per task: ``cascade.scenario_block``, else from :data:`BLOCK_BUDGET` (16 to 4,096)."""
    s = params.scenario_block or int(max(16, min(4096, BLOCK_BUDGET // (8 * max(n_pools, 1)))))
    return int(max(1, min(s, n_scenarios)))


def _draw(scenarios, backend_name, start, stop):
    return scenarios.draw(start, stop, get_backend(backend_name))


def _task(on, params, start, stop, *pieces):
    """The cascade over scenarios ``start..stop-1``; ``pieces`` are ``(first, shock, vol_shock)`` of the draw
    chunks that cover them."""
    xp = on.b.xp
    shocks, vols = [], []
    for first, shock, vol_shock in pieces:
        a, z = max(start, first) - first, min(stop, first + shock.shape[0]) - first
        shocks.append(shock[a:z, ...])
        vols.append(vol_shock[a:z, ...])
    shock = shocks[0] if len(shocks) == 1 else xp.concat(shocks, axis=0)
    vol_shock = vols[0] if len(vols) == 1 else xp.concat(vols, axis=0)
    return cascade_block(on, shock, vol_shock, params)


def _with_start(first, drawn):
    return (first, drawn[0], drawn[1])


def _on_backend(pools, backend_name):
    return to_backend(pools, get_backend(backend_name))


#: Scenarios per draw task when the caller gives no chunk size (the engine's chunk in a run).
DRAW_CHUNK = 4096


def cascade_scenarios(pools: PoolBook, scenarios, params: CascadeParams, *, backend: str = "numpy",
                      scheduler=None, draw_chunk: int = 0) -> BlockResult:
    """The cascade in every Monte Carlo scenario of ``scenarios``, as one :class:`BlockResult` over all of them.

    Shocks are drawn in chunks of ``draw_chunk`` scenarios (the tail engine's chunk in a run, so the
    cascade sees the engine's very numbers: a draw's last bit can depend on how many scenarios one
    call draws, through the BLAS product that correlates them) and cut into the cascade's blocks, so
    neither the block size nor the scheduler changes any figure.
    """
    b = get_backend(backend)
    n = scenarios.n
    size = block_size(params, n, pools.n_pools)
    chunk = int(draw_chunk or DRAW_CHUNK)
    run = uuid.uuid4().hex[:8]
    dsk = {f"cascade-pools-{run}": (_on_backend, pools, b.name), f"cascade-scenarios-{run}": scenarios}
    for c in range(0, n, chunk):
        dsk[f"cascade-draw-{run}-{c}"] = (_with_start, c, (_draw, f"cascade-scenarios-{run}", b.name, c,
                                                             min(c + chunk, n)))
    keys = []
    for s in range(0, n, size):
        stop = min(s + size, n)
        pieces = [f"cascade-draw-{run}-{c}" for c in range(s - s % chunk, stop, chunk)]
        keys.append(f"cascade-{run}-{s}")
        dsk[keys[-1]] = (_task, f"cascade-pools-{run}", params, s, stop, *pieces)
    if scheduler is None or isinstance(scheduler, str):
        get = dask.base.named_schedulers.get((scheduler or "threads").lower()) or dask.threaded.get
        parts = get(dsk, keys)
    else:
        parts = scheduler.gather(scheduler.get(dsk, keys, sync=False))
    return merge(parts)


def merge(parts) -> BlockResult:
    """Blocks' results in scenario order; per-pool counts summed (integers: exact in any order)."""
    cat = {f.name: np.concatenate([getattr(p, f.name) for p in parts], axis=0)
           for f in dataclasses.fields(BlockResult) if f.name not in ("first", "any_round")}
    return BlockResult(**cat, first=sum(p.first for p in parts), any_round=sum(p.any_round for p in parts))


def cascade_instantaneous(pools: PoolBook, shock, vol_shock, params: CascadeParams) -> BlockResult:
    """The cascade under instantaneous moves ``[stress x asset]`` (named stresses): options keep their expiry."""
    b = get_backend("numpy")
    options = dataclasses.replace(pools.options, expiry_after=pools.options.expiry)
    on = to_backend(dataclasses.replace(pools, options=options), b)
    return cascade_block(on, np.asarray(shock, dtype=float), np.asarray(vol_shock, dtype=float), params)


def _da(dims, values, long_name, units="USD"):
    return (dims, values, {"long_name": long_name, "units": units, "methodology": METHODOLOGY})


def per_scenario_variables(res: BlockResult, dim: str, prefix: str = "") -> dict:
    """``cascade_rounds``, ``liquidated_accounts``, ``insurance_fund_draw``, ``adl_volume``, ``cascade_loss``
    and ``cascade_price_move`` over ``dim`` (``scenario`` or ``stress``; ``prefix`` ``stress_`` for stresses)."""
    return {
        f"{prefix}cascade_rounds": _da((dim,), res.rounds, "liquidation rounds of the cascade (rounds in which "
                                       "at least one pool was liquidated)", "1"),
        f"{prefix}liquidated_accounts": _da((dim,), res.liquidated_accounts,
                                            "number of accounts in pools liquidated in the cascade", "1"),
        f"{prefix}insurance_fund_draw": _da((dim,), res.insurance_fund_draw,
                                            "draws on the insurance fund for liquidated pools' deficits"),
        f"{prefix}adl_volume": _da((dim,), res.adl_volume, "notional closed by auto-deleveraging"),
        f"{prefix}cascade_loss": _da((dim,), res.cascade_loss,
                                     "total deficit of liquidated pools: sum of max(0, loss - equity)"),
        f"{prefix}cascade_price_move": _da((dim, "asset"), res.price_move,
                                           "log price move added by the cascade's market impact (0: none)", "1"),
    }


def cascade_variables(res: BlockResult, params: CascadeParams, confidences, margin_confidence: float) -> tuple[dict, dict]:
    """``(variables, attrs)`` of the Monte Carlo cascade for the dataset (README "Outputs")."""
    n = res.rounds.size
    out = per_scenario_variables(res, "scenario")
    qs = [float(q) for q in confidences]
    draws = np.sort(res.insurance_fund_draw)[None, :]
    adl = np.sort(res.adl_volume)[None, :]
    tails = [var_es(draws, tail_size(n, q)) for q in qs]
    out["insurance_fund_draw_var"] = _da(("confidence",), np.array([t[0][0] for t in tails]),
                                         "VaR of insurance_fund_draw: m-th largest over scenarios")
    out["insurance_fund_draw_es"] = _da(("confidence",), np.array([t[1][0] for t in tails]),
                                        "ES of insurance_fund_draw: mean of the m largest over scenarios")
    out["adl_volume_es"] = _da(("confidence",), np.array([var_es(adl, tail_size(n, q))[1][0] for q in qs]),
                               "ES of adl_volume: mean of the m largest over scenarios")
    out["insurance_fund_exhausted_prob"] = _da((), float(np.mean(res.fund_need > params.insurance_fund)),
                                               "share of scenarios in which the insurance fund is exhausted "
                                               "(auto-deleveraging needed)", "1")
    out["group_liquidation_prob"] = _da(("group",), res.first / n, "share of scenarios in which the pool's equity "
                                        "falls below group_mm after the shock (no cascade)", "1")
    out["group_liquidation_prob_cascade"] = _da(("group",), res.any_round / n, "share of scenarios in which the "
                                                "pool is liquidated in some round of the cascade", "1")
    out["insurance_fund_need"] = _da(("scenario",), res.fund_need, "smallest insurance fund that avoids "
                                     "auto-deleveraging in the scenario")
    needed = var_es(np.sort(res.fund_need)[None, :], tail_size(n, margin_confidence))[0][0]
    attrs = {"cascade": "on", "cascade_params": str(dataclasses.asdict(params)),
             "cascade_insurance_fund": float(params.insurance_fund),
             "cascade_fund_needed": float(needed), "cascade_fund_needed_confidence": float(margin_confidence)}
    return out, attrs


def run_cascade(compiled, book, scenarios, group_mm, group_equity, params: CascadeParams, confidences,
                margin_confidence, *, backend="numpy", scheduler=None, stresses=None, draw_chunk=0):
    """``(variables, attrs)``: the Monte Carlo cascade, and the named stresses' when ``stresses`` is
    ``(names, shock, vol_shock)``."""
    pools = pool_book(compiled, book, group_mm, group_equity, params)
    res = cascade_scenarios(pools, scenarios, params, backend=backend, scheduler=scheduler, draw_chunk=draw_chunk)
    variables, attrs = cascade_variables(res, params, confidences, margin_confidence)
    if stresses is not None:
        names, shock, vol_shock = stresses
        variables.update(per_scenario_variables(cascade_instantaneous(pools, shock, vol_shock, params), "stress",
                                                "stress_"))
    return variables, attrs
