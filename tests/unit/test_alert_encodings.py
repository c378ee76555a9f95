"""The three alert encodings, read back by standard tools: the client's AvroDeserializer, ``json.loads``.

The registry is confluent-kafka's own in-memory implementation (``mock://`` URLs, built by
``SchemaRegistryClient.new_client`` as :func:`stream_guard.registry.registry_client` does),
not a hand-written fake. Only the refusal test uses a stub, to make the client's
``SchemaRegistryError`` of an incompatible schema (HTTP 409) that the in-memory registry never raises.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from stream_guard.alerts.codec import (
    AlertDecoder,
    AlertEncoder,
    alert_encoder,
    alert_encoding,
    alert_schema_text,
    alert_subject,
    decode_alert,
    encode_alert,
)
from stream_guard.alerts.model import Alert, Example, Related, Severity
from stream_guard.errors import ConfigError, RegistryUnavailableError, SchemaRegistrationError
from stream_guard.registry import registry_client
from stream_guard.settings import Config, load_config

TOPIC = "sg.alerts"
EMITTED_AT = 1_700_000_025_250
TIMES = ("window_start", "window_end", "emitted_at")


def _alert() -> Alert:
    return Alert(
        model="fraud",
        kind="out_of_range",
        feature="amount",
        slice="device_type=ios",
        severity=Severity.CRITICAL,
        window_start=1_700_000_000_000,
        window_end=1_700_000_010_000,
        count=12,
        total=400,
        observed="max 9e9",
        expected="<= 1e4",
        detector="checks.range",
        message="out_of_range 'amount' in 12 of 400 events (3.0%)",
        examples=(Example(0, 1_001, "evt-1", "9e9"), Example(1, 50_002)),
        value=0.03,
        threshold=0.01,
        rate=0.03,
        cause_id="c0ffee",
        related=(Related("null_rate", "amount", "", 7, 0.5, 0.1, Severity.WARNING),),
        outcome=None,
    )


def _expected() -> dict[str, Any]:
    """The alert's record as an Avro reader sees it: times as UTC datetimes."""
    record = {**_alert().to_record(), "emitted_at": EMITTED_AT}
    return {k: datetime.fromtimestamp(v / 1000, UTC) if k in TIMES else v for k, v in record.items()}


@pytest.fixture
def client() -> Any:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def test_a_confluent_alert_is_read_back_by_the_clients_avro_deserializer(client: Any) -> None:
    """Registered under ``<topic>-value``, framed with the returned id: AvroDeserializer gives every field back."""
    encoder = AlertEncoder.registered(client, TOPIC)
    payload = encoder.encode(_alert(), emitted_at=EMITTED_AT)
    registered = client.get_latest_version(f"{TOPIC}-value")
    assert alert_subject(TOPIC) == f"{TOPIC}-value"
    assert json.loads(registered.schema.schema_str) == json.loads(alert_schema_text())
    assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == registered.schema_id
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    # No reader schema given: the client reads with what the id names in the registry alone.
    record = AvroDeserializer(client)(payload, ctx)
    assert record == _expected()
    assert Alert.from_record(record) == dataclasses.replace(_alert(), emitted_at=EMITTED_AT)
    # stream_guard's own readers agree, with the registry and without it.
    assert AlertDecoder(client)(payload) == record == decode_alert(payload)


def test_json_alerts_parse_with_json_loads_and_carry_the_same_fields(client: Any) -> None:
    """The JSON form is the Avro record: the same field names and values, times in epoch milliseconds."""
    framed = AvroDeserializer(client)(AlertEncoder.registered(client, TOPIC).encode(_alert(), emitted_at=EMITTED_AT))
    plain = json.loads(AlertEncoder("json").encode(_alert(), emitted_at=EMITTED_AT))
    assert isinstance(framed, dict)
    assert set(plain) == set(framed)
    assert {k: v for k, v in plain.items() if k not in TIMES} == {k: v for k, v in framed.items() if k not in TIMES}
    assert [plain[k] for k in TIMES] == [int(framed[k].timestamp() * 1000) for k in TIMES]
    assert decode_alert(json.dumps(plain).encode()) == framed


