"""Simple charts for the program overview, drawn on the server as SVG in the way of
``portal/allocations/charts.py`` (whose scale, number format and colours they reuse): no
JavaScript, no inline style (the Content Security Policy allows none), every text escaped, a
``<title>`` and ``<desc>`` naming and describing each chart, and a table of the same figures
beside it on the page (the chart's text alternative).

- :func:`bar_chart_svg`: one horizontal bar per labelled value (partners by country, outputs by
  kind);
- :func:`column_chart_svg`: one column per labelled value along an axis (GPU-hours per month).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from html import escape

from portal.allocations.charts import (
    ACTUAL,
    FONT,
    GRID,
    INK,
    MAX_MONTH_LABELS,
    WIDTH,
    hours_text,
    months_between,
    nice_step,
)

#: Longest label drawn whole beside a bar (the table has every label whole).
MAX_LABEL = 26


def _t(text: object) -> str:
    """``text`` safe inside an SVG element or attribute value."""
    return escape(str(text), quote=True)


def _n(x: float) -> str:
    """A coordinate: one decimal at most."""
    return f"{x:.1f}".removesuffix(".0")


def _short(label: str, most: int = MAX_LABEL) -> str:
    return label if len(label) <= most else label[: most - 1].rstrip() + "…"


def number_text(value: float) -> str:
    """A figure as charts and tables show it (thousands separators; see ``hours_text``)."""
    return hours_text(value)


def axis(top: float, *, whole: bool) -> tuple[float, float]:
    """(step, top of the axis) for values up to ``top``; ``whole``: counts, so whole steps."""
    step = nice_step(max(top, 1.0))
    if whole:
        step = max(float(math.ceil(step)), 1.0)
    return step, step * max(math.ceil(max(top, 1.0) / step), 1)


def _open(title: str, desc: str, width: int, height: int, id_prefix: str) -> list[str]:
    """The root element (scaling down with a narrow screen), title, description, background."""
    p = _t(id_prefix)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="img-fluid" role="img" '
        f'aria-labelledby="{p}-title" aria-describedby="{p}-desc" '
        f'font-family="{_t(FONT)}" font-size="12" fill="{INK}">',
        f'<title id="{p}-title">{_t(title)}</title>',
        f'<desc id="{p}-desc">{_t(desc)}</desc>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]


def bar_chart_svg(
    *,
    title: str,
    desc: str,
    rows: Sequence[tuple[str, float]],
    unit: str,
    id_prefix: str = "bars",
    whole: bool = True,
    width: int = WIDTH,
) -> str:
    """Horizontal bars, one per row (label, value), on a common axis in ``unit``; each bar ends
    with its figure. ``whole``: the values are counts (whole-number ticks)."""
    label_w, right_m, top_m, bottom_m = 190, 56, 16, 40
    row_h, bar_h = 28, 18
    plot_w = width - label_w - right_m
    height = top_m + max(len(rows), 1) * row_h + bottom_m
    step, x_top = axis(max((max(v, 0.0) for _, v in rows), default=0.0), whole=whole)

    def x(value: float) -> float:
        return label_w + plot_w * min(max(value, 0.0), x_top) / x_top

    out = _open(title, desc, width, height, id_prefix)
    base = top_m + max(len(rows), 1) * row_h
    tick = 0.0
    while tick <= x_top + step / 2:
        xx = x(tick)
        out.append(
            f'<line x1="{_n(xx)}" y1="{top_m}" x2="{_n(xx)}" y2="{base}" stroke="{GRID}" '
            'stroke-width="1"/>'
        )
        out.append(
            f'<text x="{_n(xx)}" y="{base + 16}" text-anchor="middle">{_t(number_text(tick))}</text>'
        )
        tick += step
    out.append(f'<text x="{label_w + plot_w}" y="{base + 32}" text-anchor="end">{_t(unit)}</text>')
    out.append(
        f'<line x1="{label_w}" y1="{top_m}" x2="{label_w}" y2="{base}" stroke="{INK}" '
        'stroke-width="1"/>'
    )
    if not rows:
        out.append(f'<text x="{label_w + 8}" y="{top_m + 18}">Nothing to show yet.</text>')
    for i, (label, value) in enumerate(rows):
        top = top_m + i * row_h + (row_h - bar_h) / 2
        out.append(
            f'<text x="{label_w - 8}" y="{_n(top + bar_h - 4)}" text-anchor="end">'
            f"{_t(_short(label))}</text>"
        )
        end = x(value)
        if value > 0:
            out.append(
                f'<rect x="{label_w}" y="{_n(top)}" width="{_n(max(end - label_w, 0.5))}" '
                f'height="{bar_h}" fill="{ACTUAL}" stroke="{INK}" stroke-width="0.5">'
                f"<title>{_t(label)}: {_t(number_text(value))} {_t(unit)}</title></rect>"
            )
        out.append(
            f'<text x="{_n(end + 6)}" y="{_n(top + bar_h - 4)}">{_t(number_text(value))}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def column_chart_svg(
    *,
    title: str,
    desc: str,
    rows: Sequence[tuple[str, float]],
    unit: str,
    id_prefix: str = "columns",
    whole: bool = True,
    max_labels: int = MAX_MONTH_LABELS,
    width: int = WIDTH,
    height: int = 320,
) -> str:
    """Vertical columns, one per row (label, value) from left to right, on an axis in ``unit``;
    at most ``max_labels`` labels along the bottom (evenly spread; the table has them all)."""
    left_m, right_m, top_m, bottom_m = 78, 24, 24, 56
    plot_w, plot_h = width - left_m - right_m, height - top_m - bottom_m
    step, y_top = axis(max((max(v, 0.0) for _, v in rows), default=0.0), whole=whole)
    slot = plot_w / max(len(rows), 1)
    col_w = max(min(slot * 0.7, 48.0), 1.0)

    def y(value: float) -> float:
        return top_m + plot_h * (1 - min(max(value, 0.0), y_top) / y_top)

    out = _open(title, desc, width, height, id_prefix)
    base = top_m + plot_h
    tick = 0.0
    while tick <= y_top + step / 2:
        yy = y(tick)
        out.append(
            f'<line x1="{left_m}" y1="{_n(yy)}" x2="{left_m + plot_w}" y2="{_n(yy)}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{left_m - 8}" y="{_n(yy + 4)}" text-anchor="end">'
            f"{_t(number_text(tick))}</text>"
        )
        tick += step
    out.append(
        f'<text x="16" y="{_n(top_m + plot_h / 2)}" text-anchor="middle" '
        f'transform="rotate(-90 16 {_n(top_m + plot_h / 2)})">{_t(unit)}</text>'
    )
    out.append(
        f'<line x1="{left_m}" y1="{base}" x2="{left_m + plot_w}" y2="{base}" stroke="{INK}" '
        'stroke-width="1"/>'
    )
    if not rows:
        out.append(f'<text x="{left_m + 8}" y="{top_m + 18}">Nothing to show yet.</text>')
    every = max(math.ceil(len(rows) / max(max_labels, 1)), 1)
    for i, (label, value) in enumerate(rows):
        centre = left_m + slot * (i + 0.5)
        if value > 0:
            top = y(value)
            out.append(
                f'<rect x="{_n(centre - col_w / 2)}" y="{_n(top)}" width="{_n(col_w)}" '
                f'height="{_n(max(base - top, 0.5))}" fill="{ACTUAL}" stroke="{INK}" '
                f'stroke-width="0.5"><title>{_t(label)}: {_t(number_text(value))} {_t(unit)}'
                "</title></rect>"
            )
        if i % every == 0:
            out.append(
                f'<text x="{_n(centre)}" y="{base + 18}" text-anchor="middle">'
                f"{_t(_short(label, 12))}</text>"
            )
    out.append("</svg>")
    return "\n".join(out)


def monthly_totals(
    totals: Iterable[tuple[int, int, float]], *, until: dt.date
) -> list[tuple[dt.date, float]]:
    """(first day of the month, total) for every month from the first in ``totals`` ((year,
    month, total) in any order, a month at most once) to ``until``'s month; months without a
    total show 0. Nothing when ``totals`` is empty."""
    by_month: dict[dt.date, float] = {}
    for year, month, total in totals:
        key = dt.date(int(year), int(month), 1)
        by_month[key] = by_month.get(key, 0.0) + float(total)
    if not by_month:
        return []
    last = max(max(by_month), until.replace(day=1))
    return [(m, by_month.get(m, 0.0)) for m in months_between(min(by_month), last)]
