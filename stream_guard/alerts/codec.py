"""Encoding alerts with ``schemas/alert.avsc``: plain schemaless Avro, Confluent-framed Avro, or JSON.

* ``avro``: schemaless Avro bytes of ``alert.avsc``;
* ``confluent``: the same, serialized by confluent-kafka's ``AvroSerializer`` with the schema
  registered under the alerts topic's value subject (``<topic>-value``, TopicNameStrategy):
  magic byte 0 and the schema id first, so Kafka Connect's ``AvroConverter``, ksqlDB and
  ``kcat -s value=avro -r <registry>`` read it;
* ``json``: the Avro record as a JSON object (times as epoch milliseconds), for tools without Avro.

:func:`decode_alert` reads every form (told apart by the first byte); an
:class:`AlertDecoder` with a registry client reads framed alerts with the writer schema
their id names, as the client's ``AvroDeserializer`` does.
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import fastavro
import httpx
import structlog
from confluent_kafka.schema_registry import Schema, SchemaRegistryError, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from stream_guard.alerts.model import Alert
from stream_guard.errors import RegistryUnavailableError, SchemaRegistrationError
from stream_guard.registry import CONFLUENT_GUID_MAGIC, CONFLUENT_MAGIC
from stream_guard.resources import schema_dir
from stream_guard.schemas import load_schema_file
from stream_guard.settings import Config

log = structlog.get_logger("stream_guard.alerts")


@cache
def alert_schema() -> dict[str, Any]:
    return load_schema_file(schema_dir() / "alert.avsc")


def alert_schema_text() -> str:
    """``schemas/alert.avsc`` as written (without surrounding whitespace): what is registered in a Schema Registry."""
    return (schema_dir() / "alert.avsc").read_text().strip()


AlertEncoding = Literal["avro", "confluent", "json"]
_TIMES = ("window_start", "window_end", "emitted_at")


def encode_alert(
    alert: Alert, *, emitted_at: int, schema_id: int | None = None, encoding: AlertEncoding = "avro"
) -> bytes:
    """Avro bytes of ``alert`` (with ``schema_id``, in the Confluent wire format), or JSON."""
    if encoding == "confluent":
        raise ValueError("confluent alerts are serialized by AlertEncoder.registered: the registry assigns the id")
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
    # A plain alert starts with the zigzag length of a non-empty alert_id: never 0 or 1 (-1).
    prefix = {CONFLUENT_MAGIC: 5, CONFLUENT_GUID_MAGIC: 17}.get(payload[0], 0)
    return _read(io.BytesIO(payload[prefix:]))


def _read(stream: io.BytesIO) -> dict[str, Any]:
    record = fastavro.schemaless_reader(stream, alert_schema(), None)
    assert isinstance(record, dict)
    return record


def alert_subject(topic: str) -> str:
    """The subject of the alerts topic's values: ``<topic>-value`` (the client's TopicNameStrategy)."""
    subject = topic_subject_name_strategy(SerializationContext(topic, MessageField.VALUE), None)
    assert subject is not None
    return subject


class AlertEncoder:
    """Alerts as bytes for the alerts topic, in one encoding; build a ``confluent`` one with :meth:`registered`."""

    def __init__(self, encoding: AlertEncoding = "avro", *, topic: str = "", serializer: Any = None) -> None:
        if encoding == "confluent" and serializer is None:
            raise ValueError("the confluent encoding needs the registry's serializer: use AlertEncoder.registered")
        self.encoding: AlertEncoding = encoding
        self._topic = topic
        self._serializer = serializer

    @classmethod
    def registered(cls, client: Any, topic: str, *, registry_url: str = "") -> AlertEncoder:
        """A ``confluent`` encoder: ``alert.avsc`` registered under ``<topic>-value`` now, at start-up.

        An unreachable registry is :class:`~stream_guard.errors.RegistryUnavailableError`, a
        refusal (an incompatible schema under the subject, say)
        :class:`~stream_guard.errors.SchemaRegistrationError`: one line each.
        """
        subject = alert_subject(topic)
        url = _without_credentials(registry_url)
        schema = Schema(alert_schema_text(), "AVRO")
        try:
            registered = client.register_schema_full_response(subject, schema)
        except SchemaRegistryError as exc:
            why = "incompatible with the versions registered under it" if exc.http_status_code == 409 else "refused"
            raise SchemaRegistrationError(
                f"schema registry {url} {why}: schemas/alert.avsc under subject {subject!r} "
                f"(HTTP {exc.http_status_code}, error {exc.error_code}: {exc.error_message})"
            ) from None
        except httpx.TransportError as exc:
            raise RegistryUnavailableError(
                f"schema registry {url} unreachable registering alert.avsc under {subject!r}: {exc}"
            ) from None
        log.info("alert schema registered", subject=subject, schema_id=registered.schema_id, version=registered.version)
        # Registered above: the serializer's own registration (on its first alert) is answered
        # from the client's cache, so no alert waits on the registry. (Its lookup mode, with
        # auto.register.schemas off, would ask the registry again: that cache is another one.)
        # TOPIC: the subject registered above; 2.15.1's default strategy would first ask the
        # registry for the topic's associations (Confluent Cloud) before falling back to it.
        conf = {"auto.register.schemas": True, "subject.name.strategy.type": "TOPIC"}
        serializer = AvroSerializer(client, schema, conf=conf)
        return cls("confluent", topic=topic, serializer=serializer)

    @property
    def content_type(self) -> bytes:
        """The ``content-type`` header of the alerts: JSON, or Avro (plain or framed; the first byte tells)."""
        return b"application/json" if self.encoding == "json" else b"application/avro"

    def encode(self, alert: Alert, *, emitted_at: int) -> bytes:
        if self.encoding != "confluent":
            return encode_alert(alert, emitted_at=emitted_at, encoding=self.encoding)
        record = {**alert.to_record(), "emitted_at": emitted_at}
        payload: bytes | None = self._serializer(record, SerializationContext(self._topic, MessageField.VALUE))
        assert payload is not None
        return payload


def _without_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part, for error messages."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if parts.netloc else url


def alert_encoding(config: Config) -> AlertEncoding:
    """``[alerts] encoding``, with ``auto`` as ``confluent`` when a registry URL is configured, else ``avro``."""
    encoding = config.alerts.encoding
    if encoding == "auto":
        return "confluent" if config.schema_registry.url else "avro"
    return encoding


def alert_encoder(config: Config, client: Any) -> AlertEncoder:
    """The worker's alert encoder; a ``confluent`` one registers ``alert.avsc`` with ``client`` first."""
    encoding = alert_encoding(config)
    if encoding == "confluent":
        topic = config.kafka.alerts_topic
        return AlertEncoder.registered(client, topic, registry_url=config.schema_registry.url)
    return AlertEncoder(encoding)


