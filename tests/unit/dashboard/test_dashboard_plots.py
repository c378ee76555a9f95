"""Inline SVG plots (stream_guard.dashboard.plots): what is drawn for given numbers, parsed back as XML."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from stream_guard.dashboard.plots import (
    HEIGHT,
    LEFT,
    RIGHT,
    TOP,
    WIDTH,
    Series,
    bar_plot,
    format_time,
    format_value,
    nice_ticks,
    time_plot,
)

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_700_000_040_000  # 22:14 UTC


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _all(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(SVG + tag) if cls in (e.get("class") or "").split()]


def test_time_plot_draws_one_circle_per_finite_point_and_counts_them() -> None:
    """data-points and the circles count finite values only; None and NaN are skipped."""
    series = [
        Series("a", [(T0, 1.0), (T0 + 60_000, None), (T0 + 120_000, 3.0)]),
        Series("b", [(T0, math.nan), (T0 + 60_000, 2.0)]),
    ]
    root = _parse(time_plot("p", "title", series))
    assert root.get("class") == "sg-plot" and root.get("data-plot") == "p"
    assert root.get("data-points") == "3"
    circles = _all(root, "circle", "sg-point")
    assert [c.get("data-series") for c in circles] == ["a", "a", "b"]
    assert len(_all(root, "path", "sg-line")) == 2


def test_a_missing_value_breaks_the_line_into_two_segments() -> None:
    """The path restarts (M) after a gap instead of bridging it (L)."""
    series = Series("a", [(T0, 1.0), (T0 + 1, 2.0), (T0 + 2, None), (T0 + 3, 1.0)])
    (path,) = _all(_parse(time_plot("p", "t", [series])), "path", "sg-line")
    commands = [c[0] for c in (path.get("d") or "").split()]
    assert commands == ["M", "L", "M"]


def test_points_map_into_the_plot_area_earliest_left_largest_top() -> None:
    """x grows with time and y shrinks with value, all inside the margins."""
    series = Series("a", [(T0, 0.0), (T0 + 60_000, 10.0)])
    first, second = _all(_parse(time_plot("p", "t", [series])), "circle", "sg-point")
    x1, y1, x2, y2 = (
        float(first.get("cx") or 0),
        float(first.get("cy") or 0),
        float(second.get("cx") or 0),
        float(second.get("cy") or 0),
    )
    assert x1 == pytest.approx(LEFT) and x2 == pytest.approx(WIDTH - RIGHT)
    assert TOP <= y2 < y1 <= HEIGHT


def test_threshold_is_drawn_and_points_above_it_are_marked() -> None:
    """A dashed threshold line, and the points exceeding it carry sg-over; the axis reaches the threshold."""
    series = Series("psi", [(T0, 0.05), (T0 + 60_000, 0.5), (T0 + 120_000, 0.1)])
    root = _parse(time_plot("p", "t", [series], threshold=0.2))
    (line,) = _all(root, "line", "sg-threshold")
    assert float(line.get("data-value") or 0) == 0.2
    over = _all(root, "circle", "sg-over")
    assert len(over) == 1 and "0.5" in "".join(over[0].itertext())
    low = Series("psi", [(T0, 0.01), (T0 + 60_000, 0.02)])
    root = _parse(time_plot("p", "t", [low], threshold=0.2))
    (line,) = _all(root, "line", "sg-threshold")
    assert TOP <= float(line.get("y1") or 0) <= HEIGHT  # threshold above all data still inside the plot


def test_a_plot_without_data_says_so_with_zero_points() -> None:
    """No finite value (or no series) gives an empty plot with data-points 0 and a message."""
    for series in ([], [Series("a", [(T0, None)])]):
        root = _parse(time_plot("p", "t", series))
        assert root.get("data-points") == "0"
        assert _all(root, "text", "sg-empty") and not _all(root, "circle", "sg-point")
    assert _parse(bar_plot("w", "t", [])).get("data-points") == "0"


def test_a_single_point_or_constant_series_still_renders() -> None:
    """Degenerate ranges (one time, one value) do not divide by zero."""
    root = _parse(time_plot("p", "t", [Series("a", [(T0, 5.0)])], y_min=None))
    (circle,) = _all(root, "circle", "sg-point")
    assert math.isfinite(float(circle.get("cx") or "nan")) and math.isfinite(float(circle.get("cy") or "nan"))


def test_bar_plot_draws_one_bar_per_slice_in_order_with_lengths_proportional() -> None:
    """Bars keep the given order, widths scale with the values, the reference is a dashed line."""
    root = _parse(bar_plot("w", "worst", [("device_type=android", 0.2), ("country=GB", 0.4)], reference=0.3))
    bars = _all(root, "rect", "sg-bar")
    assert [b.get("data-label") for b in bars] == ["device_type=android", "country=GB"]
    widths = [float(b.get("width") or 0) for b in bars]
    assert widths[1] == pytest.approx(2 * widths[0])
    assert root.get("data-points") == "2"
    (reference,) = _all(root, "line", "sg-reference")
    assert float(reference.get("data-value") or 0) == 0.3


def test_labels_and_titles_are_escaped() -> None:
    """Slice names and titles with markup characters stay text."""
    root = _parse(bar_plot("w", "a<b", [("x=<script>", 1.0)]))
    assert root.get("aria-label") == "a<b"
    assert _all(root, "rect", "sg-bar")[0].get("data-label") == "x=<script>"


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 1, [0, 0.5, 1.0]),
        (0, 0.2, [0, 0.1, 0.2]),
        (0, 1000, [0, 500, 1000]),
        (0.16, 0.18, [0.16, 0.17, 0.18]),
    ],
)
def test_nice_ticks_are_round_and_cover_the_range(low: float, high: float, expected: list[float]) -> None:
    """Steps of 1, 2, 2.5 or 5 times a power of ten, from below low to at least high."""
    ticks = nice_ticks(low, high, count=3)
    assert ticks[0] <= low and ticks[-1] >= high
    assert ticks == pytest.approx(expected)


def test_values_and_times_format_short() -> None:
    """Labels stay short: 1000, 12.3k, 2.5M, 1e-05; times as HH:MM UTC."""
    assert [format_value(v) for v in (1000, 12_345, 2_500_000, 0.00001, 0.25, 0)] == [
        "1000",
        "12.3k",
        "2.5M",
        "1e-05",
        "0.25",
        "0",
    ]
    assert format_time(T0) == "22:14"
