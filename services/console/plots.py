"""Pure: a blood-count series as an inline SVG: the values over time against CTCAE's grade bands, the baseline
drawn as a dashed line, the DLT window shaded and the infusions marked. No JavaScript, no chart library."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from html import escape
from typing import Any

from services.console.presenting import parse_time, when

WIDTH, HEIGHT = 440, 250
"""Small enough that its 12 px labels stay readable when a phone shrinks the plot to its width."""
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 16, 34
# Grade bands from pale to strong; readable on white and distinguishable without colour (labels too).
BAND_FILL = {1: "#fff4cc", 2: "#ffe0a3", 3: "#ffc2a8", 4: "#f5a3a3"}
TITLES = {"neutrophils": "Neutrophils", "platelets": "Platelets", "haemoglobin": "Haemoglobin"}


def _fmt(value: Decimal | float) -> str:
    number = float(value)
    return f"{number:.0f}" if number >= 20 else f"{number:.2g}" if number < 1 else f"{number:.1f}"


def _nice_ceiling(value: float) -> float:
    """The axis top: the next round multiple of a power of ten (1, 1.5, 2 ... 8), so the ticks read as round numbers."""
    magnitude: float = 10.0 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * magnitude >= value)


def series_svg(
    series: Mapping[str, Any],
    *,
    window: Mapping[str, Any] | None,
    infusions: Sequence[datetime],
    now: datetime,
) -> str:
    """One plot; an empty series still draws its bands and says that there are no results."""
    name = str(series["name"])
    title = TITLES.get(name, name)
    unit = str(series["unit"])
    points: list[tuple[datetime, Decimal, Mapping[str, Any]]] = []
    for point in series.get("points", []):
        at = parse_time(point["collected_at"])
        if at is not None:
            points.append((at, Decimal(str(point["value"])), point))
    bands = sorted(((int(b["grade"]), Decimal(str(b["below"]))) for b in series.get("bands", [])), key=lambda b: b[0])
    baseline = Decimal(str(series["baseline"])) if series.get("baseline") is not None else None
    w_start = parse_time(window.get("start")) if window else None
    w_end = parse_time(window.get("end")) if window else None

    times: list[datetime] = [t for t, _, _ in points] + list(infusions)
    times += [moment for moment in (w_start, w_end) if moment is not None]
    t0 = min(times) if times else now - timedelta(days=28)
    t1 = max([*times, t0 + timedelta(days=1)])
    pad = (t1 - t0) * 0.03
    t0, t1 = t0 - pad, t1 + pad
    top_value = max([v for _, v, _ in points] + [b for _, b in bands] + ([baseline] if baseline else []) + [Decimal(1)])
    y_max = _nice_ceiling(float(top_value) * 1.1)

    def x(moment: datetime) -> float:
        return LEFT + (moment - t0) / (t1 - t0) * (WIDTH - LEFT - RIGHT)

    def y(value: Decimal | float) -> float:
        return TOP + (1 - float(value) / y_max) * (HEIGHT - TOP - BOTTOM)

    parts: list[str] = []
    summary = (
        f"{len(points)} result(s); latest {_fmt(points[-1][1])} {unit} on {when(points[-1][0])}"
        if points
        else "no results yet"
    )
    desc = f"{title} in {unit} over time with CTCAE grade bands. {summary}."
    if baseline is not None:
        desc += f" Baseline {_fmt(baseline)} {unit}."
    parts.append(
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="plot-{name}-t plot-{name}-d" '
        f'xmlns="http://www.w3.org/2000/svg"><title id="plot-{name}-t">{escape(title)} ({escape(unit)})</title>'
        f'<desc id="plot-{name}-d">{escape(desc)}</desc>'
    )
    plot_w, bottom = WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM
    # Grade bands: grade g spans [next stricter threshold, its own threshold).
    for index, (grade, below) in enumerate(bands):
        floor = bands[index + 1][1] if index + 1 < len(bands) else Decimal(0)
        if below <= floor:
            continue
        y_top, y_bottom = y(min(below, Decimal(str(y_max)))), y(floor)
        parts.append(
            f'<rect x="{LEFT}" y="{y_top:.1f}" width="{plot_w}" height="{max(y_bottom - y_top, 0):.1f}" '
            f'fill="{BAND_FILL.get(grade, "#eee")}"><title>grade {grade}: below {_fmt(below)} {escape(unit)}</title>'
            f"</rect>"
            f'<text x="{WIDTH - RIGHT - 4}" y="{min(y_top + 12, y_bottom - 2):.1f}" text-anchor="end" '
            f'class="band-label">G{grade} &lt;{_fmt(below)}</text>'
        )
    if w_start is not None and w_end is not None:
        x0, x1 = max(x(w_start), LEFT), min(x(w_end), WIDTH - RIGHT)
        parts.append(
            f'<rect x="{x0:.1f}" y="{TOP}" width="{max(x1 - x0, 0):.1f}" height="{bottom - TOP}" class="dlt-window">'
            f"<title>DLT window {escape(when(w_start))} to {escape(when(w_end))}</title></rect>"
            f'<line x1="{x0:.1f}" x2="{x0:.1f}" y1="{TOP}" y2="{bottom}" class="window-edge"/>'
            f'<line x1="{x1:.1f}" x2="{x1:.1f}" y1="{TOP}" y2="{bottom}" class="window-edge"/>'
            f'<text x="{x0 + 4:.1f}" y="{TOP + 11}" class="window-label">DLT window</text>'
        )
    for number, moment in enumerate(infusions, start=1):
        xi = x(moment)
        parts.append(
            f'<line x1="{xi:.1f}" x2="{xi:.1f}" y1="{TOP}" y2="{bottom}" class="infusion">'
            f"<title>infusion {number}, {escape(when(moment))}</title></line>"
        )
    if baseline is not None:
        yb = y(baseline)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yb:.1f}" y2="{yb:.1f}" class="baseline"/>'
            f'<text x="{LEFT + 4}" y="{yb - 4:.1f}" class="baseline-label">baseline {_fmt(baseline)}</text>'
        )
    # Axes: value ticks at 0, the thresholds' scale; time ticks at start and end.
    parts.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" class="axis"/>')
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" class="axis"/>')
    for tick in (0.0, y_max / 2, y_max):
        parts.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" class="tick">{_fmt(tick)}</text>')
    parts.append(
        f'<text x="{LEFT}" y="{HEIGHT - 8}" class="tick">{escape(when(t0 + pad)[:10])}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end" class="tick">'
        f"{escape(when(t1 - pad)[:10])}</text>"
        f'<text x="12" y="{TOP + (bottom - TOP) / 2:.1f}" class="tick" transform="rotate(-90 12 '
        f'{TOP + (bottom - TOP) / 2:.1f})" text-anchor="middle">{escape(unit)}</text>'
    )
    if len(points) > 1:
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v, _ in points)
        parts.append(f'<polyline points="{path}" class="trend"/>')
    for moment, value, point in points:
        point_grade = point.get("grade")
        censored = point.get("censored") or ""
        shown = point_grade if point_grade is not None else "-"
        label = f"{censored}{_fmt(value)} {unit}, {when(moment)}, grade {shown}"
        if point.get("baseline"):
            label += " (baseline)"
        shape = "point baseline-point" if point.get("baseline") else "point"
        parts.append(
            f'<circle cx="{x(moment):.1f}" cy="{y(value):.1f}" r="4.5" class="{shape}"><title>{escape(label)}</title>'
            "</circle>"
        )
    if not points:
        parts.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + (bottom - TOP) / 2:.1f}" text-anchor="middle" '
            f'class="empty">no results</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
