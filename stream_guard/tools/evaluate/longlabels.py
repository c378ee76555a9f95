"""The delayed labels of the long replay: the wide model's ground truth, arriving minutes after each prediction.

Each event's outcome is drawn from its true default risk (the simulator's ``_p``, which a
label fault of :mod:`~stream_guard.tools.evaluate.longfaults` may have changed) and
arrives on the labels topic a random delay after the event: uniform whole seconds in
``[min_delay_s, max_delay_s]``. A label goes to the labels partition of its event's
partition; within a partition the offsets follow the arrival order, and a label's time
is its arrival time, so the label watermark
(:meth:`~stream_guard.state.protocol.LabelState.label_watermark`) trails the events by
about the delay, as on a live labels topic.

    >>> labels = DelayedLabels(partitions=2, min_delay_s=60, max_delay_s=60, seed=0)
    >>> labels.add([{"event_id": "e1", "ts": 0, "_p": 1.0}], [1])
    >>> labels.due(59_999), [(x.source, x.offset, x.label, x.ts_ms) for x in labels.due(60_000)]
    ([], [('wide.labels:1', 0, 1, 60000)])
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream_guard.metrics.labels import Label

LABELS_TOPIC = "wide.labels"


class DelayedLabels:
    """Labels drawn from the events' true risk, delivered in order of arrival.

    Parameters
    ----------
    partitions
        Partitions of the labels topic (those of the events topic: a label follows its event's).
    min_delay_s, max_delay_s
        Range of the delay between an event and its label.
    seed
        Same seed, same outcomes and delays (the events' stream is not touched).
    """

    def __init__(self, partitions: int, *, min_delay_s: int, max_delay_s: int, seed: int) -> None:
        self.partitions = partitions
        self.min_delay_ms = min_delay_s * 1000
        self.max_delay_ms = max_delay_s * 1000
        self._rng = np.random.default_rng([seed, 11])
        self._pending: list[tuple[int, int, str, int, int]] = []  # (arrival, seq, event_id, label, partition)
        self._seq = 0
        self._offsets = [0] * partitions

    @property
    def sources(self) -> list[str]:
        """The labels partitions, as ``topic:partition``."""
        return [f"{LABELS_TOPIC}:{p}" for p in range(self.partitions)]

    @property
    def pending(self) -> int:
        """Labels drawn that have not arrived yet."""
        return len(self._pending)

    def add(self, records: Sequence[dict[str, Any]], partitions: Sequence[int]) -> None:
        """Draw the outcome and the arrival of each record's label (``records`` carry ``_p``)."""
        n = len(records)
        outcomes = self._rng.random(n) < np.array([r["_p"] for r in records], dtype=float)
        delays = self._rng.integers(self.min_delay_ms // 1000, self.max_delay_ms // 1000 + 1, n) * 1000
        for record, outcome, delay, partition in zip(records, outcomes, delays, partitions, strict=True):
            arrival = int(record["ts"]) + int(delay)
            heapq.heappush(self._pending, (arrival, self._seq, str(record["event_id"]), int(outcome), int(partition)))
            self._seq += 1

    def due(self, until_ms: int) -> list[Label]:
        """The labels arrived by ``until_ms``, in arrival order, with their partitions' next offsets."""
        out = []
        while self._pending and self._pending[0][0] <= until_ms:
            arrival, _, event_id, outcome, partition = heapq.heappop(self._pending)
            offset = self._offsets[partition]
            self._offsets[partition] += 1
            out.append(Label(event_id, outcome, f"{LABELS_TOPIC}:{partition}", offset, arrival))
        return out

    def last_arrival(self) -> int | None:
        """When the last pending label arrives (``None`` when none is pending)."""
        return max((item[0] for item in self._pending), default=None)
