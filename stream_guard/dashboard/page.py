"""The dashboard page: one section per model, plots first, then the tables behind them.

Plain HTML with the SVG of :mod:`stream_guard.dashboard.plots` inline and a small style
sheet; no script and nothing loaded from elsewhere. The page reloads itself every
``refresh_s`` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from stream_guard import __version__
from stream_guard.dashboard.plots import Series, bar_plot, format_value, time_plot
from stream_guard.dashboard.views import ModelView

#: Lines drawn in the rates plot at most (the largest rates).
MAX_RATE_SERIES = 6
#: Alerts listed per model.
ALERT_ROWS = 50

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 1.5rem 2rem; color: #222; background: #fafafa; }
header { display: flex; align-items: baseline; gap: 1rem; flex-wrap: wrap; }
h1 { font-size: 1.4rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ccc; } h3 { font-size: 1rem; }
.meta { color: #666; font-size: .9rem; }
.plots { display: flex; flex-wrap: wrap; gap: .8rem; }
.plots svg { background: #fff; border: 1px solid #ddd; border-radius: 4px; }
table { border-collapse: collapse; font-size: .85rem; background: #fff; margin: .4rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.CRITICAL { color: #b00020; font-weight: 600; } .WARNING { color: #a15c00; font-weight: 600; } .INFO { color: #555; }
.problem { background: #fff3cd; border: 1px solid #e0c060; padding: .5rem; }
code { font-size: .8rem; }
"""


def format_time(ms: int | float | datetime) -> str:
    if isinstance(ms, datetime):
        return ms.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _label(slice_: str) -> str:
    return "all traffic" if slice_ == "*" else slice_


def rate_series(view: ModelView) -> list[Series]:
    """Null rate per feature and violation rate per kind, per bucket: the ``MAX_RATE_SERIES`` largest peaks."""
    names: dict[str, tuple[str, str]] = {}
    for _, m in view.overall:
        for feature in m.null_rates:
            names.setdefault(f"null {feature}", ("null", feature))
        for kind in m.violation_rates:
            names.setdefault(kind, ("violation", kind))
    series = []
    for name, (what, key) in names.items():
        rates = [(t, (m.null_rates if what == "null" else m.violation_rates).get(key, 0.0)) for t, m in view.overall]
        series.append((max(v for _, v in rates), Series(name, rates)))
    chosen = [s for _, s in sorted(series, key=lambda x: (-x[0], x[1].name))[:MAX_RATE_SERIES]]
    if not chosen and view.overall:
        chosen = [Series("no nulls or violations", [(t, 0.0) for t, _ in view.overall])]
    return chosen


def metric_plots(view: ModelView) -> list[str]:
    """The slice-metric plots of one model: events, rates, prediction mean, performance per slice, the estimate."""
    m = view.model
    plots = [
        time_plot(f"{m}-events", "events per bucket", [Series("events", [(t, s.events) for t, s in view.overall])]),
        time_plot(f"{m}-rates", "null and violation rates (share of events)", rate_series(view)),
        time_plot(
            f"{m}-prediction",
            "prediction mean",
            [Series("prediction mean", [(t, s.prediction_mean) for t, s in view.overall])],
            y_min=None,
        ),
    ]
    performance = [Series("all traffic", [(t, s.value(view.metric)) for t, s in view.overall])]
    performance += [
        Series(name, [(t, s.value(view.metric)) for t, s in points]) for name, points in view.slices.items()
    ]
    plots.append(time_plot(f"{m}-performance", f"{view.metric} per slice (labelled events)", performance))
    if view.estimated:
        estimate = [
            Series("estimated from scores", view.estimated),
            Series("realised (labelled)", [(t, s.accuracy) for t, s in view.overall]),
        ]
        plots.append(time_plot(f"{m}-estimate", "accuracy: label-free estimate vs realised (all traffic)", estimate))
    return plots


def drift_plots(view: ModelView) -> list[str]:
    """One plot per monitored field: its drift statistic per window, the threshold dashed."""
    return [
        time_plot(
            f"{view.model}-drift-{drift.feature}",
            f"drift of {drift.feature}: {drift.statistic} per window",
            [Series(drift.statistic, list(drift.points))],
            threshold=drift.threshold,
        )
        for drift in view.drift
    ]


def worst_plot(view: ModelView) -> str:
    """The worst slices as bars, all traffic's value dashed."""
    return bar_plot(
        f"{view.model}-worst",
        f"worst slices on {view.metric}",
        [(r.slice, r.value) for r in view.worst],
        reference=view.overall_value,
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], css: str, empty: str) -> str:
    if not rows:
        return f'<p class="meta {css}-empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(f'<tr class="{css}">' + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _finding_name(finding: dict[str, Any]) -> str:
    """``kind feature@slice`` of a related finding (no slice shown for all traffic)."""
    where = finding.get("slice")
    return f"{finding['kind']} {finding.get('feature') or ''}" + (f"@{where}" if where not in (None, "*") else "")


