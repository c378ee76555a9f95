"""The worker loop: poll a micro-batch, route it, hand it to the stages, commit a checkpoint.

Per batch: messages are routed to their model (or labels topic), redeliveries this
worker already applied are skipped, each model's messages are decoded and run through
the :class:`~stream_guard.pipeline.Pipeline`, and the resulting
:class:`~stream_guard.checkpoint.Checkpoint` is committed (its docstring lists the
durability steps). Every ``close_interval_s`` the due windows are closed and their
alerts published (:mod:`stream_guard.closing`); the assigned partitions with a backlog
count as active then, however long ago they were read. If a step fails with an outage, the
batch's partitions are rewound and the batch is retried.

With ``[kafka] delivery = "exactly_once"`` each turn (the batch and the windows it closes)
is one Kafka transaction, and records at or below the fences are replayed for their
outputs (:mod:`stream_guard.transactions`).

Everything a worker uses is built by :func:`stream_guard.assembly.build_worker`.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream_guard.alerts.model import Alert
from stream_guard.backoff import Backoff
from stream_guard.checkpoint import Checkpoint, CommitResult, Sinks
from stream_guard.closing import WindowCloser
from stream_guard.delivery import ConsumerOffsets, describe, lagging_partitions
from stream_guard.errors import DeliveryError, RegistryUnavailableError, StreamGuardError
from stream_guard.kafka import DeliveryTracker
from stream_guard.metrics import LabelStream
from stream_guard.model import ModelRuntime
from stream_guard.observability.counters import WorkerStats
from stream_guard.observability.metrics import WorkerMetrics
from stream_guard.observability.server import WorkerHealth
from stream_guard.outages import BrokerProbe, outage_of, wait_for_redis
from stream_guard.pacing import LabelPacer
from stream_guard.pipeline import Pipeline, StagedBatch
from stream_guard.profile import BaselineProfile
from stream_guard.settings import Config
from stream_guard.source import Source
from stream_guard.state.client import REDIS_ERRORS, RedisClient
from stream_guard.state.keys import Fence
from stream_guard.state.window_store import WindowStore
from stream_guard.transactions import Transaction, stage_replayed

log = structlog.get_logger("stream_guard.worker")

__all__ = ["Worker", "WorkerParts", "WorkerStats"]


_RETRYABLE: tuple[type[Exception], ...] = (DeliveryError, RegistryUnavailableError, *REDIS_ERRORS, KafkaException)


@dataclass
class _Routed:
    """A polled batch by destination."""

    events: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    labels: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    #: ``exactly_once``: records at or below the fence, staged again for their outputs only.
    replayed: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    consumed: int = 0
    skipped: int = 0
    #: Records consumed by (model, topic), labels topics included.
    by_topic: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    skipped_by_model: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class WorkerParts:
    """What a worker runs with, built by :func:`stream_guard.assembly.build_worker`."""

    models: Sequence[ModelRuntime]
    stores: Mapping[str, WindowStore]
    pipeline: Pipeline
    consumer: Consumer
    producer: DeliveryTracker
    sinks: Sinks
    closer: WindowCloser
    label_streams: Sequence[LabelStream] = ()
    #: Shared with the stages: a reloaded profile replaces its entry here.
    profiles: dict[str, BaselineProfile] = field(default_factory=dict)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    health: WorkerHealth = field(default_factory=WorkerHealth)
    #: The Redis client the stores use, pinged before consuming starts.
    redis_client: RedisClient | None = None
    #: ``exactly_once``: the transaction each loop turn runs in (None: at-least-once).
    transaction: Transaction | None = None


class Worker:
    """One stream_guard worker; run several with the same group id to split partitions."""

    def __init__(self, config: Config, parts: WorkerParts, *, worker_id: str, close_interval_s: float = 1.0) -> None:
        self.config = config
        self.worker_id = worker_id
        self.stats = WorkerStats()
        self.parts = parts
        self._models = {m.name: m for m in parts.models}
        self._model_of_topic = {t: m.name for m in parts.models for t in m.config.topics}
        self._label_streams = {stream.topic: stream for stream in parts.label_streams}
        self._consumer = parts.consumer
        self._offsets = ConsumerOffsets(parts.consumer)
        #: Last offset applied to Redis per (model, source), as far as this worker knows.
        self._applied: dict[tuple[str, Source], int] = {}
        self._stop = threading.Event()
        self._close_interval_s = close_interval_s
        self._last_close = 0.0
        self._last_stats, self._consumed_at_stats = time.monotonic(), 0
        self._outage = Backoff()
        #: Fences of assigned partitions not read yet (Redis was down at the assignment).
        self._fences_stale = False
        self._log = log.bind(worker=worker_id, group=config.kafka.group_id)
        self._probe_broker = BrokerProbe(parts.consumer, parts.health, self._log)
        reset = str(config.kafka.consumer.get("auto.offset.reset", "earliest"))
        self._reset_to_end = reset in ("latest", "largest", "end")
        w = config.worker
        #: Label pacing (:mod:`stream_guard.pacing`); None without labels topics or with ``label_lead_s`` < 0.
        self.pacer = (
            LabelPacer(
                parts.consumer,
                frozenset(self._label_streams),
                lambda topic: self._model_and_fence(topic)[0],
                lead_ms=int(w.label_lead_s * 1000),
                pause_max_s=w.label_pause_max_s,
                lagging=lambda read: lagging_partitions(self._consumer, read, reset_to_end=self._reset_to_end),
            )
            if self._label_streams and w.label_lead_s >= 0
            else None
        )

    # -- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and close (safe from signal handlers)."""
        self._stop.set()

    def run(self, duration_s: float | None = None, *, drain_on_exit: bool = False) -> WorkerStats:
        """Consume until :meth:`stop` or ``duration_s``; returns the counters.

        ``drain_on_exit`` closes every open window before leaving, as if the stream had
        ended: right for a demo or a finite replay, wrong for one worker of many.
        """
        transaction = self.parts.transaction
        try:
            if self.parts.redis_client is not None:
                wait_for_redis(self.parts.redis_client, self.parts.health, self._stop, self._log)
            if transaction is not None:
                transaction.start()
        except BaseException:  # a Redis of the wrong kind, no transactions: the clients go, nothing was consumed
            self._consumer.close()
            self.parts.producer.close()
            raise
        topics = sorted({*self._model_of_topic, *self._label_streams})
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        health = self.parts.health
        health.subscribed = True
        self._log.info("worker started", topics=topics, models=sorted(self._models))
        deadline = None if duration_s is None else time.monotonic() + duration_s
        w = self.config.worker
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                health.loop_turned()
                if self._fences_stale:
                    self._reload_fences()
                messages = self._consumer.consume(w.batch_size, w.batch_timeout_s)
                try:
                    if transaction is not None:
                        transaction.begin()
                    self.process(messages)
                    if self.pacer is not None:
                        self.pacer.observe(messages)
                        self.parts.metrics.label_pauses.inc(len(self.pacer.pace(time.monotonic()).pause))
                    if time.monotonic() - self._last_close >= self._close_interval_s:
                        self._reload_profiles()
                        self.close_due_windows()
                    if transaction is not None:
                        transaction.commit()
                    health.retrying, health.redis_ok = False, True
                    self._outage.succeeded(self._log, "consumption resumed")
                except _RETRYABLE as exc:
                    self.stats.retries += 1
                    self.parts.metrics.retries.inc()
                    health.retrying = True
                    health.redis_ok = not isinstance(exc, REDIS_ERRORS)
                    delay = self._outage.failed(self._log, f"{outage_of(exc)}: batch rewound, consumption paused", exc)
                    if transaction is not None:
                        transaction.abort()
                    self._rewind(messages)
                    self._stop.wait(delay)
                    self._reload_fences()
                self._probe_broker(topics[0])
                self._log_stats()
            if drain_on_exit:
                if transaction is not None:
                    transaction.begin()
                self.close_due_windows(final=True)
                if transaction is not None:
                    transaction.commit()
        finally:
            health.subscribed = False
            if transaction is not None:
                transaction.abort()  # a turn cut short: its records are not left open until the broker's timeout
            self._offsets.commit_sync()
            self._leave_group()
            self._consumer.close()
            self.parts.producer.close()
            self._log.info("worker stopped", **vars(self.stats), accounted=self.stats.accounted)
        return self.stats

    # -- one batch -------------------------------------------------------------------

    def process(self, messages: Sequence[Any]) -> None:
        """Decode, check and aggregate one micro-batch, then commit its checkpoint."""
        started = time.perf_counter()
        routed = self._route(messages)
        if not routed.events and not routed.labels and not routed.replayed:
            self._count_consumed(routed)
            return
        checkpointer = self.parts.pipeline.stages.checkpointer
        if checkpointer is not None and checkpointer.pending:
            checkpointer.restore_pending(self.parts.stores)  # before any record of theirs is staged
        checkpoint = Checkpoint()
        early = stage_replayed(self.parts.pipeline, self._models, self.parts.stores, routed.replayed, checkpoint)
        replayed_dead = len(checkpoint.rejected)
        dead_labels = 0
        for topic, label_messages in routed.labels.items():
            stream = self._label_streams[topic]
            labels, undecodable = stream.decode(label_messages)
            checkpoint.add_labels(topic, labels)
            for message, error in undecodable:
                checkpoint.reject(message, error, stream.model)
            dead_labels += len(undecodable)
        metrics = self.parts.metrics
        staged_by_model: dict[str, StagedBatch] = {}
        for name, model_messages in routed.events.items():
            staged = self.parts.pipeline.stage(self._models[name], model_messages, self.parts.stores[name].keys)
            for letter in staged.dead:
                checkpoint.reject(letter.message, letter.error, name)
            checkpoint.add_updates(name, staged.updates)
            staged_by_model[name] = staged
        for name, staged in staged_by_model.items():
            if staged.early:
                early.setdefault(name, []).extend(staged.early)
        if early:  # acknowledged before the batch's state and offsets move: a retry fires them again
            fired = self.parts.closer.publish_early(early, int(time.time() * 1000))
            self.stats.alerts += len(fired)
            metrics.observe_alerts(fired)
        result = checkpoint.commit(self.parts.sinks, int(time.time() * 1000))
        self._applied.update(result.applied)
        self._count_consumed(routed)  # a batch that failed is read again: counted once, when it commits
        if checkpointer is not None:
            for model, source in result.skipped:
                checkpointer.skipped(model, str(source))
        decoded = sum(staged.decoded for staged in staged_by_model.values())
        dead_lettered = len(checkpoint.rejected) - replayed_dead  # a replayed record counts as redelivered
        self._count(result, decoded=decoded, dead_lettered=dead_lettered, dead_labels=dead_labels)
        metrics.observe_batch(
            consumed=routed.by_topic,
            redelivered=routed.skipped_by_model,
            staged=staged_by_model,
            rejected=[r.model for r in checkpoint.rejected[replayed_dead:]],
            joins={self._label_streams[topic].model: join for topic, join in result.joins.items()},
            releases=result.releases,
            applied=result.applied,
            seconds=time.perf_counter() - started,
        )

    def _route(self, messages: Sequence[Any]) -> _Routed:
        routed = _Routed()
        label_streams, model_of_topic, applied = self._label_streams, self._model_of_topic, self._applied
        replay = self.parts.transaction is not None
        per_topic: dict[str, int] = defaultdict(int)
        #: The fence of each (topic, partition) of the batch, looked up once.
        fences: dict[tuple[str, int], int | None] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self._log.warning("consumer error", error=error.str())
                continue
            topic = message.topic()
            per_topic[topic] += 1
            if topic in label_streams:
                routed.labels[topic].append(message)
                continue
            model = model_of_topic[topic]
            place = (topic, message.partition())
            if place in fences:
                fence = fences[place]
            else:
                fence = fences[place] = applied.get((model, Source(*place)))
            if fence is not None and message.offset() <= fence:
                routed.skipped += 1
                routed.skipped_by_model[model] += 1
                if replay:
                    routed.replayed[model].append(message)
            else:
                routed.events[model].append(message)
        for topic, count in per_topic.items():
            routed.consumed += count
            stream = label_streams.get(topic)
            routed.by_topic[(stream.model if stream is not None else model_of_topic[topic], topic)] += count
        return routed

    def _count_consumed(self, routed: _Routed) -> None:
        self.stats.consumed += routed.consumed
        self.stats.redelivered_skipped += routed.skipped

    def _count(self, result: CommitResult, *, decoded: int, dead_lettered: int, dead_labels: int) -> None:
        stats = self.stats
        for join in result.joins.values():
            stats.labels_matched += join.matched
            stats.labels_unmatched += join.unmatched
            stats.labels_skipped += join.skipped
            stats.labels_invalid += join.invalid
            stats.labels_held += join.held
        for release in result.releases.values():
            stats.labels_released += release.released
            stats.labels_expired += release.expired
        # Undecodable labels are both dead letters and "invalid" to the joiner: count them once.
        stats.labels_invalid -= dead_labels
        stats.decoded += decoded
        stats.dead_lettered += dead_lettered
        stats.batches += 1

    def close_due_windows(self, *, final: bool = False) -> list[Alert]:
        """Close the windows the global watermark has passed; publish their alerts.

        First, the assigned partitions with a backlog are marked active (:meth:`_hold_lagging`).
        A worker that owns no partition (before its first assignment, between a revocation
        and the next, one worker too many) closes nothing: it cannot hold the partitions it
        does not own, and if every partition had been left unread for ``idle_partition_s``
        (a crashed worker's, until the group hands them over) none would hold the watermark,
        and every open window would close on the records applied so far.
        """
        self._last_close = time.monotonic()
        now_ms = int(time.time() * 1000)
        if not final:
            assigned = self._consumer.assignment()
            if not assigned:
                return []
            self._hold_lagging(now_ms, assigned)
        published = self.parts.closer.close_due(now_ms, final=final)
        self.stats.alerts += len(published)
        self.parts.metrics.observe_alerts(published)
        return published

    def _leave_group(self, timeout_s: float = 10.0) -> None:
        """Unsubscribe, and let the revocation run in the poll loop, before ``close()``.

        A rebalance callback run inside ``close()`` can deadlock librdkafka: seen in CI, a
        worker of two stopping while the group rebalanced stuck for ever in
        ``rd_kafka_consumer_close`` → ``Consumer_rebalance_cb`` → ``rd_kafka_assign``.
        Records polled meanwhile are not processed and their offsets not committed: the
        partitions' next owner reads them.
        """
        try:
            self._consumer.unsubscribe()
            deadline = time.monotonic() + timeout_s
            while self._consumer.assignment() and time.monotonic() < deadline:
                self._consumer.consume(self.config.worker.batch_size, 0.2)
        except KafkaException as exc:
            self._log.warning("leaving the consumer group before closing failed", error=str(exc))

    def _log_stats(self) -> None:
        """One line of counters every ``observability.stats_interval_s``."""
        now = time.monotonic()
        if now - self._last_stats < self.config.observability.stats_interval_s:
            return
        elapsed = now - self._last_stats
        consumed = self.stats.consumed - self._consumed_at_stats
        self._last_stats, self._consumed_at_stats = now, self.stats.consumed
        lag = {
            f"{s.labels['topic']}:{s.labels['partition']}": int(s.value)
            for metric in self.parts.metrics.lag.collect()
            for s in metric.samples
        }
        self._log.info("stats", records_per_s=round(consumed / elapsed, 1), lag=lag, **vars(self.stats))

    def _hold_lagging(self, now_ms: int, assigned: list[Any]) -> None:
        """Keep the assigned partitions with a backlog (lag > 0) active in their watermark.

        Labels partitions too: the label watermark decides when a period's label-based
        checks may run (:mod:`stream_guard.metrics.label_gate`).

        A partition not read for ``idle_partition_s`` is idle on the wall clock, but one
        with records waiting is only behind (a backlog replay reads partitions one after
        another): its watermark must keep holding the windows it has yet to contribute to.
        """
        by_model: dict[tuple[str, Fence], list[str]] = defaultdict(list)
        for source in lagging_partitions(self._consumer, assigned, reset_to_end=self._reset_to_end):
            by_model[self._model_and_fence(source.topic)].append(str(source))
        for (name, fence), sources in by_model.items():
            self.parts.stores[name].touch_sources(sources, now_ms, fence)

    def _reload_profiles(self) -> None:
        for name, model in self._models.items():
            try:
                if model.load_profile():
                    assert model.profile is not None
                    self.parts.profiles[name] = model.profile
                    self._log.info("profile reloaded", model=name, path=str(model.profile_path))
            except StreamGuardError as exc:
                self._log.error("profile not reloaded, keeping the previous one", model=name, error=str(exc))

    # -- offsets and rebalancing ---------------------------------------------------------

    def _rewind(self, messages: Sequence[Any]) -> None:
        first: dict[Source, int] = {}
        for m in messages:
            if m.error() is None:
                source = Source(m.topic(), m.partition())
                first[source] = min(first.get(source, m.offset()), m.offset())
        for source, offset in first.items():
            try:
                self._consumer.seek(TopicPartition(source.topic, source.partition, offset))
            except KafkaException as exc:
                self._log.warning("rewind failed", source=str(source), error=str(exc))

    def _model_and_fence(self, topic: str) -> tuple[str, Fence]:
        if topic in self._label_streams:
            return self._label_streams[topic].model, Fence.LABELS
        return self._model_of_topic[topic], Fence.EVENTS

    def _load_fences(self, partitions: list[TopicPartition]) -> None:
        by_model: dict[tuple[str, Fence], list[str]] = defaultdict(list)
        for tp in partitions:
            by_model[self._model_and_fence(tp.topic)].append(str(Source(tp.topic, tp.partition)))
        now_ms = int(time.time() * 1000)
        for (name, fence), sources in by_model.items():
            store = self.parts.stores[name]
            # The labels fence is read from Redis on every join; labels partitions only hold the label watermark.
            if fence is Fence.EVENTS:
                for source, offset in store.applied_offsets(sources).items():
                    self._applied[(name, Source.parse(source))] = offset
            store.register_sources(sources, now_ms, fence)

    def _reload_fences(self) -> None:
        """Re-read the fences after a failure: part of a failed pipeline may have applied."""
        try:
            self._load_fences(self._consumer.assignment())
        except REDIS_ERRORS as exc:
            self._fences_stale = True
            self._log.debug("cannot reload offset fences yet", error=str(exc))
        else:
            self._fences_stale = False

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        checkpointer = self.parts.pipeline.stages.checkpointer
        if checkpointer is not None:
            for tp in partitions:
                if tp.topic in self._model_of_topic:
                    checkpointer.assigned(self._model_of_topic[tp.topic], [str(Source(tp.topic, tp.partition))])
        if self.pacer is not None:
            self.pacer.forget(partitions)
        try:
            self._load_fences(partitions)
            if checkpointer is not None:
                checkpointer.restore_pending(self.parts.stores)
        except REDIS_ERRORS as exc:
            # The scripts' own fences still skip redeliveries; the local copy is reloaded after
            # the first batch that fails on the outage, and register_sources with it. The
            # detectors are restored before the first batch (which fails while Redis is down).
            self.parts.health.redis_ok = False
            self._fences_stale = True
            self._log.warning("offset fences not loaded: redis unreachable", error=str(exc))
        self.parts.health.assigned += len(partitions)
        self.parts.metrics.assigned.set(self.parts.health.assigned)
        self._log.info("partitions assigned", partitions=describe(partitions))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            self._offsets.commit_sync()
        finally:
            self._forget(partitions)
            self._log.info("partitions revoked", partitions=describe(partitions))

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        self._log.warning("partitions lost", partitions=describe(partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        if self.pacer is not None:
            self.pacer.forget(partitions)
        self.parts.health.assigned = max(self.parts.health.assigned - len(partitions), 0)
        self.parts.metrics.assigned.set(self.parts.health.assigned)
        self.parts.pipeline.forget(describe(partitions))
        for tp in partitions:
            if tp.topic not in self._label_streams:
                self._applied.pop((self._model_of_topic[tp.topic], Source(tp.topic, tp.partition)), None)
