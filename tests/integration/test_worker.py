"""The worker end to end, on the embedded broker and a real redis-server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from streamtest import consume_all, new_worker, produce, run_until, window_totals, write_config

from stream_guard.alerts.codec import decode_alert
from stream_guard.deadletter import dead_letter_reason
from stream_guard.tools.simulator import PAYLOAD_FAULTS, Simulator

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000


@pytest.mark.parametrize("encoding", ["confluent", "avro", "json"])
def test_clean_events_of_each_encoding_decode_without_findings(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str, encoding: str
) -> None:
    """Events from a real producer in each encoding are decoded, counted once and raise no alert."""
    config = write_config(tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique, encoding=encoding)
    sim = Simulator(encoding=encoding, seed=1)
    n = produce(
        bootstrap,
        config.models[0].topics[0],
        ((r["user_id"].encode(), p, r["ts"]) for r, p, _ in sim.stream(1500, START_MS, step_ms=20)),
    )
    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= n)
    assert (worker.stats.decoded, worker.stats.dead_lettered) == (n, 0)
    totals = window_totals(redis_client, config)
    assert totals["n"] == n
    assert not any(k.startswith("f|") for k in totals), totals
    assert consume_all(bootstrap, config.kafka.alerts_topic, idle_s=2, timeout_s=6) == []


def test_bad_inputs_become_dead_letters_and_aggregated_alerts(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    """Each kind of bad payload is dead-lettered with its reason, schema faults become one alert each, counts add up."""
    # The window alerts only (early alerts: tests/integration/test_early_alerts_e2e.py).
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        window_s=3600,
        sections="[alerts]\nearly_kinds = []",
    )
    faults = {
        "garbage": 0.02,
        "truncated": 0.02,
        "wrong_magic": 0.02,
        "unknown_schema": 0.02,
        "amount_as_string": 0.05,
        "dropped_field": 0.05,
    }
    sim = Simulator(encoding="confluent", seed=3, faults=faults)
    events = list(sim.stream(3000, START_MS, step_ms=100))  # 300 s of event time: one window
    injected = {f: sum(1 for _, _, got in events if got == f) for f in faults}
    topic = config.models[0].topics[0]
    n = produce(bootstrap, topic, ((r["event_id"].encode(), p, r["ts"]) for r, p, _ in events))

    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= n)

    payload_faults = injected["garbage"] + injected["truncated"] + injected["wrong_magic"] + injected["unknown_schema"]
    assert worker.stats.dead_lettered == payload_faults
    assert worker.stats.decoded + worker.stats.dead_lettered == n

    letters = consume_all(bootstrap, config.kafka.dead_letter_topic, expected=payload_faults)
    assert len(letters) == payload_faults
    by_offset = {(r["event_id"].encode()): (p, f) for r, p, f in events}
    reasons = {}
    for letter in letters:
        reason = dead_letter_reason(letter.headers())
        original_payload, fault = by_offset[letter.key()]
        assert letter.value() == original_payload  # original bytes kept
        assert reason["topic"] == topic and reason["stage"] == "VALUE_CONVERTER"
        assert int(reason["offset"]) >= 0 and reason["exception.message"]
        reasons.setdefault(fault, set()).add(reason["exception.class.name"])
    assert reasons["wrong_magic"] == {"WireFormatError"}
    assert reasons["unknown_schema"] == {"UnknownSchemaIdError"}
    assert reasons["truncated"] <= {"UndecodablePayloadError"}

    alerts = [decode_alert(m.value()) for m in consume_all(bootstrap, config.kafka.alerts_topic)]
    # One window, two causes: the bad bytes (one undecodable burst of every error class) and
    # the writer schema change (its fields' findings). Each is one alert, its primary finding's,
    # carrying the others as related findings.
    assert len({a["cause_id"] for a in alerts}) == len(alerts) == 2, "one alert per cause in a window"
    findings = [(a["kind"], a["feature"], a["count"]) for a in alerts]
    findings += [(r["kind"], r["feature"], r["count"]) for a in alerts for r in a["related"]]
    by_kind = {(kind, feature): count for kind, feature, count in findings}
    assert len(by_kind) == len(findings), "one finding per kind and feature in a window"
    assert by_kind[("type_mismatch", "amount")] == injected["amount_as_string"]
    assert by_kind[("schema_change", "amount")] == injected["amount_as_string"]
    assert by_kind[("missing_field", "num_tx_24h")] == injected["dropped_field"]
    assert by_kind[("schema_change", "num_tx_24h")] == injected["dropped_field"]
    undecodable = [(feature, count) for kind, feature, count in findings if kind == "undecodable"]
    assert {feature for feature, _ in undecodable} == set().union(*(reasons[f] for f in PAYLOAD_FAULTS))
    assert sum(count for _, count in undecodable) == payload_faults
    (burst,) = [a for a in alerts if a["kind"] == "undecodable"]
    assert burst["total"] == n and 1 <= len(burst["examples"]) <= config.worker.max_examples
    (schema,) = [a for a in alerts if a["kind"] != "undecodable"]
    assert (schema["kind"], schema["feature"]) == ("missing_field", "num_tx_24h"), "a schema finding, critical, leads"
    assert schema["examples"]


def test_json_field_problems_are_findings_not_dead_letters(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str
) -> None:
    """JSON "123" for a double, a missing field and an extra field each raise their finding; only non-JSON is dead-lettered."""
    config = write_config(
        tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique, encoding="json", window_s=3600
    )
    records = Simulator(encoding="json", seed=5).records(40, START_MS, step_ms=10)
    payloads = []
    for i, record in enumerate(records):
        if i % 4 == 1:
            record["amount"] = str(record["amount"])
        elif i % 4 == 2:
            del record["country"]
        elif i % 4 == 3:
            record["debug_flag"] = True
        payloads.append((None, json.dumps(record).encode(), record["ts"]))
    payloads.append((None, b"{not json", START_MS))
    n = produce(bootstrap, config.models[0].topics[0], payloads)
    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= n)
    assert (worker.stats.decoded, worker.stats.dead_lettered) == (40, 1)
    alerts = {
        (a["kind"], a["feature"]): a
        for a in map(decode_alert, (m.value() for m in consume_all(bootstrap, config.kafka.alerts_topic)))
    }
    assert alerts[("type_mismatch", "amount")]["count"] == 10
    assert alerts[("type_mismatch", "amount")]["observed"] == "string"
    assert alerts[("missing_field", "country")]["count"] == 10
    assert alerts[("unexpected_field", "debug_flag")]["count"] == 10
    assert alerts[("undecodable", "UndecodablePayloadError")]["count"] == 1


def test_alerts_are_keyed_by_event_time_windows(tmp_path: Path, bootstrap: str, redis_url: str, unique: str) -> None:
    """Findings land in the window of their event timestamp, whatever order or time they are consumed in."""
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        encoding="json",
        window_s=60,
        # Every window of the incident is published (reminders without a gap), as this test is about windows.
        sections="[alerts]\ncooldown_s = 0\nremind_after_s = 0",
    )
    records = Simulator(encoding="json", seed=9).records(300, START_MS, step_ms=1000)  # 5 minutes of event time
    for record in records[::10]:
        record["amount"] = "oops"
    items = [(None, json.dumps(r).encode(), START_MS) for r in reversed(records)]  # Kafka timestamps all equal
    n = produce(bootstrap, config.models[0].topics[0], items)
    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= n)
    # Reversed event order makes most events late; a late event republishes its window's
    # alert under the same alert_id with the complete counts, so keep the newest per id.
    latest = {}
    for message in consume_all(bootstrap, config.kafka.alerts_topic):
        alert = decode_alert(message.value())
        latest[alert["alert_id"]] = alert
    alerts = list(latest.values())
    starts = sorted(int(a["window_start"].timestamp() * 1000) for a in alerts if a["kind"] == "type_mismatch")
    expected = sorted({(r["ts"] // 60_000) * 60_000 for r in records[::10]})
    assert starts == expected
    assert sum(a["count"] for a in alerts if a["kind"] == "type_mismatch") == 30
    assert all(a["window_end"] - a["window_start"] == __import__("datetime").timedelta(seconds=60) for a in alerts)


def test_two_workers_split_partitions_and_count_each_event_once(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    """Two workers in one group share the partitions; merged window counters equal the events produced."""
    config = write_config(
        tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique, partitions=4, window_s=3600
    )
    sim = Simulator(encoding="confluent", seed=11, faults={"garbage": 0.01})
    events = list(sim.stream(4000, START_MS, step_ms=50))
    workers = [new_worker(config), new_worker(config)]
    # Start both first so the group settles with two members, then produce.
    n_expected = len(events)
    import threading

    produced = threading.Event()

    def produce_later() -> None:
        time.sleep(8)
        produce(bootstrap, config.models[0].topics[0], ((None, p, r["ts"]) for r, p, _ in events), partitions=4)
        produced.set()

    threading.Thread(target=produce_later).start()
    # Wait for the records to be committed, not just consumed: both workers drain their windows
    # on exit, and a drain must not publish a window while the other's last batch is in flight.
    stats = run_until(
        workers,
        lambda: produced.is_set() and sum(w.stats.decoded + w.stats.dead_lettered for w in workers) >= n_expected,
        timeout_s=120,
    )
    assert all(s.consumed > 0 for s in stats), [vars(s) for s in stats]
    assert sum(s.decoded + s.dead_lettered for s in stats) == n_expected
    totals = window_totals(redis_client, config)
    assert totals["n"] + totals["dl"] == n_expected
    alerts = [decode_alert(m.value()) for m in consume_all(bootstrap, config.kafka.alerts_topic)]
    latest = {a["alert_id"]: a for a in alerts if a["kind"] == "undecodable"}
    assert sum(a["count"] for a in latest.values()) == sum(1 for _, _, f in events if f)


def test_one_incident_fires_once_while_it_does_not_escalate_and_resolves(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str
) -> None:
    """A steady fault in four consecutive windows opens one incident, is not re-published past the cooldown
    (its rate does not double, remind_after_s is hours away), then resolves once."""
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        encoding="json",
        window_s=60,
        sections="[alerts]\ncooldown_s = 120\nresolve_after_s = 120\nearly_kinds = []",  # the window alerts' lifecycle
    )
    records = Simulator(encoding="json", seed=13).records(600, START_MS - START_MS % 60_000, step_ms=1000)
    for record in records[:240:7]:  # minutes 0-3 carry the fault
        record["amount"] = "n/a"
    n = produce(bootstrap, config.models[0].topics[0], ((None, json.dumps(r).encode(), r["ts"]) for r in records))
    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= n)
    alerts = [decode_alert(m.value()) for m in consume_all(bootstrap, config.kafka.alerts_topic)]
    seen = [(a["status"], a["kind"], a["feature"]) for a in alerts]
    assert seen == [("FIRING", "type_mismatch", "amount"), ("RESOLVED", "type_mismatch", "amount")]
    assert len({a["incident_id"] for a in alerts}) == len({a["cause_id"] for a in alerts}) == 1
    assert len({a["alert_id"] for a in alerts}) == 2
    assert alerts[-1]["count"] == len(records[:240:7])
