"""Label pacing: a labels partition waits while it reads ahead of this worker's event backlog.

A backlog (a start on topics that already hold records, a catch-up after an outage) is
fetched partition by partition, and a labels topic is small: its records arrive long
before the events they label. Such a label finds no stored prediction and is held in
Redis until its event is read (:mod:`stream_guard.metrics.holding`): correct, but it costs
a few Redis commands per label instead of none. As Kafka Streams synchronises the
partitions of a task by record timestamp, a worker pauses a labels partition whose last
record read is more than ``worker.label_lead_s`` ahead (Kafka timestamps) of the earliest
last-read record among its own event partitions with a backlog, and resumes it when those
caught up or have no backlog any more, or after ``worker.label_pause_max_s`` in any case,
so that a labels partition is never starved (one batch of it is read, and it may pause
again).

Only this worker's event partitions pace its labels: the labels of events another worker
owns are held as before. An event partition with a backlog that was not read since its
assignment is behind every label (its position in time is not known yet). Pausing purges
the consumer's prefetched records of the partition and resuming fetches from the next
record after the last one returned, so nothing is skipped. librdkafka keeps a partition
paused across a rebalance: every partition this pacer paused is resumed when it is
revoked, lost or assigned again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaException, TopicPartition

from stream_guard.source import Source

log = structlog.get_logger("stream_guard.pacing")

__all__ = ["LabelPacer", "PacingDecision", "decide"]

#: The front of an event partition not read yet: before any timestamp.
_UNREAD = -(2**63)


@dataclass(frozen=True)
class PacingDecision:
    pause: frozenset[Source] = frozenset()
    resume: frozenset[Source] = frozenset()


def decide(
    label_fronts: Mapping[Source, int],
    event_fronts: Mapping[Source, int],
    lagging: Iterable[Source],
    paused_since: Mapping[Source, float],
    *,
    model_of: Callable[[str], str],
    lead_ms: int,
    pause_max_s: float,
    now_s: float,
) -> PacingDecision:
    """Which labels partitions to pause and which to resume (the rule of the module docstring).

    ``label_fronts`` / ``event_fronts``: the Kafka timestamp of the last record read per
    assigned partition; ``lagging``: the assigned event partitions with a backlog;
    ``paused_since``: the labels partitions paused now, with the (monotonic) time they were.
    An event partition in ``lagging`` without a front (not read yet) is behind every label.
    """
    backlog: dict[str, int] = {}
    for source in lagging:
        front = event_fronts.get(source, _UNREAD)
        model = model_of(source.topic)
        backlog[model] = min(front, backlog.get(model, front))
    pause, resume = set(), set()
    for source, front in label_fronts.items():
        limit = backlog.get(model_of(source.topic))
        ahead = limit is not None and front > limit + lead_ms
        since = paused_since.get(source)
        if since is None:
            if ahead:
                pause.add(source)
        elif not ahead or now_s - since >= pause_max_s:
            resume.add(source)
    return PacingDecision(frozenset(pause), frozenset(resume))


@dataclass
class LabelPacer:
    """Applies :func:`decide` to a consumer after each batch; see the module docstring."""

    consumer: Any
    label_topics: frozenset[str]
    model_of: Callable[[str], str]
    lead_ms: int
    pause_max_s: float
    lagging: Callable[[list[TopicPartition]], Sequence[Source]]
    label_fronts: dict[Source, int] = field(default_factory=dict)
    event_fronts: dict[Source, int] = field(default_factory=dict)
    paused_since: dict[Source, float] = field(default_factory=dict)
    #: Paused partitions whose resume failed (revoked or lost meanwhile): resumed at the next :meth:`pace`.
    unresumed: set[Source] = field(default_factory=set)
    #: Pauses so far.
    pauses: int = 0

    def observe(self, messages: Sequence[Any]) -> None:
        """Note the timestamp of the last record read per partition."""
        for message in messages:
            if message.error() is not None:
                continue
            kind, ts = message.timestamp()
            if kind == TIMESTAMP_NOT_AVAILABLE:
                continue
            source = Source(message.topic(), message.partition())
            fronts = self.label_fronts if source.topic in self.label_topics else self.event_fronts
            fronts[source] = ts

    def pace(self, now_s: float) -> PacingDecision:
        """Pause the labels partitions ahead of the event backlog, resume the others."""
        if self.unresumed:  # once assigned again, a partition whose resume failed is resumed
            assigned = {Source(tp.topic, tp.partition) for tp in self.consumer.assignment()}
            due = self.unresumed & assigned
            self.unresumed = (self.unresumed - due) | set(self._resume(due))
        if not self.label_fronts:
            return PacingDecision()
        events = [tp for tp in self.consumer.assignment() if tp.topic not in self.label_topics]
        lagging = self.lagging(events) if events else []
        decision = decide(
            self.label_fronts,
            self.event_fronts,
            lagging,
            self.paused_since,
            model_of=self.model_of,
            lead_ms=self.lead_ms,
            pause_max_s=self.pause_max_s,
            now_s=now_s,
        )
        if decision.pause:
            try:
                self.consumer.pause([TopicPartition(s.topic, s.partition) for s in sorted(decision.pause)])
            except KafkaException as exc:  # revoked meanwhile: the next assignment starts unpaused
                log.debug("labels partitions not paused", error=str(exc))
                decision = PacingDecision(resume=decision.resume)
            else:
                self.paused_since.update(dict.fromkeys(decision.pause, now_s))
                self.pauses += len(decision.pause)
                paused = sorted(map(str, decision.pause))
                log.debug("labels partitions paused: ahead of the event backlog", partitions=paused)
        for source in decision.resume:
            del self.paused_since[source]
        self.unresumed.update(self._resume(decision.resume))
        return decision

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions revoked, lost or assigned: resume the ones paused, drop what was read."""
        sources = [Source(tp.topic, tp.partition) for tp in partitions]
        paused = [s for s in sources if s in self.paused_since or s in self.unresumed]
        for source in sources:
            self.label_fronts.pop(source, None)
            self.event_fronts.pop(source, None)
            self.paused_since.pop(source, None)
            self.unresumed.discard(source)
        self.unresumed.update(self._resume(paused))

    def _resume(self, sources: Iterable[Source]) -> list[Source]:
        """Resume ``sources``; returns them if the consumer refused (to try again later)."""
        listed = sorted(sources)
        if not listed:
            return []
        try:
            self.consumer.resume([TopicPartition(s.topic, s.partition) for s in listed])
        except KafkaException as exc:
            log.debug("labels partitions not resumed yet", error=str(exc))
            return listed
        return []
