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
  one portfolio of a calibration dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..output.store import NONFINITE

__all__ = ["required_buffer", "stress_coverage", "stress_margin_gap", "stress_buffer_variables",
           "calibrated_buffer", "resolve_buffer"]


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


def sweep_point(im, loss, buffer: float, base_buffer: float, confidence: float, horizon: int = 1) -> dict:
    """The backtest's statistics at one buffer, from its stored ``im`` and ``loss`` ``[date x portfolio]``.

    An exceedance at ``buffer`` is ``loss > im (1 + buffer) / (1 + base_buffer)``
    (strict, as in the backtest).  Christoffersen's test reads every
    ``horizon``-th date (overlapping losses; docs/methodology.md, section 13).
    """
    from ..stats.coverage import christoffersen_pvalue, kupiec_pvalue, red_windows
    from .apc import procyclicality

    margin = rescale(im, buffer, base_buffer)
    exceed = np.asarray(loss, dtype=float) > margin
    n_days = exceed.shape[0]
    x = exceed.sum(axis=0)
    out = {
        "coverage": 1.0 - x / n_days if n_days else np.full(exceed.shape[1:], np.nan),
        "n_exceedances": x.astype(np.int64),
        "kupiec_pvalue": np.asarray(kupiec_pvalue(x, n_days, 1.0 - confidence), dtype=float),
        "christoffersen_pvalue": np.asarray(christoffersen_pvalue(exceed[::max(1, int(horizon))]), dtype=float),
        "red_windows": np.asarray(red_windows(exceed), dtype=np.int64),
        "mean_margin": margin.mean(axis=0),
    }
    out.update(procyclicality(margin))
    return out


def passes(point: dict, n_days: int, confidence: float, target_coverage: float, significance: float):
    """Whether a sweep point passes: coverage at the target, one-sided Kupiec and Christoffersen accept, no red window."""
    from ..stats.coverage import coverage_rejected

    return ((point["coverage"] >= target_coverage)
            & ~coverage_rejected(point["n_exceedances"], n_days, 1.0 - confidence, significance)
            & (point["christoffersen_pvalue"] >= significance)
            & (point["red_windows"] == 0))


def buffer_sweep(im, loss, grid, *, base_buffer: float, confidence: float, target_coverage: float | None = None,
                 significance: float = 0.05, horizon: int = 1) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every statistic of :data:`SWEEP_VARIABLES` at every buffer of ``grid`` (sorted), and ``required_buffer``.

    Returns ``(values, passed, required)``: ``values[name]`` is ``[buffer x
    portfolio]``, ``passed`` the same shape (bool), ``required[portfolio]`` the
    smallest grid buffer that passes (:func:`passes`), NaN where none does.
    """
    grid = np.sort(np.asarray(grid, dtype=float))
    im, loss = np.asarray(im, dtype=float), np.asarray(loss, dtype=float)
    if im.shape != loss.shape or im.ndim != 2:
        raise ValueError("im and loss must both be [date x portfolio]")
    if not (np.isfinite(im).all() and np.isfinite(loss).all()):
        raise ValueError("im and loss must be finite on every date of the backtest")
    target = confidence if target_coverage is None else float(target_coverage)
    points = [sweep_point(im, loss, b, base_buffer, confidence, horizon) for b in grid]
    values = {k: np.stack([p[k] for p in points]) for k in SWEEP_VARIABLES}
    passed = np.stack([passes(p, im.shape[0], confidence, target, significance) for p in points])
    first = np.argmax(passed, axis=0)
    required = np.where(passed.any(axis=0), grid[first], np.nan)
    return values, passed, required
