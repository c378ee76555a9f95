"""Label pacing's rule and its bookkeeping (pure logic; the consumer is a recorder of pause/resume calls)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, KafkaException, TopicPartition

from stream_guard.pacing import LabelPacer, decide
from stream_guard.source import Source

EV0, EV1 = Source("events", 0), Source("events", 1)
LB0, LB1 = Source("labels", 0), Source("labels", 1)
OTHER_EV, OTHER_LB = Source("other.events", 0), Source("other.labels", 0)


def _model(topic: str) -> str:
    return "other" if topic.startswith("other.") else "fraud"


def _decide(label_fronts: dict[Source, int], event_fronts: dict[Source, int], lagging: list[Source], **kw: Any) -> Any:
    paused = kw.pop("paused", {})
    return decide(
        label_fronts,
        event_fronts,
        lagging,
        paused,
        model_of=_model,
        lead_ms=kw.pop("lead_ms", 5_000),
        pause_max_s=kw.pop("pause_max_s", 10.0),
        now_s=kw.pop("now_s", 100.0),
    )


def test_a_labels_partition_ahead_of_the_slowest_lagging_event_partition_pauses() -> None:
    d = _decide({LB0: 60_000, LB1: 16_000}, {EV0: 50_000, EV1: 10_000}, [EV0, EV1])
    assert d.pause == {LB0, LB1}  # both ahead of partition 1 (10 s) by more than 5 s
    d = _decide({LB0: 60_000, LB1: 15_000}, {EV0: 50_000, EV1: 10_000}, [EV0, EV1])
    assert d.pause == {LB0}  # 15 s is exactly the lead: not ahead
    assert not d.resume


def test_event_partitions_without_a_backlog_pace_nothing() -> None:
    assert not _decide({LB0: 60_000}, {EV0: 10_000}, []).pause
    # Drained partition 1 does not count; lagging partition 0 is ahead of the label.
    assert not _decide({LB0: 60_000}, {EV0: 58_000, EV1: 10_000}, [EV0]).pause


def test_an_unread_lagging_event_partition_is_behind_every_label() -> None:
    assert _decide({LB0: 0}, {EV0: 100_000}, [EV0, EV1]).pause == {LB0}


def test_models_pace_their_own_labels_only() -> None:
    d = _decide({LB0: 60_000, OTHER_LB: 60_000}, {EV0: 10_000, OTHER_EV: 59_000}, [EV0, OTHER_EV])
    assert d.pause == {LB0}


def test_a_paused_partition_resumes_when_the_events_catch_up_drain_or_the_pause_is_too_long() -> None:
    paused = {LB0: 95.0}
    assert not _decide({LB0: 60_000}, {EV0: 10_000}, [EV0], paused=paused).resume  # still ahead
    assert _decide({LB0: 60_000}, {EV0: 56_000}, [EV0], paused=paused).resume == {LB0}  # caught up
    assert _decide({LB0: 60_000}, {EV0: 10_000}, [], paused=paused).resume == {LB0}  # drained
    assert _decide({LB0: 60_000}, {EV0: 10_000}, [EV0], paused=paused, now_s=105.0).resume == {LB0}  # 10 s
    assert not _decide({LB0: 60_000}, {EV0: 10_000}, [EV0], paused=paused).pause  # never paused twice


class _Consumer:
    """Records pause/resume; refuses them for the partitions in ``refuse``."""

    def __init__(self, assigned: list[Source]) -> None:
        self.assigned = assigned
        self.paused: set[Source] = set()
        self.refuse: set[Source] = set()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(s.topic, s.partition) for s in self.assigned]

    def _sources(self, partitions: list[TopicPartition]) -> set[Source]:
        sources = {Source(tp.topic, tp.partition) for tp in partitions}
        if sources & self.refuse:
            raise KafkaException("unknown partition")
        return sources

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= self._sources(partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= self._sources(partitions)


class _Message:
    def __init__(self, source: Source, ts: int, kind: int = TIMESTAMP_CREATE_TIME) -> None:
        self.source, self.ts, self.kind = source, ts, kind

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self.source.topic

    def partition(self) -> int:
        return self.source.partition

    def timestamp(self) -> tuple[int, int]:
        return self.kind, self.ts


def _pacer(consumer: _Consumer, lagging: set[Source]) -> LabelPacer:
    return LabelPacer(
        consumer,
        frozenset({"labels"}),
        _model,
        lead_ms=5_000,
        pause_max_s=10.0,
        lagging=lambda partitions: [s for s in (Source(tp.topic, tp.partition) for tp in partitions) if s in lagging],
    )


def test_the_pacer_pauses_and_resumes_on_the_consumer_from_the_records_it_saw() -> None:
    consumer = _Consumer([EV0, LB0])
    lagging = {EV0}
    pacer = _pacer(consumer, lagging)
    pacer.observe([_Message(EV0, 10_000), _Message(LB0, 60_000), _Message(EV0, 99_000, TIMESTAMP_NOT_AVAILABLE)])
    assert pacer.pace(1.0).pause == {LB0}
    assert consumer.paused == {LB0} and pacer.pauses == 1
    pacer.observe([_Message(EV0, 57_000)])
    assert pacer.pace(2.0).resume == {LB0}
    assert consumer.paused == set() and pacer.paused_since == {}


def test_a_revoked_paused_partition_is_resumed_and_forgotten() -> None:
    consumer = _Consumer([EV0, LB0])
    pacer = _pacer(consumer, {EV0})
    pacer.observe([_Message(EV0, 0), _Message(LB0, 60_000)])
    pacer.pace(1.0)
    pacer.forget([TopicPartition("labels", 0), TopicPartition("events", 0)])
    assert consumer.paused == set()
    assert (pacer.label_fronts, pacer.event_fronts, pacer.paused_since) == ({}, {}, {})


def test_a_resume_the_consumer_refuses_is_retried_once_the_partition_is_assigned_again() -> None:
    consumer = _Consumer([EV0, LB0])
    pacer = _pacer(consumer, {EV0})
    pacer.observe([_Message(EV0, 0), _Message(LB0, 60_000)])
    pacer.pace(1.0)
    consumer.refuse, consumer.assigned = {LB0}, []  # lost: the consumer no longer knows it
    pacer.forget([TopicPartition("labels", 0)])
    assert pacer.unresumed == {LB0} and consumer.paused == {LB0}
    pacer.pace(2.0)
    assert pacer.unresumed == {LB0}  # not assigned: not tried
    consumer.refuse, consumer.assigned = set(), [LB0]
    pacer.pace(3.0)
    assert pacer.unresumed == set() and consumer.paused == set()
