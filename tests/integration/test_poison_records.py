"""Records that used to crash or stall the worker: each becomes its own dead letter, the stream goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from streamtest import consume_all, new_worker, produce, run_until, window_totals, write_config

from stream_guard.deadletter import dead_letter_reason
from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000


def _poison(record: dict[str, object]) -> dict[str, bytes]:
    """The hostile payloads of the fault-injection run, built from one clean JSON record."""
    body = json.dumps(record)
    return {
        "deep_nesting": b'{"event_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "huge_integer": b'{"event_id": 1' + b"0" * 5_000 + b"}",
        "lone_surrogate": body.replace('"device_type": "', '"device_type": "\\ud800').encode(),
    }


def test_poison_records_are_dead_lettered_one_by_one(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    """Deep JSON, a 5,000-digit integer and a lone surrogate are dead letters; numbers beyond their Avro type are mismatches."""
    config = write_config(
        tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique, encoding="json", window_s=3600
    )
    records = Simulator(encoding="json", seed=11).records(60, START_MS, step_ms=10)
    poison = _poison(records[0])
    # Numbers their Avro type cannot hold decode, as type mismatches: a double too large for a
    # float, a timestamp (long) beyond int64. The event time then comes from the Kafka timestamp.
    too_big_amount = json.dumps({**records[1], "amount": 10**400}).encode()
    beyond_int64 = json.dumps({**records[2], "ts": 10**20}).encode()
    items = [(None, json.dumps(r).encode(), r["ts"]) for r in records[3:]]
    items += [(name.encode(), payload, START_MS) for name, payload in poison.items()]
    items += [(b"too_big_amount", too_big_amount, START_MS), (b"beyond_int64", beyond_int64, START_MS)]
    n = produce(bootstrap, config.models[0].topics[0], items)

    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= n, timeout_s=45)

    assert worker.stats.dead_lettered == len(poison)
    assert worker.stats.decoded == n - len(poison)
    letters = consume_all(bootstrap, config.kafka.dead_letter_topic, expected=len(poison))
    assert sorted(m.key() for m in letters) == sorted(name.encode() for name in poison)
    for letter in letters:
        reason = dead_letter_reason(letter.headers())
        assert letter.value() == poison[letter.key().decode()]
        assert reason["exception.message"], reason
    totals = window_totals(redis_client, config)
    assert totals["n"] == n - len(poison)
    assert totals["f|type_mismatch|amount|"] == 1
    assert totals["f|type_mismatch|ts|"] == 1


def test_oversized_undecodable_record_is_dead_lettered_truncated(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str
) -> None:
    """A garbage value over the maximum record size is dead-lettered, truncated with headers saying so."""
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        encoding="json",
        sections="",
        model_extra="",
    )
    big = b"\x07" + b"x" * 1_500_000
    records = Simulator(encoding="json", seed=12).records(20, START_MS, step_ms=10)
    items = [(None, json.dumps(r).encode(), r["ts"]) for r in records]
    items.append((b"big", big, START_MS))
    producer_limit = {"message.max.bytes": 4_000_000}
    n = produce(bootstrap, config.models[0].topics[0], items, producer_config=producer_limit)

    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= n, timeout_s=45)

    assert (worker.stats.decoded, worker.stats.dead_lettered) == (20, 1)
    (letter,) = consume_all(bootstrap, config.kafka.dead_letter_topic, expected=1)
    reason = dead_letter_reason(letter.headers())
    headers = dict(letter.headers())
    assert reason["exception.class.name"] == "RecordTooLargeError"
    assert headers["stream_guard.payload.truncated"] == b"true"
    assert headers["stream_guard.payload.size"] == str(len(big)).encode()
    value = letter.value()
    assert value is not None and 0 < len(value) < 1_000_000 and big.startswith(value)
