"""The long replay: hours of wide-model traffic and its labels with 14 faults, through the worker's incident lifecycle.

``stream-guard evaluate --long-replay`` answers "how often does it page on clean
traffic, and does it still catch real faults?" on realistic data. The wide sample
model (:mod:`stream_guard.tools.wide`: 22 features, 14 categorical, a score, known
biases) sends events at ``events_per_second`` for hours of event time; the faults of
:mod:`~stream_guard.tools.evaluate.longfaults` break one field each in their own
stretch, with ``clean_s`` of clean traffic before and after each.

The events pass the decoder's field checks (as JSON payloads), the worker's own
:class:`~stream_guard.pipeline.Pipeline` (checks, drift and slice metrics) and a
:class:`~stream_guard.state.memory.MemoryState`. Their labels (the simulator's ground truth,
:mod:`~stream_guard.tools.evaluate.longlabels`) arrive minutes later and are joined by the
worker's :class:`~stream_guard.metrics.LabelJoiner`, in the worker's commit order
(:class:`~stream_guard.checkpoint.Checkpoint`: events, then labels, then held labels). Windows
close through the worker's :class:`~stream_guard.closing.WindowCloser`, with its label gate
and an :class:`~stream_guard.alerts.lifecycle.IncidentTracker` on that state, and are
evaluated by the worker's evaluators, the label-based ones
(:class:`~stream_guard.metrics.PerformanceEvaluator`,
:class:`~stream_guard.metrics.concept.ConceptDriftEvaluator`) and the label-free estimate
(:class:`~stream_guard.metrics.estimate_alerts.EstimatePerformanceEvaluator`) included, all
wired by :func:`~stream_guard.assembly.add_metrics`. The baseline is learned from a labelled
reference, so slices have their own baselines and the known biases are listed. The alerts
counted are the alerts a worker would publish (FIRING, reminders and RESOLVED alike).

Attribution (:mod:`~stream_guard.tools.evaluate.longreport`): a published alert belongs to
a fault when its window overlaps the fault's stretch extended by ``grace_s`` (an
incident's last windows, a detector settling after the fault ends), or, for label-based
and estimate alerts, when the range they rolled up overlaps the stretch; every other
FIRING alert is a false alarm on clean traffic, except the ``known_bias`` findings
(informational, on the reference's window), which are counted apart. Clean time is the
replay's event time outside those extended stretches; false alarms per week are scaled
from it. A label fault's delay counts label-based evaluations (windows on the
``performance_every_s`` grid) from the first one that reads its onset's bucket. The same
seed gives the same report.

Not replayed: dead letters.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from stream_guard.alerts.model import Alert
from stream_guard.assembly import add_metrics, build_stages, incident_tracker, label_gates
from stream_guard.batch import EventBatch
from stream_guard.checkpoint import Checkpoint, CommitResult, Rejected, Sinks
from stream_guard.closing import WindowCloser
from stream_guard.decoding import Decoded, RecordChecker
from stream_guard.delivery import RedisLabelJoins
from stream_guard.learning import frame_from_records, learn_from_frame
from stream_guard.metrics import LabelStream
from stream_guard.model import ModelRuntime, build_models
from stream_guard.pipeline import Pipeline
from stream_guard.profile import BaselineProfile
from stream_guard.resources import schema_dir
from stream_guard.settings import Config, ModelConfig
from stream_guard.settings.metrics import LabelSettings, MetricsSettings
from stream_guard.stages import Stages
from stream_guard.state.keys import Fence, ModelKeys
from stream_guard.state.memory import MemoryState
from stream_guard.state.update import StateUpdate, WindowSnapshot
from stream_guard.tools.evaluate.budget import false_alarm_budget
from stream_guard.tools.evaluate.events import SYNTHETIC_START_MS
from stream_guard.tools.evaluate.longfaults import LONG_FAULTS, LongFault, Stretch, break_record, plan_stretches
from stream_guard.tools.evaluate.longlabels import LABELS_TOPIC, DelayedLabels
from stream_guard.tools.evaluate.longreport import LongReport, ReplayOutcome, build_report
from stream_guard.tools.wide import WIDE_FEATURES, WIDE_SLICE_FIELDS, WideSimulator

MODEL = "wide"


def long_metrics() -> MetricsSettings:
    """The wide model's ``[models.metrics]`` in the long replay: the defaults on the replay's time scale.

    Faults last 10 minutes between 20 clean ones, so the label-based checks run every 5 min
    over the last 10 min (the defaults, every hour over 24 h, would spread a fault over a
    day), wait 5 min for the labels (the longest label delay), and the estimate rolls up
    10 min as well. Each evaluation's level follows from the weekly budget
    (``performance_false_alarms_per_week``, :func:`~stream_guard.settings.metrics.repeated_alpha`):
    12 evaluations an hour test at a twelfth of the hourly cadence's level.
    """
    return MetricsSettings(
        performance_every_s=300,
        performance_lookback_s=600,
        performance_label_delay_s=300,
        estimate_window_s=600,
    )


def wide_config(base: Config | None = None, metrics: MetricsSettings | None = None) -> Config:
    """``base`` (its checks, drift, alerts and worker settings) with the wide model as its only model.

    The model keeps slice metrics under ``metrics`` (default :func:`long_metrics`) and reads
    its delayed labels (JSON, event id, ``label`` and ``ts``) from ``wide.labels``.
    """
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
        metrics=metrics or long_metrics(),
        labels=LabelSettings(topic=LABELS_TOPIC, encoding="json", timestamp_field="ts"),
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
    """The size of a long replay; the defaults make 7.2 hours and about 362,000 events."""

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
    #: A label arrives between these many seconds after its event (uniform).
    label_delay_s: tuple[int, int] = (120, 300)
    #: The wide model's ``[models.metrics]`` (:func:`long_metrics`).
    metrics: MetricsSettings = field(default_factory=long_metrics)


class _RaisedAlerts(Pipeline):
    """The worker's pipeline, remembering the alerts its evaluators raise before the lifecycle filters them.

    ``first_window`` maps each alert's id to the start of the first window whose closing raised it.
    """

    def __init__(self, config: Config, stages: Stages) -> None:
        super().__init__(config, stages)
        self.raised: list[Alert] = []
        self.first_window: dict[str, int] = {}

    def window_alerts(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]:
        alerts = super().window_alerts(model, window)
        self.raised += alerts
        for alert in alerts:
            self.first_window.setdefault(alert.alert_id, window.start_ms)
        return alerts


class _KeptAlerts:
    """Stands in for the alerts producer: the closer returns what it published, nothing is sent."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        return None

    def flush(self, timeout_s: float = 30.0) -> None:
        return None


