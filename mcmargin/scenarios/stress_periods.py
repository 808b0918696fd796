"""Named stressed periods, and the ``scenarios.stress_period`` setting that picks one."""

from __future__ import annotations

import pandas as pd

from ..errors import ConfigError

#: Named stressed periods, usable as ``stress_period: NAME`` (month granularity, inclusive).
STRESS_PERIODS = {
    "gfc": ("2008-09", "2009-03"),        # Lehman default to the equity trough
    "euro_debt": ("2011-07", "2011-10"),
    "covid": ("2020-02", "2020-04"),
    "luna": ("2022-05", "2022-06"),       # Terra/Luna collapse, Celsius, 3AC
    "ftx": ("2022-11", "2022-12"),
}


def parse_period(spec, key: str = "scenarios.stress_period") -> tuple[pd.Timestamp, pd.Timestamp, str]:
    """A stressed period as ``(start, end, label)``, both ends inclusive.

    ``spec`` is a name from :data:`STRESS_PERIODS`, a ``"START..END"`` string,
    or a mapping ``{start, end}``.  Dates may be months (``2008-09`` means
    from Sept 1st; ``2009-03`` as an end means through March 31st) or days.
    """
    if isinstance(spec, str):
        name = spec.strip()
        if name.lower() in STRESS_PERIODS:
            start, end = STRESS_PERIODS[name.lower()]
            label = name.lower()
        elif ".." in name:
            start, end = (s.strip() for s in name.split("..", 1))
            label = name
        else:
            raise ConfigError(key, f"unknown stressed period {spec!r}: give START..END (e.g. 2008-09..2009-03), "
                                   f"{{start: ..., end: ...}} or one of {', '.join(STRESS_PERIODS)}")
    elif hasattr(spec, "get"):
        start, end = spec.get("start"), spec.get("end")
        if start is None or end is None:
            raise ConfigError(key, "needs both start and end")
        label = f"{start}..{end}"
    else:
        raise ConfigError(key, f"invalid stressed period {spec!r}")
    try:
        p0, p1 = pd.Period(str(start)), pd.Period(str(end))
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, f"cannot parse dates of {label!r}: {exc}") from None
    t0, t1 = p0.start_time, p1.end_time
    if t1 < t0:
        raise ConfigError(key, f"period {label!r} ends before it starts")
    return t0, t1, label
