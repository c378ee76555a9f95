"""Decoding payloads of the three encodings users have in practice.

* ``confluent``: schemaless Avro with its writer schema named the ways confluent-kafka's own
  ``AvroDeserializer`` accepts (``dual_schema_id_deserializer``): a ``__value_schema_id``
  header, else a prefix of magic byte 0 and a 4-byte schema id, or magic byte 1 and a
  16-byte schema GUID; the writer schema (and the schemas it references) is looked up in a
  Schema Registry, or read from a local directory;
* ``avro``: schemaless Avro written with one configured writer schema;
* ``json``: a JSON object, checked field by field against the model's Avro schema.

Avro writer/reader resolution follows the Avro specification (fastavro implements it).
When a writer schema cannot be resolved against the reader schema (a feature retyped
from double to string, say), the record is decoded with the writer schema alone and
checked like JSON: the model still gets monitored, and the retyped field becomes a
``type_mismatch`` finding rather than a lost record.

Only bytes that decode to no record at all raise :class:`~stream_guard.errors.DecodeError`;
the worker turns those into dead letters.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

import fastavro
from fastavro._read_common import SchemaResolutionError as AvroResolutionError

from stream_guard.columnar import ColumnarReader
from stream_guard.decoded import ColumnarRead, ColumnarRecords
from stream_guard.decoded import Decoded as Decoded
from stream_guard.errors import (
    DecodeError,
    NotARecordError,
    RecordTooLargeError,
    RegistryUnavailableError,
    UndecodablePayloadError,
)
from stream_guard.json_payloads import load_json, load_json_object
from stream_guard.record_checker import MAX_UNEXPECTED_FIELDS, FieldIssue, RecordChecker
from stream_guard.registry import (
    CONFLUENT_MAGIC,
    VALUE_SCHEMA_ID_HEADER,
    Headers,
    LocalWriterSchemas,
    RegistryWriterSchemas,
    read_schema_id,
    registered_schema,
)
from stream_guard.schemas import diff_schemas, fingerprint

__all__ = [
    "CONFLUENT_MAGIC",
    "MAX_UNEXPECTED_FIELDS",
    "VALUE_SCHEMA_ID_HEADER",
    "ConfluentDecoder",
    "Decoded",
    "Decoder",
    "FieldIssue",
    "Headers",
    "JsonDecoder",
    "LocalWriterSchemas",
    "PlainAvroDecoder",
    "RecordChecker",
    "RegistryWriterSchemas",
    "WriterSchemaSource",
    "confluent_frame",
    "decode_payload",
    "decode_payloads",
    "encode_avro",
    "load_json",
    "load_json_object",
    "plain_time_types",
    "read_schema_id",
    "registered_schema",
]

_HEADER = struct.Struct(">bI")


class Decoder(Protocol):
    """Turns one payload into a record; raises :class:`~stream_guard.errors.DecodeError` if it holds none."""

    def decode(self, payload: bytes | None) -> Decoded: ...


class WriterSchemaSource(Protocol):
    def get(self, schema_id: int) -> dict[str, Any]:
        """The parsed writer schema with this id; raise UnknownSchemaIdError if unknown."""
        ...

    def get_by_guid(self, guid: str) -> dict[str, Any]:
        """The parsed writer schema with this GUID; raise UnknownSchemaIdError if unknown."""
        ...


#: What ``worker.max_record_bytes`` defaults to: librdkafka's default ``message.max.bytes``.
DEFAULT_MAX_RECORD_BYTES = 1_000_000


def decode_payload(decoder: Decoder, payload: bytes | None, max_bytes: int, headers: Headers | None = None) -> Decoded:
    """``decoder.decode(payload)``, with every failure of this one record as a :class:`DecodeError`.

    A payload over ``max_bytes`` is not decoded at all. A registry outage is not the
    record's fault and propagates (the batch is retried); any other exception, expected
    or not, is the record's own and must not crash the batch. ``headers`` (the message's)
    reach a :class:`ConfluentDecoder`, whose schema id may be in one.
    """
    if payload is not None and len(payload) > max_bytes:
        raise RecordTooLargeError(
            f"record of {len(payload):,} bytes exceeds worker.max_record_bytes = {max_bytes:,}; not decoded"
        )
    try:
        if headers and isinstance(decoder, ConfluentDecoder):
            decoded = decoder.decode(payload, headers)
        else:
            decoded = decoder.decode(payload)
    except (DecodeError, RegistryUnavailableError):
        raise
    except Exception as exc:  # noqa: BLE001 -- whatever one hostile record raises is that record's dead letter
        raise UndecodablePayloadError(f"decoding failed: {type(exc).__name__}: {exc}"[:500]) from None
    return decoded


def decode_payloads(
    decoder: Decoder, payloads: Sequence[bytes | None], max_bytes: int, headers: Sequence[Headers | None] | None = None
) -> list[Decoded | DecodeError]:
    """:func:`decode_payload` of each payload (with its ``headers``), a failure returned in its place.

    Avro decoders read the records of writer schemas they already resolved in one loop,
    and hand any other record (and any that fails there) to :func:`decode_payload`: the
    results, errors included, are those of decoding the payloads one by one.
    """
    if isinstance(decoder, (ConfluentDecoder, PlainAvroDecoder)):
        return decoder.decode_batch(payloads, max_bytes, headers)
    out: list[Decoded | DecodeError] = []
    for i, payload in enumerate(payloads):
        try:
            out.append(decode_payload(decoder, payload, max_bytes, headers[i] if headers else None))
        except DecodeError as error:
            out.append(error)
    return out


def _names_schema(headers: Headers | None) -> bool:
    """Whether a record's headers name its writer schema (a ``__value_schema_id`` header)."""
    return bool(headers) and any(key == VALUE_SCHEMA_ID_HEADER for key, _ in cast("Any", headers))


