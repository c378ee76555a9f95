"""Unit tests for stream_guard.deadletter: Kafka Connect style ``__connect.errors.*`` headers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest

from stream_guard.deadletter import (
    HEADER_PREFIX,
    SHA256_HEADER,
    SIZE_HEADER,
    TRUNCATED_HEADER,
    dead_letter_headers,
    dead_letter_reason,
    drop_payload,
    fit_payload,
)
from stream_guard.errors import DecodeError, UndecodablePayloadError, UnknownSchemaIdError, WireFormatError


@dataclass
class FakeMessage:
    """A plain data holder with the accessors of a confluent_kafka Message that the code reads."""

    topic_: str = "fraud.inferences"
    partition_: int = 3
    offset_: int = 123_456
    headers_: list[tuple[str, bytes]] | None = field(default_factory=list)
    value_: bytes | None = b"\x07junk"
    timestamp_: tuple[int, int] = (1, 1_700_000_000_000)

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.headers_

    def timestamp(self) -> tuple[int, int]:
        return self.timestamp_

    def value(self) -> bytes | None:
        return self.value_


def test_original_headers_come_first_and_unchanged() -> None:
    """The record's own headers are kept, in order and byte for byte, before the error headers."""
    original = [("traceparent", b"00-abc-01"), ("source", b"svc-a"), ("source", b"svc-b"), ("empty", b"")]
    message = FakeMessage(headers_=list(original))
    headers = dead_letter_headers(message, WireFormatError("unknown magic byte 7"), model="fraud", worker_id="w-1")
    assert headers[: len(original)] == original
    assert all(name.startswith(HEADER_PREFIX) for name, _ in headers[len(original) :])
    assert message.headers() == original  # the message's own list is not mutated


@pytest.mark.parametrize("original", [None, []])
def test_message_without_headers(original: list[tuple[str, bytes]] | None) -> None:
    """A message with no headers (None or empty) gets only the error headers."""
    headers = dead_letter_headers(
        FakeMessage(headers_=original), UndecodablePayloadError("x"), model="fraud", worker_id="w"
    )
    assert headers and all(name.startswith(HEADER_PREFIX) for name, _ in headers)


def test_error_headers_describe_source_and_exception() -> None:
    """The __connect.errors.* headers name topic, partition, offset, stage, exception class and message."""
    error = UnknownSchemaIdError("schema id 999 unknown")
    message = FakeMessage(topic_="payments", partition_=11, offset_=987_654_321)
    headers = dead_letter_headers(message, error, model="fraud", worker_id="worker-7")
    assert all(isinstance(value, bytes) for _, value in headers)
    context = {name[len(HEADER_PREFIX) :]: value.decode() for name, value in headers}
    assert context["topic"] == "payments"
    assert context["partition"] == "11"
    assert context["offset"] == "987654321"
    assert context["stage"] == "VALUE_CONVERTER"
    assert context["exception.class.name"] == "UnknownSchemaIdError"
    assert context["exception.message"] == "schema id 999 unknown"
    assert context["connector.name"] == "stream-guard/fraud"
    assert context["task.id"] == "worker-7"
    assert context["class.name"] == "stream_guard.decoding/fraud"
    assert "UnknownSchemaIdError" in context["exception.stacktrace"]
    assert "schema id 999 unknown" in context["exception.stacktrace"]


def test_stage_follows_the_error_class() -> None:
    """The stage header is the error's ``stage`` attribute."""

    class SchemaStageError(DecodeError):
        stage = "VALUE_SCHEMA"

    headers = dead_letter_headers(FakeMessage(), SchemaStageError("bad"), model="m", worker_id="w")
    assert dead_letter_reason(headers)["stage"] == "VALUE_SCHEMA"


def test_reason_reads_the_error_headers_back() -> None:
    """dead_letter_reason returns exactly the __connect.errors.* headers without prefix, ignoring others."""
    message = FakeMessage(headers_=[("traceparent", b"00-abc-01"), ("__connect.errorsX", b"not ours")])
    error = WireFormatError("payload of 3 bytes is shorter than the 5-byte Confluent header")
    reason = dead_letter_reason(dead_letter_headers(message, error, model="fraud", worker_id="w-2"))
    assert set(reason) == {
        "topic",
        "partition",
        "offset",
        "connector.name",
        "task.id",
        "stage",
        "class.name",
        "exception.class.name",
        "exception.message",
        "exception.stacktrace",
    }
    assert reason["exception.message"] == str(error)
    assert (reason["topic"], reason["partition"], reason["offset"]) == ("fraud.inferences", "3", "123456")


def test_reason_of_missing_or_empty_headers() -> None:
    """dead_letter_reason of None is empty, and a header with a None value reads as ''."""
    assert dead_letter_reason(None) == {}
    assert dead_letter_reason([]) == {}
    assert dead_letter_reason([("other", b"x")]) == {}
    assert dead_letter_reason([(HEADER_PREFIX + "exception.message", None)]) == {"exception.message": ""}  # type: ignore[list-item]


def test_non_ascii_messages_round_trip() -> None:
    """Exception messages with non-ASCII text are UTF-8 encoded and read back unchanged."""
    error = UndecodablePayloadError("invalid Avro: 'caf\u00e9' \u2014 truncated")
    reason = dead_letter_reason(dead_letter_headers(FakeMessage(), error, model="fraud", worker_id="w"))
    assert reason["exception.message"] == "invalid Avro: 'caf\u00e9' \u2014 truncated"


def test_payload_that_fits_is_kept_whole() -> None:
    """Below the producer's limit the dead letter carries the original bytes and no extra headers."""
    headers = [("h", b"v")]
    assert fit_payload(b"x" * 100, b"k", headers, 10_000) == (b"x" * 100, headers)


def test_oversized_payload_is_truncated_with_size_and_digest() -> None:
    """Over the limit the payload is cut to fit, and headers give the original size and SHA-256."""
    value = bytes(range(256)) * 100
    cut, headers = fit_payload(value, b"key", [("h", b"v")], 5_000)
    marks = dict(headers)
    assert value.startswith(cut) and 0 < len(cut) < 5_000
    assert len(cut) + len(b"key") + sum(len(n) + len(v) for n, v in headers) <= 5_000
    assert marks[TRUNCATED_HEADER] == b"true"
    assert marks[SIZE_HEADER] == str(len(value)).encode()
    assert marks[SHA256_HEADER] == hashlib.sha256(value).hexdigest().encode()
    assert headers[0] == ("h", b"v")


def test_dropped_payload_keeps_the_reference_headers() -> None:
    """A broker that refuses even the truncated record gets an empty value with the same marks."""
    value, headers = drop_payload(b"abc", [("h", b"v")])
    assert value == b""
    assert dict(headers)[SIZE_HEADER] == b"3" and dict(headers)[TRUNCATED_HEADER] == b"true"
