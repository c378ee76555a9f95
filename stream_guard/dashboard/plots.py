"""Plots as inline SVG, drawn on the server: time series with an optional threshold, and bars.

Pure functions from numbers to markup, so the page needs nothing from the network and
a test can count what was drawn. Every plot is an ``<svg class="sg-plot">`` carrying
``data-plot`` (its id) and ``data-points`` (the data points drawn); every point of a
series is a ``<circle class="sg-point">``, every bar a ``<rect class="sg-bar">``. A plot
without data says so and has ``data-points="0"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT = 560, 224
#: The bottom margin holds the time labels and two rows of legend.
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 26, 54
#: Series colours, in order (colour-blind friendly: Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
THRESHOLD_COLOUR = "#D55E00"


@dataclass(frozen=True)
class Series:
    """One line of a time plot: ``(epoch ms, value)`` points; ``None`` values are gaps."""

    name: str
    points: Sequence[tuple[int, float | None]]

    def finite(self) -> list[tuple[int, float]]:
        return [(t, v) for t, v in self.points if v is not None and math.isfinite(v)]


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]`` (1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def format_value(value: float) -> str:
    """A short label: ``0.25``, ``1.2k``, ``3.4M``, ``1e-05``."""
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    if magnitude != 0 and magnitude < 1e-3:
        return f"{value:.0e}"
    return f"{value:.4g}" if magnitude >= 1e3 else f"{value:.3g}"


def format_time(ms: int) -> str:
    """``HH:MM`` (UTC) of an epoch-milliseconds time."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")


