"""Unit tests for stream_guard.alerts: the Alert record, its Avro codec, and alerts from closed windows."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from datetime import UTC, datetime

import fastavro
import pytest

from stream_guard.alerts.codec import AlertEncoding, alert_schema, decode_alert, encode_alert
from stream_guard.alerts.evaluate import DEFAULT_SEVERITY, finding_alerts
from stream_guard.alerts.model import Alert, Example, Related, Severity, stable_id
from stream_guard.alerts.render import render_alert
from stream_guard.state.window_store import WindowSnapshot

WINDOW_START = 1_700_000_000_000
WINDOW_END = WINDOW_START + 10_000
EMITTED_AT = 1_700_000_025_250


def _alert(**changes: object) -> Alert:
    alert = Alert(
        model="fraud",
        kind="type_mismatch",
        feature="amount",
        slice="device_type=ios",
        severity=Severity.CRITICAL,
        window_start=WINDOW_START,
        window_end=WINDOW_END,
        count=12,
        total=400,
        observed="string",
        expected="double",
        detector="schema.type_mismatch",
        message="type_mismatch 'amount' in 12 of 400 events (3.0%)",
        examples=(Example(0, 1_001, "evt-1", "'12.5'"), Example(1, 50_002)),
        value=0.03,
        threshold=0.01,
        rate=0.03,
    )
    return dataclasses.replace(alert, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize("schema_id", [None, 1, 0x01020304])
def test_alert_round_trips(schema_id: int | None) -> None:
    """encode_alert then decode_alert gives back the same Alert (plain and Confluent-framed)."""
    alert = _alert()
    payload = encode_alert(alert, emitted_at=EMITTED_AT, schema_id=schema_id)
    record = decode_alert(payload)
    assert Alert.from_record(record) == dataclasses.replace(alert, emitted_at=EMITTED_AT)
    assert record["alert_id"] == alert.alert_id
    assert record["incident_id"] == alert.incident_id
    assert record["severity"] == "CRITICAL"
    assert record["window_start"] == datetime.fromtimestamp(WINDOW_START / 1000, UTC)


def test_alert_with_nulls_round_trips() -> None:
    """An alert without feature, value, threshold and examples round-trips with its None fields."""
    alert = _alert(feature=None, value=None, threshold=None, examples=(), kind="undecodable", slice="")
    for schema_id in (None, 9):
        back = Alert.from_record(decode_alert(encode_alert(alert, emitted_at=0, schema_id=schema_id)))
        assert back == alert


def test_confluent_framing_bytes() -> None:
    """With a schema id the payload is magic 0, the 4-byte big-endian id, then the plain Avro body."""
    alert = _alert()
    plain = encode_alert(alert, emitted_at=EMITTED_AT)
    framed = encode_alert(alert, emitted_at=EMITTED_AT, schema_id=258)
    assert framed[:5] == b"\x00\x00\x00\x01\x02"
    assert framed[5:] == plain
    assert plain[:1] != b"\x00"  # a plain alert starts with the alert_id length, never 0


def test_encoded_alert_matches_the_schema() -> None:
    """The plain payload is valid schemaless Avro of schemas/alert.avsc and nothing more."""
    payload = encode_alert(_alert(), emitted_at=EMITTED_AT)
    stream = io.BytesIO(payload)
    record = fastavro.schemaless_reader(stream, alert_schema(), None)
    assert stream.tell() == len(payload)
    assert isinstance(record, dict)
    assert record["examples"] == [
        {"partition": 0, "offset": 1_001, "event_id": "evt-1", "value": "'12.5'"},
        {"partition": 1, "offset": 50_002, "event_id": None, "value": None},
    ]


def test_emitted_at_round_trips_exactly() -> None:
    """A millisecond timestamp survives encode/decode/from_record unchanged (also past 2038-01-19)."""
    emitted_at = 2_147_483_648_002
    back = Alert.from_record(decode_alert(encode_alert(_alert(), emitted_at=emitted_at)))
    assert back.emitted_at == emitted_at


# --------------------------------------------------------------------------- ids


def test_alert_id_is_stable_for_the_same_identity() -> None:
    """alert_id depends on model/kind/feature/slice/window only, not on counts, message or examples."""
    base = _alert()
    same = _alert(count=99, total=1000, rate=0.099, message="other", examples=(), severity=Severity.INFO)
    assert base.alert_id == same.alert_id
    assert base.alert_id == _alert().alert_id
    assert len(base.alert_id) == 20 and int(base.alert_id, 16) >= 0
    assert base.alert_id == stable_id("fraud", "type_mismatch", "amount", "device_type=ios", WINDOW_START, "FIRING")


@pytest.mark.parametrize(
    "change",
    [
        {"model": "churn"},
        {"kind": "missing_field"},
        {"feature": "age"},
        {"slice": ""},
        {"window_start": WINDOW_START + 10_000},
    ],
)
def test_alert_id_differs_for_another_identity(change: dict[str, object]) -> None:
    """Changing model, kind, feature, slice or window start changes alert_id."""
    assert _alert(**change).alert_id != _alert().alert_id


def test_incident_id_spans_windows() -> None:
    """incident_id is the same across windows of one problem, and differs across features."""
    assert _alert(window_start=0).incident_id == _alert().incident_id
    assert _alert(feature="age").incident_id != _alert().incident_id
    assert _alert().incident_id != _alert().alert_id


# --------------------------------------------------------------------------- finding_alerts


@pytest.fixture
def snapshot() -> WindowSnapshot:
    """A closed window as Redis returns it: string fields, examples per finding key."""
    return WindowSnapshot(
        start_ms=WINDOW_START,
        end_ms=WINDOW_END,
        fields={
            "n": "380",
            "dl": "20",
            "f|type_mismatch|amount|": "40",
            "d|type_mismatch|amount|": json.dumps(["string", "double"]),
            "f|missing_field|num_tx_24h|": "8",
            "d|missing_field|num_tx_24h|": json.dumps(["absent", "int"]),
            "f|undecodable||": "20",
            "d|undecodable||": json.dumps(["WireFormatError: unknown magic byte 7", "a record of the model's schema"]),
            "f|unexpected_field|browser|device_type=ios": "3",
            "f|schema_change|amount|": "40",
            "d|schema_change|amount|": json.dumps(["type_changed: writer schema id 2 has string", "double"]),
            "f|out_of_range|score|": "2",
            "h|amount|3": "17",  # other counters are not findings
        },
        examples={
            "type_mismatch|amount|": [
                {"partition": 0, "offset": 11, "event_id": "e11", "value": "'9.99'"},
                {"partition": 1, "offset": 12, "event_id": "e12", "value": "'1.00'"},
            ],
            "undecodable||": [{"partition": 1, "offset": 77, "event_id": None, "value": "magic 7"}],
        },
    )


def test_one_alert_per_finding_key(snapshot: WindowSnapshot) -> None:
    """finding_alerts yields one alert per f| key, sorted by key, with kind/feature/slice split out."""
    alerts = finding_alerts("fraud", snapshot)
    assert [(a.kind, a.feature, a.slice) for a in alerts] == [
        ("missing_field", "num_tx_24h", ""),
        ("out_of_range", "score", ""),
        ("schema_change", "amount", ""),
        ("type_mismatch", "amount", ""),
        ("undecodable", None, ""),
        ("unexpected_field", "browser", "device_type=ios"),
    ]
    assert len({a.alert_id for a in alerts}) == len(alerts)
    assert all(a.model == "fraud" and a.status == "FIRING" for a in alerts)
    assert all((a.window_start, a.window_end) == (WINDOW_START, WINDOW_END) for a in alerts)


def test_alert_counts_rates_and_details(snapshot: WindowSnapshot) -> None:
    """Each alert carries its count, total = n + dl, rate = count / total, and observed/expected from d|."""
    alerts = {(a.kind, a.feature): a for a in finding_alerts("fraud", snapshot)}
    mismatch = alerts[("type_mismatch", "amount")]
    assert (mismatch.count, mismatch.total) == (40, 400)
    assert mismatch.rate == pytest.approx(0.1)
    assert (mismatch.observed, mismatch.expected) == ("string", "double")
    assert mismatch.detector == "schema.type_mismatch"
    assert mismatch.message == "type_mismatch 'amount' in 40 of 400 events (10.0%): observed string, expected double"
    dead = alerts[("undecodable", None)]
    assert (dead.count, dead.total, dead.rate) == (20, 400, 0.05)
    assert dead.observed.startswith("WireFormatError")
    unexpected = alerts[("unexpected_field", "browser")]
    assert (unexpected.observed, unexpected.expected) == ("", "")  # no d| field
    assert unexpected.message.endswith("observed ?, expected ?")


def test_alert_examples(snapshot: WindowSnapshot) -> None:
    """Examples come from the snapshot's list of the same finding key; none when there is no list."""
    alerts = {(a.kind, a.feature): a for a in finding_alerts("fraud", snapshot)}
    assert alerts[("type_mismatch", "amount")].examples == (
        Example(0, 11, "e11", "'9.99'"),
        Example(1, 12, "e12", "'1.00'"),
    )
    assert alerts[("undecodable", None)].examples == (Example(1, 77, None, "magic 7"),)
    assert alerts[("missing_field", "num_tx_24h")].examples == ()