def test_every_encoding_decodes_to_the_same_record(client: Any) -> None:
    """``stream-guard alerts`` and the dashboard read all three forms, told apart by the first byte."""
    encoders = [AlertEncoder("avro"), AlertEncoder("json"), AlertEncoder.registered(client, TOPIC)]
    payloads = [e.encode(_alert(), emitted_at=EMITTED_AT) for e in encoders]
    assert [p[:1] for p in payloads][1:] == [b"{", b"\x00"]
    assert [e.content_type for e in encoders] == [b"application/avro", b"application/json", b"application/avro"]
    for read in (decode_alert, AlertDecoder(client), AlertDecoder(None)):
        assert [read(p) for p in payloads] == [_expected()] * 3


def test_an_alert_of_an_older_schema_is_read_with_its_registered_writer_schema(client: Any) -> None:
    """Framed alerts of an older producer (no ``outcome`` field) resolve through the registry to the current fields."""
    older = json.loads(alert_schema_text())
    older["fields"] = [f for f in older["fields"] if f["name"] != "outcome"]
    serializer = AvroSerializer(client, json.dumps(older), conf={"auto.register.schemas": True})
    record = {k: v for k, v in {**_alert().to_record(), "emitted_at": EMITTED_AT}.items() if k != "outcome"}
    payload = serializer(record, SerializationContext(TOPIC, MessageField.VALUE))
    assert payload is not None
    assert AlertDecoder(client)(payload) == _expected()


def test_the_confluent_encoding_needs_a_serializer() -> None:
    """Framing without the registry's id would be unreadable: neither the encoder nor encode_alert invents one."""
    with pytest.raises(ValueError, match="registered"):
        AlertEncoder("confluent")
    with pytest.raises(ValueError, match="registry"):
        encode_alert(_alert(), emitted_at=0, encoding="confluent")


def test_an_unreachable_registry_at_start_up_is_one_line_without_credentials() -> None:
    """Connection refused while registering alert.avsc: RegistryUnavailableError, one line, no password in it."""
    client = SchemaRegistryClient({"url": "http://127.0.0.1:9", "max.retries": 0, "timeout": 2})
    with pytest.raises(RegistryUnavailableError) as info:
        AlertEncoder.registered(client, TOPIC, registry_url="http://sg:s3cret@127.0.0.1:9")
    message = str(info.value)
    assert "\n" not in message and "s3cret" not in message
    assert message.startswith(
        f"schema registry http://127.0.0.1:9 unreachable registering alert.avsc under '{TOPIC}-value'"
    )


class _Refusing:
    """A registry client whose registration fails as the real one does for an incompatible schema."""

    def register_schema_full_response(self, subject: str, schema: Schema) -> Any:
        raise SchemaRegistryError(409, 409, "Schema being registered is incompatible with an earlier schema")


def test_a_schema_the_registry_rejects_is_one_line_naming_the_subject() -> None:
    """HTTP 409 (incompatible with the subject's versions) stops the start with SchemaRegistrationError."""
    with pytest.raises(SchemaRegistrationError) as info:
        AlertEncoder.registered(_Refusing(), TOPIC, registry_url="http://registry:8081")
    assert str(info.value) == (
        "schema registry http://registry:8081 incompatible with the versions registered under it: "
        f"schemas/alert.avsc under subject '{TOPIC}-value' "
        "(HTTP 409, error 409: Schema being registered is incompatible with an earlier schema)"
    )


CONFIG = """
[kafka]
alerts_topic = "sg.alerts"

{registry}
{alerts}

[[models]]
name = "fraud"
topics = ["fraud.inferences"]
schema = "fraud.avsc"
encoding = "json"
"""