def read_columns(
    decoder: Decoder, payloads: Sequence[bytes | None], max_bytes: int, headers: Sequence[Headers | None] | None = None
) -> ColumnarRead | None:
    """A batch of Avro payloads read by columns (:mod:`stream_guard.columnar`), or None where
    :func:`decode_payloads` must read it record by record.

    Only a batch of plain records of one writer schema that needs no resolution reads so:
    each record then decodes to exactly what :func:`decode_payloads` gives (no issues,
    no errors), and the columns are the ones the checks read.
    """
    if isinstance(decoder, (ConfluentDecoder, PlainAvroDecoder)):
        return decoder.read_columns(payloads, max_bytes, headers)
    return None


class JsonDecoder:
    """JSON objects checked against the model's Avro schema."""

    def __init__(self, reader_schema: dict[str, Any], *, report_unexpected: bool = True) -> None:
        self._checker = RecordChecker(reader_schema, report_unexpected=report_unexpected)

    def decode(self, payload: bytes | None) -> Decoded:
        raw = load_json(payload)
        if not isinstance(raw, dict):
            raise NotARecordError(f"JSON value is a {type(raw).__name__}, not an object")
        values, issues = self._checker.check(raw)
        return Decoded(values, issues)


_TIME_LOGICAL_TYPES = frozenset(
    {
        "timestamp-millis",
        "timestamp-micros",
        "local-timestamp-millis",
        "local-timestamp-micros",
        "date",
        "time-millis",
        "time-micros",
    }
)