def test_alert_severity_from_defaults(snapshot: WindowSnapshot) -> None:
    """Severity comes from DEFAULT_SEVERITY by kind; unknown kinds are WARNING with the kind as detector."""
    for alert in finding_alerts("fraud", snapshot):
        assert alert.severity == DEFAULT_SEVERITY.get(alert.kind, Severity.WARNING)
    by_kind = {a.kind: a for a in finding_alerts("fraud", snapshot)}
    assert by_kind["undecodable"].severity == Severity.CRITICAL
    assert by_kind["schema_change"].severity == Severity.WARNING
    assert by_kind["unexpected_field"].severity == Severity.INFO
    assert (by_kind["out_of_range"].severity, by_kind["out_of_range"].detector) == (Severity.WARNING, "out_of_range")


def test_custom_severities(snapshot: WindowSnapshot) -> None:
    """A severities mapping overrides the defaults."""
    alerts = finding_alerts("fraud", snapshot, {"unexpected_field": Severity.CRITICAL})
    by_kind = {a.kind: a for a in alerts}
    assert by_kind["unexpected_field"].severity == Severity.CRITICAL
    assert by_kind["type_mismatch"].severity == Severity.WARNING  # not in the mapping any more


def test_window_without_findings_has_no_alerts() -> None:
    """A window with only event counters yields no alerts; an empty window gives rate 0 without dividing by 0."""
    assert finding_alerts("fraud", WindowSnapshot(0, 10_000, {"n": "50"})) == []
    (alert,) = finding_alerts("fraud", WindowSnapshot(0, 10_000, {"f|undecodable||": "0"}))
    assert (alert.total, alert.rate) == (0, 0.0)