class _Scale:
    """Maps data to the plot area."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range

    def x(self, value: float) -> float:
        span = self.x1 - self.x0
        share = 0.5 if span <= 0 else (value - self.x0) / span
        return LEFT + share * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        span = self.y1 - self.y0
        share = 0.5 if span <= 0 else (value - self.y0) / span
        return HEIGHT - BOTTOM - share * (HEIGHT - TOP - BOTTOM)


def _open(plot_id: str, title: str, points: int, kind: str) -> str:
    return (
        f'<svg class="sg-plot" data-plot="{escape(plot_id)}" data-kind="{kind}" data-points="{points}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f'<text class="sg-title" x="{LEFT}" y="16" font-size="13" font-weight="600">{escape(title)}</text>'
    )


def _empty(plot_id: str, title: str, kind: str) -> str:
    return (
        _open(plot_id, title, 0, kind)
        + f'<text class="sg-empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#888">'
        + "no data in range</text>"
        + "</svg>"
    )


def time_plot(
    plot_id: str,
    title: str,
    series: Sequence[Series],
    *,
    threshold: float | None = None,
    y_min: float | None = 0.0,
) -> str:
    """A line per series over time, points marked, with a dashed horizontal ``threshold`` when given.

    The y axis starts at ``y_min`` (``None``: at the smallest value) and always shows the
    threshold. Each point has a ``<title>`` (time, value) for hovering.
    """
    drawn = [(i, s, s.finite()) for i, s in enumerate(series)]
    values = [v for _, _, pts in drawn for _, v in pts]
    if not values:
        return _empty(plot_id, title, "time")
    times = [t for _, _, pts in drawn for t, _ in pts]
    low = min(values + ([threshold] if threshold is not None else []))
    high = max(values + ([threshold] if threshold is not None else []))
    if y_min is not None:
        low = min(low, y_min)
    if high == low:
        high = low + (abs(low) or 1.0)
    ticks = nice_ticks(low, high)
    scale = _Scale((min(times), max(times)), (min(ticks[0], low), max(ticks[-1], high)))
    parts = [_open(plot_id, title, len(values), "time"), _axes(scale, ticks)]
    if threshold is not None:
        y = scale.y(threshold)
        parts.append(
            f'<line class="sg-threshold" data-value="{threshold}" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
            f'y1="{y:.1f}" y2="{y:.1f}" stroke="{THRESHOLD_COLOUR}" stroke-dasharray="6 4" stroke-width="1.5">'
            f"<title>threshold {format_value(threshold)}</title></line>"
        )
    for i, s, pts in drawn:
        colour = PALETTE[i % len(PALETTE)]
        parts.append(_line(scale, s, colour))
        for t, v in pts:
            over = threshold is not None and v > threshold
            parts.append(
                f'<circle class="sg-point{" sg-over" if over else ""}" data-series="{escape(s.name)}" '
                f'cx="{scale.x(t):.1f}" cy="{scale.y(v):.1f}" r="{3.2 if over else 2.4}" '
                f'fill="{THRESHOLD_COLOUR if over else colour}"><title>{escape(s.name)} {format_time(t)}: '
                f"{format_value(v)}</title></circle>"
            )
    parts.append(_legend([s.name for s in series], threshold is not None))
    parts.append("</svg>")
    return "".join(parts)


def _line(scale: _Scale, series: Series, colour: str) -> str:
    """A path through the points; a ``None`` value breaks the line."""
    commands: list[str] = []
    pen_down = False
    for t, v in series.points:
        if v is None or not math.isfinite(v):
            pen_down = False
            continue
        commands.append(f"{'L' if pen_down else 'M'}{scale.x(t):.1f},{scale.y(v):.1f}")
        pen_down = True
    return (
        f'<path class="sg-line" data-series="{escape(series.name)}" d="{" ".join(commands)}" '
        f'fill="none" stroke="{colour}" stroke-width="1.8"/>'
    )


def _axes(scale: _Scale, ticks: Sequence[float]) -> str:
    parts = []
    for tick in ticks:
        y = scale.y(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#555">'
            f"{format_value(tick)}</text>"
        )
    base = HEIGHT - BOTTOM
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}" stroke="#999"/>')
    if scale.x1 <= scale.x0:
        times = [(scale.x0, "middle")]
    else:
        times = [(scale.x0, "start"), ((scale.x0 + scale.x1) / 2, "middle"), (scale.x1, "end")]
    for t, anchor in times:
        parts.append(
            f'<text x="{scale.x(t):.1f}" y="{base + 15}" text-anchor="{anchor}" font-size="11" fill="#555">'
            f"{format_time(int(t))}</text>"
        )
    return "".join(parts)


def _legend(names: Sequence[str], threshold: bool) -> str:
    parts = []
    x: float = LEFT
    y = HEIGHT - 22
    entries = [(n, PALETTE[i % len(PALETTE)], False) for i, n in enumerate(names)]
    if threshold:
        entries.append(("threshold", THRESHOLD_COLOUR, True))
    for name, colour, dashed in entries:
        label = name if len(name) <= 28 else name[:27] + "…"
        if x + 18 + 6.5 * len(label) > WIDTH - RIGHT:
            if y == HEIGHT - 8:
                break  # two rows are full
            x, y = LEFT, HEIGHT - 8
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(
            f'<line x1="{x}" x2="{x + 14}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{x + 18}" y="{y}" font-size="11" fill="#333">{escape(label)}</text>'
        )
        x += 26 + 6.5 * len(label)
    return "".join(parts)


def bar_plot(plot_id: str, title: str, bars: Sequence[tuple[str, float]], *, reference: float | None = None) -> str:
    """Horizontal bars, one per ``(label, value)`` in the order given; ``reference`` as a dashed line (e.g. overall)."""
    if not bars:
        return _empty(plot_id, title, "bar")
    row, label_width = 22, 190
    height = TOP + row * len(bars) + 24
    high = max([v for _, v in bars] + ([reference] if reference is not None else []))
    high = high if high > 0 else 1.0
    span = WIDTH - label_width - RIGHT - 40

    def x(value: float) -> float:
        return label_width + max(value, 0.0) / high * span

    parts = [
        _open(plot_id, title, len(bars), "bar").replace(
            f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"',
            f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}"',
        )
    ]
    for i, (label, value) in enumerate(bars):
        y = TOP + i * row
        short = label if len(label) <= 30 else label[:29] + "…"
        parts.append(
            f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end" font-size="11" fill="#333">'
            f"{escape(short)}</text>"
            f'<rect class="sg-bar" data-label="{escape(label)}" data-value="{value}" x="{label_width}" '
            f'y="{y + 3}" width="{x(value) - label_width:.1f}" height="{row - 6}" fill="{PALETTE[0]}">'
            f"<title>{escape(label)}: {format_value(value)}</title></rect>"
            f'<text x="{x(value) + 4:.1f}" y="{y + 15}" font-size="11" fill="#333">{format_value(value)}</text>'
        )
    if reference is not None:
        rx = x(reference)
        parts.append(
            f'<line class="sg-reference" data-value="{reference}" x1="{rx:.1f}" x2="{rx:.1f}" y1="{TOP - 2}" '
            f'y2="{TOP + row * len(bars)}" stroke="{THRESHOLD_COLOUR}" stroke-dasharray="5 3" stroke-width="1.5">'
            f"<title>all traffic {format_value(reference)}</title></line>"
            f'<text x="{rx:.1f}" y="{TOP + row * len(bars) + 14}" text-anchor="middle" font-size="11" '
            f'fill="{THRESHOLD_COLOUR}">all traffic</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
