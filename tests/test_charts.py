"""The server-rendered SVG charts: valid, accessible, CSP-clean SVG whose colours all come from site.css."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from markupsafe import Markup

from services import charts
from services.charts import line_chart, nice_ticks, stacked_bars, table_rows
from tests.conftest import ROOT

SVG = "{http://www.w3.org/2000/svg}"
CSS = (ROOT / "public" / "css" / "site.css").read_text(encoding="utf-8")
MARKER = "/* Charts (services/charts.py) */"

DAYS = [f"2026-05-{day:02d}" for day in range(1, 31)]
REVENUE = [10 + day * 3.5 for day in range(30)]
COST = [4 + day * 1.25 for day in range(30)]
MARGIN = [-50 + day * 12 for day in range(30)]


def parse(markup) -> ET.Element:
    assert isinstance(markup, Markup)
    return ET.fromstring(str(markup))


def classes(element: ET.Element) -> list[str]:
    return element.get("class", "").split()


def by_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [element for element in root.iter() if name in classes(element)]


def sample_charts() -> list[Markup]:
    """Charts that between them use every kind of element and every series class the CSS colours."""
    every = [(css, [day % 7 for day in range(30)], css) for css in charts.SERIES_CLASSES]
    return [
        line_chart([("Revenue", REVENUE, "series-revenue"), ("Upstream cost", COST, "series-cost"),
                    ("Margin", MARGIN, "series-3")], DAYS, title="Money", unit="€", id_prefix="money"),
        stacked_bars(every, DAYS, title="Images", unit="images", id_prefix="images"),
        line_chart([("One", [5], "series-1")], ["today"], title="One point", id_prefix="one"),
        stacked_bars([("Zero", [0, 0, 0], "series-2")], ["a", "b", "c"], title="Nothing", id_prefix="zero"),
        stacked_bars([], [], title="Empty", id_prefix="empty"),
    ]


# ---------------------------------------------------------------- the scale


@pytest.mark.parametrize(("lo", "hi", "integer", "expected"), [
    (0, 7, True, [0, 2, 4, 6, 8]),
    (0, 1234, True, [0, 250, 500, 750, 1000, 1250]),
    (-50, 300, True, [-100, 0, 100, 200, 300]),
    (0, 0, True, [0, 1]),
    (0, 0, False, [0.0, 1.0]),
    (0, 3, True, [0, 1, 2, 3]),
    (0, 100, True, [0, 20, 40, 60, 80, 100]),
    (0, 0.7, False, [0.0, 0.2, 0.4, 0.6, 0.8]),
    (0, 12.5, False, [0.0, 2.5, 5.0, 7.5, 10.0, 12.5]),
    (-0.3, 0.05, False, [-0.3, -0.2, -0.1, 0.0, 0.1]),
    (0, 1.5, True, [0, 1, 2]),
])
def test_nice_ticks(lo, hi, integer, expected):
    ticks = nice_ticks(lo, hi, integer=integer)
    assert ticks == expected
    assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) - 1 <= charts.MAX_INTERVALS
    if integer:
        assert all(isinstance(tick, int) for tick in ticks)


def test_nice_ticks_are_evenly_spaced_round_numbers_for_many_ranges():
    for lo, hi in [(0, 1), (0, 9), (0, 11), (0, 99.9), (-7, 3), (0, 123456789), (3, 4), (-1e-3, 2e-3), (250, 250)]:
        ticks = nice_ticks(lo, hi)
        steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:], strict=False)}
        assert len(steps) == 1, (lo, hi, ticks)
        step = steps.pop()
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5)), (lo, hi, ticks)
        assert ticks[0] <= min(lo, hi) and ticks[-1] >= max(lo, hi)


def test_all_zero_data_and_one_point_still_make_an_axis():
    zero = parse(stacked_bars([("Zero", [0, 0, 0], "series-2")], ["a", "b", "c"], title="Nothing"))
    assert [t.text for t in by_class(zero, "chart-tick")] == ["0", "1"]
    assert by_class(zero, "chart-bar") == []
    one = parse(line_chart([("One", [5], "series-1")], ["today"], title="One"))
    assert len(by_class(one, "chart-point")) == 1 and by_class(one, "chart-line") == []
    assert [t.text for t in by_class(one, "chart-tick")][-1] == "5"


def test_negative_values_extend_the_axis_below_zero():
    root = parse(line_chart([("Margin", [-50, 120, 300], "series-3")], ["a", "b", "c"], title="Margin"))
    assert [t.text for t in by_class(root, "chart-tick")] == ["-100", "0", "100", "200", "300"]
    zero_line, = by_class(root, "chart-axis")
    grid = {float(line.get("y1")) for line in by_class(root, "chart-grid")}
    assert min(grid) < float(zero_line.get("y1")) < max(grid)


# ---------------------------------------------------------------- geometry


def test_stacked_bar_heights_are_proportional_to_the_values():
    root = parse(stacked_bars([("done", [10, 20], "series-1"), ("failed", [5, 0], "series-2")], ["d1", "d2"],
                              title="Images"))
    assert [t.text for t in by_class(root, "chart-tick")] == ["0", "5", "10", "15", "20"]
    done = by_class(root, "series-1")
    failed = by_class(root, "series-2")
    done_d1, done_d2 = (el for el in done if el.tag == SVG + "rect" and "chart-bar" in classes(el))
    failed_d1, = (el for el in failed if el.tag == SVG + "rect" and "chart-bar" in classes(el))
    height = {name: float(el.get("height")) for name, el in
              [("done_d1", done_d1), ("done_d2", done_d2), ("failed_d1", failed_d1)]}
    assert height["done_d1"] == pytest.approx(height["done_d2"] / 2)
    assert height["failed_d1"] == pytest.approx(height["done_d2"] / 4)
    # the failed segment sits on top of the done one, and the top of the 20 bar is the 20 grid line
    assert float(failed_d1.get("y")) + height["failed_d1"] == pytest.approx(float(done_d1.get("y")))
    grid_20 = next(line for line in by_class(root, "chart-grid")
                   if float(line.get("y1")) == pytest.approx(float(done_d2.get("y"))))
    assert grid_20 is not None
    zero, = by_class(root, "chart-axis")
    assert float(done_d1.get("y")) + height["done_d1"] == pytest.approx(float(zero.get("y1")))
    # the bars' tooltips carry the formatted value
    assert done_d2.find(SVG + "title").text == "d2 · done: 20"


def test_negative_bar_segments_hang_below_zero():
    root = parse(stacked_bars([("in", [30], "series-1"), ("out", [-10], "series-2")], ["d"], title="Flow"))
    zero_y = float(by_class(root, "chart-axis")[0].get("y1"))
    up, = [el for el in by_class(root, "chart-bar") if "series-1" in classes(el)]
    down, = [el for el in by_class(root, "chart-bar") if "series-2" in classes(el)]
    assert float(up.get("y")) + float(up.get("height")) == pytest.approx(zero_y)
    assert float(down.get("y")) == pytest.approx(zero_y)
    assert float(down.get("height")) == pytest.approx(float(up.get("height")) / 3)


def test_line_points_sit_on_their_values():
    root = parse(line_chart([("Revenue", [0, 50, 100], "series-revenue")], ["a", "b", "c"], title="Revenue"))
    ys = [float(point.get("cy")) for point in by_class(root, "chart-point")]
    assert ys[0] - ys[1] == pytest.approx(ys[1] - ys[2]) and ys[0] > ys[1] > ys[2]
    ticks = {t.text: float(t.get("y")) for t in by_class(root, "chart-tick")}
    assert ticks["0"] == pytest.approx(ys[0]) and ticks["100"] == pytest.approx(ys[2])
    xs = [float(point.get("cx")) for point in by_class(root, "chart-point")]
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1])
    assert xs[1] > xs[0]
    line, = by_class(root, "chart-line")
    assert line.get("points").split() == [f"{x:g},{y:g}" for x, y in zip(xs, ys, strict=True)]


def test_a_missing_value_breaks_the_line():
    root = parse(line_chart([("Cost", [1, 2, None, 4, 5], "series-cost")], list("abcde"), title="Cost"))
    assert len(by_class(root, "chart-line")) == 2
    assert len(by_class(root, "chart-point")) == 4


def test_decimals_and_a_format_number_callable():
    def spanish(value):
        return f"{value:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")

    root = parse(line_chart([("Revenue", [Decimal("1234.5"), Decimal("99.99")], "series-revenue")], ["a", "b"],
                            title="Revenue", format_number=spanish))
    assert by_class(root, "chart-tick")[-1].text == "1.250,00"
    assert by_class(root, "chart-point")[0].find(SVG + "title").text == "a · Revenue: 1.234,50"


def test_x_labels_are_thinned_so_they_do_not_overlap():
    root = parse(line_chart([("Revenue", REVENUE, "series-revenue")], DAYS, title="Revenue"))
    shown = by_class(root, "chart-label")
    assert [label.text for label in shown] == DAYS[::5]
    xs = [float(label.get("x")) for label in shown]
    widest = max(len(label.text) for label in shown) * charts.CHAR_WIDTH
    assert min(b - a for a, b in zip(xs, xs[1:], strict=False)) >= widest
    few = parse(stacked_bars([("n", [1, 2, 3], "series-1")], ["Mon", "Tue", "Wed"], title="Few"))
    assert [label.text for label in by_class(few, "chart-label")] == ["Mon", "Tue", "Wed"]


def test_the_svg_scales_with_its_viewbox_and_has_no_pixel_size():
    for markup in sample_charts():
        root = parse(markup)
        assert root.tag == SVG + "svg" and "chart" in classes(root)
        assert root.get("width") is None and root.get("height") is None
        x, y, width, height = (float(n) for n in root.get("viewBox").split())
        assert (x, y) == (0, 0) and width == 640 and height >= 200
    small = parse(line_chart([("a", [1], "series-1")], ["x"], title="t", width=320, height=120))
    assert small.get("viewBox").split()[2:] == ["320", str(120 + charts.LEGEND_ROW + 4)]


# ---------------------------------------------------------------- accessibility


def test_role_title_and_desc_label_the_chart():
    root = parse(line_chart([("Revenue", REVENUE, "series-revenue"), ("Cost", COST, "series-cost")], DAYS,
                            title="Revenue and cost", desc="Last 30 days; the table has every number.",
                            id_prefix="money"))
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "money-title money-desc"
    title, desc = root[0], root[1]
    assert title.tag == SVG + "title" and title.get("id") == "money-title" and title.text == "Revenue and cost"
    assert desc.tag == SVG + "desc" and desc.get("id") == "money-desc"
    assert desc.text == "Last 30 days; the table has every number."
    default = parse(line_chart([("Revenue", REVENUE, "series-revenue"), ("Cost", COST, "series-cost")], DAYS,
                               title="Money"))
    assert default[1].text == "Revenue, Cost: 2026-05-01 – 2026-05-30"


def test_ids_are_unique_across_charts_on_one_page():
    series = [("Revenue", REVENUE, "series-revenue")]
    named = [line_chart(series, DAYS, title="A", id_prefix="revenue"),
             stacked_bars(series, DAYS, title="B", id_prefix="images")]
    unnamed = [line_chart(series, DAYS, title="C"), stacked_bars(series, DAYS, title="D")]
    page = ET.fromstring("<div>" + "".join(str(m) for m in [*named, *unnamed]) + "</div>")
    ids = [element.get("id") for element in page.iter() if element.get("id")]
    assert len(ids) == 8 and len(set(ids)) == 8
    for svg in page:
        for ref in svg.get("aria-labelledby").split():
            assert ref in ids


def test_a_bad_id_prefix_is_refused():
    for prefix in ["", "1chart", "a b", 'x"y', "<x>"]:
        with pytest.raises(ValueError):
            line_chart([], [], title="t", id_prefix=prefix)


def test_legend_lists_every_series_with_its_class():
    names = ["done", "failed: refused", "failed: upstream", "cancelled", "expired", "a much longer series name"]
    series = [(name, [1] * 30, f"series-{i + 1}") for i, name in enumerate(names)]
    root = parse(stacked_bars(series, DAYS, title="Images"))
    legend, = by_class(root, "chart-legend")
    assert [text.text for text in legend.iter(SVG + "text")] == names
    swatches = [el for el in legend.iter(SVG + "rect")]
    assert [classes(el) for el in swatches] == [["chart-swatch", f"series-{i + 1}"] for i in range(len(names))]
    _, _, width, _ = (float(n) for n in root.get("viewBox").split())
    assert all(float(el.get("x")) + 10 <= width for el in swatches)


def test_a_long_legend_wraps_to_more_rows():
    series = [(f"series number {i}", [1], f"series-{i}") for i in range(1, 7)]
    root = parse(line_chart(series, ["x"], title="t", width=320))
    rows = {el.get("y") for el in by_class(root, "chart-swatch")}
    assert len(rows) > 1
    height = float(root.get("viewBox").split()[3])
    assert max(float(y) for y in rows) + 10 <= height


def test_table_rows_match_the_chart():
    series = [("Revenue", [1.5, None, 3], "series-revenue"), ("Cost", [1, 2, 0], "series-cost")]
    assert table_rows(series, ["a", "b", "c"]) == [("a", 1.5, 1), ("b", None, 2), ("c", 3, 0)]
    assert table_rows(series, ["a", "b", "c"], format_number=lambda v: f"{v}!") == [
        ("a", "1.5!", "1!"), ("b", None, "2!"), ("c", "3!", "0!")]
    assert table_rows([], []) == []


# ---------------------------------------------------------------- escaping and the CSP


def test_text_from_data_is_escaped():
    root = parse(stacked_bars([("<b>bold</b> & co", [1, 2], "series-1")], ["<script>", "it's \"quoted\"\x00"],
                              title="A <title> & more", desc="</desc><script>alert(1)</script>", unit="<u>"))
    assert all(element.tag not in (SVG + "script", SVG + "b", SVG + "u") for element in root.iter())
    texts = [element.text for element in root.iter()]
    assert "<script>" in texts and "A <title> & more" in texts and "</desc><script>alert(1)</script>" in texts
    assert "<b>bold</b> & co" in texts and "<u>" in texts
    assert "it's \"quoted\"" in texts  # the NUL that XML cannot hold is dropped
    assert "<script>" not in str(stacked_bars([], [], title="<script>"))


def test_no_inline_style_script_or_event_handlers():
    forbidden_tags = {"style", "script", "foreignObject", "a", "use", "image", "iframe"}
    paint_attributes = {"style", "fill", "stroke", "color", "stop-color", "flood-color", "href", "opacity"}
    for markup in sample_charts():
        text = str(markup)
        assert "style=" not in text and "<style" not in text and "<script" not in text
        for element in ET.fromstring(text).iter():
            assert element.tag.removeprefix(SVG) not in forbidden_tags
            for name in element.attrib:
                local = name.rsplit("}", 1)[-1].lower()
                assert not local.startswith("on"), (element.tag, name)
                assert local not in paint_attributes, (element.tag, name)


def test_bad_series_are_refused():
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        line_chart([("a", [1, 2], "series-1")], ["x", "y", "z"], title="t")
    for css in ["", "two classes", 'x" onload="alert(1)', None]:
        with pytest.raises(ValueError):
            stacked_bars([("a", [1], css)], ["x"], title="t")
    for bad in [math.nan, math.inf, Decimal("NaN")]:
        with pytest.raises(ValueError):
            line_chart([("a", [1, bad], "series-1")], ["x", "y"], title="t")


# ---------------------------------------------------------------- the CSS


def css_block(text: str, opening: str) -> str:
    """The body of the first block that starts with opening (a selector or an at-rule), braces matched."""
    start = text.index(opening)
    depth, i = 0, text.index("{", start)
    body_start = i + 1
    while True:
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[body_start:i]
        i += 1


def chart_section() -> str:
    assert CSS.count(MARKER) == 1
    return CSS[CSS.index(MARKER):]


def series_colours(text: str) -> dict[str, str]:
    return dict(re.findall(r"\.(series-[\w-]+)\s*\{\s*--series:\s*(#[0-9a-fA-F]{6})\s*;\s*\}", text))


def variable(block: str, name: str) -> str:
    return re.search(rf"{name}:\s*(#[0-9a-fA-F]{{6}})\s*;", block).group(1)


def contrast(a: str, b: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted([luminance(a), luminance(b)], reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_css_section_defines_every_class_the_module_emits():
    section = chart_section()
    emitted = {name for markup in sample_charts() for element in parse(markup).iter() for name in classes(element)}
    assert {"chart", "chart-grid", "chart-axis", "chart-tick", "chart-label", "chart-unit", "chart-line",
            "chart-point", "chart-bar", "chart-legend", "chart-swatch", *charts.SERIES_CLASSES} <= emitted
    for name in emitted:
        assert re.search(r"\." + re.escape(name) + r"(?![\w-])", section), f".{name} is not in the charts section"


def test_every_series_class_has_readable_colours_in_both_schemes():
    section = chart_section()
    dark_block = css_block(section, "@media (prefers-color-scheme: dark)")
    light = series_colours(section.replace(dark_block, ""))
    dark = series_colours(dark_block)
    root_light = css_block(CSS, ":root")
    root_dark = css_block(css_block(CSS, "@media (prefers-color-scheme: dark)"), ":root")
    for name in charts.SERIES_CLASSES:
        assert name in light, f".{name} has no light colour"
        assert name in dark, f".{name} has no dark colour"
        assert light[name].lower() != dark[name].lower(), f".{name} is the same in both schemes"
        for scheme, colour, root in [("light", light[name], root_light), ("dark", dark[name], root_dark)]:
            for background in ("--bg", "--surface"):
                ratio = contrast(colour, variable(root, background))
                assert ratio >= 3, f".{name} {colour} on {background} in the {scheme} scheme: {ratio:.2f}:1"
    # the marks paint with --series, and nothing in the section is a hard-coded colour outside the palette rules
    assert re.search(r"\.chart-bar\s*\{[^}]*fill:\s*var\(--series", section)
    assert re.search(r"\.chart-line\s*\{[^}]*stroke:\s*var\(--series", section)
    text_rule = css_block(section, ".chart text")
    assert "var(--muted)" in text_rule or "var(--text)" in text_rule