def test_finding_alerts_round_trip_through_the_codec(snapshot: WindowSnapshot) -> None:
    """Every alert finding_alerts makes encodes with the Avro schema and decodes back unchanged."""
    for alert in finding_alerts("fraud", snapshot):
        assert Alert.from_record(decode_alert(encode_alert(alert, emitted_at=EMITTED_AT, schema_id=3))) == (
            dataclasses.replace(alert, emitted_at=EMITTED_AT)
        )


def test_json_alerts_round_trip_and_are_plain_json() -> None:
    """The JSON encoding is the Avro record as strict JSON (epoch-ms times) and decodes to the same alert."""
    alert = _alert()
    payload = encode_alert(alert, emitted_at=EMITTED_AT, encoding="json")
    plain = json.loads(payload)
    assert plain["window_start"] == WINDOW_START and plain["severity"] == "CRITICAL"
    assert plain["alert_id"] == alert.alert_id
    assert Alert.from_record(decode_alert(payload)) == dataclasses.replace(alert, emitted_at=EMITTED_AT)


def test_json_alerts_write_non_finite_numbers_as_null() -> None:
    """NaN or infinity would make the line unreadable to strict JSON tools."""
    payload = encode_alert(_alert(value=math.inf, threshold=math.nan), emitted_at=0, encoding="json")
    plain = json.loads(payload)
    assert plain["value"] is None and plain["threshold"] is None


def test_alert_filter_by_model_kind_and_minimum_severity() -> None:
    """--model and --kind keep what they name; --severity keeps that level and the more severe ones."""
    from stream_guard.alerts.reader import AlertFilter

    record = {"model": "fraud", "kind": "data_drift", "severity": "WARNING"}
    assert AlertFilter().accepts(record)
    assert AlertFilter(models=frozenset({"fraud"}), kinds=frozenset({"data_drift"})).accepts(record)
    assert not AlertFilter(models=frozenset({"churn"})).accepts(record)
    assert not AlertFilter(kinds=frozenset({"undecodable"})).accepts(record)
    assert AlertFilter(min_severity=Severity.INFO).accepts(record)
    assert AlertFilter(min_severity=Severity.WARNING).accepts(record)
    assert not AlertFilter(min_severity=Severity.CRITICAL).accepts(record)


