"""Unit tests for stream_guard.decoding: JSON, plain Avro and Confluent-framed Avro payloads."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stream_guard import errors
from stream_guard.batch import event_time_of
from stream_guard.decoding import (
    ConfluentDecoder,
    Decoded,
    JsonDecoder,
    LocalWriterSchemas,
    PlainAvroDecoder,
    confluent_frame,
    decode_payload,
    encode_avro,
    load_json,
)
from stream_guard.errors import (
    EventTimeRangeError,
    RecordTooLargeError,
    RegistryUnavailableError,
    UndecodablePayloadError,
)
from stream_guard.resources import schema_dir
from stream_guard.schemas import load_schema_file, parse_schema
from stream_guard.tools.simulator import (
    FAULTS,
    SCHEMA_ID_AMOUNT_STRING,
    SCHEMA_ID_DROPPED,
    SCHEMA_ID_EXPECTED,
    SCHEMA_ID_UNKNOWN,
    Simulator,
    writer_variants,
)

START_MS = 1_700_000_000_000
#: Schema ids this file adds to the local registry next to the simulator's 1, 2 and 3.
SCHEMA_ID_EVOLVED = 5  # adds an optional field with a default (backward compatible)
SCHEMA_ID_DEFAULT_CHANGED = 6  # only the default of model_version differs from id 1


def _evolved_writer() -> dict[str, Any]:
    schema = copy.deepcopy(writer_variants()[SCHEMA_ID_EXPECTED])
    schema["fields"].append({"name": "channel", "type": ["null", "string"], "default": None})
    return schema


def _default_changed_writer() -> dict[str, Any]:
    schema = copy.deepcopy(writer_variants()[SCHEMA_ID_EXPECTED])
    for f in schema["fields"]:
        if f["name"] == "model_version":
            f["default"] = "v2"
    return schema


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    """A local registry: ``<id>.avsc`` files of the simulator's writers and two more."""
    directory = tmp_path / "registry"
    directory.mkdir()
    variants = dict(writer_variants())
    variants[SCHEMA_ID_EVOLVED] = _evolved_writer()
    variants[SCHEMA_ID_DEFAULT_CHANGED] = _default_changed_writer()
    for schema_id, schema in variants.items():
        (directory / f"{schema_id}.avsc").write_text(json.dumps(schema))
    return directory


@pytest.fixture
def reader() -> dict[str, Any]:
    return load_schema_file(schema_dir() / "fraud_inference.avsc")


@pytest.fixture
def confluent(reader: dict[str, Any], registry_dir: Path) -> ConfluentDecoder:
    return ConfluentDecoder(reader, LocalWriterSchemas(str(registry_dir), load_schema_file))


@pytest.fixture
def record() -> dict[str, Any]:
    """One realistic clean event (seeded)."""
    return Simulator(encoding="json", seed=101).records(1, START_MS)[0]


