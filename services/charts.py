"""Server-rendered SVG charts for the owner's console: no JavaScript, no inline styles, colours from CSS classes.

Why hand-written: the site's Content-Security-Policy forbids inline script and inline style (a `style="..."`
attribute or a `<style>` element inside an inline SVG is blocked too). pygal writes a `<style>` element and
`<script>` elements into every chart; leather sets every colour as a presentation attribute (`fill="#..."`),
gives the root a fixed pixel width and has no stacked bars nor `<title>`/`<desc>`. Neither emits the clean,
class-only SVG this site needs, and what is needed here (a nice-numbers scale, a polyline, stacked rects, a
legend) is small enough to write and test in one module.

The design:

- Each chart is one `<svg role="img" aria-labelledby="P-title P-desc" viewBox="...">` meant to sit inline in a
  page; it has no width or height attributes (the CSS makes `.chart` width:100%, height:auto). `<title>` is
  the chart's name, `<desc>` a short text (the caller's, or the series names and the first and last labels).
  The page shows the same numbers in a table beside it: `table_rows()` gives that table's rows.
- A series is `(name, values, css_class)`. The class (`series-1`..`series-8`, `series-revenue`,
  `series-cost`: see SERIES_CLASSES) goes on every mark of that series and on its legend swatch; the CSS
  section "Charts (services/charts.py)" in public/css/site.css gives each class a `--series` colour for the
  light and the dark scheme (at least 3:1 against --bg and --surface in both), and `.chart-line` /
  `.chart-bar` / `.chart-point` / `.chart-swatch` paint with it. No element carries a colour attribute.
- The y axis always includes 0 and uses `nice_ticks()`: at most six intervals of 1, 2, 2.5 or 5 times a
  power of ten (integer data gets integer steps; all-zero data gets 0 and 1). Negative values (a margin)
  extend the axis below 0; stacked bars stack positive values up and negative values down from 0.
- The x axis is a band per label (points and bars sit at the band's centre); labels are thinned to every
  1st, 2nd, 5th, 10th, 20th... so that they don't overlap.
- A value of None is a gap: no bar, and the line breaks there. NaN and infinities are refused (ValueError).
- Every text (title, desc, labels, series names) is escaped and stripped of characters XML forbids; numbers
  on the axis and in the marks' tooltips (`<title>` of each bar and point) go through `format_number`, so
  the page can format them for its language.
- `width` and `height` are the size of the axes and plot in the viewBox's units (CSS pixels at 640 wide);
  the legend adds a row of 20 units below for every line it wraps to.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal

from markupsafe import Markup, escape

Number = int | float | Decimal
Series = tuple[str, Sequence[Number | None], str]

#: The series classes that public/css/site.css colours in both schemes.
SERIES_CLASSES = ("series-1", "series-2", "series-3", "series-4", "series-5", "series-6", "series-7", "series-8",
                  "series-revenue", "series-cost")

MAX_INTERVALS = 6
FONT_SIZE = 12
CHAR_WIDTH = 7.5          # a generous average advance of a 12px sans-serif character, for layout estimates
LEGEND_ROW = 20
MAX_LABEL_CHARS = 24      # longer x labels and legend names are cut with an ellipsis (the table has them whole)
MAX_NAME_CHARS = 40

_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
_CLASS = re.compile(r"-?[A-Za-z_][A-Za-z0-9_-]*\Z")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_chart_numbers = itertools.count(1)


def nice_ticks(lo: float, hi: float, *, integer: bool = False, max_intervals: int = MAX_INTERVALS) -> list:
    """Round tick values covering lo..hi: at most max_intervals steps of 1, 2, 2.5 or 5 times a power of ten."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"nice_ticks needs finite bounds, not {lo}..{hi}")
    if lo > hi:
        lo, hi = hi, lo
    if lo == hi:
        if lo == 0:
            return [0, 1] if integer else [0.0, 1.0]
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = hi - lo
    exponent = math.floor(math.log10(span / max_intervals))
    for e in range(exponent - 1, exponent + 3):
        for mantissa in (1, 2, 2.5, 5):
            step = mantissa * 10.0 ** e
            if integer and (step < 1 or step != int(step)):
                continue
            first = math.floor(lo / step + 1e-9)
            last = math.ceil(hi / step - 1e-9)
            if last - first <= max_intervals:
                decimals = max(0, -e + (1 if mantissa == 2.5 else 0))
                ticks = [round(i * step, decimals) for i in range(first, last + 1)]
                if decimals == 0:
                    return [int(t) for t in ticks]
                return [t + 0.0 for t in ticks]  # + 0.0 turns -0.0 into 0.0
    raise AssertionError("unreachable: a step of ten times the raw step always fits")


def table_rows(series: Sequence[Series], labels: Sequence, *,
               format_number: Callable[[Number], str] | None = None) -> list[tuple]:
    """Rows for the table beside a chart: (label, value of series 1, value of series 2, ...), values as given."""
    series = _checked(series, labels)
    rows = []
    for index, label in enumerate(labels):
        values = [values[index] for _name, values, _css in series]
        if format_number is not None:
            values = [None if value is None else format_number(value) for value in values]
        rows.append((label, *values))
    return rows