class AlertDecoder:
    """:func:`decode_alert`, and with a registry client, framed alerts read with their writer schema.

    The client's ``AvroDeserializer`` (reader schema ``alert.avsc``) reads a framed alert:
    an alert written with an older or newer ``alert.avsc`` resolves to the current fields.
    When the registry cannot answer for it, the alert is read as :func:`decode_alert` does.
    """

    def __init__(self, client: Any = None) -> None:
        self._deserializer = None if client is None else AvroDeserializer(client, alert_schema_text())
        #: Schema-id prefixes the registry could not answer for: read with alert.avsc without asking again.
        self._unanswered: set[bytes] = set()

    def __call__(self, payload: bytes | None) -> dict[str, Any]:
        prefix = payload[: {CONFLUENT_MAGIC: 5, CONFLUENT_GUID_MAGIC: 17}.get(payload[0], 0)] if payload else b""
        if self._deserializer is not None and prefix and prefix not in self._unanswered:
            try:
                record = self._deserializer(payload)
                assert isinstance(record, dict)
                return record
            except (SchemaRegistryError, httpx.TransportError, SerializationError) as exc:
                self._unanswered.add(prefix)
                log.warning("alert schema not found in the registry; reading with alert.avsc", error=str(exc))
        return decode_alert(payload)
