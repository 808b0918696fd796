"""The page: sections, sortable HTML tables, plotly charts, one self-contained file.

Everything a report shows is inlined: the style sheet, a few lines of script
that sort tables, and plotly.js (once per page, however many charts).  No tag
points to the network, so the file can be mailed, archived or opened on a
machine without internet.  Tables are plain HTML (readable without script);
charts are plotly figures drawn by the inlined plotly.js.

plotly is imported here, inside the functions that draw, never at module
import: the stress job imports this module only once it writes a report.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError


@dataclasses.dataclass
class Section:
    """One titled part of the page (an ``<h2>`` and its content)."""

    title: str
    body: str

    @property
    def anchor(self) -> str:
        return "s-" + "".join(c if c.isalnum() else "-" for c in self.title.lower())


def esc(text) -> str:
    """``text`` as HTML-escaped text."""
    return html.escape(str(text), quote=True)


def money(x) -> str:
    """USD to the dollar with thousands separators (the summary's format); '-' for NaN."""
    return _figure(x, ",.0f")


def number(x, digits: int = 4) -> str:
    """A plain figure to ``digits`` significant digits; '-' for NaN."""
    return _figure(x, f".{digits}g")


def _figure(x, spec: str) -> str:
    """``x`` in format ``spec``; '-' for NaN, 'inf' / '-inf' for infinities."""
    x = float(x)
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return format(x, spec)


def share(x, decimals: int = 2) -> str:
    """A probability or share as a percentage."""
    x = float(x)
    return "-" if math.isnan(x) else f"{100 * x:.{decimals}f}%"


@dataclasses.dataclass
class Column:
    """A table column: header, the cell text of a value, and whether it sorts as a number."""

    header: str
    fmt: object = str
    numeric: bool = True
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Shown:
    """A cell whose text is given (its row's units differ from the column's): ``value`` stays in data-value."""

    value: object
    text: str


def table(table_id: str, columns, rows, caption: str = "") -> str:
    """A sortable ``<table>``: every cell carries its exact value in ``data-value`` for sorting and checking.

    Parameters
    ----------
    table_id : str
        The ``id`` of the table (tests find tables by it).
    columns : sequence of Column
    rows : iterable of sequences
        Raw values, one per column; each is shown through its column's ``fmt`` (a :class:`Shown`
        cell through its own text).
    caption : str
        Said above the table.
    """
    head = "".join(f'<th data-numeric="{int(c.numeric)}" title="{esc(c.note or "click to sort")}">'
                   f"{esc(c.header)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c, v in zip(columns, row):
            raw, text = (_raw(v.value), v.text) if isinstance(v, Shown) else (_raw(v), c.fmt(v))
            cls = ' class="num"' if c.numeric else ""
            cells.append(f'<td{cls} data-value="{esc(raw)}">{esc(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    if not body:
        body = [f'<tr><td colspan="{len(columns)}">none</td></tr>']
    return (f'<table id="{esc(table_id)}" class="sortable">{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _raw(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def key_values(table_id: str, pairs) -> str:
    """A two-column table of (name, value) pairs, values already text."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f'<table id="{esc(table_id)}" class="kv"><tbody>{rows}</tbody></table>'


class Figure:
    """A plotly figure as the plain JSON plotly.js reads (``data``, ``layout``), built without plotly.py.

    The methods mirror the few of ``plotly.graph_objects.Figure`` the report
    uses.  plotly.py's figure objects validate every property against its
    schema and deep-copy their template: on the nightly run's small report
    that alone was 0.3 s of a 3 s budget, so the figures are written as the
    documented JSON (https://plotly.com/javascript/reference/) and drawn by
    the plotly.js that the plotly package ships (:func:`plotly_bundle`).
    """

    def __init__(self):
        self.data: list[dict] = []
        self.layout: dict = {"shapes": [], "annotations": []}

    def add_trace(self, kind: str, **props) -> "Figure":
        self.data.append({"type": kind, **props})
        return self

    def add_bar(self, **props) -> "Figure":
        return self.add_trace("bar", **props)

    def add_scatter(self, **props) -> "Figure":
        return self.add_trace("scatter", **props)

    def add_vline(self, x, color="#b00020", dash="solid", text="") -> "Figure":
        """A vertical line across the plot at ``x`` (data units), labelled at its top."""
        self.layout["shapes"].append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0,
                                      "y1": 1, "line": {"color": color, "dash": dash, "width": 1.5}})
        if text:
            self.layout["annotations"].append({"x": x, "y": 1, "xref": "x", "yref": "paper", "text": text,
                                               "showarrow": False, "yanchor": "bottom", "textangle": -30,
                                               "font": {"size": 10, "color": color}})
        return self

    def add_hline(self, y, color="#b00020", dash="dash", text="") -> "Figure":
        """A horizontal line across the plot at ``y`` (data units), labelled at its right end."""
        self.layout["shapes"].append({"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": y,
                                      "y1": y, "line": {"color": color, "dash": dash, "width": 1.5}})
        if text:
            self.layout["annotations"].append({"x": 1, "y": y, "xref": "paper", "yref": "y", "text": text,
                                               "showarrow": False, "xanchor": "right", "yanchor": "bottom",
                                               "font": {"size": 10, "color": color}})
        return self

    def add_vrect(self, x0, x1, color) -> "Figure":
        """A shaded band from ``x0`` to ``x1`` behind the traces."""
        self.layout["shapes"].append({"type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0,
                                      "y1": 1, "fillcolor": color, "line": {"width": 0}, "layer": "below"})
        return self

    def update_layout(self, title: str = "", **props) -> "Figure":
        if title:
            props["title"] = {"text": title, "font": {"size": 14}}
        for k in ("xaxis_title", "yaxis_title"):
            if k in props:
                axis = k.split("_")[0]
                self.layout.setdefault(axis, {})["title"] = {"text": props.pop(k)}
        self.layout.update(props)
        return self


def _plain(value):
    """JSON for NumPy values: arrays as lists, dates as ISO strings."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "M":
            return np.datetime_as_string(value, unit="D").tolist()
        return value.tolist()
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="D"))
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def chart(fig: Figure, chart_id: str, height: int = 380) -> str:
    """A figure as a ``<div>`` and the script that draws it (plotly.js itself is in the page head once)."""
    layout = {"height": height, "margin": {"l": 70, "r": 20, "t": 50, "b": 50}, "paper_bgcolor": "white",
              "plot_bgcolor": "white", "xaxis": {"gridcolor": "#e5eaf0", "zeroline": False},
              "yaxis": {"gridcolor": "#e5eaf0", "zeroline": False}, "font": {"size": 12}}
    for k, v in fig.layout.items():
        layout[k] = {**layout[k], **v} if isinstance(v, dict) and isinstance(layout.get(k), dict) else v
    spec = json.dumps({"data": fig.data, "layout": layout,
                       "config": {"displaylogo": False, "responsive": True}}, default=_plain,
                      separators=(",", ":")).replace("</", "<\\/")
    return (f'<div class="chart"><div id="{esc(chart_id)}" class="plotly-chart" style="height:{height}px"></div>'
            f'<script>(function(){{var f={spec};Plotly.newPlot("{esc(chart_id)}",f.data,f.layout,f.config);}})();'
            "</script></div>")


def plotly_bundle() -> str:
    """plotly.js as shipped with the plotly package (read from its package data), for one inline ``<script>``."""
    from importlib.resources import files

    return (files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:0 1.5em 3em;color:#1d2733;line-height:1.4}
h1{font-size:1.6em;margin:1em 0 .2em}h2{margin-top:2em;border-bottom:2px solid #dde3ea;padding-bottom:.2em}
h3{margin:1.3em 0 .4em;font-size:1.05em}
nav a{margin-right:1em}p.note{color:#56606b;font-size:.9em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.88em}
th,td{border:1px solid #dde3ea;padding:.25em .6em;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.sortable th{cursor:pointer;background:#f3f6f9;user-select:none}
table.sortable th.asc:after{content:" \\25B2"}table.sortable th.desc:after{content:" \\25BC"}
table.kv th{background:#f3f6f9;font-weight:600;width:14em}
caption{text-align:left;font-weight:600;padding:.3em 0}
.flag-bad{color:#b00020;font-weight:600}.chart{margin:.5em 0 1.2em}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.8em}
"""

# Click a header to sort by that column (numbers by data-value); again to reverse.
_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function(th){th.addEventListener("click",function(){
var table=th.closest("table"),body=table.tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th),
num=th.dataset.numeric==="1",asc=!th.classList.contains("asc");
th.parentNode.querySelectorAll("th").forEach(function(h){h.classList.remove("asc","desc")});
th.classList.add(asc?"asc":"desc");
var rows=Array.prototype.slice.call(body.rows).filter(function(r){return r.cells.length>i});
rows.sort(function(a,b){var x=a.cells[i].dataset.value,y=b.cells[i].dataset.value;
if(num){x=parseFloat(x);y=parseFloat(y);if(isNaN(x))x=-Infinity;if(isNaN(y))y=-Infinity;return asc?x-y:y-x}
return asc?x.localeCompare(y):y.localeCompare(x)});
rows.forEach(function(r){body.appendChild(r)})})});
"""


def page(title: str, subtitle: str, sections, with_charts: bool) -> str:
    """The whole HTML document: head (style, plotly.js when a chart is drawn), contents, sections, sort script."""
    bundle = f'<script type="text/javascript">{plotly_bundle()}</script>' if with_charts else ""
    nav = " ".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    noscript = ("<noscript><p class=\"note\">Charts need JavaScript; every table reads without it.</p></noscript>"
                if with_charts else "")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_STYLE}</style>{bundle}</head><body><h1>{esc(title)}</h1>"
            f'<p class="note">{esc(subtitle)}</p>{noscript}<nav>{nav}</nav>{body}'
            f"<script>{_SORT_JS}</script></body></html>")


def check_report_path(path, key: str = "output.path") -> Path:
    """``path`` as a Path if a report can be written there (checked before any work), else a ConfigError."""
    path = Path(str(path)).expanduser()
    if path.is_dir():
        raise ConfigError(key, f"{path} is a directory; a report is a file (give e.g. {path / 'report.html'})")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(key, f"cannot write {path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(key, f"cannot write {path}: permission denied on {ancestor}")
    return path


def write_text_atomically(text: str, path, key: str = "output.path") -> Path:
    """Write ``text`` to ``path`` whole or not at all (:func:`mcmargin.output.store.write_file_atomically`)."""
    from ..output.store import write_file_atomically

    return write_file_atomically(check_report_path(path, key),
                                 lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
