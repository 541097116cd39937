"""Charts drawn on the server as SVG — no JavaScript, no library from a CDN — and the figures
behind them, which the pages also show as a table (the charts' text alternative).

Every text put into a chart is escaped; a chart has a ``<title>`` and a ``<desc>`` (its accessible
name and description); lines differ by dash pattern as well as by colour, so the chart reads in
grey too. Styling is done with presentation attributes only: the portal's Content Security Policy
allows no inline style.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

#: Size of the burn-down chart (user units; the image scales to its container).
WIDTH, HEIGHT = 720, 320
#: Colours: ink for text and axes; the used/actual series; the plan; grid lines.
INK = "#1b2330"
ACTUAL = "#1f5a7c"
PLAN = "#6c757d"
GRID = "#dbe1e8"
#: The fills of stacked bars, darkest first (each segment is outlined, so the palest shows too).
BAR_FILLS = ("#1f5a7c", "#61a5c2", "#e6edf3")
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
#: At most this many month labels along the time axis (the ticks stay monthly).
MAX_MONTH_LABELS = 8


def _t(text: object) -> str:
    """``text`` safe inside an SVG element or attribute value."""
    return escape(str(text), quote=True)


def _n(x: float) -> str:
    """A coordinate: one decimal at most."""
    return f"{x:.1f}".removesuffix(".0")


def hours_text(value: float) -> str:
    """GPU-hours as shown in charts and tables: whole hours with thousands separators (a part of
    an hour that is not zero shows as one decimal under 10)."""
    if 0 < abs(value) < 10 and value != int(value):
        return f"{value:,.1f}"
    return f"{round(value):,}"


def nice_step(top: float, ticks: int = 4) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) that divides ``top`` into about
    ``ticks`` parts."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= raw:
            return float(factor * magnitude)
    return float(10 * magnitude)  # pragma: no cover - the loop always returns


def first_of_next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)


def months_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """The first day of each month from ``start``'s month to ``end``'s month (both included)."""
    out = []
    month = start.replace(day=1)
    while month <= end:
        out.append(month)
        month = first_of_next_month(month)
    return out


def _open(
    title: str, desc: str, width: int, height: int, id_prefix: str, *, inline: bool = False
) -> list[str]:
    """The opening of a chart: its root element, title, description and white background.
    ``inline``: drawn inside a page, where it shrinks with a narrow screen (Bootstrap's
    ``img-fluid``) and never grows past its size."""
    fluid = ' class="img-fluid"' if inline else ""
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}"{fluid} role="img" '
        f'aria-labelledby="{_t(id_prefix)}-title" aria-describedby="{_t(id_prefix)}-desc" '
        f'font-family="{_t(FONT)}" font-size="12" fill="{INK}">',
        f'<title id="{_t(id_prefix)}-title">{_t(title)}</title>',
        f'<desc id="{_t(id_prefix)}-desc">{_t(desc)}</desc>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]


# --- burn-down ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthRow:
    """One month of an allocation's burn-down (the chart's text alternative). The actual figures
    are None for months that have not begun."""

    month: dt.date
    used: float | None
    used_to_date: float | None
    left: float | None
    planned_left: float


def planned_left(hours: float, starts_on: dt.date, ends_on: dt.date, day: dt.date) -> float:
    """The hours left at the start of ``day`` if they were used evenly from ``starts_on`` (all of
    them left) to ``ends_on`` (none left): the burn-down's straight line."""
    total = max((ends_on - starts_on).days, 1)
    elapsed = min(max((day - starts_on).days, 0), total)
    return hours * (1 - elapsed / total)


def monthly(
    hours: float,
    starts_on: dt.date,
    ends_on: dt.date,
    daily: Iterable[tuple[dt.date, float]],
    today: dt.date,
) -> list[MonthRow]:
    """Per month of the period: the hours used in it, used to its end, left at its end, and what
    the plan leaves at its end. Usage dated before the period counts in its first month, after
    it in its last."""
    months = months_between(starts_on, max(ends_on - dt.timedelta(days=1), starts_on))
    used_in = dict.fromkeys(months, 0.0)
    for day, used in daily:
        month = min(max(day.replace(day=1), months[0]), months[-1])
        used_in[month] += used
    rows, running = [], 0.0
    for month in months:
        end = min(first_of_next_month(month), ends_on)
        plan = planned_left(hours, starts_on, ends_on, end)
        if month > today:
            rows.append(MonthRow(month, None, None, None, plan))
            continue
        running += used_in[month]
        rows.append(MonthRow(month, used_in[month], running, max(hours - running, 0.0), plan))
    return rows


