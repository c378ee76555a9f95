"""The long replay's report: per fault, caught or not and how fast, and the false alarms on clean traffic.

:func:`build_report` attributes the alerts a long replay published
(:mod:`~stream_guard.tools.evaluate.longrun`) to the faults of its script or to clean
traffic; :func:`render_long` prints the result.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_guard.alerts.model import Alert
from stream_guard.settings.drift import WEEK_S
from stream_guard.settings.kinds import KNOWN_BIAS
from stream_guard.tools.evaluate.longfaults import LongFault, Stretch


@dataclass
class FaultResult:
    """What one fault's stretch raised."""

    fault: str
    feature: str
    expects: list[str]
    onset_s: int  # from the replay's start
    duration_s: int
    injected: int
    caught: bool = False
    kind: str | None = None
    window_start: int | None = None
    delay_windows: int | None = None
    #: ``kind|feature`` of every FIRING alert attributed to the stretch, with its count.
    alerts: dict[str, int] | None = None
    #: Incidents (``cause_id``) its FIRING alerts belong to.
    incidents_opened: int = 0
    #: Label faults: the slice an alert must name.
    slice: str | None = None
    #: Label faults: label-based evaluations from the first that reads the onset's bucket to the catching one.
    delay_evaluations: int | None = None


@dataclass
class LongReport:
    """What ``--long-replay`` reports: per fault, and the false alarms on clean traffic."""

    events: int
    windows: int
    window_s: int
    hours: float
    clean_hours: float
    firing: int  # FIRING alerts published, reminders included
    resolved: int
    false_firing: dict[str, int]  # kind|feature -> FIRING alerts on clean stretches
    false_raised: dict[str, int]  # kind|feature -> alerts evaluators raised there (before the lifecycle)
    faults: list[FaultResult]
    #: Known biases the labelled reference lists (metric|slice).
    known_biases: list[str] = field(default_factory=list)
    #: ``known_bias`` findings published (FIRING), by metric|slice, and RESOLVED ones.
    known_bias_published: dict[str, int] = field(default_factory=dict)
    known_bias_resolved: int = 0
    #: Labels matched to their prediction, unmatched, held, released and expired.
    labels: dict[str, int] = field(default_factory=dict)
    #: Cadence of the label-based evaluations, in seconds.
    evaluation_every_s: int = 0
    #: Every alert published, in order: ``STATUS kind|feature|slice window_start alert_id`` (two replays: diff them).
    published: list[str] = field(default_factory=list)
    #: The false-alarm budget by design: family -> chance alerts a week at most (:mod:`.budget`).
    budget: dict[str, float] = field(default_factory=dict)

    @property
    def false_alarms(self) -> int:
        return sum(self.false_firing.values())

    @property
    def false_per_week(self) -> float:
        return _per_week(self.false_alarms, self.clean_hours)

    @property
    def raised_per_week(self) -> float:
        return _per_week(sum(self.false_raised.values()), self.clean_hours)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        out["false_alarms"] = self.false_alarms
        out["false_alarms_per_week"] = round(self.false_per_week, 3)
        out["raised_per_week"] = round(self.raised_per_week, 3)
        out["caught"] = sum(f.caught for f in self.faults)
        return out


def _per_week(count: int, hours: float) -> float:
    return count * WEEK_S / (hours * 3600) if hours > 0 else 0.0


def _owner(stretches: Sequence[Stretch], alert: Alert, grace_ms: int, window_ms: int) -> int | None:
    """The fault whose stretch (plus the grace) the alert's window overlaps, if any.

    An alert on a range longer than a window (label-based checks, the estimate) overlaps
    the stretch itself: its range already reaches back over the fault's data.
    """
    grace = grace_ms if alert.window_end - alert.window_start <= window_ms else 0
    for i, s in enumerate(stretches):
        if alert.window_start < s.end_ms + grace and alert.window_end > s.onset_ms:
            return i
    return None


def _names_fault(alert: Alert, fault: LongFault) -> bool:
    """Whether ``alert`` catches ``fault``: an expected kind, on the fault's feature (label faults: its slice)."""
    if alert.kind not in fault.expects:
        return False
    if fault.slice is None:
        return alert.feature == fault.feature
    return (alert.slice or "*") == fault.slice


