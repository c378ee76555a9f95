"""The worker's sinks of the commit protocol (:mod:`stream_guard.checkpoint`): broker, Redis, group."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream_guard.checkpoint import Rejected
from stream_guard.deadletter import dead_letter_headers, drop_payload, fit_payload
from stream_guard.kafka import DeliveryTracker
from stream_guard.metrics.holding import ReleaseResult, stored_event_ids
from stream_guard.metrics.label_messages import LabelStream
from stream_guard.metrics.labels import JoinResult, Label
from stream_guard.source import Source
from stream_guard.state.client import RedisClient, pipeline
from stream_guard.state.protocol import LabelState
from stream_guard.state.window_store import StateUpdate, WindowStore
from stream_guard.transactions import Transaction, crash_point

log = structlog.get_logger("stream_guard.delivery")


class DeadLetterProducer:
    """Dead letters on ``topic``, each within the producer's ``message.max.bytes``."""

    def __init__(self, producer: DeliveryTracker, topic: str, worker_id: str) -> None:
        self._producer = producer
        self._topic = topic
        self._worker_id = worker_id

    def dead_letter(self, rejected: Rejected) -> None:
        message = rejected.message
        context = dead_letter_headers(message, rejected.error, model=rejected.model, worker_id=self._worker_id)
        value, headers = fit_payload(message.value(), message.key(), context, self._producer.max_message_bytes)
        dropped, dropped_headers = drop_payload(message.value(), context)
        self._producer.produce(
            self._topic,
            value,
            message.key(),
            headers=headers,
            timestamp=message.timestamp()[1],
            if_too_large={"value": dropped, "headers": dropped_headers},
        )
        log.debug(
            "dead letter",
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            reason=str(rejected.error),
        )

    def flush(self) -> None:
        self._producer.flush()


