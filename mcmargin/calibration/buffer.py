"""Margin buffers: what a buffer must be to cover the named stresses, and buffers read from a calibration.

docs/methodology.md, section 15.  A buffer ``b`` multiplies a model's
buffer-free requirement by ``1 + b``; a requirement computed at buffer
``b0`` is *rescaled* to ``b`` as ``im x (1 + b) / (1 + b0)``.  The same
rescaling turns a backtest's stored ``im`` into the margin at any other
buffer (``jobs.calibrate_buffer``), so the nightly run and the calibration
speak of the same ``b``.

- :func:`required_buffer` (per pool): the smallest ``b >= 0`` at which the
  rescaled ``group_im`` is at least the pool's loss in every named stress;
- :func:`stress_coverage`: the share of named stresses the requirement covers;
- :func:`stress_buffer_variables`: both (and the margin the venue would add)
  as dataset variables of the stress run;
- :func:`calibrated_buffer`: ``margin.buffer=PATH``, the ``required_buffer`` of
  one portfolio of a calibration dataset;
- :func:`buffer_sweep`, :func:`calibration_dataset`: ``jobs.calibrate_buffer``,
  every statistic of the backtest at every buffer of a grid from the stored
  ``im`` and ``loss``, and ``required_buffer``; :func:`frontier_table` and
  :func:`plot_frontier` show coverage against mean margin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common.audit import record_input
from ..errors import ConfigError
from ..output.store import NONFINITE

__all__ = ["required_buffer", "stress_coverage", "stress_margin_gap", "stress_buffer_variables",
           "calibrated_buffer", "resolve_buffer", "rescale", "sweep_point", "buffer_sweep", "buffer_grid",
           "calibration_dataset", "frontier_table", "plot_frontier", "SWEEP_VARIABLES", "DEFAULT_GRID"]


def required_buffer(group_im, stress_loss, buffer: float) -> np.ndarray:
    """The smallest buffer ``b >= 0`` with ``group_im (1 + b) / (1 + buffer) >= stress_loss`` in every stress.

    Parameters
    ----------
    group_im : array [group]
        Requirement at the configured ``buffer`` (USD).
    stress_loss : array [group x stress]
        Pool loss under each named stress (USD, positive = loss).
    buffer : float
        The buffer ``group_im`` was computed at (``b0``).

    Returns
    -------
    numpy.ndarray [group]
        ``max(0, max_s loss_s / base - 1)`` with ``base = group_im / (1 + buffer)``
        the buffer-free requirement; 0 where every stress is covered at ``b = 0``
        (or no stress loses anything); ``+inf`` where ``base`` is 0 and some
        stress loss is positive (no buffer on nothing covers a loss).
    """
    group_im = np.asarray(group_im, dtype=float)
    loss = np.asarray(stress_loss, dtype=float).reshape(group_im.size, -1)
    base = group_im / (1.0 + float(buffer))
    worst = loss.max(axis=1) if loss.shape[1] else np.zeros(group_im.size)
    out = np.zeros(group_im.size)
    positive = worst > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(base > 0, worst / np.where(base > 0, base, 1.0), np.inf)
    out[positive] = np.maximum(0.0, ratio[positive] - 1.0)
    return out


def stress_coverage(group_im, stress_loss) -> np.ndarray:
    """Share of named stresses with ``group_im >= stress_loss`` (``[group]``; NaN with no stress)."""
    group_im = np.asarray(group_im, dtype=float)
    loss = np.asarray(stress_loss, dtype=float).reshape(group_im.size, -1)
    if loss.shape[1] == 0:
        return np.full(group_im.size, np.nan)
    return (group_im[:, None] >= loss).mean(axis=1)


def stress_margin_gap(group_im, stress_loss) -> np.ndarray:
    """Margin to add for ``group_im`` to cover every named stress: ``max(0, max_s loss_s - group_im)`` (USD)."""
    group_im = np.asarray(group_im, dtype=float)
    loss = np.asarray(stress_loss, dtype=float).reshape(group_im.size, -1)
    if loss.shape[1] == 0:
        return np.zeros(group_im.size)
    return np.maximum(0.0, loss.max(axis=1) - group_im)


def stress_buffer_variables(group_im, stress_loss, buffer: float) -> dict:
    """``group_required_buffer``, ``group_stress_coverage`` and ``group_stress_margin_gap`` (``[group]``).

    ``group_im`` is the primary model's, at the run's buffer ``buffer``.
    """
    return {
        "group_required_buffer": (("group",), required_buffer(group_im, stress_loss, buffer), {
            "long_name": "smallest buffer b >= 0 at which the primary model's group_im, rescaled to b "
                         "(x (1 + b) / (1 + margin_buffer)), is at least group_stress_loss in every named stress",
            "units": "1", NONFINITE: "+inf: group_im is 0 and some named stress loses money",
            "methodology": "docs/methodology.md, section 15"}),
        "group_stress_coverage": (("group",), stress_coverage(group_im, stress_loss), {
            "long_name": "share of named stresses with group_stress_loss <= group_im (primary model, "
                         "configured buffer)", "units": "1", NONFINITE: "nan: no named stress",
            "methodology": "docs/methodology.md, section 15"}),
        "group_stress_margin_gap": (("group",), stress_margin_gap(group_im, stress_loss), {
            "long_name": "margin the venue would add for group_im to cover every named stress: "
                         "max(0, largest group_stress_loss - group_im)", "units": "USD",
            "methodology": "docs/methodology.md, section 15"}),
    }


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value.strip())
        except ValueError:
            return False
        return True
    return False


def calibrated_buffer(path, portfolio=None, key: str = "margin.buffer") -> float:
    """``required_buffer`` of ``portfolio`` in the calibration dataset at ``path`` (``jobs.calibrate_buffer``).

    ``portfolio`` may be None when the dataset holds one portfolio.

    Raises
    ------
    ConfigError
        Naming ``margin.buffer`` when ``path`` is no calibration dataset, or its
        ``required_buffer`` is NaN (no grid buffer passed); naming
        ``margin.buffer_portfolio`` when the portfolio is missing or ambiguous.
    """
    p = Path(str(path))
    if not p.exists():
        raise ConfigError(key, f"expected a number in [0, 10] or an existing calibration dataset "
                               f"(jobs.calibrate_buffer output), got {str(path)!r}")
    record_input(p)   # an input of the stress run: its sha256 goes into the audit trail
    try:
        import xarray as xr

        engine = "zarr" if p.is_dir() else None
        with xr.open_dataset(p, engine=engine) as ds:
            if "required_buffer" not in ds or "portfolio" not in ds["required_buffer"].dims:
                raise ValueError("it has no required_buffer(portfolio)")
            values = ds["required_buffer"].load()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001  (any unreadable file is the user's input error)
        raise ConfigError(key, f"{p} is not a calibration dataset of jobs.calibrate_buffer: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    names = [str(x) for x in values["portfolio"].values]
    if portfolio is None:
        if len(names) != 1:
            raise ConfigError("margin.buffer_portfolio", f"{p} calibrates {len(names)} portfolios "
                                                         f"({', '.join(names[:8])}): name one")
        portfolio = names[0]
    portfolio = str(portfolio)
    if portfolio not in names:
        raise ConfigError("margin.buffer_portfolio", f"{portfolio!r} is not a portfolio of {p}; it has "
                                                     f"{', '.join(names[:8])}")
    b = float(values.sel(portfolio=portfolio))
    if not np.isfinite(b):
        raise ConfigError(key, f"{p}: no buffer of the grid passes for portfolio {portfolio!r} "
                               "(required_buffer is NaN): widen buffer.grid and calibrate again")
    if not 0.0 <= b <= 10.0:
        raise ConfigError(key, f"{p}: required_buffer of {portfolio!r} is {b:g}, outside [0, 10]")
    return b


def resolve_buffer(margin: dict) -> tuple[dict, dict]:
    """``margin`` with ``buffer`` a number, and the attrs that record where it came from.

    A number (or numeric string) stays; any other value must be a calibration
    dataset (:func:`calibrated_buffer`), whose ``required_buffer`` for
    ``margin.buffer_portfolio`` replaces it.  Returns ``(margin, attrs)``,
    attrs empty for a number.
    """
    value = margin.get("buffer")
    portfolio = margin.get("buffer_portfolio")
    if value is None or _is_number(value):
        return margin, {}
    if not isinstance(value, (str, Path)):
        raise ConfigError("margin.buffer", f"expected a number in [0, 10] or a calibration dataset path, got {value!r}")
    b = calibrated_buffer(value, portfolio)
    out = dict(margin, buffer=b)
    attrs = {"margin_buffer_source": str(value), "margin_buffer_portfolio":
             str(portfolio) if portfolio is not None else _only_portfolio(value)}
    return out, attrs


def _only_portfolio(path) -> str:
    import xarray as xr

    p = Path(str(path))
    with xr.open_dataset(p, engine="zarr" if p.is_dir() else None) as ds:
        return str(ds["portfolio"].values[0])


# --------------------------------------------------------------------------- calibration sweep
#: Variables of the calibration dataset over (buffer, portfolio), in order.
SWEEP_VARIABLES = ("coverage", "n_exceedances", "kupiec_pvalue", "christoffersen_pvalue", "red_windows",
                   "mean_margin", "peak_to_trough", "max_increase_1d", "max_increase_30d")


def rescale(im, buffer: float, base_buffer: float):
    """``im`` computed at ``base_buffer`` rescaled to ``buffer``: ``im x (1 + buffer) / (1 + base_buffer)``."""
    return np.asarray(im, dtype=float) * (1.0 + float(buffer)) / (1.0 + float(base_buffer))


def sweep_point(im, loss, buffer: float, base_buffer: float, confidence: float, horizon: int = 1,
                target_coverage: float | None = None, significance: float = 0.05) -> dict:
    """The backtest's statistics at one buffer, from its stored ``im`` and ``loss`` ``[date x portfolio]``.

    An exceedance at ``buffer`` is ``loss > im (1 + buffer) / (1 + base_buffer)``
    (strict, as in the backtest).  As the backtest does (docs/methodology.md,
    section 13): coverage and the red windows over every date; Kupiec's and
    Christoffersen's tests on every ``horizon``-th date (overlapping losses);
    the red zone from Basel's bounds at ``1 - confidence`` (10 at 99%).
    ``passed``: coverage at least ``target_coverage`` (default ``confidence``),
    not too many exceedances (one-sided Kupiec), Christoffersen at
    ``significance``, no red window.
    """
    from ..stats import coverage as cov
    from .apc import procyclicality

    p = 1.0 - confidence
    target = confidence if target_coverage is None else float(target_coverage)
    margin = rescale(im, buffer, base_buffer)
    exceed = np.asarray(loss, dtype=float) > margin
    n_days = exceed.shape[0]
    x = exceed.sum(axis=0)
    tested = exceed[::max(1, int(horizon))]
    _, red_from = cov.basel_zone_bounds(p, cov.WINDOW)
    out = {
        "coverage": 1.0 - x / n_days,
        "n_exceedances": x.astype(np.int64),
        "kupiec_pvalue": np.atleast_1d(np.asarray(cov.kupiec_pvalue(tested.sum(axis=0), tested.shape[0], p),
                                                  dtype=float)),
        "christoffersen_pvalue": np.atleast_1d(np.asarray(cov.christoffersen_pvalue(tested), dtype=float)),
        "red_windows": np.asarray(cov.red_windows(exceed, cov.WINDOW, red_from), dtype=np.int64),
        "mean_margin": margin.mean(axis=0),
    }
    out.update(procyclicality(margin))
    too_many = cov.coverage_rejected(tested.sum(axis=0), tested.shape[0], p, significance)
    out["passed"] = ((out["coverage"] >= target) & ~too_many & (out["christoffersen_pvalue"] >= significance)
                     & (out["red_windows"] == 0))
    return out


def buffer_sweep(im, loss, grid, *, base_buffer: float, confidence: float, target_coverage: float | None = None,
                 significance: float = 0.05, horizon: int = 1) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every statistic of :data:`SWEEP_VARIABLES` at every buffer of ``grid`` (sorted), and ``required_buffer``.

    Returns ``(values, passed, required)``: ``values[name]`` is ``[buffer x
    portfolio]``, ``passed`` the same shape (bool), ``required[portfolio]`` the
    smallest grid buffer that passes (:func:`sweep_point`'s ``passed``), NaN where none does.
    """
    grid = np.sort(np.asarray(grid, dtype=float))
    im, loss = np.asarray(im, dtype=float), np.asarray(loss, dtype=float)
    if im.shape != loss.shape or im.ndim != 2:
        raise ValueError("im and loss must both be [date x portfolio]")
    if not (np.isfinite(im).all() and np.isfinite(loss).all()):
        raise ValueError("im and loss must be finite on every date of the backtest")
    target = confidence if target_coverage is None else float(target_coverage)
    if im.shape[0] == 0:
        raise ValueError("no date to sweep")
    points = [sweep_point(im, loss, b, base_buffer, confidence, horizon, target, significance) for b in grid]
    values = {k: np.stack([p[k] for p in points]) for k in SWEEP_VARIABLES}
    passed = np.stack([p["passed"] for p in points])
    first = np.argmax(passed, axis=0)
    required = np.where(passed.any(axis=0), grid[first], np.nan)
    return values, passed, required