def _evidence(alert: dict[str, Any]) -> str:
    parts = [
        f"observed: {escape(str(alert.get('observed', '')))}",
        f"expected: {escape(str(alert.get('expected', '')))}",
    ]
    if alert.get("value") is not None:
        threshold = alert.get("threshold")
        limit = "" if threshold is None else f" (threshold {format_value(float(threshold))})"
        parts.append(f"{escape(str(alert.get('detector', '')))} = {format_value(float(alert['value']))}{limit}")
    related = alert.get("related") or []
    if related:
        carried = ", ".join(escape(f"{_finding_name(r)} ({r.get('count', 0)})") for r in related)
        parts.append(f"related: {carried}")
    examples = alert.get("examples") or []
    if examples:
        shown = ", ".join(
            f"p{e['partition']}@{e['offset']}" + (f" {escape(str(e['value']))}" if e.get("value") else "")
            for e in examples[:3]
        )
        parts.append(f"examples: <code>{shown}</code>")
    return "<br>".join(parts)


def alert_rows(alerts: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for a in alerts[:ALERT_ROWS]:
        count, total = a.get("count", 0), a.get("total", 0)
        rows.append(
            [
                escape(format_time(a["window_start"])),
                f'<span class="{escape(str(a["severity"]))}">{escape(str(a["severity"]))}</span>',
                escape(str(a["status"])),
                escape(str(a["kind"])),
                escape(str(a.get("feature") or "")),
                escape(_label(a.get("slice") or "*")),
                f"{count}/{total}" if total else str(count),
                _evidence(a),
            ]
        )
    return rows


def model_section(view: ModelView, alerts: Sequence[dict[str, Any]]) -> str:
    m = escape(view.model)
    meta = (
        f"{format_time(view.start_ms)} – {format_time(view.end_ms)} UTC (event time), "
        f"{len(view.overall)} buckets of {view.bucket_ms // 1000}s, {view.events} events, "
        f"{view.slice_count} slices, {view.task}"
    )
    notes = []
    if view.profile_missing:
        notes.append('<p class="problem">no baseline profile: drift cannot be recomputed</p>')
    worst = _table(
        ["slice", view.metric, "support", "all traffic"],
        [
            [
                escape(r.slice),
                format_value(r.value),
                str(r.support),
                "-" if r.overall is None else format_value(r.overall),
            ]
            for r in view.worst
        ],
        "sg-worst",
        "no slice has enough labelled support to rank",
    )
    incidents = _table(
        ["severity", "kind", "feature", "slice", "opened (event time)", "last seen", "windows", "events", "evidence"],
        [
            [
                f'<span class="{escape(i.severity)}">{escape(i.severity)}</span>',
                escape(i.kind),
                escape(i.feature or ""),
                escape(_label(i.slice or "*")),
                escape(format_time(i.opened_start)),
                escape(format_time(i.last_seen_end)),
                str(i.windows),
                str(i.events),
                escape(", ".join(i.evidence)),
            ]
            for i in view.incidents
        ],
        "sg-incident",
        "no open incident",
    )
    alert_table = _table(
        ["window", "severity", "status", "kind", "feature", "slice", "events", "evidence"],
        alert_rows(alerts),
        "sg-alert",
        "no alert in the lookback",
    )
    return (
        f'<section class="sg-model" id="model-{m}" data-model="{m}" data-slices="{view.slice_count}">'
        f'<h2>{m}</h2><p class="meta">{escape(meta)}</p>{"".join(notes)}'
        f'<h3>Slice metrics per bucket</h3><div class="plots">{"".join(metric_plots(view))}</div>'
        "<h3>Drift per feature</h3>"
        '<p class="meta">recomputed per window from the window histograms against the baseline profile</p>'
        f'<div class="plots">{"".join(drift_plots(view))}</div>'
        f'<h3>Worst slices</h3><div class="plots">{worst_plot(view)}</div>{worst}'
        f"<h3>Open incidents</h3>{incidents}<h3>Recent alerts</h3>{alert_table}"
        "</section>"
    )


def render_page(
    views: Sequence[ModelView],
    alerts: dict[str, list[dict[str, Any]]],
    *,
    now_ms: int,
    problems: Sequence[str] = (),
    refresh_s: int = 30,
) -> str:
    """The whole HTML page."""
    nav = " · ".join(f'<a href="#model-{escape(v.model)}">{escape(v.model)}</a>' for v in views)
    warnings = "".join(f'<p class="problem">{escape(p)}</p>' for p in problems)
    sections = "".join(model_section(v, alerts.get(v.model, [])) for v in views)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{refresh_s}">'
        f"<title>stream-guard dashboard</title><style>{STYLE}</style></head><body>"
        f'<header><h1>stream-guard</h1><span class="meta">dashboard {escape(__version__)}, '
        f"rendered {format_time(now_ms)} UTC</span><nav>{nav}</nav></header>"
        f"{warnings}{sections}</body></html>"
    )