def burndown_svg(
    *,
    title: str,
    desc: str,
    hours: float,
    starts_on: dt.date,
    ends_on: dt.date,
    daily: Sequence[tuple[dt.date, float]],
    today: dt.date,
    id_prefix: str = "burndown",
) -> str:
    """The burn-down of an allocation: GPU-hours left over time (``hours`` less the hours used,
    from ``daily``: (day, hours used that day), in any order) against the straight line from all
    ``hours`` at ``starts_on`` to none at ``ends_on``; a marker at ``today`` within the period."""
    left_m, right_m, top_m, bottom_m = 78, 40, 44, 48
    plot_w, plot_h = WIDTH - left_m - right_m, HEIGHT - top_m - bottom_m
    total_days = max((ends_on - starts_on).days, 1)
    step = nice_step(max(hours, 1))
    y_top = step * max(math.ceil(max(hours, 1) / step), 1)

    def x(day: dt.date) -> float:
        days = min(max((day - starts_on).days, 0), total_days)
        return left_m + plot_w * days / total_days

    def y(value: float) -> float:
        return top_m + plot_h * (1 - min(max(value, 0.0), y_top) / y_top)

    out = _open(title, desc, WIDTH, HEIGHT, id_prefix)
    # Grid and the hours axis.
    tick = 0.0
    while tick <= y_top + step / 2:
        yy = y(tick)
        out.append(
            f'<line x1="{left_m}" y1="{_n(yy)}" x2="{left_m + plot_w}" y2="{_n(yy)}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{left_m - 8}" y="{_n(yy + 4)}" text-anchor="end">{_t(hours_text(tick))}</text>'
        )
        tick += step
    out.append(
        f'<text x="16" y="{_n(top_m + plot_h / 2)}" text-anchor="middle" '
        f'transform="rotate(-90 16 {_n(top_m + plot_h / 2)})">GPU-hours left</text>'
    )
    # The time axis: a tick at each month's start, labels on at most MAX_MONTH_LABELS of them.
    base = top_m + plot_h
    out.append(
        f'<line x1="{left_m}" y1="{base}" x2="{left_m + plot_w}" y2="{base}" '
        f'stroke="{INK}" stroke-width="1"/>'
    )
    out.append(
        f'<line x1="{left_m}" y1="{top_m}" x2="{left_m}" y2="{base}" stroke="{INK}" '
        'stroke-width="1"/>'
    )
    months = [m for m in months_between(starts_on, ends_on) if starts_on <= m <= ends_on]
    every = max(math.ceil(len(months) / MAX_MONTH_LABELS), 1)
    for i, month in enumerate(months):
        xx = x(month)
        out.append(
            f'<line x1="{_n(xx)}" y1="{base}" x2="{_n(xx)}" y2="{base + 5}" stroke="{INK}" '
            'stroke-width="1"/>'
        )
        if i % every == 0:
            out.append(
                f'<text x="{_n(xx)}" y="{base + 20}" text-anchor="middle">'
                f"{_t(month.strftime('%b %Y'))}</text>"
            )
    # The plan: all hours at the start, none at the end.
    out.append(
        f'<line x1="{_n(x(starts_on))}" y1="{_n(y(hours))}" x2="{_n(x(ends_on))}" '
        f'y2="{_n(y(0))}" stroke="{PLAN}" stroke-width="2" stroke-dasharray="6 4"/>'
    )
    # What is left: a step down on each day with usage, up to today (or the period's end).
    points = [(x(starts_on), y(hours))]
    left = float(hours)
    for day, used in sorted(daily):
        xx = x(day)
        points.append((xx, y(left)))
        left -= used
        points.append((xx, y(left)))
    last = min(max(today, starts_on), ends_on)
    if daily:
        last = max(last, min(max(d for d, _ in daily), ends_on))
    points.append((x(last), y(left)))
    out.append(
        f'<polyline points="{" ".join(f"{_n(a)},{_n(b)}" for a, b in points)}" fill="none" '
        f'stroke="{ACTUAL}" stroke-width="2.5" stroke-linejoin="round"/>'
    )
    if starts_on <= today <= ends_on:
        xx = x(today)
        out.append(
            f'<line x1="{_n(xx)}" y1="{top_m}" x2="{_n(xx)}" y2="{base}" stroke="{INK}" '
            'stroke-width="1" stroke-dasharray="2 3"/>'
        )
        out.append(f'<text x="{_n(xx + 4)}" y="{top_m + 12}">today</text>')
    # The legend.
    out.append(
        f'<line x1="{left_m}" y1="18" x2="{left_m + 28}" y2="18" stroke="{ACTUAL}" '
        'stroke-width="2.5"/>'
    )
    out.append(f'<text x="{left_m + 34}" y="22">Left (hours used taken off)</text>')
    lx = left_m + 250
    out.append(
        f'<line x1="{lx}" y1="18" x2="{lx + 28}" y2="18" stroke="{PLAN}" stroke-width="2" '
        'stroke-dasharray="6 4"/>'
    )
    out.append(f'<text x="{lx + 34}" y="22">Plan: even use to the end date</text>')
    out.append("</svg>")
    return "\n".join(out)


