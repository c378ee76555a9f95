"""Prometheus metrics of one worker (prometheus-client), in a registry of its own.

Naming follows the Prometheus conventions: the ``stream_guard_`` prefix, ``_total`` on
counters, base units (seconds, records). Labels are bounded: model, topic, partition,
kind, severity and outcome take a handful of values each; a slice is never a label.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream_guard.source import Source

if TYPE_CHECKING:
    from stream_guard.metrics.holding import ReleaseResult
    from stream_guard.metrics.labels import JoinResult
    from stream_guard.pipeline import StagedBatch

log = structlog.get_logger("stream_guard.observability")

_BATCH_SIZES = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    """The counters, gauges and histograms of a worker; ``registry`` is what ``/metrics`` serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.consumed = Counter(
            "stream_guard_records_consumed", "Records consumed, by topic.", ["model", "topic"], registry=r
        )
        self.decoded = Counter("stream_guard_records_decoded", "Records decoded.", ["model"], registry=r)
        self.dead_lettered = Counter(
            "stream_guard_records_dead_lettered", "Records sent to the dead-letter topic.", ["model"], registry=r
        )
        self.redelivered = Counter(
            "stream_guard_records_redelivered", "Records skipped as already applied.", ["model"], registry=r
        )
        self.findings = Counter("stream_guard_findings", "Rows with a finding, by kind.", ["model", "kind"], registry=r)
        self.alerts = Counter(
            "stream_guard_alerts", "Alerts published, by kind and severity.", ["model", "kind", "severity"], registry=r
        )
        self.labels = Counter(
            "stream_guard_labels",
            "Labels by outcome (matched, unmatched, invalid, redelivered, held; held ones end released or expired).",
            ["model", "outcome"],
            registry=r,
        )
        self.batch_size = Histogram(
            "stream_guard_batch_size_records", "Records per polled batch.", buckets=_BATCH_SIZES, registry=r
        )
        self.batch_seconds = Histogram(
            "stream_guard_batch_duration_seconds", "Time to process and commit a batch.", buckets=_SECONDS, registry=r
        )
        self.redis_seconds = Histogram(
            "stream_guard_redis_roundtrip_seconds",
            "Time of a batch's Redis pipeline (all its fenced scripts).",
            buckets=_SECONDS,
            registry=r,
        )
        self.retries = Counter("stream_guard_batch_retries", "Batches rewound and retried after an outage.", registry=r)
        self.label_pauses = Counter(
            "stream_guard_label_pauses",
            "Labels partitions paused while ahead of the event backlog (label pacing).",
            registry=r,
        )
        self.lag = Gauge(
            "stream_guard_consumer_lag_records",
            "Consumer lag per assigned partition (librdkafka statistics).",
            ["topic", "partition"],
            registry=r,
        )
        self.applied_offset = Gauge(
            "stream_guard_last_applied_offset",
            "Last offset applied to Redis per partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned = Gauge("stream_guard_assigned_partitions", "Partitions assigned to this worker.", registry=r)

    def observe_batch(
        self,
        *,
        consumed: Mapping[tuple[str, str], int],
        redelivered: Mapping[str, int],
        staged: Mapping[str, StagedBatch],
        rejected: Sequence[str],
        joins: Mapping[str, JoinResult],
        applied: Mapping[tuple[str, Source], int],
        seconds: float,
        releases: Mapping[str, ReleaseResult] | None = None,
    ) -> None:
        """Count one committed batch: records by outcome, findings by kind, labels, offsets, timing."""
        for (model, topic), n in consumed.items():
            self.consumed.labels(model, topic).inc(n)
        for model, n in redelivered.items():
            self.redelivered.labels(model).inc(n)
        for model, batch in staged.items():
            self.decoded.labels(model).inc(batch.decoded)
            kinds: collections.Counter[str] = collections.Counter()
            for finding in batch.findings:
                kinds[finding.kind] += len(finding.rows)
            for kind, rows in kinds.items():
                self.findings.labels(model, kind).inc(rows)
        for model in rejected:
            self.dead_lettered.labels(model).inc()
        for model, join in joins.items():
            outcomes = {"matched": join.matched, "unmatched": join.unmatched, "invalid": join.invalid}
            for outcome, n in {**outcomes, "held": join.held, "redelivered": join.skipped}.items():
                self.labels.labels(model, outcome).inc(n)
        for model, release in (releases or {}).items():
            self.labels.labels(model, "released").inc(release.released)
            self.labels.labels(model, "expired").inc(release.expired)
        for (_, source), offset in applied.items():
            self.applied_offset.labels(source.topic, str(source.partition)).set(offset)
        self.batch_size.observe(sum(consumed.values()))
        self.batch_seconds.observe(seconds)

    def observe_alerts(self, alerts: Iterable[Any]) -> None:
        for alert in alerts:
            self.alerts.labels(alert.model, alert.kind, str(alert.severity).lower()).inc()

    def on_stats(self, stats_json: str) -> None:
        """librdkafka's ``stats_cb``: the consumer lag of each assigned partition."""
        try:
            stats = json.loads(stats_json)
        except ValueError:
            log.warning("librdkafka statistics not JSON; ignored")
            return
        for topic, info in (stats.get("topics") or {}).items():
            for partition, p in (info.get("partitions") or {}).items():
                lag = p.get("consumer_lag", -1)
                if partition != "-1" and isinstance(lag, int) and lag >= 0:
                    self.lag.labels(topic, partition).set(lag)

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample (for tests and the stats line); 0 when absent."""
        sample = self.registry.get_sample_value(name, labels)
        return 0.0 if sample is None else sample
