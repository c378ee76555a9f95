"""A worker with a Schema Registry, on the embedded broker and a real redis-server.

The registry is confluent-kafka's own in-memory implementation (a ``mock://`` URL): it
exists only inside this process, so the worker runs in a thread here, and the producer,
the worker and the reader share its one client (:func:`stream_guard.registry.registry_client`).
Events are written by the client's ``AvroSerializer`` with the schema GUID in the
``__value_schema_id`` header; alerts are read by a plain ``Consumer`` and the client's
``AvroDeserializer``, as Kafka Connect's AvroConverter or ksqlDB would read them.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.schema_registry import header_schema_id_serializer
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from streamtest import consume_all, new_worker, run_until, write_config

from stream_guard.alerts.codec import decode_alert
from stream_guard.deadletter import dead_letter_reason
from stream_guard.kafka import close_producer
from stream_guard.registry import registry_client
from stream_guard.settings import load_config
from stream_guard.tools.simulator import SCHEMA_ID_EXPECTED, Simulator, writer_variants

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000
N_EVENTS = 600
EVERY_BAD = 20  # every 20th record is a malformed frame


def test_header_framed_events_in_and_confluent_alerts_out(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    """GUID-in-header events decode; malformed frames are dead letters; the alert reads with AvroDeserializer."""
    write_config(tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique, window_s=3600)
    url = f"mock://sg-{uuid.uuid4().hex}"
    text = (tmp_path / "config.toml").read_text().replace('local_dir = "registry"', f'url = "{url}"')
    (tmp_path / "config.toml").write_text(text)
    config = load_config(tmp_path / "config.toml", environ={}, require_profiles=False)
    client = registry_client(config)
    topic = config.models[0].topics[0]

    serialize = AvroSerializer(
        client,
        json.dumps(writer_variants()[SCHEMA_ID_EXPECTED]),
        conf={"auto.register.schemas": True, "schema.id.serializer": header_schema_id_serializer},
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    bad = 0
    for i, record in enumerate(Simulator(encoding="json", seed=4).records(N_EVENTS, START_MS, step_ms=100)):
        headers: list[tuple[str, bytes | None]] = []
        if i % EVERY_BAD == EVERY_BAD - 1:
            value, bad = b"\x07not a frame", bad + 1
        else:
            value = serialize(record, SerializationContext(topic, MessageField.VALUE, headers))
        producer.produce(topic, value, record["event_id"].encode(), headers=headers, timestamp=record["ts"])
    assert close_producer(producer, 30) == 0

    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= N_EVENTS)
    assert (worker.stats.decoded, worker.stats.dead_lettered) == (N_EVENTS - bad, bad)

    letters = consume_all(bootstrap, config.kafka.dead_letter_topic, expected=bad)
    reasons = [dead_letter_reason(m.headers()) for m in letters]
    assert {r["exception.class.name"] for r in reasons} == {"WireFormatError"}
    assert {r["exception.message"] for r in reasons} == {
        "unknown magic byte 7 in the payload (Confluent framing starts with 0, or 1 before a schema GUID)"
    }

    alerts = consume_all(bootstrap, config.kafka.alerts_topic)
    assert alerts, "the malformed frames raise an undecodable alert"
    subject = f"{config.kafka.alerts_topic}-value"
    schema_id = client.get_latest_version(subject).schema_id
    deserialize = AvroDeserializer(client)
    records = []
    for message in alerts:
        value = message.value()
        assert value[0] == 0 and int.from_bytes(value[1:5], "big") == schema_id
        record = deserialize(value, SerializationContext(message.topic(), MessageField.VALUE, message.headers()))
        assert record == decode_alert(value)
        records.append(record)
    latest = {r["alert_id"]: r for r in records}  # an early alert, then its window's update under the same id
    (undecodable,) = [r for r in latest.values() if r["kind"] == "undecodable"]
    assert (undecodable["model"], undecodable["feature"], undecodable["count"]) == ("fraud", "WireFormatError", bad)
