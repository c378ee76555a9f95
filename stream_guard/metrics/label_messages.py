"""Label messages decoded into :class:`~stream_guard.metrics.labels.Label` rows, and a model's labels stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stream_guard.batch import event_time_of, to_epoch_ms
from stream_guard.decoding import (
    DEFAULT_MAX_RECORD_BYTES,
    ConfluentDecoder,
    Decoded,
    Decoder,
    JsonDecoder,
    LocalWriterSchemas,
    PlainAvroDecoder,
    RegistryWriterSchemas,
    decode_payload,
    load_json,
    load_json_object,
    read_columns,
)
from stream_guard.errors import ConfigError, DecodeError, UndecodablePayloadError
from stream_guard.metrics.labels import JoinResult, Label, LabelJoiner
from stream_guard.schemas import load_schema_file, parse_schema
from stream_guard.settings.metrics import LabelSettings
from stream_guard.state.client import RedisClient
from stream_guard.state.protocol import LabelState

if TYPE_CHECKING:
    from stream_guard.settings import Config


class _PlainJson:
    """JSON labels without a schema: any object, values as sent."""

    def decode(self, payload: bytes | None) -> Decoded:
        raw = load_json(payload)
        if not isinstance(raw, dict):
            raise UndecodablePayloadError("label is not a JSON object")
        return Decoded(raw, [])


def make_label_decoder(config: Config, settings: LabelSettings, registry_client: Any = None) -> Decoder:
    """A decoder of the labels topic, built like the model's own (the existing decoders)."""
    if not settings.schema:
        if settings.encoding != "json":
            raise ConfigError(
                [
                    f"labels.schema: required for {settings.encoding} labels; set [models.labels] schema "
                    "to the label record's .avsc file"
                ]
            )
        return _PlainJson()
    reader = load_schema_file(config.resolve_path(settings.schema))
    if settings.encoding == "json":
        return JsonDecoder(reader, report_unexpected=False)
    if settings.encoding == "avro":
        writer = load_schema_file(config.resolve_path(settings.writer_schema)) if settings.writer_schema else reader
        return PlainAvroDecoder(reader, writer, report_unexpected=False)
    if registry_client is not None:
        return ConfluentDecoder(reader, RegistryWriterSchemas(registry_client, parse_schema), report_unexpected=False)
    local_dir = str(config.resolve_path(config.schema_registry.local_dir))
    return ConfluentDecoder(reader, LocalWriterSchemas(local_dir, load_schema_file), report_unexpected=False)


def labels_from_messages(
    messages: Sequence[Any],
    decoder: Decoder,
    settings: LabelSettings,
    dead: list[tuple[Any, DecodeError]] | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> list[Label]:
    """Decode label messages; an undecodable one or one without id/label keeps its offset (``event_id=None``).

    Undecodable messages are also appended to ``dead`` with their error, for the dead-letter topic.
    """
    by_columns = _labels_by_columns(messages, decoder, settings, max_record_bytes)
    if by_columns is not None:
        return by_columns
    out = []
    # Plain JSON labels: the common well-formed object without the decoder's layers; anything
    # else (too large, not an object, not JSON) goes through them for its error.
    plain = isinstance(decoder, _PlainJson)
    ts_field, id_field, label_field = settings.timestamp_field, settings.event_id_field, settings.label_field
    sources: dict[tuple[str, int], str] = {}
    for m in messages:
        place = (m.topic(), m.partition())
        source = sources.get(place) or sources.setdefault(place, f"{place[0]}:{place[1]}")
        payload = m.value()
        fast = plain and payload is not None and len(payload) <= max_record_bytes
        values = load_json_object(payload) if fast else None
        try:
            if values is None:
                values = decode_payload(decoder, payload, max_record_bytes).values
            stamp = values.get(ts_field) if ts_field else None
            if type(stamp) is not int or not _INT64_MIN <= stamp <= _INT64_MAX:  # else what the two calls return
                stamp = to_epoch_ms(stamp)
                stamp = event_time_of(stamp, m.timestamp()[1] if stamp is None else 0)
        except DecodeError as error:
            if dead is not None:
                dead.append((m, error))
            out.append(Label(None, None, source, m.offset(), None))
            continue
        event_id = values.get(id_field)
        if event_id is not None and type(event_id) is not str:
            event_id = str(event_id)
        out.append(Label(event_id, values.get(label_field), source, m.offset(), stamp))
    return out


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _labels_by_columns(
    messages: Sequence[Any], decoder: Decoder, settings: LabelSettings, max_record_bytes: int
) -> list[Label] | None:
    """The labels of a batch of Avro labels read by columns (:func:`~stream_guard.decoding.read_columns`),
    as :func:`labels_from_messages` reads them one by one; None where it must."""
    read = read_columns(decoder, [m.value() for m in messages], max_record_bytes)
    if read is None:
        return None
    columns, n = read.columns, len(messages)
    ts_field, id_field, label_field = settings.timestamp_field, settings.event_id_field, settings.label_field
    stamps: list[int | None] = [None] * n
    if ts_field and ts_field in columns:
        ms = columns.epoch_ms(ts_field)
        if ms is None:
            return None  # stamps that are not plain ints: converted one by one
        stamps = [
            None if null else t for t, null in zip(ms.tolist(), columns.null_mask(ts_field).tolist(), strict=True)
        ]
    ids = columns.values(id_field) if id_field in columns else [None] * n
    values = columns.values(label_field) if label_field in columns else [None] * n
    return [
        Label(
            None if event_id is None else str(event_id),
            value,
            f"{m.topic()}:{m.partition()}",
            m.offset(),
            m.timestamp()[1] if stamp is None else stamp,
        )
        for m, event_id, value, stamp in zip(messages, ids, values, stamps, strict=True)
    ]


class LabelStream:
    """One model's labels topic, for the worker: decode a batch of its messages and join it."""

    def __init__(
        self,
        model: str,
        joiner: LabelJoiner,
        decoder: Decoder,
        settings: LabelSettings,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.model = model
        self.joiner = joiner
        self.decoder = decoder
        self.settings = settings
        self.max_record_bytes = max_record_bytes

    @property
    def topic(self) -> str:
        return self.settings.topic

    def decode(self, messages: Sequence[Any]) -> tuple[list[Label], list[tuple[Any, DecodeError]]]:
        """The labels of ``messages``, and the undecodable messages with their errors."""
        dead: list[tuple[Any, DecodeError]] = []
        return labels_from_messages(messages, self.decoder, self.settings, dead, self.max_record_bytes), dead

    def process(
        self, messages: Sequence[Any], store: LabelState | RedisClient, now_ms: int | None = None
    ) -> JoinResult:
        return self.joiner.join(labels_from_messages(messages, self.decoder, self.settings), store, now_ms=now_ms)
