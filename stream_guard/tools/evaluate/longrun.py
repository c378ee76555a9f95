"""The long replay: hours of wide-model traffic with a dozen faults, through the worker's incident lifecycle.

``stream-guard evaluate --long-replay`` answers "how often does it page on clean
traffic, and does it still catch real faults?" on realistic data. The wide sample
model (:mod:`stream_guard.tools.wide`: 22 features, 14 categorical, a score, known
biases) sends events at ``events_per_second`` for hours of event time; the faults of
:mod:`~stream_guard.tools.evaluate.longfaults` break one field each in their own
stretch, with ``clean_s`` of clean traffic before and after each.

The events pass the decoder's field checks (as JSON payloads), the worker's own
:class:`~stream_guard.pipeline.Pipeline` and a :class:`~stream_guard.state.memory.MemoryState`;
windows close through the worker's :class:`~stream_guard.closing.WindowCloser` with an
:class:`~stream_guard.alerts.lifecycle.IncidentTracker` on that state, so the alerts
counted are the alerts a worker would publish (FIRING, reminders and RESOLVED alike).

Attribution: a published alert belongs to a fault when its window overlaps the fault's
stretch extended by ``grace_s`` (an incident's last windows, a detector settling after
the fault ends); every other FIRING alert is a false alarm on clean traffic. Clean time
is the replay's event time outside those extended stretches; false alarms per week are
scaled from it. The same seed gives the same report.

Not replayed: slice metrics and label-based performance (they read Redis), dead letters.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_guard.alerts.lifecycle import IncidentTracker, LifecycleSettings
from stream_guard.alerts.model import Alert
from stream_guard.assembly import build_stages
from stream_guard.batch import EventBatch
from stream_guard.closing import WindowCloser
from stream_guard.decoding import Decoded, RecordChecker
from stream_guard.learning import frame_from_records, learn_from_frame
from stream_guard.model import ModelRuntime, build_models
from stream_guard.pipeline import Pipeline
from stream_guard.profile import BaselineProfile
from stream_guard.resources import schema_dir
from stream_guard.settings import Config, ModelConfig
from stream_guard.settings.drift import WEEK_S
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState
from stream_guard.state.update import WindowSnapshot
from stream_guard.tools.evaluate.events import SYNTHETIC_START_MS
from stream_guard.tools.evaluate.longfaults import LONG_FAULTS, LongFault, Stretch, break_record, plan_stretches
from stream_guard.tools.wide import WIDE_FEATURES, WIDE_SLICE_FIELDS, WideSimulator

MODEL = "wide"


def wide_config(base: Config | None = None) -> Config:
    """``base`` (its checks, drift, alerts and worker settings) with the wide model as its only model."""
    config = base or Config()
    model = ModelConfig(
        name=MODEL,
        topics=["wide.inferences"],
        schema=str(schema_dir() / "wide_inference.avsc"),
        encoding="json",
        event_id_field="event_id",
        timestamp_field="ts",
        features=list(WIDE_FEATURES),
        prediction_field="prediction",
        score_field="score",
        slice_fields=list(WIDE_SLICE_FIELDS),
    )
    return Config(
        worker=config.worker,
        alerts=config.alerts,
        checks=config.checks,
        drift=config.drift,
        models=[model],
        base_dir=config.base_dir,
    )


@dataclass(frozen=True)
class LongRunSettings:
    """The size of a long replay; the defaults make 6.2 hours and about 312,000 events."""

    events_per_second: float = 14.0
    clean_s: int = 1200
    fault_s: int = 600
    faults: tuple[LongFault, ...] = LONG_FAULTS
    grace_s: int = 300
    reference_events: int = 50_000
    batch_size: int = 500
    partitions: int = 3
    seed: int = 0
    #: Traffic starts this far into the first window, as when a worker starts mid-window:
    #: the first window is a small one (about 300 events by default).
    first_window_offset_s: int = 39


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
    incidents_opened: int = 0


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


class _RaisedAlerts(Pipeline):
    """The worker's pipeline, remembering the alerts its evaluators raise before the lifecycle filters them."""

    def __init__(self, config: Config, profiles: dict[str, BaselineProfile]) -> None:
        super().__init__(config, build_stages(config, profiles))
        self.raised: list[Alert] = []

    def window_alerts(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]:
        alerts = super().window_alerts(model, window)
        self.raised += alerts
        return alerts