def line_chart(series: Sequence[Series], labels: Sequence, *, title: str, desc: str | None = None,
               id_prefix: str | None = None, unit: str = "", height: int = 200, width: int = 640,
               format_number: Callable[[Number], str] = str) -> Markup:
    """An inline SVG line chart: one line (and a dot per value) per series over the labels."""
    series = _checked(series, labels)
    values = [v for _name, vs, _css in series for v in vs if v is not None]
    frame = _Frame(values, labels, series, title=title, desc=desc, id_prefix=id_prefix, unit=unit,
                   height=height, width=width, format_number=format_number)
    marks = []
    dots = frame.band >= 8
    for name, vs, css in series:
        runs, run = [], []
        for index, value in enumerate(vs):
            if value is None:
                runs.append(run)
                run = []
            else:
                run.append((index, value))
        runs.append(run)
        group = ["<g>"]
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{_n(frame.x(i))},{_n(frame.y(v))}" for i, v in run)
                group.append(f'<polyline class="chart-line {css}" points="{points}"/>')
            if dots or len(run) == 1:
                for i, v in run:
                    group.append(f'<circle class="chart-point {css}" cx="{_n(frame.x(i))}" cy="{_n(frame.y(v))}" '
                                 f'r="3">{frame.tooltip(i, name, v)}</circle>')
        group.append("</g>")
        marks.append("".join(group))
    return frame.render(marks)


def stacked_bars(series: Sequence[Series], labels: Sequence, *, title: str, desc: str | None = None,
                 id_prefix: str | None = None, unit: str = "", height: int = 200, width: int = 640,
                 format_number: Callable[[Number], str] = str) -> Markup:
    """An inline SVG stacked bar chart: one bar per label, one segment per series (negatives stack below 0)."""
    series = _checked(series, labels)
    columns = [[float(vs[i]) for _name, vs, _css in series if vs[i] is not None] for i in range(len(labels))]
    ups = [sum(v for v in column if v > 0) for column in columns]
    downs = [sum(v for v in column if v < 0) for column in columns]
    values = [v for _name, vs, _css in series for v in vs if v is not None]
    frame = _Frame([*ups, *downs], labels, series, title=title, desc=desc, id_prefix=id_prefix, unit=unit,
                   height=height, width=width, format_number=format_number, integer=_all_integers(values))
    bar_width = max(frame.band * 0.7, 1.0)
    up = [0.0] * len(labels)
    down = [0.0] * len(labels)
    marks = []
    for name, vs, css in series:
        group = ["<g>"]
        for index, value in enumerate(vs):
            if value is None or value == 0:
                continue
            stack = up if value > 0 else down
            base, top = stack[index], stack[index] + float(value)
            stack[index] = top
            y_top, y_base = frame.y(max(base, top)), frame.y(min(base, top))
            group.append(f'<rect class="chart-bar {css}" x="{_n(frame.x(index) - bar_width / 2)}" y="{_n(y_top)}" '
                         f'width="{_n(bar_width)}" height="{_n(y_base - y_top)}">'
                         f"{frame.tooltip(index, name, value)}</rect>")
        group.append("</g>")
        marks.append("".join(group))
    return frame.render(marks)


