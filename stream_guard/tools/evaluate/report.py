"""What ``stream-guard evaluate`` reports: per-scenario results, false alarms, the printed matrix."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from stream_guard.alerts.model import Alert
from stream_guard.settings.drift import WEEK_S
from stream_guard.tools.evaluate.faults import FAULTS


@dataclass
class ScenarioResult:
    """What one scenario raised; delays are ``None`` when it went undetected."""

    feature: str
    fault: str
    rate: float
    expects: list[str]
    injected: int
    detected: bool = False
    kind: str | None = None
    window_start: int | None = None
    window_end: int | None = None
    delay_s: float | None = None
    delay_events: int | None = None
    #: ``kind|feature`` of the other alerts raised after the onset (up to the detection)
    #: that the clean run did not raise in the same window.
    other_alerts: list[str] = field(default_factory=list)


@dataclass
class CheckFalseAlarms:
    """Alerts of one (kind, feature) on the clean stream."""

    kind: str
    feature: str | None
    alerts: int
    per_100k_events: float
    per_window: float


@dataclass
class Evaluation:
    """Everything ``stream-guard evaluate`` reports."""

    model: str
    source: str
    profile_source: str
    learn_events: int
    events: int
    windows: int
    window_s: int
    allowed_lateness_s: int
    batch_size: int
    partitions: int
    onset_index: int
    onset_ms: int
    scenarios: list[ScenarioResult]
    false_alarms: list[CheckFalseAlarms]
    runtime_s: dict[str, float]

    @property
    def false_alarm_total(self) -> int:
        return sum(f.alerts for f in self.false_alarms)

    def summary(self) -> dict[str, Any]:
        delays = [s.delay_s for s in self.scenarios if s.delay_s is not None]
        events = [s.delay_events for s in self.scenarios if s.delay_events is not None]
        return {
            "detected": sum(s.detected for s in self.scenarios),
            "scenarios": len(self.scenarios),
            "median_delay_s": statistics.median(delays) if delays else None,
            "median_delay_events": statistics.median(events) if events else None,
            "false_alarms": self.false_alarm_total,
            "false_alarms_per_100k_events": _per_100k(self.false_alarm_total, self.events),
            "false_alarms_per_week": self.false_alarms_per_week,
        }

    @property
    def false_alarms_per_week(self) -> float:
        """The clean stream's alerts scaled to a week of its event time (the budget: at most 1)."""
        seconds = self.windows * self.window_s
        return round(self.false_alarm_total * WEEK_S / seconds, 3) if seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["summary"] = self.summary()
        return out


def _per_100k(count: int, events: int) -> float:
    return count * 100_000 / events if events else 0.0


def count_false_alarms(alerts: Sequence[Alert], events: int, windows: int) -> list[CheckFalseAlarms]:
    """The clean run's alerts per (kind, feature), with their rates per 100k events and per window."""
    counts = Counter((a.kind, a.feature) for a in alerts)
    return [
        CheckFalseAlarms(kind, feature, count, _per_100k(count, events), count / windows if windows else 0.0)
        for (kind, feature), count in sorted(counts.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _rate(rate: float) -> str:
    return f"{rate * 100:g}%"


def _cell(result: ScenarioResult) -> str:
    if result.injected == 0:
        return "none injected"
    if not result.detected:
        return "missed"
    return f"{result.delay_s:g}s / {result.delay_events:,}"


def render(report: Evaluation) -> str:
    """The human-readable report: detection matrix, false alarms, summary."""
    lines = [
        f"model {report.model}: profile {report.profile_source!r}"
        + (f", learned from the first {report.learn_events:,} events" if report.learn_events else ""),
        f"replayed {report.events:,} clean events from {report.source} ({report.windows} windows of "
        f"{report.window_s}s, lateness {report.allowed_lateness_s}s; batches of {report.batch_size} over "
        f"{report.partitions} partitions); faults injected from event {report.onset_index:,} "
        f"({_iso(report.onset_ms)}) on",
        "",
        "detection delay: event time from the onset to the end of the first alerting window / events in between",
    ]
    rates = sorted({s.rate for s in report.scenarios})
    rows: dict[tuple[str, str], dict[float, ScenarioResult]] = {}
    for s in report.scenarios:
        rows.setdefault((s.feature, s.fault), {})[s.rate] = s
    width = max([len(f) for f, _ in rows] + [7])
    header = f"{'feature':<{width}}  {'fault':<21}  {'expects':<16}" + "".join(f"  {_rate(r):>16}" for r in rates)
    lines += [header + "  detected by", "-" * (len(header) + 13)]
    for (feature, fault), by_rate in rows.items():
        cells = "".join(f"  {_cell(by_rate[r]) if r in by_rate else '':>16}" for r in rates)
        kinds = [k for k in (by_rate[r].kind for r in rates if r in by_rate) if k]
        lines.append(
            f"{feature:<{width}}  {fault:<21}  {FAULTS[fault].expects[0]:<16}{cells}  {', '.join(dict.fromkeys(kinds))}"
        )
    lines += ["", f"false alarms on the clean stream ({report.events:,} events, {report.windows} windows):"]
    if report.false_alarms:
        lines.append(
            f"  {'check':<20}  {'feature':<{width}}  {'alerts':>6}  {'per 100k events':>15}  {'per window':>10}"
        )
        for f in report.false_alarms:
            lines.append(
                f"  {f.kind:<20}  {f.feature or '-':<{width}}  {f.alerts:>6}  {f.per_100k_events:>15.2f}  "
                f"{f.per_window:>10.3f}"
            )
    else:
        lines.append("  none")
    summary = report.summary()
    delay = (
        f"median delay {summary['median_delay_s']:g}s ({summary['median_delay_events']:,.0f} events)"
        if summary["median_delay_s"] is not None
        else "no delay to report"
    )
    runtime = report.runtime_s
    lines += [
        "",
        f"summary: {summary['detected']}/{summary['scenarios']} scenarios detected; {delay}; "
        f"{summary['false_alarms']} false alarms on the clean stream "
        f"({summary['false_alarms_per_100k_events']:.2f} per 100k events, "
        f"{summary['false_alarms_per_week']:.1f} per week of clean traffic; budget: at most 1)",
        f"runtime: {runtime['total']:.1f}s (clean replay {runtime['clean']:.1f}s, "
        f"{summary['scenarios']} scenarios {runtime['scenarios']:.1f}s)",
    ]
    return "\n".join(lines)
