"""Confluent Schema Registry framing and writer schemas, through confluent-kafka's own code paths.

A Confluent-serialized value names its writer schema in a ``__value_schema_id`` header or
in a prefix of the value: magic byte 0 and a 4-byte id, or magic byte 1 and a 16-byte GUID.
:func:`read_schema_id` reads it with the client's ``dual_schema_id_deserializer`` (what its
``AvroDeserializer`` does by default); :class:`RegistryWriterSchemas` fetches the schema by
id or GUID and resolves its references as the client does; :class:`LocalWriterSchemas`
reads ``<id>.avsc`` files instead, for deployments without a registry.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any, cast

import httpx
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, dual_schema_id_deserializer
from confluent_kafka.schema_registry._sync.avro import _resolve_named_schema
from confluent_kafka.schema_registry.common.avro import parse_schema_with_repo
from confluent_kafka.schema_registry.common.serde import SchemaId
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from stream_guard.errors import RegistryUnavailableError, SchemaLoadError, UnknownSchemaIdError, WireFormatError
from stream_guard.settings import Config

CONFLUENT_MAGIC = 0
#: The magic byte of a prefix holding a 16-byte schema GUID (confluent-kafka 2.11+).
CONFLUENT_GUID_MAGIC = 1
#: Where the client's serializers put the schema id (or GUID) when not in the payload.
VALUE_SCHEMA_ID_HEADER = "__value_schema_id"
#: Bytes of each framing's prefix, by magic byte.
_PREFIX_SIZES = {CONFLUENT_MAGIC: 5, CONFLUENT_GUID_MAGIC: 17}

#: Kafka message headers as confluent-kafka returns them.
Headers = list[tuple[str, bytes | None]]


def registry_client(config: Config) -> Any:
    """A Confluent Schema Registry client when ``schema_registry.url`` is set, else None."""
    if not config.schema_registry.url:
        return None
    conf = {"url": config.schema_registry.url, **config.schema_registry.client}
    if not config.schema_registry.url.startswith("mock://"):
        return SchemaRegistryClient(conf)
    # confluent-kafka's in-memory registry (mock://, for tests and demos) keeps its schemas per
    # client instance: one client per URL in the process, so worker, CLI and tests share it.
    if config.schema_registry.url not in _MOCK_REGISTRIES:
        _MOCK_REGISTRIES[config.schema_registry.url] = SchemaRegistryClient.new_client(conf)
    return _MOCK_REGISTRIES[config.schema_registry.url]


_MOCK_REGISTRIES: dict[str, Any] = {}


def read_schema_id(payload: bytes, headers: Headers | None = None) -> tuple[int | str, int]:
    """The writer schema's id (an int) or GUID (a string) of a value, and where its Avro body starts.

    confluent-kafka's ``dual_schema_id_deserializer`` reads it; a frame it refuses is a
    :class:`~stream_guard.errors.WireFormatError` saying what is wrong with it.
    """
    ctx = SerializationContext("", MessageField.VALUE, cast("Any", headers))
    found = SchemaId("AVRO")
    try:
        body = dual_schema_id_deserializer(payload, ctx, found)
    except (SerializationError, struct.error, ValueError, TypeError):
        raise WireFormatError(_bad_frame(payload, headers)) from None
    schema_id = found.id if found.id is not None else str(found.guid)
    return schema_id, body.tell()


def _bad_frame(payload: bytes, headers: Headers | None) -> str:
    """Why the client refused a frame, in one line."""
    # The client reads a header with a value first, else the payload (as here).
    header = next((v for k, v in headers or () if k == VALUE_SCHEMA_ID_HEADER and v is not None), None)
    where, frame = ("payload", payload) if header is None else (f"{VALUE_SCHEMA_ID_HEADER} header", header)
    if not frame:
        return f"{where} is empty: no schema id"
    magic = frame[0]
    size = _PREFIX_SIZES.get(magic)
    if size is None:
        return f"unknown magic byte {magic} in the {where} (Confluent framing starts with 0, or 1 before a schema GUID)"
    kind = "schema id" if magic == CONFLUENT_MAGIC else "schema GUID"
    return f"{where} of {len(frame)} bytes is shorter than the {size}-byte Confluent header with a {kind}"


class LocalWriterSchemas:
    """Writer schemas from a directory of ``<schema id>.avsc`` (or ``<schema GUID>.avsc``) files, read once each."""

    def __init__(self, directory: str, load: Callable[[str], dict[str, Any]]) -> None:
        self._directory = directory
        self._load = load
        self._cache: dict[int | str, dict[str, Any]] = {}

    def get(self, schema_id: int) -> dict[str, Any]:
        return self._read(schema_id, f"schema id {schema_id}")

    def get_by_guid(self, guid: str) -> dict[str, Any]:
        return self._read(guid, f"schema GUID {guid}")

    def _read(self, key: int | str, what: str) -> dict[str, Any]:
        schema = self._cache.get(key)
        if schema is None:
            try:
                schema = self._load(f"{self._directory}/{key}.avsc")
            except SchemaLoadError as exc:
                raise UnknownSchemaIdError(f"{what} unknown: {exc}") from None
            self._cache[key] = schema
        return schema


def registered_schema(client: Any, schema: Schema, parse: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """``schema`` (from the registry) parsed, the named types of its references inlined.

    The references are resolved as the client's ``AvroDeserializer`` resolves them: the
    referenced subjects' versions fetched recursively (``_resolve_named_schema``) and
    loaded with fastavro's repository loader (``parse_schema_with_repo``).
    """
    if not schema.references:
        return parse(schema.schema_str or "")
    named = _resolve_named_schema(schema, client)
    return parse(json.dumps(_unparsed(parse_schema_with_repo(schema.schema_str or "", named))))


def _unparsed(node: Any) -> Any:
    """A fastavro-parsed schema as plain JSON data (its ``__fastavro`` and ``__named_schemas`` keys dropped)."""
    if isinstance(node, list):
        return [_unparsed(n) for n in node]
    if isinstance(node, dict):
        return {k: _unparsed(v) for k, v in node.items() if not k.startswith("__")}
    return node


class RegistryWriterSchemas:
    """Writer schemas from a Confluent Schema Registry by id or GUID, fetched once each.

    A schema with references is parsed as the client's ``AvroDeserializer`` parses it: the
    referenced subjects' versions are fetched (``_resolve_named_schema``) and the named types
    inlined (``parse_schema_with_repo``).
    """

    def __init__(self, client: Any, parse: Callable[[str], dict[str, Any]]) -> None:
        self._client = client
        self._parse = parse
        self._cache: dict[int | str, dict[str, Any]] = {}

    def get(self, schema_id: int) -> dict[str, Any]:
        return self._fetch(schema_id, f"schema id {schema_id}", lambda: self._client.get_schema(schema_id))

    def get_by_guid(self, guid: str) -> dict[str, Any]:
        return self._fetch(guid, f"schema GUID {guid}", lambda: self._client.get_schema_by_guid(guid))

    def _fetch(self, key: int | str, what: str, get: Callable[[], Schema]) -> dict[str, Any]:
        schema = self._cache.get(key)
        if schema is not None:
            return schema
        try:
            schema = registered_schema(self._client, get(), self._parse)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchemaIdError(f"{what} (or a schema it references) not found in the registry") from None
            # An outage is not the record's fault: fail the batch so it is retried, not dead-lettered.
            raise RegistryUnavailableError(f"schema registry error for {what}: {exc}") from exc
        except httpx.TransportError as exc:
            raise RegistryUnavailableError(f"schema registry unreachable for {what}: {exc}") from exc
        self._cache[key] = schema
        return schema