# --- stacked bars ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One kind of segment in a stacked bar chart, with its legend label."""

    label: str
    fill: str


def stacked_bars_svg(
    *,
    title: str,
    desc: str,
    series: Sequence[Series],
    rows: Sequence[tuple[str, Sequence[float]]],
    id_prefix: str = "bars",
    unit: str = "GPU-hours",
    width: int = WIDTH,
) -> str:
    """Horizontal stacked bars: one per row (label, one value per series, in the order of
    ``series``), on a common axis in ``unit``. Labels longer than fit are shortened (the table
    beside the chart has them whole)."""
    label_w, right_m, top_m, bottom_m = 190, 24, 40, 40
    row_h, bar_h = 28, 18
    plot_w = width - label_w - right_m
    height = top_m + max(len(rows), 1) * row_h + bottom_m
    biggest = max((sum(max(v, 0.0) for v in values) for _, values in rows), default=0.0)
    step = nice_step(max(biggest, 1.0))
    x_top = step * max(math.ceil(max(biggest, 1.0) / step), 1)

    def x(value: float) -> float:
        return label_w + plot_w * min(max(value, 0.0), x_top) / x_top

    out = _open(title, desc, width, height, id_prefix, inline=True)
    base = top_m + max(len(rows), 1) * row_h
    tick = 0.0
    while tick <= x_top + step / 2:
        xx = x(tick)
        out.append(
            f'<line x1="{_n(xx)}" y1="{top_m}" x2="{_n(xx)}" y2="{base}" stroke="{GRID}" '
            'stroke-width="1"/>'
        )
        out.append(
            f'<text x="{_n(xx)}" y="{base + 16}" text-anchor="middle">{_t(hours_text(tick))}</text>'
        )
        tick += step
    out.append(f'<text x="{label_w + plot_w}" y="{base + 32}" text-anchor="end">{_t(unit)}</text>')
    if not rows:
        out.append(f'<text x="{label_w}" y="{top_m + 18}">Nothing to show yet.</text>')
    for i, (label, values) in enumerate(rows):
        top = top_m + i * row_h + (row_h - bar_h) / 2
        short = label if len(label) <= 28 else label[:27].rstrip() + "…"
        out.append(
            f'<text x="{label_w - 8}" y="{_n(top + bar_h - 4)}" text-anchor="end">{_t(short)}</text>'
        )
        start = 0.0
        for s, value in zip(series, values, strict=False):
            value = max(value, 0.0)
            if value <= 0:
                continue
            x0, x1 = x(start), x(start + value)
            out.append(
                f'<rect x="{_n(x0)}" y="{_n(top)}" width="{_n(max(x1 - x0, 0.5))}" '
                f'height="{bar_h}" fill="{_t(s.fill)}" stroke="{INK}" stroke-width="0.5">'
                f"<title>{_t(label)}: {_t(s.label)} {_t(hours_text(value))} {_t(unit)}</title>"
                "</rect>"
            )
            start += value
    lx = label_w
    for s in series:
        out.append(
            f'<rect x="{lx}" y="10" width="14" height="14" fill="{_t(s.fill)}" stroke="{INK}" '
            'stroke-width="0.5"/>'
        )
        out.append(f'<text x="{lx + 20}" y="22">{_t(s.label)}</text>')
        lx += 28 + 7 * len(s.label)
    out.append("</svg>")
    return "\n".join(out)