def _as_written(values: dict[str, Any]) -> dict[str, Any]:
    """Decoded Avro values with the timestamp-millis field turned back into epoch ms."""
    out = dict(values)
    if isinstance(out.get("ts"), datetime):
        out["ts"] = int((out["ts"] - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000 + 0.5)
    return out


def _issue_kinds(decoded: Decoded) -> list[tuple[str, str]]:
    return sorted((i.kind, i.field) for i in decoded.issues)


# --------------------------------------------------------------------------- clean records


@pytest.mark.parametrize("encoding", ["json", "avro", "confluent"])
def test_clean_records_decode_without_issues(encoding: str, reader: dict[str, Any], registry_dir: Path) -> None:
    """Clean simulator events decode to their own values with no issues, in all three encodings."""
    sim = Simulator(encoding=encoding, seed=21)
    decoder: Any
    if encoding == "json":
        decoder = JsonDecoder(reader)
    elif encoding == "avro":
        decoder = PlainAvroDecoder(reader, parse_schema(writer_variants()[SCHEMA_ID_EXPECTED]))
    else:
        decoder = ConfluentDecoder(reader, LocalWriterSchemas(str(registry_dir), load_schema_file))
    records = sim.records(300, START_MS, step_ms=37.0)
    assert any(r["age"] is None for r in records), "seeded data should include a null age"
    for rec in records:
        decoded = decoder.decode(sim.encode(rec))
        assert decoded.issues == []
        assert decoded.schema_changes == ()
        assert _as_written(decoded.values) == rec
        assert decoded.writer_schema_id == (SCHEMA_ID_EXPECTED if encoding == "confluent" else None)


def test_avro_timestamp_millis_decodes_to_epoch_millis(confluent: ConfluentDecoder, record: dict[str, Any]) -> None:
    """Avro's timestamp-millis field decodes to the epoch milliseconds it holds, not a datetime."""
    payload = confluent_frame(SCHEMA_ID_EXPECTED, encode_avro(parse_schema(writer_variants()[1]), record))
    ts = confluent.decode(payload).values["ts"]
    assert ts == record["ts"] and isinstance(ts, int)


# --------------------------------------------------------------------------- JSON field checks


def test_json_string_for_double_is_type_mismatch(reader: dict[str, Any], record: dict[str, Any]) -> None:
    """JSON "123" for a double field gives a type_mismatch FieldIssue and the value becomes None."""
    record["amount"] = "123"
    decoded = JsonDecoder(reader).decode(json.dumps(record).encode())
    assert len(decoded.issues) == 1
    issue = decoded.issues[0]
    assert (issue.kind, issue.field, issue.observed, issue.expected, issue.value) == (
        "type_mismatch",
        "amount",
        "string",
        "double",
        "123",
    )
    assert decoded.values["amount"] is None
    assert decoded.values["score"] == record["score"]


def test_json_int_is_accepted_for_double(reader: dict[str, Any], record: dict[str, Any]) -> None:
    """A JSON integer is a valid double (JSON has one number type)."""
    record["amount"] = 123
    decoded = JsonDecoder(reader).decode(json.dumps(record).encode())
    assert decoded.issues == []
    assert decoded.values["amount"] == 123


@pytest.mark.parametrize(
    ("field", "value", "observed"),
    [
        ("prediction", True, "boolean"),  # bool is an int subclass in Python, not an Avro int
        ("account_age_days", False, "boolean"),
        ("is_new_user", 1, "number"),  # and an int is not a boolean
        ("prediction", 0.5, "number"),  # a float is not an int
        ("age", "forty", "string"),  # nullable int: a string is still wrong
        ("event_id", 17, "number"),
    ],
)
def test_json_wrong_types_are_mismatches(
    reader: dict[str, Any], record: dict[str, Any], field: str, value: Any, observed: str
) -> None:
    """Booleans where numbers are expected (and vice versa) are type mismatches, with the value kept."""
    record[field] = value
    decoded = JsonDecoder(reader).decode(json.dumps(record).encode())
    assert [(i.kind, i.field, i.observed, i.value) for i in decoded.issues] == [
        ("type_mismatch", field, observed, value)
    ]
    assert decoded.values[field] is None


def test_json_null_only_allowed_for_nullable_fields(reader: dict[str, Any], record: dict[str, Any]) -> None:
    """null is fine for the nullable age but a type_mismatch for the non-null amount."""
    record["age"] = None
    record["amount"] = None
    decoded = JsonDecoder(reader).decode(json.dumps(record).encode())
    assert [(i.kind, i.field, i.expected, i.value) for i in decoded.issues] == [
        ("type_mismatch", "amount", "double", None)
    ]
    assert decoded.values["age"] is None


def test_json_missing_required_field(reader: dict[str, Any], record: dict[str, Any]) -> None:
    """A missing field without a default gives missing_field and None."""
    del record["num_tx_24h"]
    decoded = JsonDecoder(reader).decode(json.dumps(record).encode())
    assert [(i.kind, i.field, i.observed, i.expected) for i in decoded.issues] == [
        ("missing_field", "num_tx_24h", "absent", "int")
    ]
    assert decoded.values["num_tx_24h"] is None


def test_json_missing_field_with_default_takes_default(reader: dict[str, Any], record: dict[str, Any]) -> None:
    """A missing field that has a schema default gets the default and raises no issue."""
    del record["model_version"]  # default "v1"
    del record["age"]  # default null
    decoded = JsonDecoder(reader).decode(json.dumps(record).encode())
    assert decoded.issues == []
    assert decoded.values["model_version"] == "v1"
    assert decoded.values["age"] is None
    assert set(decoded.values) == {f["name"] for f in reader["fields"]}


def test_json_unexpected_field(reader: dict[str, Any], record: dict[str, Any]) -> None:
    """A field the schema does not declare gives unexpected_field (and is not copied to values)."""
    record["browser"] = "firefox"
    decoded = JsonDecoder(reader).decode(json.dumps(record).encode())
    assert [(i.kind, i.field, i.value) for i in decoded.issues] == [("unexpected_field", "browser", "firefox")]
    assert "browser" not in decoded.values


def test_json_unexpected_field_not_reported_when_disabled(reader: dict[str, Any], record: dict[str, Any]) -> None:
    """With report_unexpected=False extra fields are silently ignored."""
    record["browser"] = "firefox"
    decoded = JsonDecoder(reader, report_unexpected=False).decode(json.dumps(record).encode())
    assert decoded.issues == []
    assert "browser" not in decoded.values


@pytest.mark.parametrize("payload", [b"[1, 2]", b"42", b'"text"', b"null", b"true"])
def test_json_non_object_is_not_a_record(reader: dict[str, Any], payload: bytes) -> None:
    """Valid JSON that is not an object raises NotARecordError."""
    with pytest.raises(errors.NotARecordError):
        JsonDecoder(reader).decode(payload)


@pytest.mark.parametrize("payload", [b"{not json", b'{"a": 1', b"", b"\xff\xfe\x00garbage", None])
def test_json_bad_payload_is_undecodable(reader: dict[str, Any], payload: bytes | None) -> None:
    """Invalid JSON, invalid UTF-8, empty and tombstone payloads raise UndecodablePayloadError."""
    with pytest.raises(errors.UndecodablePayloadError):
        JsonDecoder(reader).decode(payload)


# --------------------------------------------------------------------------- plain Avro


def test_plain_avro_truncated_and_trailing_bytes(reader: dict[str, Any], record: dict[str, Any]) -> None:
    """Plain Avro: a truncated body and trailing bytes both raise UndecodablePayloadError."""
    writer = parse_schema(writer_variants()[SCHEMA_ID_EXPECTED])
    decoder = PlainAvroDecoder(reader, writer)
    body = encode_avro(writer, record)
    assert decoder.decode(body).issues == []
    with pytest.raises(errors.UndecodablePayloadError):
        decoder.decode(body[:-4])
    with pytest.raises(errors.UndecodablePayloadError, match="trailing"):
        decoder.decode(body + b"\x00\x01")
    with pytest.raises(errors.UndecodablePayloadError):
        decoder.decode(b"")


def test_plain_avro_with_other_writer_schema_resolves(reader: dict[str, Any], record: dict[str, Any]) -> None:
    """Plain Avro with a configured writer that dropped a field reports it like the Confluent path."""
    writer = parse_schema(writer_variants()[SCHEMA_ID_DROPPED])
    del record["num_tx_24h"]
    decoded = PlainAvroDecoder(reader, writer).decode(encode_avro(writer, record))
    assert _issue_kinds(decoded) == [("missing_field", "num_tx_24h")]
    assert [(c.change, c.field) for c in decoded.schema_changes] == [("field_removed", "num_tx_24h")]
    assert decoded.writer_schema_id is None


# --------------------------------------------------------------------------- Confluent framing


def test_confluent_wrong_magic_byte(confluent: ConfluentDecoder, record: dict[str, Any]) -> None:
    """A first byte other than 0 or 1 raises WireFormatError."""
    good = confluent_frame(SCHEMA_ID_EXPECTED, encode_avro(parse_schema(writer_variants()[1]), record))
    for magic in (2, 7, 0x80, 0xFF):
        with pytest.raises(errors.WireFormatError, match="magic"):
            confluent.decode(bytes([magic]) + good[1:])


def test_confluent_magic_one_is_a_schema_guid(confluent: ConfluentDecoder, record: dict[str, Any]) -> None:
    """Magic byte 1 is the client's GUID framing (16 bytes of GUID follow): here a GUID no one registered."""
    good = confluent_frame(SCHEMA_ID_EXPECTED, encode_avro(parse_schema(writer_variants()[1]), record))
    with pytest.raises(errors.UnknownSchemaIdError, match="schema GUID"):
        confluent.decode(bytes([1]) + good[1:])
    with pytest.raises(errors.WireFormatError, match="shorter than the 17-byte"):
        confluent.decode(bytes([1]) + good[1:10])


@pytest.mark.parametrize("payload", [b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x01"])
def test_confluent_short_payload(confluent: ConfluentDecoder, payload: bytes) -> None:
    """A payload shorter than the 5-byte header raises WireFormatError."""
    with pytest.raises(errors.WireFormatError, match="shorter"):
        confluent.decode(payload)


@pytest.mark.parametrize("payload", [b"", None])
def test_confluent_tombstone(confluent: ConfluentDecoder, payload: bytes | None) -> None:
    """Empty and tombstone values raise UndecodablePayloadError."""
    with pytest.raises(errors.UndecodablePayloadError):
        confluent.decode(payload)


def test_confluent_unknown_schema_id(confluent: ConfluentDecoder, record: dict[str, Any]) -> None:
    """A schema id with no ``<id>.avsc`` file raises UnknownSchemaIdError naming the id."""
    body = encode_avro(parse_schema(writer_variants()[1]), record)
    with pytest.raises(errors.UnknownSchemaIdError, match=str(SCHEMA_ID_UNKNOWN)):
        confluent.decode(confluent_frame(SCHEMA_ID_UNKNOWN, body))


def test_confluent_truncated_body(confluent: ConfluentDecoder, record: dict[str, Any]) -> None:
    """A body cut short (header intact, or header alone) raises UndecodablePayloadError."""
    payload = confluent_frame(SCHEMA_ID_EXPECTED, encode_avro(parse_schema(writer_variants()[1]), record))
    for cut in (5, 6, len(payload) // 2, len(payload) - 1):
        with pytest.raises(errors.UndecodablePayloadError):
            confluent.decode(payload[:cut])


def test_confluent_trailing_bytes(confluent: ConfluentDecoder, record: dict[str, Any]) -> None:
    """Bytes after a complete record raise UndecodablePayloadError, also when resolving a writer."""
    for schema_id in (SCHEMA_ID_EXPECTED, SCHEMA_ID_EVOLVED, SCHEMA_ID_AMOUNT_STRING):
        writer = parse_schema({SCHEMA_ID_EVOLVED: _evolved_writer()}.get(schema_id) or writer_variants()[schema_id])
        rec = dict(record, amount=str(record["amount"])) if schema_id == SCHEMA_ID_AMOUNT_STRING else record
        payload = confluent_frame(schema_id, encode_avro(writer, rec))
        confluent.decode(payload)  # decodes cleanly without the extra bytes
        with pytest.raises(errors.UndecodablePayloadError, match="2 trailing bytes"):
            confluent.decode(payload + b"\x02\x04")


def test_amount_retyped_to_string_falls_back(confluent: ConfluentDecoder) -> None:
    """Writer id 2 (amount as string) decodes via the fallback: type_mismatch on amount + type_changed change."""
    sim = Simulator(encoding="confluent", seed=5)
    for rec in sim.records(20, START_MS):
        decoded = confluent.decode(sim.encode(rec, "amount_as_string"))
        assert decoded.writer_schema_id == SCHEMA_ID_AMOUNT_STRING
        assert [(i.kind, i.field, i.observed, i.expected, i.value) for i in decoded.issues] == [
            ("type_mismatch", "amount", "string", "double", str(rec["amount"]))
        ]
        assert decoded.values["amount"] is None
        assert _as_written({k: v for k, v in decoded.values.items() if k != "amount"}) == {
            k: v for k, v in rec.items() if k != "amount"
        }
        assert [(c.change, c.field, c.expected, c.observed) for c in decoded.schema_changes] == [
            ("type_changed", "amount", "double", "string")
        ]


def test_dropped_field_writer(confluent: ConfluentDecoder) -> None:
    """Writer id 3 (num_tx_24h dropped) gives missing_field num_tx_24h and a field_removed change."""
    sim = Simulator(encoding="confluent", seed=6)
    for rec in sim.records(20, START_MS):
        decoded = confluent.decode(sim.encode(rec, "dropped_field"))
        assert decoded.writer_schema_id == SCHEMA_ID_DROPPED
        assert _issue_kinds(decoded) == [("missing_field", "num_tx_24h")]
        assert decoded.values["num_tx_24h"] is None
        assert decoded.values["amount"] == rec["amount"]
        assert [(c.change, c.field) for c in decoded.schema_changes] == [("field_removed", "num_tx_24h")]


def test_compatible_evolution_resolves_per_avro_rules(confluent: ConfluentDecoder, record: dict[str, Any]) -> None:
    """A writer adding an optional field the reader lacks resolves cleanly: field_added, no issues."""
    writer = parse_schema(_evolved_writer())
    for channel in ("mobile-app", None):
        payload = confluent_frame(SCHEMA_ID_EVOLVED, encode_avro(writer, dict(record, channel=channel)))
        decoded = confluent.decode(payload)
        assert decoded.issues == []
        assert "channel" not in decoded.values  # the reader does not know it: skipped
        assert _as_written(decoded.values) == record
        assert [(c.change, c.field, c.expected) for c in decoded.schema_changes] == [
            ("field_added", "channel", "absent")
        ]
        assert decoded.writer_schema_id == SCHEMA_ID_EVOLVED


def test_writer_without_defaulted_field_gets_reader_default(
    reader: dict[str, Any], tmp_path: Path, record: dict[str, Any]
) -> None:
    """A writer lacking a field the reader defaults resolves to the default, with field_removed and no issue."""
    schema = copy.deepcopy(writer_variants()[SCHEMA_ID_EXPECTED])
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "model_version"]
    (tmp_path / "8.avsc").write_text(json.dumps(schema))
    decoder = ConfluentDecoder(reader, LocalWriterSchemas(str(tmp_path), load_schema_file))
    rec = {k: v for k, v in record.items() if k != "model_version"}
    decoded = decoder.decode(confluent_frame(8, encode_avro(parse_schema(schema), rec)))
    assert decoded.issues == []
    assert decoded.values["model_version"] == "v1"
    assert [(c.change, c.field) for c in decoded.schema_changes] == [("field_removed", "model_version")]


def test_simulated_faults_decode_as_their_fault_says(confluent: ConfluentDecoder) -> None:
    """Over a seeded faulty stream, each fault maps to its error class or field issue; clean events have none."""
    rates = {fault: 1 / (len(FAULTS) + 1) for fault in FAULTS}  # one fault per event at most
    sim = Simulator(encoding="confluent", seed=99, faults=rates)
    expected_error = {
        "wrong_magic": errors.WireFormatError,
        "unknown_schema": errors.UnknownSchemaIdError,
        "truncated": errors.UndecodablePayloadError,
        "garbage": errors.DecodeError,
    }
    seen: set[str | None] = set()
    for _rec, payload, fault in sim.stream(2000, START_MS):
        seen.add(fault)
        if fault in expected_error:
            with pytest.raises(expected_error[fault]):
                confluent.decode(payload)
            continue
        decoded = confluent.decode(payload)
        if fault == "amount_as_string":
            assert _issue_kinds(decoded) == [("type_mismatch", "amount")]
        elif fault == "dropped_field":
            assert _issue_kinds(decoded) == [("missing_field", "num_tx_24h")]
        else:
            assert decoded.issues == [] and decoded.schema_changes == ()
    assert seen == {None, *FAULTS}


def test_local_writer_schemas_read_once(registry_dir: Path) -> None:
    """LocalWriterSchemas loads each ``<id>.avsc`` once and serves it from its cache afterwards."""
    loads: list[str] = []

    def load(path: str) -> dict[str, Any]:
        loads.append(path)
        return load_schema_file(path)

    writers = LocalWriterSchemas(str(registry_dir), load)
    first = writers.get(SCHEMA_ID_DROPPED)
    (registry_dir / f"{SCHEMA_ID_DROPPED}.avsc").unlink()
    assert writers.get(SCHEMA_ID_DROPPED) is first
    assert loads == [f"{registry_dir}/{SCHEMA_ID_DROPPED}.avsc"]
    with pytest.raises(errors.UnknownSchemaIdError):
        writers.get(SCHEMA_ID_UNKNOWN)


@pytest.mark.parametrize("order", ["changed_first", "expected_first"])
def test_writers_differing_only_in_default_report_their_own_changes(
    confluent: ConfluentDecoder, record: dict[str, Any], order: str
) -> None:
    """Writers differing only in a default get their own plans: id 6 reports default_changed, id 1 nothing."""
    body = encode_avro(parse_schema(writer_variants()[SCHEMA_ID_EXPECTED]), record)  # same bytes for both ids
    ids = [SCHEMA_ID_DEFAULT_CHANGED, SCHEMA_ID_EXPECTED]
    if order == "expected_first":
        ids.reverse()
    changes = {schema_id: confluent.decode(confluent_frame(schema_id, body)).schema_changes for schema_id in ids}
    assert [(c.change, c.field) for c in changes[SCHEMA_ID_DEFAULT_CHANGED]] == [("default_changed", "model_version")]
    assert changes[SCHEMA_ID_EXPECTED] == ()


# --------------------------------------------------------------------------- error hierarchy


@pytest.mark.parametrize(
    "cls",
    [
        errors.UndecodablePayloadError,
        errors.WireFormatError,
        errors.UnknownSchemaIdError,
        errors.SchemaResolutionError,
        errors.NotARecordError,
    ],
)
def test_decode_errors_share_the_base_class(cls: type[Exception]) -> None:
    """Every payload error is a DecodeError (so it is dead-lettered) with the VALUE_CONVERTER stage."""
    assert issubclass(cls, errors.DecodeError)
    assert issubclass(cls, errors.StreamGuardError)
    assert cls("x").stage == "VALUE_CONVERTER"


def test_registry_outage_is_not_a_decode_error() -> None:
    """RegistryUnavailableError is not a DecodeError: an outage retries the batch instead of dead-lettering it."""
    assert not issubclass(errors.RegistryUnavailableError, errors.DecodeError)
    assert issubclass(errors.RegistryUnavailableError, errors.StreamGuardError)


# --------------------------------------------------------------------------- hostile payloads


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"a": 1' + b"0" * 5_000 + b"}", "number not decodable"),
        (b'{"a": "x\\ud800y"}', "lone UTF-16 surrogate"),
        (b'{"a": "\\uDFFF"}', "lone UTF-16 surrogate"),
        (b'{"a": "\xff"}', "not valid JSON"),
    ],
)
def test_hostile_json_is_undecodable_with_its_reason(payload: bytes, reason: str) -> None:
    """JSON that crashed the worker (RecursionError, ValueError, UnicodeEncodeError later) is a DecodeError."""
    with pytest.raises(UndecodablePayloadError, match=reason):
        load_json(payload)


def test_escaped_surrogate_pair_is_a_real_character() -> None:
    """Only a lone surrogate is refused: an escaped pair (an emoji) decodes to its character."""
    assert load_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\N{GRINNING FACE}"}


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("amount", 10**308, True),
        ("amount", 10**400, False),
        ("ts", 2**63 - 1, True),
        ("ts", 2**63, False),
        ("ts", -(2**63) - 1, False),
    ],
)
def test_json_integers_beyond_their_avro_type_are_mismatches(
    reader: dict[str, Any], record: dict[str, Any], field: str, value: int, ok: bool
) -> None:
    """A double must fit a float and a long an int64; otherwise the value is a type_mismatch, not a crash later."""
    decoded = JsonDecoder(reader).decode(json.dumps({**record, field: value}).encode())
    assert (_issue_kinds(decoded) == []) is ok
    assert (decoded.values[field] == value) is ok


