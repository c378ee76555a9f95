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

import contextlib
import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition

from stream_guard.alerts.model import Alert
from stream_guard.backoff import Backoff
from stream_guard.checkpoint import Checkpoint, CommitResult, Sinks
from stream_guard.closing import WindowCloser
from stream_guard.commit_ahead import CommitAhead
from stream_guard.delivery import ConsumerOffsets, describe, lagging_partitions, leave_group, rewind
from stream_guard.errors import DeliveryError, RegistryUnavailableError
from stream_guard.kafka import DeliveryTracker
from stream_guard.metrics import LabelStream
from stream_guard.model import ModelRuntime, reload_profiles
from stream_guard.observability.counters import StatsLine, WorkerStats
from stream_guard.observability.metrics import WorkerMetrics
from stream_guard.observability.server import WorkerHealth
from stream_guard.outages import BrokerProbe, outage_of, wait_for_redis
from stream_guard.pacing import LabelPacer
from stream_guard.pipeline import Pipeline, StagedBatch
from stream_guard.profile import BaselineProfile
from stream_guard.routing import Routed, route
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
class _Staged:
    """A staged batch: its checkpoint, and what the loop counts once it is committed."""

    messages: Sequence[Any]
    routed: Routed
    checkpoint: Checkpoint
    staged_by_model: dict[str, StagedBatch]
    early: dict[str, list[Alert]]
    #: Dead letters of the replayed records (``exactly_once``), first in the checkpoint's.
    replayed_dead: int
    dead_labels: int
    started: float