#: ``buffer.grid`` when null.
DEFAULT_GRID = {"start": 0.0, "stop": 1.0, "step": 0.01}


def buffer_grid(spec, key: str = "buffer.grid") -> np.ndarray:
    """``buffer.grid``: a list of buffers, or ``{start, stop, step}`` (both ends included), each in [0, 10].

    None: :data:`DEFAULT_GRID`, 0 to 1 in steps of 0.01.
    """
    from ..common.settings import real_number

    if spec is None:
        spec = DEFAULT_GRID
    if isinstance(spec, dict) or hasattr(spec, "keys"):
        unknown = set(spec) - {"start", "stop", "step"}
        if unknown:
            raise ConfigError(f"{key}.{sorted(unknown)[0]}", "is not a key of the grid: start, stop, step")
        start = real_number(spec.get("start", 0.0), f"{key}.start", 0.0, 10.0)
        stop = real_number(spec.get("stop", 1.0), f"{key}.stop", start, 10.0)
        step = real_number(spec.get("step", 0.01), f"{key}.step", 0.0, 10.0, low_open=True)
        n = int(np.floor((stop - start) / step + 1e-9)) + 1
        if n > 100_001:
            raise ConfigError(f"{key}.step", f"makes {n:,} buffers; at most 100,001")
        # start + i x step, rounded to 12 decimals: 0.07 is 0.07, not 0.07000000000000001
        return np.round(start + step * np.arange(n), 12)
    if isinstance(spec, (list, tuple)) and spec:
        values = np.array([real_number(x, f"{key}[{i}]", 0.0, 10.0) for i, x in enumerate(spec)])
        return np.unique(values)
    raise ConfigError(key, f"expected a list of buffers or {{start, stop, step}}, got {spec!r}")


