"""Decoding events a Schema Registry describes, in every framing confluent-kafka 2.15.1 produces.

The registry is the client library's own in-memory implementation (``mock://`` URLs of
``SchemaRegistryClient.new_client``, as :func:`stream_guard.assembly.registry_client`
builds it), not a hand-written fake; the payloads are written by the client's own
``AvroSerializer`` with its ``schema.id.serializer`` options, or framed by its ``SchemaId``.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    header_schema_id_serializer,
    prefix_schema_id_serializer,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.common.serde import SchemaId
from confluent_kafka.serialization import MessageField, SerializationContext

from stream_guard import errors
from stream_guard.decoding import (
    VALUE_SCHEMA_ID_HEADER,
    ConfluentDecoder,
    RegistryWriterSchemas,
    decode_payload,
    encode_avro,
    registered_schema,
)
from stream_guard.model import ModelRuntime
from stream_guard.schemas import parse_schema, record_fields
from stream_guard.settings import ModelConfig
from stream_guard.tools.simulator import SCHEMA_ID_EXPECTED, Simulator, inference_schema_json, writer_variants
from tests.unit.messages import Message

TOPIC = "fraud.inferences"
SUBJECT = f"{TOPIC}-value"
START_MS = 1_700_000_000_000


@pytest.fixture
def client() -> Any:
    """A fresh in-memory registry of confluent-kafka (one store per client instance)."""
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


@pytest.fixture
def writer() -> dict[str, Any]:
    return copy.deepcopy(writer_variants()[SCHEMA_ID_EXPECTED])


@pytest.fixture
def record() -> dict[str, Any]:
    return Simulator(encoding="json", seed=7).records(1, START_MS)[0]


def _decoder(client: Any) -> ConfluentDecoder:
    return ConfluentDecoder(inference_schema_json(), RegistryWriterSchemas(client, parse_schema))


def _serializer(client: Any, writer: dict[str, Any], **conf: Any) -> AvroSerializer:
    return AvroSerializer(client, json.dumps(writer), conf={"auto.register.schemas": True, **conf})


def _ctx(headers: list[tuple[str, bytes | None]] | None = None) -> SerializationContext:
    return SerializationContext(TOPIC, MessageField.VALUE, headers)


def test_magic_byte_zero_prefix_from_the_clients_serializer(
    client: Any, writer: dict[str, Any], record: dict[str, Any]
) -> None:
    """The default framing (magic 0, 4-byte id) of AvroSerializer decodes to the record, with its id."""
    payload = _serializer(client, writer, **{"schema.id.serializer": prefix_schema_id_serializer})(record, _ctx())
    assert payload is not None and payload[0] == 0
    decoded = _decoder(client).decode(payload)
    assert decoded.values == record and not decoded.issues
    assert decoded.writer_schema_id == client.get_latest_version(SUBJECT).schema_id


def test_schema_guid_in_the_value_schema_id_header(client: Any, writer: dict[str, Any], record: dict[str, Any]) -> None:
    """``header_schema_id_serializer`` puts the GUID in ``__value_schema_id`` and leaves bare Avro as the value."""
    headers: list[tuple[str, bytes | None]] = []
    payload = _serializer(client, writer, **{"schema.id.serializer": header_schema_id_serializer})(
        record, _ctx(headers)
    )
    assert payload is not None and [k for k, _ in headers] == [VALUE_SCHEMA_ID_HEADER]
    decoded = _decoder(client).decode(payload, headers)
    assert decoded.values == record and not decoded.issues
    assert decoded.writer_schema_id == client.get_latest_version(SUBJECT).guid
    # Without its header the same value is not Confluent-framed at all.
    with pytest.raises(errors.DecodeError):
        _decoder(client).decode(payload)


def test_schema_guid_in_the_payload_prefix(client: Any, writer: dict[str, Any], record: dict[str, Any]) -> None:
    """Magic byte 1 and a 16-byte GUID (the client's ``SchemaId.guid_to_bytes``) before the Avro body."""
    registered = client.register_schema_full_response(SUBJECT, Schema(json.dumps(writer), "AVRO"))
    prefix = SchemaId("AVRO", guid=registered.guid).guid_to_bytes()
    assert len(prefix) == 17 and prefix[0] == 1
    decoded = _decoder(client).decode(prefix + encode_avro(parse_schema(writer), record))
    assert decoded.values == record
    assert decoded.writer_schema_id == registered.guid


def test_a_header_wins_over_the_prefix_as_in_the_client(
    client: Any, writer: dict[str, Any], record: dict[str, Any]
) -> None:
    """``dual_schema_id_deserializer`` reads the header first: a header id with a bare body decodes."""
    registered = client.register_schema_full_response(SUBJECT, Schema(json.dumps(writer), "AVRO"))
    header = SchemaId("AVRO", schema_id=registered.schema_id).id_to_bytes()
    decoded = _decoder(client).decode(encode_avro(parse_schema(writer), record), [(VALUE_SCHEMA_ID_HEADER, header)])
    assert decoded.values == record and decoded.writer_schema_id == registered.schema_id


def _money() -> dict[str, Any]:
    return {
        "type": "record",
        "name": "Money",
        "namespace": "com.acme",
        "fields": [{"name": "value", "type": "double"}, {"name": "currency", "type": "string"}],
    }


def _priced(writer: dict[str, Any]) -> dict[str, Any]:
    """The fraud event with a ``price`` field of the referenced type ``com.acme.Money``."""
    schema = copy.deepcopy(writer)
    schema["fields"].append({"name": "price", "type": "com.acme.Money"})
    return schema


def test_schema_references_are_resolved(client: Any, writer: dict[str, Any], record: dict[str, Any]) -> None:
    """A writer schema referencing another subject's type decodes, and serves as a reader schema too."""
    client.register_schema("com.acme.Money", Schema(json.dumps(_money()), "AVRO"))
    refs = [SchemaReference("com.acme.Money", "com.acme.Money", 1)]
    schema = Schema(json.dumps(_priced(writer)), "AVRO", refs)
    event = {**record, "price": {"value": 12.5, "currency": "EUR"}}
    payload = AvroSerializer(client, schema, conf={"auto.register.schemas": True})(event, _ctx())
    assert payload is not None
    latest = client.get_latest_version(SUBJECT).schema
    assert latest.references
    reader = registered_schema(client, latest, parse_schema)
    assert record_fields(reader)["price"].base == "record"
    decoded = ConfluentDecoder(reader, RegistryWriterSchemas(client, parse_schema)).decode(payload)
    assert decoded.values == event and not decoded.issues and not decoded.schema_changes
    # Against the plain fraud reader, the referenced field is a schema change, not a failure.
    other = _decoder(client).decode(payload)
    assert other.values == record
    assert [(c.change, c.field) for c in other.schema_changes] == [("field_added", "price")]


def test_a_missing_reference_is_the_records_dead_letter(client: Any, writer: dict[str, Any]) -> None:
    """A schema whose reference the registry lacks cannot decode the record: UnknownSchemaIdError, no crash."""
    refs = [SchemaReference("com.acme.Money", "com.acme.Money", 1)]
    registered = client.register_schema_full_response(SUBJECT, Schema(json.dumps(_priced(writer)), "AVRO", refs))
    prefix = SchemaId("AVRO", schema_id=registered.schema_id).id_to_bytes()
    with pytest.raises(errors.UnknownSchemaIdError, match="not found in the registry"):
        decode_payload(_decoder(client), prefix + b"\x02x", 1000)


def test_unknown_ids_and_guids_are_named(client: Any) -> None:
    """Ids and GUIDs the registry does not know are UnknownSchemaIdError naming them."""
    with pytest.raises(errors.UnknownSchemaIdError, match="schema id 99 "):
        _decoder(client).decode(SchemaId("AVRO", schema_id=99).id_to_bytes() + b"\x00")
    guid = str(uuid.uuid4())
    with pytest.raises(errors.UnknownSchemaIdError, match=f"schema GUID {guid}"):
        _decoder(client).decode(SchemaId("AVRO", guid=guid).guid_to_bytes() + b"\x00")


@pytest.mark.parametrize(
    ("payload", "headers", "reason"),
    [
        (b"\x07\x00\x00\x00\x01\x02", None, "unknown magic byte 7 in the payload"),
        (b"\x00\x00\x01", None, "payload of 3 bytes is shorter than the 5-byte Confluent header with a schema id"),
        (
            b"\x01" + bytes(8),
            None,
            "payload of 9 bytes is shorter than the 17-byte Confluent header with a schema GUID",
        ),
        (b"\x02x", [(VALUE_SCHEMA_ID_HEADER, b"\x05abc")], "unknown magic byte 5 in the __value_schema_id header"),
        (b"\x02x", [(VALUE_SCHEMA_ID_HEADER, b"\x01abc")], "__value_schema_id header of 4 bytes is shorter"),
        (b"\x02x", [(VALUE_SCHEMA_ID_HEADER, b"")], "__value_schema_id header is empty"),
    ],
)
def test_malformed_frames_are_dead_letters_with_their_reason(
    client: Any, payload: bytes, headers: list[tuple[str, bytes | None]] | None, reason: str
) -> None:
    """A frame the client's schema-id deserializer refuses is that record's dead letter, saying why."""
    runtime = ModelRuntime(
        config=ModelConfig(name="fraud", topics=[TOPIC]),
        reader_schema=inference_schema_json(),
        fields=record_fields(inference_schema_json()),
        decoder=_decoder(client),
    )
    good = SchemaId("AVRO", schema_id=client.register_schema(SUBJECT, Schema(json.dumps(writer_variants()[1]), "AVRO")))
    clean = Simulator(encoding="json", seed=3).records(1, START_MS)[0]
    ok = Message(good.id_to_bytes() + encode_avro(parse_schema(writer_variants()[1]), clean), 0)
    batch, dead = runtime.decode([ok, Message(payload, 1, headers_=headers), ok])
    assert [d.message.offset() for d in dead] == [1]
    assert isinstance(dead[0].error, errors.WireFormatError)
    assert reason in str(dead[0].error)
    assert batch.failed.tolist() == [False, True, False]


def test_an_unreachable_registry_retries_the_batch_instead_of_dead_lettering() -> None:
    """Connection refused (httpx.TransportError inside the real client) is RegistryUnavailableError."""
    client = SchemaRegistryClient({"url": "http://127.0.0.1:9", "max.retries": 0, "timeout": 2})
    decoder = _decoder(client)
    with pytest.raises(errors.RegistryUnavailableError, match="schema registry unreachable for schema id 3"):
        decode_payload(decoder, SchemaId("AVRO", schema_id=3).id_to_bytes() + b"\x00", 1000)
