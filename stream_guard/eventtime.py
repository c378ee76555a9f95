"""Event times far from their record's Kafka timestamp: clamped to it, and reported as a finding.

An event stamped in microseconds instead of milliseconds, or with a clock years off, would
open windows and metric buckets nowhere near the stream, and its bucket, the newest of
the batch, would trim every real bucket from the metrics index (trimmed to the retention
before the newest bucket). The Kafka timestamp of the record is the reference: set by
the producer's client or the broker, it is seldom off by more than the producer's delay.
An event time further than ``worker.max_event_time_skew_s`` from it, in the future or the
past, is replaced by it, and the row gets a finding ``event_time_skew`` (feature: the
model's timestamp field) carrying the original value. The record is still counted: a
clamp keeps every input record in the window and metric counts, where a dead letter
would drop a record whose values may be fine.

Records without a Kafka timestamp (``TIMESTAMP_NOT_AVAILABLE``) are taken as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from stream_guard.batch import EventBatch
from stream_guard.findings import RowFindings

#: The finding kind of a clamped event time.
EVENT_TIME_SKEW = "event_time_skew"


def kafka_timestamps(messages: Sequence[Any]) -> np.ndarray:
    """The Kafka timestamp (ms) of each message; -1 where it has none."""
    out = np.full(len(messages), -1, dtype=np.int64)
    for i, message in enumerate(messages):
        kind, stamp = message.timestamp()
        if kind != TIMESTAMP_NOT_AVAILABLE:
            out[i] = stamp
    return out


def clamp_event_times(
    batch: EventBatch, kafka_ms: np.ndarray, max_skew_s: float, feature: str
) -> tuple[EventBatch, list[RowFindings]]:
    """``batch`` with event times beyond ``max_skew_s`` of ``kafka_ms`` replaced by it, and the finding.

    ``max_skew_s <= 0`` turns the rule off. Rows that failed to decode already carry their
    Kafka timestamp and are left alone.
    """
    if max_skew_s <= 0 or len(batch) == 0:
        return batch, []
    # In float: the difference of two extreme int64 stamps would overflow.
    skew = np.abs(batch.event_time_ms.astype(np.float64) - kafka_ms.astype(np.float64))
    rows = np.flatnonzero((kafka_ms >= 0) & ~batch.failed & (skew > max_skew_s * 1000))
    if len(rows) == 0:
        return batch, []
    original = batch.event_time_ms[rows].tolist()
    times = batch.event_time_ms.copy()
    times[rows] = kafka_ms[rows]
    finding = RowFindings(
        EVENT_TIME_SKEW,
        feature,
        rows,
        observed=f"event time more than {max_skew_s:g}s from the Kafka timestamp",
        expected=f"within {max_skew_s:g}s of the Kafka timestamp (the event was counted at the Kafka timestamp)",
        values=original,
    )
    return dataclasses.replace(batch, event_time_ms=times), [finding]
