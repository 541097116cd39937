"""The overview's charts: escaped text, a name and a description, whole-number axes for counts,
every month shown (empty ones as 0), and something sensible when there is nothing to draw."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from portal.public import charts
from portal.public.countries import country_name

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - our own output


def test_bar_chart_is_valid_svg_with_its_name_description_and_escaped_labels() -> None:
    svg = charts.bar_chart_svg(
        title="Partners <by> country",
        desc="Germany: 2 & Japan: 1",
        rows=[("Germany", 2), ('<script>"x"</script>', 1)],
        unit="partners",
        id_prefix="c",
    )
    root = _parse(svg)
    assert root.get("role") == "img" and root.get("aria-labelledby") == "c-title"
    assert root.find(f"{SVG}title").text == "Partners <by> country"  # type: ignore[union-attr]
    assert root.find(f"{SVG}desc").text == "Germany: 2 & Japan: 1"  # type: ignore[union-attr]
    assert "<script>" not in svg
    assert len(root.findall(f"{SVG}rect")) == 1 + 2  # the background and one bar per row
    assert "style=" not in svg


def test_count_axes_have_whole_steps() -> None:
    assert charts.axis(1, whole=True) == (1.0, 1.0)
    assert charts.axis(3, whole=True) == (1.0, 3.0)
    assert charts.axis(0, whole=True) == (1.0, 1.0)
    assert charts.axis(1234, whole=False)[0] in (250.0, 500.0)
    svg = charts.bar_chart_svg(title="t", desc="d", rows=[("a", 1)], unit="u")
    ticks = [t.text for t in _parse(svg).iter(f"{SVG}text")]
    assert "0.2" not in ticks and "0.5" not in ticks


def test_empty_charts_say_so() -> None:
    for svg in (
        charts.bar_chart_svg(title="t", desc="d", rows=[], unit="u"),
        charts.column_chart_svg(title="t", desc="d", rows=[], unit="u"),
    ):
        assert "Nothing to show yet." in svg
        _parse(svg)


def test_column_chart_labels_at_most_some_months() -> None:
    rows = [(f"M{i}", float(i)) for i in range(36)]
    svg = charts.column_chart_svg(title="t", desc="d", rows=rows, unit="GPU-hours", max_labels=8)
    root = _parse(svg)
    labels = [t.text for t in root.iter(f"{SVG}text") if (t.text or "").startswith("M")]
    assert 1 < len(labels) <= 8
    assert len(root.findall(f"{SVG}rect")) == 1 + 35  # month 0 has no column


def test_monthly_totals_fill_the_months_between() -> None:
    rows = charts.monthly_totals([(2026, 11, 5), (2026, 9, 10)], until=dt.date(2027, 1, 15))
    assert rows == [
        (dt.date(2026, 9, 1), 10.0),
        (dt.date(2026, 10, 1), 0.0),
        (dt.date(2026, 11, 1), 5.0),
        (dt.date(2026, 12, 1), 0.0),
        (dt.date(2027, 1, 1), 0.0),
    ]
    assert charts.monthly_totals([], until=dt.date(2027, 1, 1)) == []


def test_country_names_come_from_the_shipped_ror_records() -> None:
    assert country_name("DE") == "Germany"
    assert country_name("jp") == "Japan"
    # A code none of the records has stays a code: no name is made up.
    assert country_name("XX") == "XX"