def calibration_dataset(backtest, grid, *, target_coverage: float | None = None, significance: float = 0.05):
    """The buffer sweep of a backtest dataset (``jobs.calibrate_buffer``; docs/methodology.md, section 15).

    Parameters
    ----------
    backtest : xarray.Dataset
        A ``jobs.backtest`` dataset: ``im`` and ``loss`` (date, portfolio), attrs
        ``margin_buffer`` (b0), ``margin_confidence``, ``test_stride``.
    grid : array_like
        Buffers to sweep.
    target_coverage : float, optional
        Coverage a buffer must reach (default: the backtest's ``margin_confidence``).
    significance : float
        Level of the one-sided Kupiec and the Christoffersen tests.

    Returns
    -------
    xarray.Dataset
        :data:`SWEEP_VARIABLES` over (buffer, portfolio), ``passed`` (buffer,
        portfolio) and ``required_buffer`` (portfolio).
    """
    import json

    import xarray as xr

    im = backtest["im"].transpose("date", "portfolio").values
    loss = backtest["loss"].transpose("date", "portfolio").values
    b0 = float(backtest.attrs["margin_buffer"])
    q = float(backtest.attrs["margin_confidence"])
    stride = int(backtest.attrs.get("test_stride", 1))
    target = q if target_coverage is None else float(target_coverage)
    grid = np.sort(np.asarray(grid, dtype=float))
    values, passed, required = buffer_sweep(im, loss, grid, base_buffer=b0, confidence=q, target_coverage=target,
                                            significance=significance, horizon=stride)
    from .apc import METRIC_ATTRS

    texts = {
        "coverage": ("share of dates whose loss the margin rescaled to the buffer covered", "1"),
        "n_exceedances": ("dates with loss > im (1 + buffer) / (1 + b0)", "1"),
        "kupiec_pvalue": ("Kupiec (1995) LR test of unconditional coverage, p-value (every test_stride-th date)",
                          "1"),
        "christoffersen_pvalue": ("Christoffersen (1998) LR test of independence, p-value (every test_stride-th "
                                  "date)", "1"),
        "red_windows": ("250-date windows (one ending at each date) in the red zone", "1"),
        "mean_margin": ("mean over dates of im (1 + buffer) / (1 + b0)", "USD"),
    }
    bp = ("buffer", "portfolio")
    data = {}
    for name in SWEEP_VARIABLES:
        if name in texts:
            attrs = {"long_name": texts[name][0], "units": texts[name][1]}
        else:
            attrs = dict(METRIC_ATTRS[name])
        data[name] = (bp, values[name], attrs)
    data["passed"] = (bp, passed, {"long_name": f"coverage >= {target:g}, one-sided Kupiec and Christoffersen "
                                                f"accept at {significance:g}, no red window", "units": "1"})
    data["required_buffer"] = (("portfolio",), required, {
        "long_name": "smallest buffer of the grid that passes (passed)", "units": "1",
        NONFINITE: "nan: no buffer of the grid passes"})
    ds = xr.Dataset(data, coords={
        "buffer": ("buffer", grid, {"long_name": "buffer b: margin = im (1 + b) / (1 + b0)", "units": "1"}),
        "portfolio": ("portfolio", np.array([str(x) for x in backtest["portfolio"].values]), {"long_name": "portfolio", "units": "1"}),
    })
    ds.attrs.update(methodology="docs/methodology.md, section 15", backtest_buffer=b0, margin_confidence=q,
                    target_coverage=target, significance=significance, test_stride=stride,
                    margin_apc=str(backtest.attrs.get("margin_apc", "none")),
                    backtest_first_date=str(backtest.attrs.get("first_date", "")),
                    backtest_last_date=str(backtest.attrs.get("last_date", "")),
                    n_days=int(im.shape[0]), grid=json.dumps(grid.tolist()))
    return ds