def _first_evaluation(onset_ms: int, every_ms: int) -> int:
    """Start of the first window on the evaluation grid whose label-based checks read the onset's bucket."""
    return -(-onset_ms // every_ms) * every_ms


@dataclass(frozen=True)
class ReplayOutcome:
    """What a long replay did, for :func:`build_report`.

    ``raised`` are the alerts the evaluators raised (before the incident lifecycle),
    ``first_window`` the start of the window whose closing first raised each alert id.
    """

    stretches: list[Stretch]
    injected: list[int]
    published: list[Alert]
    raised: list[Alert]
    first_window: Mapping[str, int]
    events: int
    start_ms: int
    end_ms: int


def build_report(outcome: ReplayOutcome, *, window_s: int, grace_s: int, every_s: int) -> LongReport:
    """Attribute ``outcome``'s alerts: to the fault whose stretch (plus ``grace_s``) their window overlaps, or to
    clean traffic; ``known_bias`` findings apart. ``every_s`` is the label-based checks' cadence."""
    stretches, injected, published = outcome.stretches, outcome.injected, outcome.published
    start_ms, end_ms, events = outcome.start_ms, outcome.end_ms, outcome.events
    window_ms, grace_ms, every_ms = window_s * 1000, grace_s * 1000, every_s * 1000
    results = [
        FaultResult(
            s.fault.name,
            s.fault.target,
            list(s.fault.expects),
            (s.onset_ms - start_ms) // 1000,
            (s.end_ms - s.onset_ms) // 1000,
            injected[i],
            alerts={},
            slice=s.fault.slice,
        )
        for i, s in enumerate(stretches)
    ]
    false_firing: Counter[str] = Counter()
    known_published: Counter[str] = Counter()
    causes: list[set[str]] = [set() for _ in stretches]  # the incidents (cause_id) of each stretch's alerts
    firing = [a for a in published if a.status == "FIRING"]
    for alert in sorted(firing, key=lambda a: (a.window_start, a.kind, a.feature or "", a.slice)):
        label = f"{alert.kind}|{alert.feature or ''}"
        if alert.kind == KNOWN_BIAS:
            known_published[f"{alert.feature}|{alert.slice}"] += 1
            continue
        owner = _owner(stretches, alert, grace_ms, window_ms)
        if owner is None:
            false_firing[label] += 1
            continue
        result, stretch = results[owner], stretches[owner]
        assert result.alerts is not None
        result.alerts[label] = result.alerts.get(label, 0) + 1
        causes[owner].add(alert.cause_id or alert.incident_id)
        result.incidents_opened = len(causes[owner])
        if _names_fault(alert, stretch.fault):
            _record_catch(result, stretch, alert, outcome.first_window[alert.alert_id], window_ms, every_ms)
    false_raised = Counter(
        f"{a.kind}|{a.feature or ''}"
        for a in outcome.raised
        if a.status == "FIRING" and a.kind != KNOWN_BIAS and _owner(stretches, a, grace_ms, window_ms) is None
    )
    covered = sum(min(s.end_ms + grace_ms, end_ms) - s.onset_ms for s in stretches)
    return LongReport(
        events=events,
        windows=math.ceil((end_ms - start_ms) / window_ms),
        window_s=window_s,
        hours=round((end_ms - start_ms) / 3_600_000, 3),
        clean_hours=round((end_ms - start_ms - covered) / 3_600_000, 3),
        firing=len(firing),
        resolved=sum(a.status == "RESOLVED" for a in published),
        false_firing=dict(sorted(false_firing.items())),
        false_raised=dict(sorted(false_raised.items())),
        faults=results,
        known_bias_published=dict(sorted(known_published.items())),
        known_bias_resolved=sum(a.status == "RESOLVED" and a.kind == KNOWN_BIAS for a in published),
        evaluation_every_s=every_s,
        published=[_describe(a) for a in published],
    )


def _describe(alert: Alert) -> str:
    return f"{alert.status} {alert.kind}|{alert.feature or ''}|{alert.slice} {alert.window_start} {alert.alert_id}"


def _record_catch(
    result: FaultResult, stretch: Stretch, alert: Alert, raised_in: int, window_ms: int, every_ms: int
) -> None:
    """Keep ``alert`` as the fault's catch if it is the earliest, then the first of the fault's expected kinds.

    Earliest by the alert's window for an event fault (the window its checks found the
    fault in); for a label fault, whose alerts span the range they rolled up, by the
    window whose closing raised it. The delay in windows counts from the onset's window
    to that one; a label fault's also counts label-based evaluations from the first that
    reads the onset's bucket.
    """
    expects = stretch.fault.expects
    when = raised_in if stretch.fault.breaks_labels else alert.window_start
    rank = (when, expects.index(alert.kind))
    earlier = (result.window_start or 0, expects.index(result.kind)) if result.kind in expects else None
    if result.caught and earlier is not None and rank >= earlier:
        return
    result.caught, result.kind, result.window_start = True, alert.kind, when
    result.delay_windows = (when - stretch.onset_ms) // window_ms
    if stretch.fault.breaks_labels:
        result.delay_evaluations = (raised_in - _first_evaluation(stretch.onset_ms, every_ms)) // every_ms


def render_long(report: LongReport) -> str:
    """The human-readable long-replay report."""
    lines = [
        f"long replay of the wide model: {report.events:,} events, {report.hours:g} h of event time, "
        f"{report.windows} windows of {report.window_s}s, {len(report.faults)} faults",
        "",
        f"{'fault':<22} {'feature':<22} {'onset':>6} {'caught by':<18} {'delay':>5} {'incidents':>9}  alerts",
    ]
    for f in report.faults:
        alerts = ", ".join(f"{k} x{v}" for k, v in (f.alerts or {}).items())
        delay = _delay_text(f)
        onset = f"{f.onset_s // 3600}:{f.onset_s % 3600 // 60:02d}"
        lines.append(
            f"{f.fault:<22} {f.feature:<22} {onset:>6} {f.kind or 'MISSED':<18} {delay:>5} {f.incidents_opened:>9}  "
            f"{alerts}"
        )
    false = ", ".join(f"{k} x{v}" for k, v in report.false_firing.items()) or "none"
    raised = ", ".join(f"{k} x{v}" for k, v in report.false_raised.items()) or "none"
    caught = sum(f.caught for f in report.faults)
    once = sum(v == 1 for v in report.known_bias_published.values())
    lines += [
        "",
        f"delay: windows after the onset's (w); label faults: label-based evaluations, every "
        f"{report.evaluation_every_s}s, after the first that reads the onset (e)",
        "labels: " + ", ".join(f"{v:,} {k}" for k, v in report.labels.items()),
        f"known biases in the labelled reference: {len(report.known_biases)}; known_bias findings published: "
        f"{sum(report.known_bias_published.values())} ({once} of them once, {report.known_bias_resolved} RESOLVED)",
        f"alerts published: {report.firing} FIRING (reminders and known biases included), {report.resolved} RESOLVED",
        f"clean traffic: {report.clean_hours:g} h; FIRING alerts there: {report.false_alarms} ({false})",
        f"  raised by the evaluators there, before the incident lifecycle: {sum(report.false_raised.values())} "
        f"({raised})",
        f"false alarms per week of clean traffic: {report.false_per_week:.2f} published "
        f"(budget: at most 1 per model), {report.raised_per_week:.2f} raised",
        *_budget_lines(report.budget),
        f"summary: {caught}/{len(report.faults)} faults caught; {report.false_alarms} false alarms "
        f"in {report.clean_hours:g} h of clean traffic ({report.false_per_week:.2f} per week)",
    ]
    return "\n".join(lines)


def _budget_lines(budget: Mapping[str, float]) -> list[str]:
    if not budget:
        return []
    spent = ", ".join(f"{family} {bound:.2f}" for family, bound in budget.items())
    return [
        f"  by design, chance alerts a week at most: {spent}; sum {sum(budget.values()):.2f} "
        "(row checks and the online detector: measured above)"
    ]


def _delay_text(f: FaultResult) -> str:
    if f.delay_windows is None:
        return "-"
    return f"{f.delay_evaluations}e" if f.delay_evaluations is not None else f"{f.delay_windows}w"