class _NoDeadLetters:
    """The dead-letter sink of a replay whose records all decode (the checker's issues become findings)."""

    def dead_letter(self, rejected: Rejected) -> None:
        raise AssertionError(f"the long replay produced a dead letter: {rejected.error}")

    def flush(self) -> None:
        return None


class _MemoryStateSink:
    """The state sink of the worker's commit on the replay's in-memory state."""

    def __init__(self, state: MemoryState) -> None:
        self._state = state

    def apply(self, updates: Mapping[str, Sequence[StateUpdate]], now_ms: int) -> None:
        self._state.apply(list(updates.get(MODEL, ())), now_ms)


class _NoOffsets:
    def commit(self, offsets: Mapping[Any, int]) -> None:
        return None


def _labelled_reference(events: int, seed: int) -> list[dict[str, Any]]:
    """``events`` clean wide events of their own seed, with their ``label`` drawn from their true risk."""
    records = WideSimulator(seed=seed + 1000).records(events, 0)
    rng = np.random.default_rng([seed, 1000, 11])
    outcomes = rng.random(len(records)) < np.array([r.pop("_p") for r in records])
    for record, outcome in zip(records, outcomes, strict=True):
        record["label"] = int(outcome)
    return records


def learn_wide_profile(
    model: ModelRuntime, events: int, seed: int, learned_ms: int = SYNTHETIC_START_MS
) -> BaselineProfile:
    """A baseline of ``events`` clean, labelled wide events from a simulator of its own seed.

    The labels make it a labelled reference (slices' own baselines, known biases, the
    calibration of the estimate). ``learned_ms`` is its ``created_at``, instead of the wall
    clock, so that a replay's ``known_bias`` findings (whose window is that moment) have
    the same ids on every run.
    """
    reference = frame_from_records(_labelled_reference(events, seed))
    profile = learn_from_frame(
        model, reference, f"wide simulator seed {seed + 1000}, {events} events", label_column="label"
    )
    profile.created_at = datetime.fromtimestamp(learned_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    return profile


@dataclass
class _Replay:
    """The worker's parts of one long replay, on one in-memory state."""

    model: ModelRuntime
    keys: ModelKeys
    state: MemoryState
    pipeline: _RaisedAlerts
    closer: WindowCloser
    sinks: Sinks
    #: The label join, if the model keeps metrics (``[models.metrics] enabled``).
    labels: LabelStream | None


def _assemble(config: Config, settings: LongRunSettings, start_ms: int) -> _Replay:
    """The wide model's pipeline, label join, state, closer and incidents, wired as a worker wires them."""
    (model,) = build_models(config)
    profile = model.profile = learn_wide_profile(model, settings.reference_events, settings.seed, start_ms)
    w = config.worker
    keys = ModelKeys(config.redis.key_prefix, MODEL)
    state = MemoryState(
        keys, window_ms=w.window_s * 1000, lateness_ms=w.allowed_lateness_s * 1000, retention_s=w.retention_s
    )
    stages = build_stages(config, {MODEL: profile})
    streams = add_metrics(config, [model], state, stages, None)
    labels = streams[0] if streams else None
    pipeline = _RaisedAlerts(config, stages)
    closer = WindowCloser(
        {MODEL: model},
        {MODEL: state},  # type: ignore[dict-item]  # the closer only needs the WindowState protocol
        {MODEL: incident_tracker(config, model, state)},
        pipeline,
        _KeptAlerts(),  # type: ignore[arg-type]  # produce and flush are all the closer calls
        "wide.alerts",
        lease_ms=0,
        label_gates=label_gates([model], {MODEL: state}, w.window_s * 1000),
    )
    sinks = Sinks(
        _NoDeadLetters(),
        _MemoryStateSink(state),
        RedisLabelJoins({s.topic: s for s in streams}, {MODEL: state}),
        _NoOffsets(),
    )
    return _Replay(model, keys, state, pipeline, closer, sinks, labels)


def _commit(replay: _Replay, updates: list[StateUpdate], labels: list[Any], now_ms: int, counts: Counter[str]) -> None:
    """One batch through the worker's commit: its events' updates, then the labels arrived, then held ones."""
    checkpoint = Checkpoint()
    if updates:
        checkpoint.add_updates(MODEL, updates)
    if labels and replay.labels is not None:
        checkpoint.add_labels(replay.labels.topic, labels)
    _count_labels(checkpoint.commit(replay.sinks, now_ms), counts)


def _count_labels(result: CommitResult, counts: Counter[str]) -> None:
    for join in result.joins.values():
        counts.update(matched=join.matched, unmatched=join.unmatched, held=join.held, invalid=join.invalid)
    for release in result.releases.values():
        counts.update(released=release.released, expired=release.expired)


def run_long_replay(
    config: Config, settings: LongRunSettings, progress: Callable[[str], None] | None = None
) -> LongReport:
    """Replay the script of ``settings`` on the wide model under ``config``'s checks, drift and alerts."""
    config = wide_config(config, settings.metrics)
    start_ms = SYNTHETIC_START_MS
    replay = _assemble(config, settings, start_ms)
    model, state, pipeline, closer = replay.model, replay.state, replay.pipeline, replay.closer
    w = config.worker
    stretches, end_ms = plan_stretches(
        settings.faults, start_ms, clean_s=settings.clean_s, fault_s=settings.fault_s, window_s=w.window_s
    )
    step_ms = 1000.0 / settings.events_per_second
    first_ms = start_ms + min(settings.first_window_offset_s * 1000, w.window_s * 1000 - 1)
    n = int((end_ms - first_ms) / step_ms)
    simulator = WideSimulator(seed=settings.seed)
    rng = np.random.default_rng([settings.seed, 7])
    checker = RecordChecker(model.reader_schema, report_unexpected=True)
    low, high = settings.label_delay_s
    labels = DelayedLabels(settings.partitions, min_delay_s=low, max_delay_s=high, seed=settings.seed)
    if replay.labels is not None:
        state.register_sources(labels.sources, start_ms, Fence.LABELS)  # as a worker does on assignment
    label_counts: Counter[str] = Counter()
    injected = [0] * len(stretches)
    published: list[Alert] = []
    for first in range(0, n, settings.batch_size):
        size = min(settings.batch_size, n - first)
        records = simulator.records(size, int(first_ms + first * step_ms), step_ms)
        decoded = []
        for i, record in enumerate(records):
            s = _active(stretches, record["ts"])
            if s is not None and rng.random() < stretches[s].fault.share:
                stretch = stretches[s]
                progress_share = (record["ts"] - stretch.onset_ms) / (stretch.end_ms - stretch.onset_ms)
                record = records[i] = break_record(stretch.fault, record, progress_share, rng)
                injected[s] += 1
            values, issues = checker.check({k: v for k, v in record.items() if k != "_p"})
            decoded.append(Decoded(values, issues))
        batch = _batch(decoded, records, first, settings.partitions)
        labels.add(records, batch.partitions.tolist())
        updates, _ = pipeline.batch_updates(model, batch, replay.keys, {})
        clock = int(batch.event_time_ms.max())
        _commit(replay, updates, labels.due(clock), clock, label_counts)
        published += closer.close_due(clock)
        if progress and (first // settings.batch_size) % 50 == 0:
            progress(f"long replay: {first:,}/{n:,} events, {len(published)} alerts")
    last = labels.last_arrival()
    if last is not None:  # the labels of the last events arrive after them
        _commit(replay, [], labels.due(last), last, label_counts)
    published += closer.close_due(max(end_ms, last or end_ms), final=True)
    outcome = ReplayOutcome(stretches, injected, published, pipeline.raised, pipeline.first_window, n, start_ms, end_ms)
    report = build_report(
        outcome, window_s=w.window_s, grace_s=settings.grace_s, every_s=settings.metrics.performance_every_s
    )
    report.labels = {k: label_counts[k] for k in ("matched", "unmatched", "held", "released", "expired", "invalid")}
    known = model.profile.performance.known_biases if model.profile and model.profile.performance else []
    report.known_biases = sorted(f"{b.metric}|{b.slice}" for b in known)
    report.budget = false_alarm_budget(config, settings.metrics, fields=_drift_fields(config, model))
    return report


def _drift_fields(config: Config, model: ModelRuntime) -> int:
    """The fields the window drift of ``model`` judges: its features, score and prediction, unless disabled."""
    names = [
        *model.numeric_features,
        *model.categorical_features,
        model.config.score_field,
        model.config.prediction_field,
    ]
    return sum(config.drift.feature(n).enabled for n in dict.fromkeys(n for n in names if n))


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


def timed_long_replay(
    config: Config, settings: LongRunSettings, progress: Callable[[str], None] | None = None
) -> tuple[LongReport, float]:
    """:func:`run_long_replay` and its wall-clock seconds."""
    started = time.perf_counter()
    report = run_long_replay(config, settings, progress)
    return report, time.perf_counter() - started