class _Frame:
    """The axes, scale, labels and legend that both kinds of chart share."""

    def __init__(self, values, labels, series, *, title, desc, id_prefix, unit, height, width, format_number,
                 integer=None):
        if id_prefix is None:
            id_prefix = f"chart-{next(_chart_numbers)}"
        if not _ID.match(id_prefix):
            raise ValueError(f"id_prefix must be letters, digits, - or _, starting with a letter: {id_prefix!r}")
        if width < 100 or height < 60:
            raise ValueError(f"a chart needs at least 100 x 60 units, not {width} x {height}")
        self.id_prefix, self.title, self.unit = id_prefix, title, unit
        self.labels, self.series, self.format_number = [str(label) for label in labels], series, format_number
        self.width, self.height = width, height
        if desc is None:
            names = ", ".join(name for name, _values, _css in series)
            span = f"{self.labels[0]} – {self.labels[-1]}" if len(self.labels) > 1 else "".join(self.labels)
            desc = f"{names}: {span}" if names and span else names or span
        self.desc = desc
        if integer is None:
            integer = _all_integers(values)
        floats = [float(v) for v in values]
        self.ticks = nice_ticks(min([0.0, *floats]), max([0.0, *floats]), integer=integer)
        tick_texts = [self._number(t) for t in self.ticks]
        self.tick_texts = tick_texts
        self.left = 10 + _text_width(max(tick_texts, key=len))
        self.right = width - 10
        self.top = 10 + (FONT_SIZE + 8 if unit else 0)
        self.bottom = height - 26
        if self.bottom - self.top < 20:
            raise ValueError(f"height {height} leaves no room for the plot")
        self.band = (self.right - self.left) / len(self.labels) if self.labels else 0.0

    def x(self, index: int) -> float:
        return self.left + (index + 0.5) * self.band

    def y(self, value) -> float:
        lo, hi = self.ticks[0], self.ticks[-1]
        return self.bottom - (float(value) - lo) / (hi - lo) * (self.bottom - self.top)

    def tooltip(self, index, name, value) -> str:
        return f"<title>{_text(self.labels[index])} · {_text(name)}: {_text(self._number(value))}</title>"

    def _number(self, value) -> str:
        return str(self.format_number(value))

    def render(self, marks: list[str]) -> Markup:
        p = self.id_prefix
        w = self.width
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
                 f'aria-labelledby="{p}-title {p}-desc" viewBox="0 0 {w} {self.height + self._legend_height()}">',
                 f'<title id="{p}-title">{_text(self.title)}</title>',
                 f'<desc id="{p}-desc">{_text(self.desc)}</desc>']
        if self.unit:
            x = max(self.left - 6, _text_width(self.unit) + 2)  # right-aligned with the ticks, unless it is wider
            parts.append(f'<text class="chart-unit" x="{_n(x)}" y="{FONT_SIZE + 2}" text-anchor="end">'
                         f"{_text(self.unit)}</text>")
        parts.append("<g>")
        for tick, text in zip(self.ticks, self.tick_texts, strict=True):
            y = _n(self.y(tick))
            kind = "chart-axis" if tick == 0 else "chart-grid"
            parts.append(f'<line class="{kind}" x1="{_n(self.left)}" y1="{y}" x2="{_n(self.right)}" y2="{y}"/>')
            parts.append(f'<text class="chart-tick" x="{_n(self.left - 6)}" y="{y}" dy="0.35em" text-anchor="end">'
                         f"{_text(text)}</text>")
        every = self._label_every()
        for index, label in enumerate(self.labels):
            if index % every == 0:
                parts.append(f'<text class="chart-label" x="{_n(self.x(index))}" y="{_n(self.bottom + 18)}" '
                             f'text-anchor="middle">{_text(_cut(label, MAX_LABEL_CHARS))}</text>')
        parts.append("</g>")
        parts.extend(marks)
        parts.extend(self._legend())
        parts.append("</svg>")
        return Markup("".join(parts))

    def _label_every(self) -> int:
        if not self.labels:
            return 1
        needed = max(_text_width(_cut(label, MAX_LABEL_CHARS)) for label in self.labels) + 8
        for every in _steps():
            if every * self.band >= needed or every >= len(self.labels):
                return every
        raise AssertionError("unreachable")

    def _legend_items(self) -> list[tuple[int, float, str, str]]:
        """(row, x, name, class) of each legend entry, wrapping to a new row when the width runs out."""
        items, row, x = [], 0, self.left
        for name, _values, css in self.series:
            name = _cut(str(name), MAX_NAME_CHARS)
            item_width = 14 + _text_width(name) + 12
            if x > self.left and x + item_width > self.width:
                row, x = row + 1, self.left
            items.append((row, x, name, css))
            x += item_width
        return items

    def _legend_height(self) -> int:
        items = self._legend_items()
        return (items[-1][0] + 1) * LEGEND_ROW + 4 if items else 0

    def _legend(self) -> list[str]:
        items = self._legend_items()
        if not items:
            return []
        parts = ['<g class="chart-legend">']
        for row, x, name, css in items:
            y = self.height + 4 + row * LEGEND_ROW
            parts.append(f'<rect class="chart-swatch {css}" x="{_n(x)}" y="{_n(y + 4)}" width="10" height="10"/>')
            parts.append(f'<text x="{_n(x + 14)}" y="{_n(y + 9)}" dy="0.35em">{_text(name)}</text>')
        parts.append("</g>")
        return parts


def _checked(series: Sequence[Series], labels: Sequence) -> list[Series]:
    """The series as a list, after checking their lengths, classes and values."""
    checked = []
    for item in series:
        name, values, css = item
        values = list(values)
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} labels")
        if not isinstance(css, str) or not _CLASS.match(css):
            raise ValueError(f"series {name!r} needs one CSS class name, not {css!r}")
        for value in values:
            if value is not None and not math.isfinite(value):
                raise ValueError(f"series {name!r} has a value that is not a finite number: {value!r}")
        checked.append((name, values, css))
    return checked


def _all_integers(values) -> bool:
    return all(float(v).is_integer() for v in values)


def _steps():
    """1, 2, 5, 10, 20, 50, 100...: how many labels apart the x labels are."""
    for power in itertools.count():
        for step in (1, 2, 5):
            yield step * 10 ** power


def _text(value) -> str:
    """Escaped text without the characters XML 1.0 forbids."""
    return str(escape(_XML_INVALID.sub("", str(value))))


def _text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _n(value: float) -> str:
    """A coordinate with at most two decimals."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
