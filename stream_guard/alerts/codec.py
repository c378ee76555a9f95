"""Encoding alerts with ``schemas/alert.avsc``: schemaless Avro (optionally Confluent-framed), or JSON.

The JSON form is the Avro record as a JSON object (times as epoch milliseconds), for
tools without Avro. :func:`decode_alert` reads every form.
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

import fastavro

from stream_guard.alerts.model import Alert
from stream_guard.decoding import CONFLUENT_MAGIC
from stream_guard.resources import schema_dir
from stream_guard.schemas import load_schema_file


@cache
def alert_schema() -> dict[str, Any]:
    return load_schema_file(schema_dir() / "alert.avsc")


AlertEncoding = Literal["avro", "json"]
_TIMES = ("window_start", "window_end", "emitted_at")


def encode_alert(
    alert: Alert, *, emitted_at: int, schema_id: int | None = None, encoding: AlertEncoding = "avro"
) -> bytes:
    """Avro bytes of ``alert`` (with ``schema_id``, in the Confluent wire format), or JSON."""
    if encoding == "json":
        record = {**alert.to_record(), "emitted_at": emitted_at}
        # Strict JSON has no NaN or infinity: a non-finite number is written as null.
        record = {k: _finite(v) for k, v in record.items()}
        record["related"] = [{k: _finite(v) for k, v in r.items()} for r in record["related"]]
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
    stream = io.BytesIO()
    if schema_id is not None:
        stream.write(bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big"))
    record = alert.to_record()
    record["emitted_at"] = emitted_at
    fastavro.schemaless_writer(stream, alert_schema(), record)
    return stream.getvalue()


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def decode_alert(payload: bytes | None) -> dict[str, Any]:
    """The alert record of a message from the alerts topic (either framing).

    Takes ``Message.value()`` as is; a message without a value (a tombstone) is no alert
    and raises :class:`TypeError`.
    """
    if payload is None:
        raise TypeError("an alert message has no value (tombstone)")
    if payload[:1] == b"{":
        # Never Avro: a plain alert starts with the zigzag length of a non-empty alert_id (even).
        record = json.loads(payload)
        for name in _TIMES:
            record[name] = datetime.fromtimestamp(record[name] / 1000, UTC)
        # Fields newer than the producer: the schema's defaults, as Avro readers get them.
        record.setdefault("cause_id", None)
        record.setdefault("related", [])
        return dict(record)
    # A plain alert starts with the length of a non-empty alert_id, never a zero byte.
    framed = payload[:1] == bytes([CONFLUENT_MAGIC])
    return _read(io.BytesIO(payload[5:] if framed else payload))


def _read(stream: io.BytesIO) -> dict[str, Any]:
    record = fastavro.schemaless_reader(stream, alert_schema(), None)
    assert isinstance(record, dict)
    return record
