"""A consumed record as decoding reads it, for unit tests of the stages (no Kafka involved)."""

from __future__ import annotations

from dataclasses import dataclass

KAFKA_EPOCH_MS = 1_700_000_000_000


@dataclass
class Message:
    """The accessors of a confluent_kafka Message that decoding reads; topic ``events``, partition 0."""

    value_: bytes
    offset_: int
    #: The Kafka timestamp; by default the epoch above plus the offset in milliseconds.
    kafka_ms: int | None = None
    headers_: list[tuple[str, bytes | None]] | None = None

    def value(self) -> bytes:
        return self.value_

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self.headers_

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, KAFKA_EPOCH_MS + self.offset_ if self.kafka_ms is None else self.kafka_ms)
