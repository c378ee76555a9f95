"""The worker loop: poll a micro-batch, decode, validate, aggregate, deliver, commit.

Delivery is at-least-once. For every batch, in this order:

1. dead letters are produced and acknowledged by the broker;
2. the batch's window counters go to Redis, fenced by the last applied offset of each
   partition (a redelivered batch is skipped, never counted twice);
3. only then are the offsets stored and committed.

Alerts are produced when a window closes (see :mod:`stream_guard.state.window_store`);
a window is removed from the open set only after its alerts are acknowledged.
If any step fails, the batch's partitions are rewound and the batch is retried.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stream_guard.alerts.codec import encode_alert
from stream_guard.alerts.lifecycle import IncidentTracker, LifecycleSettings
from stream_guard.alerts.model import Alert
from stream_guard.deadletter import dead_letter_headers
from stream_guard.errors import DecodeError, DeliveryError, RegistryUnavailableError, StreamGuardError
from stream_guard.kafka import DeliveryTracker, make_consumer, producer_settings
from stream_guard.metrics import LabelStream
from stream_guard.model import ModelRuntime
from stream_guard.pipeline import Pipeline
from stream_guard.settings import Config
from stream_guard.state.keys import ModelKeys
from stream_guard.state.window_store import StateUpdate, WindowStore

log = structlog.get_logger("stream_guard.worker")


_RETRYABLE = (DeliveryError, RegistryUnavailableError, redis.RedisError, KafkaException)


@dataclass
class WorkerStats:
    consumed: int = 0
    decoded: int = 0
    dead_lettered: int = 0
    redelivered_skipped: int = 0
    batches: int = 0
    alerts: int = 0
    retries: int = 0
    labels_matched: int = 0
    labels_unmatched: int = 0
    #: Labels that decoded but lack an event id or a label value.
    labels_invalid: int = 0
    #: Labels of a redelivered batch, already applied.
    labels_skipped: int = 0

    @property
    def accounted(self) -> int:
        """Consumed records by outcome; equals ``consumed`` when nothing was lost."""
        return (
            self.decoded
            + self.dead_lettered
            + self.redelivered_skipped
            + self.labels_matched
            + self.labels_unmatched
            + self.labels_invalid
            + self.labels_skipped
        )


def _source(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class Worker:
    """One stream_guard worker; run several with the same group id to split partitions."""

    def __init__(
        self,
        config: Config,
        models: Sequence[ModelRuntime],
        redis_client: redis.Redis,
        *,
        worker_id: str | None = None,
        consumer_overrides: dict[str, Any] | None = None,
        pipeline: Pipeline | None = None,
        label_streams: Sequence[LabelStream] = (),
        profiles: dict[str, Any] | None = None,
        close_interval_s: float = 1.0,
        lease_ms: int = 30_000,
    ) -> None:
        self.config = config
        self.worker_id = worker_id or f"sg-{uuid.uuid4().hex[:8]}"
        self.stats = WorkerStats()
        self._models = {m.name: m for m in models}
        self._model_of_topic = {t: m for m in models for t in m.config.topics}
        self._redis = redis_client
        w = config.worker
        self._stores = {
            m.name: WindowStore(
                redis_client,
                ModelKeys(config.redis.key_prefix, m.name),
                window_ms=w.window_s * 1000,
                lateness_ms=w.allowed_lateness_s * 1000,
                idle_ms=int(w.idle_partition_s * 1000),
                retention_s=w.retention_s,
                worker_id=self.worker_id,
            )
            for m in models
        }
        self._pipeline = pipeline or Pipeline(config)
        lifecycle = LifecycleSettings(config.alerts.cooldown_s, config.alerts.resolve_after_s)
        self._incidents = {m.name: IncidentTracker(redis_client, self._stores[m.name].keys, lifecycle) for m in models}
        self._label_streams = {stream.topic: stream for stream in label_streams}
        # Shared with the checkers: a reloaded profile replaces its entry here.
        self._profiles = profiles if profiles is not None else {}
        self._consumer = make_consumer(config.kafka, **(consumer_overrides or {}))
        self._producer = DeliveryTracker(producer_settings(config.kafka))
        self._applied: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._close_interval_s = close_interval_s
        self._lease_ms = lease_ms
        self._last_close = 0.0
        self._log = log.bind(worker=self.worker_id, group=config.kafka.group_id)

    # -- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and close (safe from signal handlers)."""
        self._stop.set()

    def run(self, duration_s: float | None = None, *, drain_on_exit: bool = False) -> WorkerStats:
        """Consume until :meth:`stop` or ``duration_s``; returns the counters.

        ``drain_on_exit`` closes every open window before leaving, as if the stream had
        ended: right for a demo or a finite replay, wrong for one worker of many.
        """
        topics = sorted({*self._model_of_topic, *self._label_streams})
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._log.info("worker started", topics=topics, models=sorted(self._models))
        deadline = None if duration_s is None else time.monotonic() + duration_s
        w = self.config.worker
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                messages = self._consumer.consume(w.batch_size, w.batch_timeout_s)
                try:
                    self.process(messages)
                    if time.monotonic() - self._last_close >= self._close_interval_s:
                        self._reload_profiles()
                        self.close_due_windows()
                except _RETRYABLE as exc:
                    self.stats.retries += 1
                    self._log.warning("batch failed, rewinding to retry", error=str(exc))
                    self._rewind(messages)
                    time.sleep(1.0)
                    self._reload_fences()
            if drain_on_exit:
                self.close_due_windows(final=True)
        finally:
            self._commit_sync()
            self._consumer.close()
            self._producer.close()
            self._log.info("worker stopped", **vars(self.stats), accounted=self.stats.accounted)
        return self.stats

    # -- one batch -------------------------------------------------------------------

    def process(self, messages: Sequence[Any]) -> None:
        """Decode, check and aggregate one micro-batch, then commit its offsets."""
        by_model: dict[str, list[Any]] = defaultdict(list)
        label_messages: dict[str, list[Any]] = defaultdict(list)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self._log.warning("consumer error", error=error.str())
                continue
            self.stats.consumed += 1
            if message.topic() in self._label_streams:
                label_messages[message.topic()].append(message)
                continue
            model = self._model_of_topic[message.topic()]
            fence = self._applied.get((model.name, _source(message.topic(), message.partition())))
            if fence is not None and message.offset() <= fence:
                self.stats.redelivered_skipped += 1
                continue
            by_model[model.name].append(message)
        if not by_model and not label_messages:
            return
        updates: dict[str, list[StateUpdate]] = {}
        decoded = dead_lettered = 0
        labels: dict[str, list[Any]] = {}
        dead_labels = 0
        for topic, topic_messages in label_messages.items():
            stream = self._label_streams[topic]
            labels[topic], undecodable = stream.decode(topic_messages)
            for m, error in undecodable:
                self._dead_letter(m, error, stream.model)
            dead_labels += len(undecodable)
        dead_lettered += dead_labels
        for name, model_messages in by_model.items():
            model = self._models[name]
            batch, dead = model.decode(model_messages)
            for letter in dead:
                self._dead_letter(letter.message, letter.error, name)
            updates[name], _ = self._pipeline.batch_updates(
                model, batch, self._stores[name].keys, {d.row: d.error for d in dead}
            )
            decoded += len(batch) - len(dead)
            dead_lettered += len(dead)
        self._producer.flush()
        now_ms = int(time.time() * 1000)
        pipe = self._redis.pipeline(transaction=False)
        for name, model_updates in updates.items():
            self._stores[name].apply(model_updates, now_ms, pipe)
        pipe.execute()
        positions = {}
        for name, model_updates in updates.items():
            for update in model_updates:
                self._applied[(name, update.source)] = update.last_offset
                topic, partition = update.source.rsplit(":", 1)
                positions[(topic, int(partition))] = update.last_offset + 1
        # Labels join after the events, so a label can meet a prediction of the same poll.
        for topic, topic_labels in labels.items():
            result = self._label_streams[topic].joiner.join(topic_labels, self._redis, now_ms=now_ms)
            self.stats.labels_matched += result.matched
            self.stats.labels_unmatched += result.unmatched
            self.stats.labels_skipped += result.skipped
            self.stats.labels_invalid += result.invalid
            for source, last in result.last_offsets.items():
                label_topic, partition = source.rsplit(":", 1)
                positions[(label_topic, int(partition))] = last + 1
        # Undecodable labels are both dead letters and "invalid" to the joiner: count them once.
        self.stats.labels_invalid -= dead_labels
        self._commit([TopicPartition(t, p, o) for (t, p), o in positions.items()])
        self.stats.decoded += decoded
        self.stats.dead_lettered += dead_lettered
        self.stats.batches += 1

    def _reload_profiles(self) -> None:
        for name, model in self._models.items():
            try:
                if model.load_profile():
                    self._profiles[name] = model.profile
                    self._log.info("profile reloaded", model=name, path=str(model.profile_path))
            except StreamGuardError as exc:
                self._log.error("profile not reloaded, keeping the previous one", model=name, error=str(exc))

    def _dead_letter(self, message: Any, error: DecodeError, model: str) -> None:
        self._producer.produce(
            self.config.kafka.dead_letter_topic,
            message.value(),
            message.key(),
            headers=dead_letter_headers(message, error, model=model, worker_id=self.worker_id),
            timestamp=message.timestamp()[1],
        )
        self._log.debug(
            "dead letter",
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            reason=str(error),
        )

    def close_due_windows(self, *, final: bool = False) -> list[Alert]:
        """Close the windows the global watermark has passed; publish their alerts."""
        self._last_close = time.monotonic()
        now_ms = int(time.time() * 1000)
        published: list[Alert] = []
        for name, store in self._stores.items():
            starts = store.open_windows() if final else store.due_windows(now_ms)
            for start in starts:
                if not store.claim(start, self._lease_ms):
                    continue
                snapshot = store.snapshot(start)
                raised = self._pipeline.window_alerts(self._models[name], snapshot)
                incidents = self._incidents[name]
                alerts = incidents.publishable(raised)
                alerts += incidents.resolved(snapshot.end_ms, {a.incident_id for a in raised})
                for alert in alerts:
                    self._producer.produce(
                        self.config.kafka.alerts_topic,
                        encode_alert(alert, emitted_at=now_ms),
                        alert.alert_id,
                        headers=[("model", name.encode()), ("kind", alert.kind.encode())],
                    )
                self._producer.flush()
                store.finish(snapshot)
                published += alerts
                if alerts:
                    self._log.info("window closed", model=name, window_start=start, alerts=len(alerts))
        self.stats.alerts += len(published)
        return published

    # -- offsets and rebalancing ---------------------------------------------------------

    def _commit(self, offsets: list[TopicPartition]) -> None:
        if offsets:
            self._consumer.store_offsets(offsets=offsets)
            self._consumer.commit(asynchronous=True)

    def _commit_sync(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                self._log.warning("final commit failed", error=str(exc))

    def _rewind(self, messages: Sequence[Any]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            if m.error() is None:
                key = (m.topic(), m.partition())
                first[key] = min(first.get(key, m.offset()), m.offset())
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                self._log.warning("rewind failed", topic=topic, partition=partition, error=str(exc))

    def _load_fences(self, partitions: list[TopicPartition]) -> None:
        by_model: dict[str, list[str]] = defaultdict(list)
        for tp in partitions:
            if tp.topic in self._label_streams:
                continue  # the labels fence is read from Redis on every join
            by_model[self._model_of_topic[tp.topic].name].append(_source(tp.topic, tp.partition))
        now_ms = int(time.time() * 1000)
        for name, sources in by_model.items():
            store = self._stores[name]
            for source, offset in store.applied_offsets(sources).items():
                self._applied[(name, source)] = offset
            store.register_sources(sources, now_ms)

    def _reload_fences(self) -> None:
        """Re-read the fences after a failure: part of a failed pipeline may have applied."""
        try:
            self._load_fences(self._consumer.assignment())
        except redis.RedisError as exc:
            self._log.warning("cannot reload offset fences yet", error=str(exc))

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._load_fences(partitions)
        self._log.info("partitions assigned", partitions=[_source(tp.topic, tp.partition) for tp in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            self._commit_sync()
        finally:
            self._forget(partitions)
            self._log.info("partitions revoked", partitions=[_source(tp.topic, tp.partition) for tp in partitions])

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        self._log.warning("partitions lost", partitions=[_source(tp.topic, tp.partition) for tp in partitions])

    def _forget(self, partitions: list[TopicPartition]) -> None:
        self._pipeline.forget([_source(tp.topic, tp.partition) for tp in partitions])
        for tp in partitions:
            if tp.topic in self._label_streams:
                continue
            model = self._model_of_topic[tp.topic]
            self._applied.pop((model.name, _source(tp.topic, tp.partition)), None)