class _OffsetsByTheLoop:
    """The commit thread's offset sink: the loop stores the offsets once the commit returned."""

    def commit(self, offsets: Mapping[Source, int]) -> None:
        """Leave them in the result."""


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
        self._model_of_label_topic = {stream.topic: stream.model for stream in parts.label_streams}
        self._consumer = parts.consumer
        self._offsets = ConsumerOffsets(parts.consumer)
        #: Last offset applied to Redis per (model, source), as far as this worker knows.
        self._applied: dict[tuple[str, Source], int] = {}
        self._stop = threading.Event()
        self._close_interval_s = close_interval_s
        self._last_close = 0.0
        self._log = log.bind(worker=worker_id, group=config.kafka.group_id)
        self._stats_line = StatsLine(config.observability.stats_interval_s, self._log)
        self._outage = Backoff()
        #: Fences of assigned partitions not read yet (Redis was down at the assignment).
        self._fences_stale = False
        #: ``[worker] commit_ahead``: the batch committing while the next one is staged.
        self._ahead: CommitAhead[_Staged, CommitResult] = CommitAhead()
        self._sinks_ahead = dataclasses.replace(parts.sinks, offsets=_OffsetsByTheLoop())
        #: What settling the batch in flight raised in a rebalance callback, raised after the poll.
        self._callback_failure: Exception | None = None
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
        ahead = w.commit_ahead and transaction is None
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                health.loop_turned()
                if self._fences_stale:
                    self._reload_fences()
                messages = self._consumer.consume(w.batch_size, w.batch_timeout_s)
                try:
                    if self._callback_failure is not None:
                        failure, self._callback_failure = self._callback_failure, None
                        raise failure
                    if transaction is not None:
                        transaction.begin()
                    if ahead:
                        self._process_ahead(messages)
                    else:
                        self.process(messages)
                    if self.pacer is not None:
                        self.pacer.observe(messages)
                        self.parts.metrics.label_pauses.inc(len(self.pacer.pace(time.monotonic()).pause))
                    if time.monotonic() - self._last_close >= self._close_interval_s:
                        reload_profiles(self._models, self.parts.profiles, self._log)
                        self.close_due_windows()
                    if transaction is not None:
                        transaction.commit()
                    if not ahead or self._ahead.settled_since():  # a commit ahead may still fail
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
                    rewind(self._consumer, [*messages, *self._unsettled()], self._log)
                    self._stop.wait(delay)
                    self._reload_fences()
                self._probe_broker(topics[0])
                self._stats_line.log(self.stats, self.parts.metrics)
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
            self._settle_on_exit()
            self._offsets.commit_sync()
            leave_group(self._consumer, self.config.worker.batch_size, self._log)
            self._consumer.close()
            self.parts.producer.close()
            self._log.info("worker stopped", **vars(self.stats), accounted=self.stats.accounted)
        return self.stats

    # -- one batch -------------------------------------------------------------------

    def process(self, messages: Sequence[Any]) -> None:
        """Decode, check and aggregate one micro-batch, then commit its checkpoint."""
        staged = self._stage(messages)
        if staged is not None:
            self._publish_early(staged)
            self._committed(staged, staged.checkpoint.commit(self.parts.sinks, int(time.time() * 1000)))

    def _process_ahead(self, messages: Sequence[Any]) -> None:
        """:meth:`process` with the commit on the commit thread: stage this batch, settle the
        previous one's commit, start this one's (:mod:`stream_guard.commit_ahead`)."""
        staged = self._stage(messages)
        self._settle()
        if staged is None:
            return
        checkpointer = self.parts.pipeline.stages.checkpointer
        if checkpointer is not None and checkpointer.pending:
            # The settled batch met a fence another worker moved: its partitions' detectors are
            # restored before their next records are staged, and these were staged before.
            rewind(self._consumer, staged.messages, self._log)
            return
        self._publish_early(staged)
        now_ms = int(time.time() * 1000)
        self._ahead.start(staged, lambda: staged.checkpoint.commit(self._sinks_ahead, now_ms))

    def _stage(self, messages: Sequence[Any]) -> _Staged | None:
        """Route, decode, check and aggregate a batch into its checkpoint; None if it holds nothing to commit."""
        started = time.perf_counter()
        routed = route(
            messages,
            model_of_topic=self._model_of_topic,
            model_of_label_topic=self._model_of_label_topic,
            applied=self._applied,
            replay=self.parts.transaction is not None,
            log=self._log,
        )
        if routed.empty:
            self._count_consumed(routed)
            return None
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
        return _Staged(messages, routed, checkpoint, staged_by_model, early, replayed_dead, dead_labels, started)

    def _publish_early(self, staged: _Staged) -> None:
        """A batch's early alerts, acknowledged before its state and offsets move: a retry fires them again."""
        if staged.early:
            fired = self.parts.closer.publish_early(staged.early, int(time.time() * 1000))
            self.stats.alerts += len(fired)
            self.parts.metrics.observe_alerts(fired)

    def _committed(self, staged: _Staged, result: CommitResult, *, store_offsets: bool = False) -> None:
        """Count a committed batch (``store_offsets``: the commit thread left its offsets to the loop)."""
        if store_offsets and result.offsets:
            self.parts.sinks.offsets.commit(result.offsets)
        self._applied.update(result.applied)
        routed, checkpoint = staged.routed, staged.checkpoint
        self._count_consumed(routed)  # a batch that failed is read again: counted once, when it commits
        checkpointer = self.parts.pipeline.stages.checkpointer
        if checkpointer is not None:
            for model, source in result.skipped:
                checkpointer.skipped(model, str(source))
        decoded = sum(s.decoded for s in staged.staged_by_model.values())
        dead_lettered = len(checkpoint.rejected) - staged.replayed_dead  # a replayed record counts as redelivered
        self.stats.count_commit(result, decoded=decoded, dead_lettered=dead_lettered, dead_labels=staged.dead_labels)
        self.parts.metrics.observe_batch(
            consumed=routed.by_topic,
            redelivered=routed.skipped_by_model,
            staged=staged.staged_by_model,
            rejected=[r.model for r in checkpoint.rejected[staged.replayed_dead :]],
            joins={self._label_streams[topic].model: join for topic, join in result.joins.items()},
            releases=result.releases,
            applied=result.applied,
            seconds=time.perf_counter() - staged.started,
        )

    def _settle(self) -> None:
        """Wait for the batch committing ahead, then count it; raises what its commit raised."""
        done = self._ahead.settle()
        if done is None:
            return
        staged, result = done
        try:
            self._committed(staged, result, store_offsets=True)
        except BaseException:
            self._ahead.failed(staged)
            raise

    def _unsettled(self) -> list[Any]:
        """After a failure: the batch in flight settled; the records of every batch not committed."""
        with contextlib.suppress(*_RETRYABLE):  # its batch is among the failed ones, read again now
            self._settle()
        return self._ahead.failed_messages()

    def _settle_before_rebalance(self) -> None:
        """A rebalance callback's first step (a revocation commits the offsets); a failure is raised after the poll."""
        try:
            self._settle()
        except Exception as exc:  # noqa: BLE001 - raised by the loop after the poll
            self._log.warning("the batch committing ahead failed", error=str(exc))
            self._callback_failure = exc

    def _settle_on_exit(self) -> None:
        """The batch in flight committed before the final offset commit (failed: the next owner reads it)."""
        try:
            self._settle()
        except Exception as exc:  # noqa: BLE001 - stopping: its records are the next owner's
            self._log.warning("the last batch's commit failed: its records will be read again", error=str(exc))
        finally:
            self._ahead.close()

    def _count_consumed(self, routed: Routed) -> None:
        self.stats.consumed += routed.consumed
        self.stats.redelivered_skipped += routed.skipped

    def close_due_windows(self, *, final: bool = False) -> list[Alert]:
        """Close the windows the global watermark has passed; publish their alerts.

        First, the assigned partitions with a backlog are marked active (:meth:`_hold_lagging`).
        A worker that owns no partition (before its first assignment, between a revocation
        and the next, one worker too many) closes nothing: it cannot hold the partitions it
        does not own, and if every partition had been left unread for ``idle_partition_s``
        (a crashed worker's, until the group hands them over) none would hold the watermark,
        and every open window would close on the records applied so far.

        A batch committing ahead is not waited for (but by ``final``): a window is due on whole
        batches, as while another worker commits (:mod:`stream_guard.commit_ahead`).
        """
        if final:
            self._settle()  # the last batch's counts are in its windows
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

    # -- offsets and rebalancing ---------------------------------------------------------

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
        self._settle_before_rebalance()
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
        self._settle_before_rebalance()
        try:
            self._offsets.commit_sync()
        finally:
            self._forget(partitions)
            self._log.info("partitions revoked", partitions=describe(partitions))

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._settle_before_rebalance()
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
