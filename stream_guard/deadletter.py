"""Dead-letter records in the shape Kafka Connect's dead-letter queues made familiar.

The original key, value, headers and timestamp are kept as they were; headers named
``__connect.errors.*`` say where the record came from and why it failed, so tools
written for Connect DLQs can read ours.
"""

from __future__ import annotations

import traceback
from typing import Any

from stream_guard.errors import DecodeError

HEADER_PREFIX = "__connect.errors."


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