def plain_time_types(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its date/time logical types read as their underlying ints.

    Event times are wanted as epoch numbers anyway, and building datetime objects
    doubles fastavro's decoding time.
    """

    def strip(node: Any) -> Any:
        if isinstance(node, list):
            return [strip(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: strip(v) for k, v in node.items() if not k.startswith("__fastavro")}
        if out.get("logicalType") in _TIME_LOGICAL_TYPES:
            del out["logicalType"]
        return out

    # A record schema (a dict) parses to a dict; fastavro's annotation covers every schema form.
    return dict(cast("dict[str, Any]", fastavro.parse_schema(strip(schema))))


class _WriterPlan:
    """How to read bytes of one writer schema into the reader's shape."""

    def __init__(self, writer: dict[str, Any], reader: dict[str, Any], report_unexpected: bool) -> None:
        self.changes = tuple(diff_schemas(reader, writer))
        self.identical = fingerprint(writer) == fingerprint(reader)
        # None until the first record tells whether fastavro can resolve the pair.
        self.resolvable: bool | None = True if self.identical else None
        self.writer = plain_time_types(writer)
        self.reader = plain_time_types(reader)
        self.checker = RecordChecker(reader, report_unexpected=report_unexpected)
        #: Batches of this writer read by columns (resolved to the reader's fields where they differ).
        self.columnar = ColumnarReader.of(self.writer, None if self.identical else self.reader)

    def read_columns(self, payloads: Sequence[bytes], offset: int, schema_id: int | str | None) -> ColumnarRead | None:
        if self.columnar is None:
            return None
        try:
            columns = self.columnar.read(payloads, offset)
        except Exception:  # noqa: BLE001 -- whatever the bytes, the record-by-record path is the reference
            return None
        if columns is None:
            return None
        return ColumnarRead(columns, ColumnarRecords(columns, self.changes, schema_id))


def _read_avro(payload: bytes, offset: int, writer: dict[str, Any], reader: dict[str, Any] | None) -> Any:
    stream = io.BytesIO(payload)
    stream.seek(offset)
    try:
        value = fastavro.schemaless_reader(stream, writer, reader)
    except AvroResolutionError:
        raise
    except Exception as exc:  # noqa: BLE001 -- EOFError, UnicodeDecodeError, IndexError... all mean bad bytes
        # fastavro's EOFError names the stream object (a memory address): keep messages stable across replays.
        detail = "truncated" if isinstance(exc, EOFError) or not str(exc) else exc
        raise UndecodablePayloadError(
            f"invalid Avro for schema {writer.get('name', '?')}: {type(exc).__name__}: {detail}"
        ) from None
    if stream.tell() != len(payload):
        raise UndecodablePayloadError(f"invalid Avro: {len(payload) - stream.tell()} trailing bytes after the record")
    return value


class AvroDecoder:
    """Schemaless Avro; ``writer_for`` picks the writer schema plan for each payload."""

    def __init__(self, reader_schema: dict[str, Any], *, report_unexpected: bool = True) -> None:
        self._reader = reader_schema
        self._report_unexpected = report_unexpected
        self._plans: dict[str, _WriterPlan] = {}

    def plan(self, writer: dict[str, Any]) -> _WriterPlan:
        # Not the Parsing Canonical Form: it drops defaults, and a changed default is a schema change.
        key = json.dumps(writer, sort_keys=True, default=str)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _WriterPlan(writer, self._reader, self._report_unexpected)
        return plan

    def decode_with(self, payload: bytes, offset: int, plan: _WriterPlan, schema_id: int | str | None) -> Decoded:
        if plan.resolvable is not False:
            try:
                values = _read_avro(payload, offset, plan.writer, None if plan.identical else plan.reader)
                plan.resolvable = True
                return Decoded(values, [], plan.changes, schema_id)
            except AvroResolutionError:
                plan.resolvable = False
        raw = _read_avro(payload, offset, plan.writer, None)
        values, issues = plan.checker.check(raw)
        # Fields the writer adds are schema changes, already reported once per record below.
        issues = [i for i in issues if i.kind != "unexpected_field"]
        return Decoded(values, issues, plan.changes, schema_id)


def _read_resolved(payload: bytes, offset: int, plan: _WriterPlan, schema_id: int | str | None) -> Decoded | None:
    """The record of a plan known to resolve, or None where :meth:`AvroDecoder.decode_with` must decide."""
    stream = io.BytesIO(payload)
    stream.seek(offset)
    try:
        values = fastavro.schemaless_reader(stream, plan.writer, None if plan.identical else plan.reader)
    except Exception:  # noqa: BLE001 -- the record-by-record path raises its error (or resolves otherwise)
        return None
    if stream.tell() != len(payload):
        return None
    return Decoded(cast("dict[str, Any]", values), [], plan.changes, schema_id)


class PlainAvroDecoder:
    """Schemaless Avro written with one known writer schema."""

    def __init__(self, reader_schema: dict[str, Any], writer_schema: dict[str, Any], **kwargs: Any) -> None:
        self._avro = AvroDecoder(reader_schema, **kwargs)
        self._plan = self._avro.plan(writer_schema)

    def decode(self, payload: bytes | None) -> Decoded:
        if not payload:
            raise UndecodablePayloadError("empty (tombstone) value")
        return self._avro.decode_with(payload, 0, self._plan, None)

    def read_columns(
        self, payloads: Sequence[bytes | None], max_bytes: int, headers: Sequence[Headers | None] | None = None
    ) -> ColumnarRead | None:
        """:func:`read_columns` of this decoder."""
        if not all(payloads) or max(map(len, payloads), default=0) > max_bytes:  # type: ignore[arg-type]
            return None
        plan = self._plan
        if plan.resolvable is None:  # whether fastavro resolves the pair: the first record tells
            try:
                self._avro.decode_with(cast("bytes", payloads[0]), 0, plan, None)
            except Exception:  # noqa: BLE001 -- the record-by-record path gives each record's error
                return None
        if not plan.resolvable:
            return None
        return plan.read_columns(cast("Sequence[bytes]", payloads), 0, None)

    def decode_batch(
        self, payloads: Sequence[bytes | None], max_bytes: int, headers: Sequence[Headers | None] | None = None
    ) -> list[Decoded | DecodeError]:
        """:func:`decode_payloads` of this decoder (headers name no schema here)."""
        out: list[Decoded | DecodeError] = []
        plan = self._plan
        for payload in payloads:
            found = None
            if payload and len(payload) <= max_bytes and plan.resolvable:
                found = _read_resolved(payload, 0, plan, None)
            if found is None:
                try:
                    found = decode_payload(self, payload, max_bytes)
                except DecodeError as error:
                    out.append(error)
                    continue
            out.append(found)
        return out


class ConfluentDecoder:
    """Schemaless Avro whose writer schema a header or the payload's prefix names.

    The schema id is read by confluent-kafka's own ``dual_schema_id_deserializer`` (what
    its ``AvroDeserializer`` uses by default): a ``__value_schema_id`` header first, else
    the prefix (magic byte 0 and a 4-byte id, or magic byte 1 and a 16-byte GUID). The
    Avro body is then read, resolved and checked by stream_guard, record by record.
    """

    def __init__(self, reader_schema: dict[str, Any], writers: WriterSchemaSource, **kwargs: Any) -> None:
        self._avro = AvroDecoder(reader_schema, **kwargs)
        self._writers = writers
        self._plan_of_id: dict[int | str, _WriterPlan] = {}

    def decode(self, payload: bytes | None, headers: Headers | None = None) -> Decoded:
        if not payload:
            raise UndecodablePayloadError("empty (tombstone) value")
        schema_id: int | str
        if not headers and payload[0] == CONFLUENT_MAGIC and len(payload) >= _HEADER.size:
            # The prefix the client would read: magic byte 0, a big-endian 4-byte id.
            schema_id, offset = int.from_bytes(payload[1:5], "big"), _HEADER.size
        else:
            schema_id, offset = read_schema_id(payload, headers)
        return self._avro.decode_with(payload, offset, self._plan_for(schema_id), schema_id)

    def _plan_for(self, schema_id: int | str) -> _WriterPlan:
        plan = self._plan_of_id.get(schema_id)
        if plan is None:
            writer = (
                self._writers.get(schema_id) if isinstance(schema_id, int) else self._writers.get_by_guid(schema_id)
            )
            plan = self._plan_of_id[schema_id] = self._avro.plan(writer)
        return plan

    def read_columns(
        self, payloads: Sequence[bytes | None], max_bytes: int, headers: Sequence[Headers | None] | None = None
    ) -> ColumnarRead | None:
        """:func:`read_columns` of this decoder: payloads framed with the id of one known writer, no headers."""
        if not payloads or (headers and any(_names_schema(h) for h in headers)):
            return None
        first = payloads[0]
        if not first or len(first) < _HEADER.size or first[0] != CONFLUENT_MAGIC:
            return None
        prefix = first[: _HEADER.size]
        size = _HEADER.size
        if not all(p and size <= len(p) <= max_bytes and p[:size] == prefix for p in payloads):
            return None
        schema_id = int.from_bytes(prefix[1:], "big")
        try:
            plan = self._plan_for(schema_id)
            if plan.resolvable is None:  # whether fastavro resolves the pair: the first record tells
                self._avro.decode_with(first, size, plan, schema_id)
        except Exception:  # noqa: BLE001 -- an unknown id, a writer that is no record, an outage: each record's path says
            return None
        if not plan.resolvable:
            return None
        return plan.read_columns(cast("Sequence[bytes]", payloads), size, schema_id)

    def decode_batch(
        self, payloads: Sequence[bytes | None], max_bytes: int, headers: Sequence[Headers | None] | None = None
    ) -> list[Decoded | DecodeError]:
        """:func:`decode_payloads` of this decoder: id-prefixed records of known, resolving writers in one loop."""
        out: list[Decoded | DecodeError] = []
        plans, from_bytes, size = self._plan_of_id, int.from_bytes, _HEADER.size
        last_id: int | None = None
        plan: _WriterPlan | None = None
        for i, payload in enumerate(payloads):
            found = None
            framed = payload and size <= len(payload) <= max_bytes and payload[0] == CONFLUENT_MAGIC
            if framed and not (headers and headers[i]):
                assert payload is not None
                schema_id = from_bytes(payload[1:size], "big")
                if schema_id != last_id:
                    last_id, plan = schema_id, plans.get(schema_id)
                if plan is not None and plan.resolvable:
                    found = _read_resolved(payload, size, plan, schema_id)
            if found is None:
                last_id = None  # the record-by-record path may add a plan or learn it does not resolve
                try:
                    found = decode_payload(self, payload, max_bytes, headers[i] if headers else None)
                except DecodeError as error:
                    out.append(error)
                    continue
            out.append(found)
        return out


def confluent_frame(schema_id: int, avro_payload: bytes) -> bytes:
    """Frame schemaless Avro bytes in the Confluent wire format."""
    return _HEADER.pack(CONFLUENT_MAGIC, schema_id) + avro_payload


def encode_avro(schema: dict[str, Any], record: Mapping[str, Any]) -> bytes:
    stream = io.BytesIO()
    fastavro.schemaless_writer(stream, schema, record)
    return stream.getvalue()