class RedisWindowState:
    """Every model's window store on one Redis client: all updates of a batch in one pipeline."""

    def __init__(
        self,
        client: RedisClient,
        stores: Mapping[str, WindowStore],
        on_roundtrip: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._client = client
        self._stores = stores
        self._on_roundtrip = on_roundtrip

    def apply(self, updates: Mapping[str, Sequence[StateUpdate]], now_ms: int) -> list[tuple[str, str]]:
        """Every model's updates in one pipeline; the (model, source) of those the fence skipped."""
        pipe = pipeline(self._client)
        order: list[tuple[str, str]] = []
        for model, model_updates in updates.items():
            self._stores[model].apply(list(model_updates), now_ms, pipe)
            order += [(model, u.source) for u in model_updates]
        started = time.perf_counter()
        results = pipe.execute()
        self._on_roundtrip(time.perf_counter() - started)
        return [key for key, applied in zip(order, results, strict=True) if applied == 0]


class RedisLabelJoins:
    """Each labels topic joined by its stream's joiner, on its model's store.

    The stores are the worker's Redis :class:`~stream_guard.state.window_store.WindowStore` stores,
    or any :class:`~stream_guard.state.protocol.LabelState` (a replay's in-memory state).
    """

    def __init__(self, streams: Mapping[str, LabelStream], stores: Mapping[str, LabelState]) -> None:
        self._streams = streams
        self._stores = stores

    def join(self, topic: str, labels: Sequence[Label], now_ms: int) -> JoinResult:
        stream = self._streams[topic]
        return stream.joiner.join(labels, self._stores[stream.model], now_ms=now_ms)

    def release(self, updates: Mapping[str, Sequence[StateUpdate]], now_ms: int) -> dict[str, ReleaseResult]:
        """Per model with labels: its held labels the events of ``updates`` stored predictions for, joined."""
        out: dict[str, ReleaseResult] = {}
        for stream in self._streams.values():
            model_updates = updates.get(stream.model)
            if model_updates and stream.joiner.hold_ms > 0:
                ids = stored_event_ids(model_updates, stream.joiner.keys)
                out[stream.model] = stream.joiner.release(ids, self._stores[stream.model], now_ms=now_ms)
        return out


class ConsumerOffsets:
    """Offsets stored on the consumer and committed asynchronously (a final sync commit on close)."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def commit(self, offsets: Mapping[Source, int]) -> None:
        self._consumer.store_offsets(offsets=[TopicPartition(s.topic, s.partition, o) for s, o in offsets.items()])
        self._consumer.commit(asynchronous=True)

    def commit_sync(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("final commit failed", error=str(exc))


class TransactionOffsets:
    """``exactly_once``: the offsets go with the turn's transaction, committed with its records."""

    def __init__(self, transaction: Transaction) -> None:
        self._transaction = transaction

    def commit(self, offsets: Mapping[Source, int]) -> None:
        self._transaction.add_offsets(offsets)
        crash_point("applied")


def lagging_partitions(
    consumer: Consumer, partitions: Sequence[TopicPartition], *, reset_to_end: bool = False, timeout_s: float = 1.0
) -> list[Source]:
    """The ``partitions`` with a backlog: records past the consumer's position (consumer lag > 0).

    The high watermark is the consumer's cached one (updated by every fetch), asked of the
    broker only for a partition not fetched yet. A partition without a position (nothing
    read since it was assigned) is measured from its committed offset, else from where
    ``auto.offset.reset`` starts it (the low watermark, or the high one if ``reset_to_end``).
    A broker that reports the high watermark late (below the true end) makes a partition
    look drained early, never lagging when it is not. Offsets that cannot be read count as
    no backlog.
    """
    if not partitions:
        return []
    positions = consumer.position(list(partitions))
    unread = [tp for tp in positions if tp.offset < 0]
    committed: dict[tuple[str, int], int] = {}
    if unread:
        try:
            found = consumer.committed([TopicPartition(tp.topic, tp.partition) for tp in unread], timeout=timeout_s)
            committed = {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}
        except KafkaException as exc:
            log.debug("committed offsets unavailable", error=str(exc))
    lagging = []
    for tp in positions:
        try:
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
        except KafkaException as exc:
            log.debug("watermark offsets unavailable", source=str(Source(tp.topic, tp.partition)), error=str(exc))
            continue
        position = tp.offset
        if position < 0:
            position = committed.get((tp.topic, tp.partition), high if reset_to_end else low)
        if high > position >= 0:
            lagging.append(Source(tp.topic, tp.partition))
    return lagging


def describe(partitions: Sequence[Any]) -> list[str]:
    """``topic:partition`` names of TopicPartitions, for logs."""
    return [str(Source(tp.topic, tp.partition)) for tp in partitions]


def rewind(consumer: Consumer, messages: Sequence[Any], logger: Any) -> None:
    """Seek each partition of ``messages`` back to its first record among them (read again)."""
    first: dict[Source, int] = {}
    for m in messages:
        if m.error() is None:
            source = Source(m.topic(), m.partition())
            first[source] = min(first.get(source, m.offset()), m.offset())
    for source, offset in first.items():
        try:
            consumer.seek(TopicPartition(source.topic, source.partition, offset))
        except KafkaException as exc:
            logger.warning("rewind failed", source=str(source), error=str(exc))


def leave_group(consumer: Consumer, batch_size: int, logger: Any, timeout_s: float = 10.0) -> None:
    """Unsubscribe, and let the revocation run in the poll loop, before ``close()``.

    A rebalance callback run inside ``close()`` can deadlock librdkafka: seen in CI, a
    worker of two stopping while the group rebalanced stuck for ever in
    ``rd_kafka_consumer_close`` → ``Consumer_rebalance_cb`` → ``rd_kafka_assign``.
    Records polled meanwhile are not processed and their offsets not committed: the
    partitions' next owner reads them.
    """
    try:
        consumer.unsubscribe()
        deadline = time.monotonic() + timeout_s
        while consumer.assignment() and time.monotonic() < deadline:
            consumer.consume(batch_size, 0.2)
    except KafkaException as exc:
        logger.warning("leaving the consumer group before closing failed", error=str(exc))
