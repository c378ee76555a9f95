"""Dead-letter records in the shape Kafka Connect's dead-letter queues made familiar.

The original key, value, headers and timestamp are kept as they were; headers named
``__connect.errors.*`` say where the record came from and why it failed, so tools
written for Connect DLQs can read ours.
"""

from __future__ import annotations

import hashlib
import traceback
from typing import Any

from stream_guard.errors import DecodeError

HEADER_PREFIX = "__connect.errors."
#: Headers of a dead letter whose payload did not fit: the original size and digest.
TRUNCATED_HEADER = "stream_guard.payload.truncated"
SIZE_HEADER = "stream_guard.payload.size"
SHA256_HEADER = "stream_guard.payload.sha256"
#: Room left for the record's framing, beyond key, value and headers.
_RECORD_OVERHEAD = 1024


def dead_letter_headers(message: Any, error: DecodeError, *, model: str, worker_id: str) -> list[tuple[str, bytes]]:
    """The original headers followed by the ``__connect.errors.*`` context of ``error``."""
    context = {
        "topic": message.topic(),
        "partition": str(message.partition()),
        "offset": str(message.offset()),
        "connector.name": f"stream-guard/{model}",
        "task.id": worker_id,
        "stage": error.stage,
        "class.name": f"stream_guard.decoding/{model}",
        "exception.class.name": type(error).__name__,
        "exception.message": str(error),
        "exception.stacktrace": "".join(traceback.format_exception_only(error)).strip(),
    }
    original = list(message.headers() or [])
    return original + [(HEADER_PREFIX + name, value.encode()) for name, value in context.items()]


def dead_letter_reason(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """The ``__connect.errors.*`` headers of a dead-letter record, without the prefix."""
    return {
        name[len(HEADER_PREFIX) :]: (value or b"").decode()
        for name, value in headers or []
        if name.startswith(HEADER_PREFIX)
    }


def fit_payload(
    value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]], max_bytes: int
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The dead letter's value and headers, within a producer's ``message.max.bytes``.

    A payload that does not fit is cut to the bytes that do (possibly none) and the
    headers say so: ``stream_guard.payload.truncated = true`` with the original size
    and SHA-256, so the record can still be found at its source offset.
    """
    if value is None:
        return value, headers
    marks = [
        (TRUNCATED_HEADER, b"true"),
        (SIZE_HEADER, str(len(value)).encode()),
        (SHA256_HEADER, hashlib.sha256(value).hexdigest().encode()),
    ]
    used = len(key or b"") + sum(len(name) + len(v) for name, v in headers + marks) + _RECORD_OVERHEAD
    if used + len(value) <= max_bytes:
        return value, headers
    return value[: max(max_bytes - used, 0)], headers + marks


def drop_payload(value: bytes | None, headers: list[tuple[str, bytes]]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The dead letter without its payload, for a broker that refused even the truncated one."""
    _, marked = fit_payload(value, None, headers, 0)
    return b"", marked