class _KeptAlerts:
    """Stands in for the alerts producer: the closer returns what it published, nothing is sent."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        return None

    def flush(self, timeout_s: float = 30.0) -> None:
        return None


def learn_wide_profile(model: ModelRuntime, events: int, seed: int) -> BaselineProfile:
    """A baseline of ``events`` clean wide events from a simulator of its own seed."""
    reference = [{k: v for k, v in r.items() if k != "_p"} for r in WideSimulator(seed=seed + 1000).records(events, 0)]
    return learn_from_frame(model, frame_from_records(reference), f"wide simulator seed {seed + 1000}, {events} events")


def run_long_replay(
    config: Config, settings: LongRunSettings, progress: Callable[[str], None] | None = None
) -> LongReport:
    """Replay the script of ``settings`` on the wide model under ``config``'s checks, drift and alerts."""
    config = wide_config(config)
    (model,) = build_models(config)
    profile = model.profile = learn_wide_profile(model, settings.reference_events, settings.seed)
    profiles = {MODEL: profile}
    pipeline = _RaisedAlerts(config, profiles)
    w = config.worker
    keys = ModelKeys(config.redis.key_prefix, MODEL)
    state = MemoryState(
        keys, window_ms=w.window_s * 1000, lateness_ms=w.allowed_lateness_s * 1000, retention_s=w.retention_s
    )
    lifecycle = LifecycleSettings(config.alerts.cooldown_s, config.alerts.resolve_after_s)
    closer = WindowCloser(
        {MODEL: model},
        {MODEL: state},  # type: ignore[dict-item]  # the closer only needs the WindowState protocol
        {MODEL: IncidentTracker(state, settings=lifecycle)},
        pipeline,
        _KeptAlerts(),  # type: ignore[arg-type]  # produce and flush are all the closer calls
        "wide.alerts",
        lease_ms=0,
    )
    start_ms = SYNTHETIC_START_MS
    stretches, end_ms = plan_stretches(
        settings.faults, start_ms, clean_s=settings.clean_s, fault_s=settings.fault_s, window_s=w.window_s
    )
    step_ms = 1000.0 / settings.events_per_second
    first_ms = start_ms + min(settings.first_window_offset_s * 1000, w.window_s * 1000 - 1)
    n = int((end_ms - first_ms) / step_ms)
    simulator = WideSimulator(seed=settings.seed)
    rng = np.random.default_rng([settings.seed, 7])
    checker = RecordChecker(model.reader_schema, report_unexpected=True)
    injected = [0] * len(stretches)
    published: list[Alert] = []
    for first in range(0, n, settings.batch_size):
        size = min(settings.batch_size, n - first)
        records = simulator.records(size, int(first_ms + first * step_ms), step_ms)
        decoded = []
        for record in records:
            record.pop("_p")
            i = _active(stretches, record["ts"])
            if i is not None and rng.random() < stretches[i].fault.share:
                stretch = stretches[i]
                progress_share = (record["ts"] - stretch.onset_ms) / (stretch.end_ms - stretch.onset_ms)
                record = break_record(stretch.fault, record, progress_share, rng)
                injected[i] += 1
            values, issues = checker.check(record)
            decoded.append(Decoded(values, issues))
        batch = _batch(decoded, records, first, settings.partitions)
        updates, _ = pipeline.batch_updates(model, batch, keys, {})
        clock = int(batch.event_time_ms.max())
        state.apply(updates, clock)
        published += closer.close_due(clock)
        if progress and (first // settings.batch_size) % 50 == 0:
            progress(f"long replay: {first:,}/{n:,} events, {len(published)} alerts")
    published += closer.close_due(end_ms, final=True)
    return _report(settings, config, stretches, injected, published, pipeline.raised, n, start_ms, end_ms)


def _active(stretches: Sequence[Stretch], ts: int) -> int | None:
    for i, stretch in enumerate(stretches):
        if stretch.onset_ms <= ts < stretch.end_ms:
            return i
    return None


def _batch(decoded: list[Decoded], records: list[dict[str, Any]], first: int, partitions: int) -> EventBatch:
    index = np.arange(first, first + len(records), dtype=np.int64)
    return EventBatch(
        model=MODEL,
        decoded=decoded,
        topics=["wide.inferences"] * len(records),
        partitions=index % partitions,
        offsets=index // partitions,
        event_time_ms=np.array([r["ts"] for r in records], dtype=np.int64),
        event_ids=[r["event_id"] for r in records],
        failed=np.zeros(len(records), dtype=bool),
    )


def _owner(stretches: Sequence[Stretch], alert: Alert, grace_ms: int) -> int | None:
    """The fault whose stretch (plus the grace) the alert's window overlaps, if any."""
    for i, s in enumerate(stretches):
        if alert.window_start < s.end_ms + grace_ms and alert.window_end > s.onset_ms:
            return i
    return None


def _report(
    settings: LongRunSettings,
    config: Config,
    stretches: list[Stretch],
    injected: list[int],
    published: list[Alert],
    raised: list[Alert],
    events: int,
    start_ms: int,
    end_ms: int,
) -> LongReport:
    window_ms, grace_ms = config.worker.window_s * 1000, settings.grace_s * 1000
    results = [
        FaultResult(
            s.fault.name,
            s.fault.feature,
            list(s.fault.expects),
            (s.onset_ms - start_ms) // 1000,
            (s.end_ms - s.onset_ms) // 1000,
            injected[i],
            alerts={},
        )
        for i, s in enumerate(stretches)
    ]
    false_firing: Counter[str] = Counter()
    seen_incidents: set[str] = set()
    firing = [a for a in published if a.status == "FIRING"]
    for alert in sorted(firing, key=lambda a: (a.window_start, a.kind, a.feature or "", a.slice)):
        label = f"{alert.kind}|{alert.feature or ''}"
        owner = _owner(stretches, alert, grace_ms)
        if owner is None:
            false_firing[label] += 1
            seen_incidents.add(alert.incident_id)
            continue
        result, stretch = results[owner], stretches[owner]
        assert result.alerts is not None
        result.alerts[label] = result.alerts.get(label, 0) + 1
        if alert.incident_id not in seen_incidents:
            seen_incidents.add(alert.incident_id)
            result.incidents_opened += 1
        expects = stretch.fault.expects
        if alert.feature == stretch.fault.feature and alert.kind in expects:
            # The first window that names the fault; within it, the first kind the fault expects.
            rank = (alert.window_start, expects.index(alert.kind))
            if not result.caught or rank < (result.window_start or 0, expects.index(result.kind or expects[0])):
                result.caught, result.kind, result.window_start = True, alert.kind, alert.window_start
                result.delay_windows = (alert.window_start - stretch.onset_ms) // window_ms
    false_raised = Counter(
        f"{a.kind}|{a.feature or ''}" for a in raised if a.status == "FIRING" and _owner(stretches, a, grace_ms) is None
    )
    covered = sum(min(s.end_ms + grace_ms, end_ms) - s.onset_ms for s in stretches)
    return LongReport(
        events=events,
        windows=math.ceil((end_ms - start_ms) / window_ms),
        window_s=config.worker.window_s,
        hours=round((end_ms - start_ms) / 3_600_000, 3),
        clean_hours=round((end_ms - start_ms - covered) / 3_600_000, 3),
        firing=len(firing),
        resolved=sum(a.status == "RESOLVED" for a in published),
        false_firing=dict(sorted(false_firing.items())),
        false_raised=dict(sorted(false_raised.items())),
        faults=results,
    )


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
        delay = "-" if f.delay_windows is None else f"{f.delay_windows}w"
        onset = f"{f.onset_s // 3600}:{f.onset_s % 3600 // 60:02d}"
        lines.append(
            f"{f.fault:<22} {f.feature:<22} {onset:>6} {f.kind or 'MISSED':<18} {delay:>5} {f.incidents_opened:>9}  "
            f"{alerts}"
        )
    false = ", ".join(f"{k} x{v}" for k, v in report.false_firing.items()) or "none"
    raised = ", ".join(f"{k} x{v}" for k, v in report.false_raised.items()) or "none"
    caught = sum(f.caught for f in report.faults)
    lines += [
        "",
        f"alerts published: {report.firing} FIRING (reminders included), {report.resolved} RESOLVED",
        f"clean traffic: {report.clean_hours:g} h; FIRING alerts there: {report.false_alarms} ({false})",
        f"  raised by the evaluators there, before the incident lifecycle: {sum(report.false_raised.values())} "
        f"({raised})",
        f"false alarms per week of clean traffic: {report.false_per_week:.2f} published "
        f"(budget: at most 1 per model), {report.raised_per_week:.2f} raised",
        f"summary: {caught}/{len(report.faults)} faults caught; {report.false_alarms} false alarms "
        f"in {report.clean_hours:g} h of clean traffic ({report.false_per_week:.2f} per week)",
    ]
    return "\n".join(lines)


def timed_long_replay(
    config: Config, settings: LongRunSettings, progress: Callable[[str], None] | None = None
) -> tuple[LongReport, float]:
    """:func:`run_long_replay` and its wall-clock seconds."""
    started = time.perf_counter()
    report = run_long_replay(config, settings, progress)
    return report, time.perf_counter() - started
