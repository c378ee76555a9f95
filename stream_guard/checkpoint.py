"""The commit protocol: what one batch derived, made durable in the order that makes it safe.

:meth:`Checkpoint.commit` runs four numbered steps:

1. dead letters are produced and acknowledged by the broker;
2. the window counters and slice metrics go to Redis in one pipeline; each source
   partition's script first checks that partition's applied-offset fence, so a batch
   redelivered after a crash or a rebalance is skipped, never counted twice;
3. labels are joined to the stored predictions (after step 2, so a label can meet a
   prediction of the same poll), fenced per labels partition the same way; a label whose
   prediction is not stored yet is held, and the held labels of the events step 2 stored
   are joined (:mod:`stream_guard.metrics.holding`);
4. the next offset of every partition the batch advanced is stored and committed.

An offset is committed only after everything derived from the records before it is
durable. If a step raises, no later step runs: the caller rewinds the batch and
retries it, and the fences make the retry idempotent (at-least-once delivery with
exactly-once counting).

The sinks are protocols, so the protocol is unit-tested without Kafka or Redis; the
worker's implementations live in :mod:`stream_guard.delivery`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from stream_guard.source import Source

if TYPE_CHECKING:
    from stream_guard.errors import DecodeError
    from stream_guard.metrics.holding import ReleaseResult
    from stream_guard.metrics.labels import JoinResult, Label
    from stream_guard.state.window_store import StateUpdate


@dataclass(frozen=True)
class Rejected:
    """A record that goes to the dead-letter topic instead of being counted."""

    message: Any
    error: DecodeError
    model: str


class DeadLetterSink(Protocol):
    def dead_letter(self, rejected: Rejected) -> None:
        """Queue one dead letter."""

    def flush(self) -> None:
        """Return once every queued record is acknowledged; raise DeliveryError otherwise."""


class StateSink(Protocol):
    def apply(self, updates: Mapping[str, Sequence[StateUpdate]], now_ms: int) -> Sequence[tuple[str, str]] | None:
        """Apply each model's fenced updates (one round trip for all of them).

        Returns the ``(model, source)`` of the updates the fence skipped (None: not known).
        """


class LabelSink(Protocol):
    def join(self, topic: str, labels: Sequence[Label], now_ms: int) -> JoinResult:
        """Join a labels batch of ``topic`` to its model's stored predictions."""

    def release(self, updates: Mapping[str, Sequence[StateUpdate]], now_ms: int) -> dict[str, ReleaseResult]:
        """Join the held labels of the predictions ``updates`` stored; expire the holds that ran out."""


class OffsetSink(Protocol):
    def commit(self, offsets: Mapping[Source, int]) -> None:
        """Store and commit ``offsets`` (the next offset to read of each partition)."""


@dataclass(frozen=True)
class Sinks:
    """Where a checkpoint's steps write: the broker, Redis, and the consumer group."""

    dead_letters: DeadLetterSink
    state: StateSink
    labels: LabelSink
    offsets: OffsetSink


@dataclass
class CommitResult:
    """What a committed checkpoint made durable."""

    #: Last offset applied per (model, source): the fences this worker now knows.
    applied: dict[tuple[str, Source], int] = field(default_factory=dict)
    #: The join of each labels topic's batch.
    joins: dict[str, JoinResult] = field(default_factory=dict)
    #: Per model with labels: the held labels the batch's events released or expired.
    releases: dict[str, ReleaseResult] = field(default_factory=dict)
    #: Offsets committed: the next one to read of each partition.
    offsets: dict[Source, int] = field(default_factory=dict)
    #: (model, source) of the updates the fence skipped: applied before, by this or another worker.
    skipped: list[tuple[str, Source]] = field(default_factory=list)


@dataclass
class Checkpoint:
    """Everything one batch derived from its records, until :meth:`commit` makes it durable."""

    rejected: list[Rejected] = field(default_factory=list)
    updates: dict[str, list[StateUpdate]] = field(default_factory=dict)
    labels: dict[str, list[Label]] = field(default_factory=dict)

    def reject(self, message: Any, error: DecodeError, model: str) -> None:
        self.rejected.append(Rejected(message, error, model))

    def add_updates(self, model: str, updates: Sequence[StateUpdate]) -> None:
        self.updates.setdefault(model, []).extend(updates)

    def add_labels(self, topic: str, labels: Sequence[Label]) -> None:
        self.labels.setdefault(topic, []).extend(labels)

    def commit(self, sinks: Sinks, now_ms: int) -> CommitResult:
        """Make the batch durable in the four steps of the module docstring."""
        # 1. Dead letters produced and acknowledged.
        for rejected in self.rejected:
            sinks.dead_letters.dead_letter(rejected)
        sinks.dead_letters.flush()
        # 2. Window counters and slice metrics applied, fenced per source partition.
        result = CommitResult()
        if self.updates:
            skipped = sinks.state.apply(self.updates, now_ms) or ()
            result.skipped = [(model, Source.parse(source)) for model, source in skipped]
        for model, updates in self.updates.items():
            for update in updates:
                source = Source.parse(update.source)
                result.applied[(model, source)] = update.last_offset
                result.offsets[source] = update.last_offset + 1
        # 3. Labels joined to the predictions, fenced per labels partition.
        for topic, labels in self.labels.items():
            join = result.joins[topic] = sinks.labels.join(topic, labels, now_ms)
            for name, last in join.last_offsets.items():
                result.offsets[Source.parse(name)] = last + 1
        if self.updates:
            result.releases = sinks.labels.release(self.updates, now_ms)
        # 4. Offsets stored and committed, now that everything before them is durable.
        if result.offsets:
            sinks.offsets.commit(result.offsets)
        return result