def frontier_table(ds, rows: int = 11) -> str:
    """Coverage against mean margin at about ``rows`` buffers of the grid (and each required buffer), per portfolio."""
    grid = ds["buffer"].values
    pick = set(np.unique(np.linspace(0, grid.size - 1, min(rows, grid.size)).round().astype(int)).tolist())
    lines = [f"buffer calibration: {ds.attrs['n_days']} dates, target coverage {ds.attrs['target_coverage']:g}, "
             f"tests at {ds.attrs['significance']:g}, backtest buffer b0 = {ds.attrs['backtest_buffer']:g}"]
    for p in ds["portfolio"].values:
        v = ds.sel(portfolio=p)
        req = float(v["required_buffer"])
        shown = sorted(pick | ({int(np.searchsorted(grid, req))} if np.isfinite(req) else set()))
        lines.append(f"  {p}: required_buffer {'none on the grid' if not np.isfinite(req) else f'{req:g}'}; "
                     f"procyclicality (any buffer): peak_to_trough {float(v['peak_to_trough'][0]):.3g}, "
                     f"max_increase_1d {float(v['max_increase_1d'][0]):.3g}, "
                     f"max_increase_30d {float(v['max_increase_30d'][0]):.3g}")
        lines.append(f"    {'buffer':>8}{'coverage':>10}{'exceed':>8}{'mean margin':>18}{'kupiec':>9}{'indep':>9}"
                     f"{'red':>5}  passed")
        for i in shown:
            r = v.isel(buffer=i)
            lines.append(f"    {float(r['buffer']):8.4g}{float(r['coverage']):10.4f}{int(r['n_exceedances']):8d}"
                         f"{float(r['mean_margin']):18,.2f}{float(r['kupiec_pvalue']):9.4f}"
                         f"{float(r['christoffersen_pvalue']):9.4f}{int(r['red_windows']):5d}  "
                         f"{'yes' if bool(r['passed']) else 'no'}{'   <- required' if grid[i] == req else ''}")
    return "\n".join(lines)