def _config(directory: Path, registry: str, alerts: str) -> Config:
    (directory / "fraud.avsc").write_text('{"type": "record", "name": "R", "fields": []}')
    path = directory / "stream-guard.toml"
    path.write_text(CONFIG.format(registry=registry, alerts=alerts))
    return load_config(path, environ={})


@pytest.mark.parametrize(
    ("registry", "alerts", "encoding"),
    [
        ("", "", "avro"),
        ('[schema_registry]\nurl = "mock://auto-default"', "", "confluent"),
        ('[schema_registry]\nurl = "mock://auto-default"', '[alerts]\nencoding = "avro"', "avro"),
        ("", '[alerts]\nencoding = "json"', "json"),
    ],
)
def test_the_default_encoding_follows_the_registry(tmp_path: Path, registry: str, alerts: str, encoding: str) -> None:
    """``auto`` (the default) is ``confluent`` with a schema_registry.url, else ``avro``; an explicit choice wins."""
    assert alert_encoding(_config(tmp_path, registry, alerts)) == encoding


def test_confluent_alerts_without_a_registry_url_are_a_config_error(tmp_path: Path) -> None:
    """A local_dir cannot register a schema: encoding = "confluent" needs schema_registry.url."""
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, '[schema_registry]\nlocal_dir = "registry"', '[alerts]\nencoding = "confluent"')
    assert info.value.problems == [
        "alerts.encoding: 'confluent' needs schema_registry.url (alert.avsc is registered there)"
    ]


def test_the_workers_encoder_registers_on_the_configured_registry(tmp_path: Path) -> None:
    """alert_encoder registers with the process's client of a mock:// URL: a second client of it sees the subject."""
    url = f"mock://{uuid.uuid4().hex}"
    config = _config(tmp_path, f'[schema_registry]\nurl = "{url}"', "")
    encoder = alert_encoder(config, registry_client(config))
    assert encoder.encoding == "confluent"
    assert registry_client(config).get_subjects() == ["sg.alerts-value"]


def test_an_alert_the_registry_cannot_answer_for_is_read_with_alert_avsc(client: Any) -> None:
    """A framed alert of another registry (an id this one lacks) still reads, and the id is not asked for again."""
    payload = AlertEncoder.registered(client, TOPIC).encode(_alert(), emitted_at=EMITTED_AT)
    other = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    read = AlertDecoder(other)
    asked: list[int] = []
    get_schema = other.get_schema
    other.get_schema = lambda schema_id, *args, **kwargs: (
        asked.append(schema_id) or get_schema(schema_id, *args, **kwargs)
    )
    assert read(payload) == read(payload) == _expected()
    assert asked == [int.from_bytes(payload[1:5], "big")]


def test_check_config_names_the_alert_encoding_and_subject(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config prints where alerts go, in which encoding, and the subject a confluent encoder registers under."""
    from stream_guard.cli import main

    _config(tmp_path, '[schema_registry]\nurl = "mock://check-config"', "")
    assert main(["check-config", "-c", str(tmp_path / "stream-guard.toml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "alerts: topic sg.alerts; confluent, schema alert.avsc under subject sg.alerts-value"
    )


def test_no_alert_waits_on_the_registry_once_the_schema_is_registered() -> None:
    """The real client over HTTP: one request at start-up (the registration), none for any alert after it.

    The client is confluent-kafka's own HTTP client; only its transport is httpx's
    MockTransport answering the registration as a Schema Registry does.
    """
    requests: list[str] = []

    def registry(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json={"id": 7, "guid": str(uuid.uuid4()), "version": 1})

    client = SchemaRegistryClient({"url": "http://registry:8081", "max.retries": 0})
    client._rest_client.session = httpx.Client(transport=httpx.MockTransport(registry))
    encoder = AlertEncoder.registered(client, TOPIC, registry_url="http://registry:8081")
    payloads = [encoder.encode(_alert(), emitted_at=EMITTED_AT + i) for i in range(3)]
    assert requests == [f"POST /subjects/{TOPIC}-value/versions"]
    assert {p[:5] for p in payloads} == {b"\x00\x00\x00\x00\x07"}
