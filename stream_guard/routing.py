"""A polled batch sorted by destination: each model's events, each labels topic's labels, and
the redeliveries this worker already applied (skipped, or replayed under ``exactly_once``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError

from stream_guard.source import Source


@dataclass
class Routed:
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

    @property
    def empty(self) -> bool:
        """Nothing to stage or commit (the batch held only consumer errors, or nothing)."""
        return not self.events and not self.labels and not self.replayed


def route(
    messages: Sequence[Any],
    *,
    model_of_topic: Mapping[str, str],
    model_of_label_topic: Mapping[str, str],
    applied: Mapping[tuple[str, Source], int],
    replay: bool,
    log: Any,
) -> Routed:
    """Sort ``messages``: labels by topic (the keys of ``model_of_label_topic``), events by
    model, those at or below the ``applied`` fence of their (model, partition) skipped
    (``replay``: also kept to be replayed).

    A consumer error is logged (end of partition excepted) and counts as nothing.
    """
    routed = Routed()
    per_topic: dict[str, int] = defaultdict(int)
    #: The fence of each (topic, partition) of the batch, looked up once.
    fences: dict[tuple[str, int], int | None] = {}
    for message in messages:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", error=error.str())
            continue
        topic = message.topic()
        per_topic[topic] += 1
        if topic in model_of_label_topic:
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
        routed.by_topic[(model_of_label_topic.get(topic) or model_of_topic[topic], topic)] += count
    return routed