def plot_frontier(ds, path) -> str:
    """Coverage against mean margin along the grid, one panel per portfolio, the required buffer marked (PNG)."""
    import math

    from .plots import _figure, _save

    names = [str(p) for p in ds["portfolio"].values]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(4.2 * cols, 3.4 * rows)
    target = float(ds.attrs["target_coverage"])
    for k, p in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        v = ds.sel(portfolio=p)
        mm, cov = v["mean_margin"].values, v["coverage"].values
        ok = v["passed"].values.astype(bool)
        ax.plot(mm, cov, color="#1f77b4", lw=1.2, label="buffer grid")
        ax.scatter(mm[ok], cov[ok], s=6, color="#2ca02c", label="passes", zorder=3)
        ax.axhline(target, color="grey", ls="--", lw=0.8, label=f"target {target:g}")
        req = float(v["required_buffer"])
        if np.isfinite(req):
            i = int(np.searchsorted(v["buffer"].values, req))
            ax.scatter([mm[i]], [cov[i]], s=40, marker="o", facecolors="none", edgecolors="#d62728",
                       label=f"required buffer {req:g}", zorder=4)
        ax.set_title(p, fontsize=9)
        ax.set_xlabel("mean margin (USD)", fontsize=8)
        ax.set_ylabel("coverage", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("buffer frontier: coverage against mean margin", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)