class _Exploding:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def decode(self, payload: bytes | None) -> Decoded:
        raise self.exc


def test_any_exception_of_one_record_becomes_its_decode_error() -> None:
    """An unexpected exception inside a decoder is the record's own DecodeError, never the batch's crash."""
    with pytest.raises(UndecodablePayloadError, match="decoding failed: OverflowError: too big"):
        decode_payload(_Exploding(OverflowError("too big")), b"x", 100)


def test_registry_outage_still_propagates_through_decode_payload() -> None:
    """A registry outage is not the record's fault: it is retried, not dead-lettered."""
    with pytest.raises(RegistryUnavailableError):
        decode_payload(_Exploding(RegistryUnavailableError("down")), b"x", 100)


def test_records_over_the_maximum_size_are_not_decoded() -> None:
    """A value over max_record_bytes is refused before the decoder sees it."""
    with pytest.raises(RecordTooLargeError, match="101 bytes exceeds worker.max_record_bytes = 100"):
        decode_payload(_Exploding(AssertionError("must not be called")), b"x" * 101, 100)


def test_event_time_beyond_int64_is_a_decode_error() -> None:
    """A timestamp no int64 holds (a double 1e300) cannot place the record in time: dead letter."""
    assert event_time_of(None, 7) == 7
    assert event_time_of(2**63 - 1, 7) == 2**63 - 1
    with pytest.raises(EventTimeRangeError):
        event_time_of(10**300, 7)


@pytest.mark.parametrize(
    "payload",
    [
        '{"a": "é", "b": [1, 2.5]}'.encode(),
        '{"a": "é"}'.encode("utf-16-le"),
        '{"a": "é"}'.encode("utf-16"),
        '{"a": "é"}'.encode("utf-32"),
        b'\xef\xbb\xbf{"a": 1}',
        b' {"a": 1}',
        b'{"a": "\xed\xa0\x80"}',  # a surrogate as raw bytes: json.loads reads it with surrogatepass
    ],
)
def test_json_objects_read_as_json_loads_reads_them(payload: bytes) -> None:
    """load_json's UTF-8 path gives json.loads(bytes)'s result or error for every encoding it detects."""
    try:
        expected = json.loads(payload)
    except ValueError:
        with pytest.raises(UndecodablePayloadError):
            load_json(payload)
        return
    assert load_json(payload) == expected
