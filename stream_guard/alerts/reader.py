"""Reading the alerts topic as ``stream-guard alerts`` does: filters, a start time, the user's security settings."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from stream_guard.alerts.codec import AlertDecoder, decode_alert
from stream_guard.errors import StreamGuardError
from stream_guard.registry import registry_client
from stream_guard.settings import Config
from stream_guard.settings.kinds import Severity

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to show; an empty set means any."""

    models: frozenset[str] = field(default_factory=frozenset)
    kinds: frozenset[str] = field(default_factory=frozenset)
    #: Show this severity and the more severe ones.
    min_severity: Severity | None = None

    def accepts(self, record: dict[str, Any]) -> bool:
        if self.models and record["model"] not in self.models:
            return False
        if self.kinds and not self.kinds & kinds_of(record):
            return False
        return self.min_severity is None or _RANK[Severity(record["severity"])] >= _RANK[self.min_severity]


def kinds_of(record: dict[str, Any]) -> set[str]:
    """An alert's kind and the kinds of the findings it carries as evidence (``related``)."""
    return {record["kind"], *(r["kind"] for r in record.get("related") or [])}


def alerts_consumer(config: Config, *, group_id: str | None, from_beginning: bool) -> Consumer:
    """A consumer of the alerts topic with ``[kafka] consumer`` settings (SASL/SSL...) applied.

    Without ``group_id`` it belongs to a throw-away group and commits nothing; with one,
    the group remembers where it stopped. It reads ``read_committed``: with
    ``[kafka] delivery = "exactly_once"`` an aborted transaction's alerts are never shown
    (no difference for alerts produced without transactions).
    """
    settings = {
        "bootstrap.servers": config.kafka.bootstrap_servers,
        **config.kafka.consumer,
        "group.id": group_id or f"stream-guard-alerts-cli-{time.time_ns()}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": group_id is not None,
        "isolation.level": "read_committed",
    }
    return Consumer(settings)


def positions_since(consumer: Consumer, topic: str, since_ms: int, timeout_s: float = 10.0) -> list[TopicPartition]:
    """Each partition of ``topic`` at its first alert produced at or after ``since_ms``."""
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise StreamGuardError(f"alerts topic {topic!r} not found on the broker")
    wanted = [TopicPartition(topic, p, since_ms) for p in sorted(metadata.partitions)]
    found = consumer.offsets_for_times(wanted, timeout=timeout_s)
    # No message at or after the time: start at the end (offset -1 from the broker).
    return [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found]


def alert_decoder(config: Config) -> AlertDecoder:
    """Reads alerts of every encoding; with ``schema_registry.url``, framed ones with their registered writer schema."""
    return AlertDecoder(registry_client(config))


def iter_alerts(
    consumer: Consumer,
    *,
    accepts: AlertFilter,
    stop: Any,
    poll_s: float = 0.5,
    decode: Callable[[bytes | None], dict[str, Any]] = decode_alert,
) -> Iterator[dict[str, Any]]:
    """Decoded alerts that pass the filter, until ``stop()`` is true; tombstones and client errors skipped."""
    while not stop():
        message = consumer.poll(poll_s)
        if message is None or message.error() is not None or message.value() is None:
            continue
        record = decode(message.value())
        if accepts.accepts(record):
            yield record


def with_iso_times(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its timestamps as ISO-8601 strings (UTC), for ``--json``."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in record.items()}
