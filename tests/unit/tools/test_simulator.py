"""Unit tests for stream_guard.tools.simulator: deterministic, realistic events with injectable faults."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stream_guard.decoding import CONFLUENT_MAGIC
from stream_guard.schemas import load_schema_file
from stream_guard.tools.simulator import (
    DRIFT_FAULTS,
    FAULTS,
    PAYLOAD_FAULTS,
    SCHEMA_FAULTS,
    SCHEMA_ID_AMOUNT_STRING,
    SCHEMA_ID_DROPPED,
    SCHEMA_ID_EXPECTED,
    SCHEMA_ID_UNKNOWN,
    VALUE_FAULTS,
    Simulator,
    inference_schema_json,
    write_local_registry,
    writer_variants,
)

START_MS = 1_700_000_000_000


def _stream(sim: Simulator, n: int) -> list[tuple[dict[str, Any], bytes, str | None]]:
    return list(sim.stream(n, START_MS, step_ms=2.5))


@pytest.mark.parametrize("encoding", ["confluent", "avro", "json"])
def test_same_seed_same_stream(encoding: str) -> None:
    """Two simulators with the same seed and faults produce identical records, payloads and faults."""
    faults = {"garbage": 0.05, "amount_as_string": 0.05, "truncated": 0.05}
    first = _stream(Simulator(encoding=encoding, seed=13, faults=faults), 400)
    second = _stream(Simulator(encoding=encoding, seed=13, faults=faults), 400)
    assert first == second


def test_different_seed_different_stream() -> None:
    """Another seed gives other events (and event ids carrying the seed)."""
    a = Simulator(seed=1).records(50, START_MS)
    b = Simulator(seed=2).records(50, START_MS)
    assert [r["amount"] for r in a] != [r["amount"] for r in b]
    assert a[0]["event_id"] == "evt-1-0" and b[0]["event_id"] == "evt-2-0"


def test_records_are_valid_events() -> None:
    """Records have every schema field, unique ids, spaced event times and values in their domains."""
    sim = Simulator(seed=8)
    records = sim.records(2000, START_MS, step_ms=4.0) + sim.records(10, START_MS + 8000)
    names = [f["name"] for f in inference_schema_json()["fields"]]
    assert all(list(r) == names for r in records)
    assert len({r["event_id"] for r in records}) == len(records)  # the counter continues across calls
    assert [r["ts"] for r in records[:3]] == [START_MS, START_MS + 4, START_MS + 8]
    assert all(r["amount"] > 0 and 0 <= r["score"] <= 1 for r in records)
    assert all(r["prediction"] == int(r["score"] >= 0.5) for r in records)
    assert all(r["age"] is None or 18 <= r["age"] <= 90 for r in records)
    assert {r["device_type"] for r in records} == {"android", "ios", "web"}
    null_ages = sum(r["age"] is None for r in records) / len(records)
    assert 0.005 < null_ages < 0.04  # about 2%


@pytest.mark.parametrize(
    ("faults", "n"),
    [
        ({"garbage": 0.10}, 5000),
        ({"dropped_field": 0.10}, 5000),
        ({"truncated": 0.05, "amount_as_string": 0.10, "wrong_magic": 0.02}, 5000),
    ],
)
def test_fault_rates_are_respected(faults: dict[str, float], n: int) -> None:
    """Each fault hits about its configured share of events (within 2 points over 5000 events)."""
    counts = Counter(fault for _, _, fault in _stream(Simulator(seed=42, faults=faults), n))
    for fault, rate in faults.items():
        assert abs(counts[fault] / n - rate) <= 0.02, (fault, counts[fault])
    assert set(counts) <= {None, *faults}
    assert abs(counts[None] / n - (1 - sum(faults.values()))) <= 0.03


def test_no_faults_means_clean_stream() -> None:
    """Without faults every event is clean."""
    assert {fault for _, _, fault in _stream(Simulator(seed=4), 500)} == {None}


@pytest.mark.parametrize("faults", [{"bitflip": 0.1}, {"garbage": 0.1, "Garbage": 0.1}])
def test_unknown_fault_is_rejected(faults: dict[str, float]) -> None:
    """An unknown fault name raises ValueError listing the known faults."""
    with pytest.raises(ValueError, match="unknown faults") as info:
        Simulator(faults=faults)
    assert all(name in str(info.value) for name in FAULTS)


def test_fault_catalogue() -> None:
    """FAULTS is the byte-level, schema-level, value and drift faults, each named once."""
    groups = (PAYLOAD_FAULTS, SCHEMA_FAULTS, VALUE_FAULTS, DRIFT_FAULTS)
    assert sum(groups, ()) == FAULTS
    assert len(set(FAULTS)) == len(FAULTS)


def test_confluent_payload_framing_per_fault() -> None:
    """Confluent payloads carry the schema id of their fault: 1 clean, 2 retyped, 3 dropped, 999 unknown."""
    sim = Simulator(encoding="confluent", seed=3)
    (record,) = sim.records(1, START_MS)
    expected_ids = {
        None: SCHEMA_ID_EXPECTED,
        "amount_as_string": SCHEMA_ID_AMOUNT_STRING,
        "dropped_field": SCHEMA_ID_DROPPED,
        "unknown_schema": SCHEMA_ID_UNKNOWN,
    }
    for fault, schema_id in expected_ids.items():
        payload = sim.encode(record, fault)
        assert payload[0] == CONFLUENT_MAGIC
        assert int.from_bytes(payload[1:5], "big") == schema_id
    assert sim.encode(record, "wrong_magic")[0] == 7
    clean = sim.encode(record)
    assert sim.encode(record, "truncated") == clean[: len(clean) // 2]
    assert len(sim.encode(record, "garbage")) == 40


def test_json_payloads_reflect_schema_faults() -> None:
    """JSON payloads are the record itself, with amount as a string or num_tx_24h removed for schema faults."""
    sim = Simulator(encoding="json", seed=3)
    (record,) = sim.records(1, START_MS)
    assert json.loads(sim.encode(record)) == record
    assert json.loads(sim.encode(record, "amount_as_string"))["amount"] == str(record["amount"])
    assert "num_tx_24h" not in json.loads(sim.encode(record, "dropped_field"))
    assert record["num_tx_24h"] is not None  # encode does not modify the caller's record


def test_writer_variants_and_local_registry(tmp_path: Path) -> None:
    """writer_variants gives ids 1-3 (expected, amount as string, num_tx_24h dropped); the registry writes them."""
    variants = writer_variants()
    assert set(variants) == {SCHEMA_ID_EXPECTED, SCHEMA_ID_AMOUNT_STRING, SCHEMA_ID_DROPPED}
    assert variants[SCHEMA_ID_EXPECTED] == inference_schema_json()
    amount = {f["name"]: f["type"] for f in variants[SCHEMA_ID_AMOUNT_STRING]["fields"]}["amount"]
    assert amount == "string"
    assert "num_tx_24h" not in {f["name"] for f in variants[SCHEMA_ID_DROPPED]["fields"]}
    directory = write_local_registry(tmp_path / "reg")
    assert sorted(p.name for p in directory.iterdir()) == ["1.avsc", "2.avsc", "3.avsc"]
    for schema_id in variants:
        assert load_schema_file(directory / f"{schema_id}.avsc")["type"] == "record"