def test_alert_filter_by_kind_sees_the_findings_an_incident_carries() -> None:
    """--kind data_drift also shows the incident led by out_of_range whose evidence is amount's data drift."""
    from stream_guard.alerts.reader import AlertFilter

    record = {
        "model": "fraud",
        "kind": "out_of_range",
        "severity": "CRITICAL",
        "related": [{"kind": "data_drift", "feature": "amount"}],
    }
    assert AlertFilter(kinds=frozenset({"data_drift"})).accepts(record)
    assert AlertFilter(kinds=frozenset({"out_of_range"})).accepts(record)
    assert not AlertFilter(kinds=frozenset({"undecodable"})).accepts(record)


# --------------------------------------------------------------------------- causes


def _grouped() -> Alert:
    return _alert(
        cause_id="c0ffee",
        related=(
            Related("out_of_range", "amount", "", 7, 1.5, 1.0, Severity.CRITICAL),
            Related("undecodable", None, "", 3, math.nan),
        ),
    )


@pytest.mark.parametrize("encoding", ["avro", "json"])
def test_cause_and_related_findings_round_trip(encoding: AlertEncoding) -> None:
    """cause_id and the related findings survive encode/decode in both encodings (a NaN value as null in JSON)."""
    alert = _grouped()
    back = Alert.from_record(decode_alert(encode_alert(alert, emitted_at=EMITTED_AT, encoding=encoding)))
    assert back.cause_id == "c0ffee"
    assert back.related[0] == Related("out_of_range", "amount", "", 7, 1.5, 1.0, Severity.CRITICAL)
    assert back.related[1].kind == "undecodable" and back.related[1].feature is None
    value = back.related[1].value
    assert value is None if encoding == "json" else (value is not None and math.isnan(value))


def test_a_json_alert_without_the_cause_fields_reads_with_their_defaults() -> None:
    """An alert from a producer older than cause_id/related reads as the schema's defaults: null and []."""
    plain = json.loads(encode_alert(_alert(), emitted_at=0, encoding="json"))
    del plain["cause_id"], plain["related"]
    record = decode_alert(json.dumps(plain).encode())
    assert (record["cause_id"], record["related"]) == (None, [])
    assert Alert.from_record(record) == _alert()


def test_the_cause_fields_are_optional_with_defaults_in_the_schema() -> None:
    """Backward compatible: the new fields have defaults, so readers of the new schema accept old records."""
    fields = {f["name"]: f for f in alert_schema()["fields"]}
    assert fields["cause_id"]["default"] is None and fields["related"]["default"] == []


def test_an_outcome_round_trips_and_names_its_own_alert_while_alerts_without_one_keep_their_ids() -> None:
    """``outcome`` is an optional field (default null): old ids unchanged, a settled alert has its own id."""
    plain = _alert()
    confirmed = dataclasses.replace(plain, outcome="CONFIRMED")
    for encoding in ("avro", "json"):
        record = decode_alert(encode_alert(confirmed, emitted_at=EMITTED_AT, encoding=encoding))  # type: ignore[arg-type]
        assert record["outcome"] == "CONFIRMED"
        assert Alert.from_record(record).outcome == "CONFIRMED"
    assert decode_alert(encode_alert(plain, emitted_at=EMITTED_AT))["outcome"] is None
    assert plain.alert_id == stable_id("fraud", "type_mismatch", "amount", "device_type=ios", WINDOW_START, "FIRING")
    assert confirmed.alert_id != plain.alert_id and confirmed.incident_id == plain.incident_id
    older = {k: v for k, v in plain.to_record().items() if k != "outcome"}  # a record of an older producer
    assert Alert.from_record(older).outcome is None


def test_a_settled_alert_shows_its_outcome_beside_its_status() -> None:
    refuted = dataclasses.replace(_alert(), status="RESOLVED", outcome="REFUTED")
    assert render_alert(refuted.to_record()).startswith("ALERT CRITICAL RESOLVED REFUTED fraud type_mismatch")
    assert " FIRING" not in render_alert(_alert().to_record()) and "CONFIRMED" not in render_alert(_alert().to_record())
