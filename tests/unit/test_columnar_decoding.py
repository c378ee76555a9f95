"""Batches read by columns give exactly what fastavro gives record by record, or nothing."""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import fastavro
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_guard import columnar
from stream_guard.batch import EventBatch
from stream_guard.columnar import ColumnarReader
from stream_guard.decoding import (
    ConfluentDecoder,
    PlainAvroDecoder,
    confluent_frame,
    decode_payloads,
    plain_time_types,
    read_columns,
)
from stream_guard.errors import DecodeError, SchemaLoadError, UnknownSchemaIdError

SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Everything",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "n_long", "type": "long"},
        {"name": "n_int", "type": "int"},
        {"name": "x", "type": "double"},
        {"name": "f", "type": "float"},
        {"name": "flag", "type": "boolean"},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "cat", "type": "string"},
        {"name": "maybe_cat", "type": ["null", "string"]},
        {"name": "cat_or_null", "type": ["string", "null"]},
        {"name": "maybe_x", "type": ["null", "double"]},
        {"name": "maybe_n", "type": ["null", "long"]},
        {"name": "maybe_flag", "type": ["null", "boolean"]},
        {"name": "maybe_colour", "type": ["null", "Colour"]},
        {"name": "long_text", "type": "string"},
        {"name": "nothing", "type": "null"},
    ],
}
PARSED = plain_time_types(SCHEMA)  # as the decoders read: time types as plain ints
CATEGORIES = ["", "a", "ios", "android", "naïve", "日本語", "x" * 16, "y" * 17, "z" * 32, "w" * 33, "\x00", "\x00\x00"]


def records(n: int, seed: int = 0, null_share: float = 0.3) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)

    def maybe(value: Any) -> Any:
        return None if rng.random() < null_share else value

    out = []
    for i in range(n):
        big = int(rng.integers(-(2**62), 2**62))
        out.append(
            {
                "id": f"evt-{seed}-{i}",
                "ts": 1_700_000_000_000 + i,
                "n_long": [0, -1, 1, 63, -64, 64, 2**40, -(2**40), big][i % 9],
                "n_int": int(rng.integers(-(2**31), 2**31)),
                "x": [0.5, -0.0, math.inf, -math.inf, math.nan, 1e300, float(rng.normal())][i % 7],
                "f": float(np.float32(rng.normal())),
                "flag": bool(rng.random() < 0.5),
                "colour": ["RED", "GREEN", "BLUE"][int(rng.integers(3))],
                "cat": CATEGORIES[int(rng.integers(len(CATEGORIES)))],
                "maybe_cat": maybe(CATEGORIES[int(rng.integers(len(CATEGORIES)))]),
                "cat_or_null": maybe(CATEGORIES[int(rng.integers(4))]),
                "maybe_x": maybe(float(rng.normal())),
                "maybe_n": maybe(int(rng.integers(-1000, 1000))),
                "maybe_flag": maybe(bool(rng.random() < 0.5)),
                "maybe_colour": maybe("BLUE"),
                "long_text": "é" * int(rng.integers(0, 40)),
                "nothing": None,
            }
        )
    return out


class Writers:
    """Writer schemas by id, as a registry would serve them."""

    def __init__(self, schemas: dict[int, dict[str, Any]]) -> None:
        self._schemas = schemas

    def get(self, schema_id: int) -> dict[str, Any]:
        if schema_id not in self._schemas:
            raise UnknownSchemaIdError(f"schema id {schema_id} is not registered")
        return fastavro.parse_schema(self._schemas[schema_id])  # type: ignore[return-value]

    def get_by_guid(self, guid: str) -> dict[str, Any]:
        raise KeyError(guid)


def encode(record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, PARSED, record)
    return out.getvalue()


def one_by_one(payloads: list[bytes], offset: int = 0) -> list[dict[str, Any]]:
    out = []
    for payload in payloads:
        stream = io.BytesIO(payload)
        stream.seek(offset)
        out.append(fastavro.schemaless_reader(stream, PARSED, None))
    return out


def same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, and of the same type (True is not 1)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("null_share", [0.0, 0.3, 1.0])
def test_columns_hold_what_fastavro_decodes(seed: int, null_share: float) -> None:
    payloads = [encode(r) for r in records(300, seed, null_share)]
    columns = ColumnarReader.of(PARSED).read(payloads, 0)  # type: ignore[union-attr]
    assert columns is not None
    expected = one_by_one(payloads)
    for i, want in enumerate(expected):
        got = columns.record(i)
        assert list(got) == list(want)  # fastavro's field order
        assert all(same(got[k], want[k]) for k in want), (i, got, want)


def test_batch_accessors_match_the_record_by_record_batch() -> None:
    payloads = [encode(r) for r in records(400, seed=5)]
    reader = ColumnarReader.of(PARSED)
    assert reader is not None
    columns = reader.read(payloads, 0)
    assert columns is not None
    n = len(payloads)

    def batch(cols: Any) -> EventBatch:
        decoded = decode_payloads(PlainAvroDecoder(SCHEMA, SCHEMA), payloads, 10**6)
        return EventBatch(
            model="m",
            decoded=decoded,  # type: ignore[arg-type]
            topics=["t"] * n,
            partitions=np.zeros(n, dtype=np.int64),
            offsets=np.arange(n),
            event_time_ms=np.zeros(n, dtype=np.int64),
            event_ids=[None] * n,
            failed=np.zeros(n, dtype=bool),
            columns=cols,
        )

    by_columns, by_records = batch(columns), batch(None)
    for f in SCHEMA["fields"]:
        name = f["name"]
        assert by_columns.value_types(name) == by_records.value_types(name), name
        assert np.array_equal(by_columns.null_mask(name), by_records.null_mask(name)), name
        assert all(map(same, by_columns.column(name), by_records.column(name))), name
        assert all(map(same, by_columns.objects(name), by_records.objects(name))), name
        codes, uniques = by_columns.factorized(name)
        want_codes, want_uniques = by_records.factorized(name)
        assert np.array_equal(codes, want_codes), name
        assert all(map(same, uniques, want_uniques)), name
        if by_records.value_types(name) <= {int, float, bool, type(None)}:
            got, got_null = by_columns.numeric(name)
            want, want_null = by_records.numeric(name)
            assert np.array_equal(got, want, equal_nan=True), name
            assert np.array_equal(got_null, want_null), name
    picked = np.array([3, 0, 399, 3])
    taken = by_columns.take(picked)
    assert taken.columns is not None
    for name in ("cat", "maybe_x", "id"):
        assert all(map(same, taken.column(name), [by_records.column(name)[r] for r in picked.tolist()]))


def test_a_row_that_is_not_plain_sends_the_batch_back_record_by_record() -> None:
    good = [encode(r) for r in records(20, seed=3)]
    reader = ColumnarReader.of(PARSED)
    assert reader is not None and reader.read(good, 0) is not None
    flag_at = len(encode_prefix("flag"))
    bad_cases = {
        "truncated": good[0][:-1],
        "trailing byte": good[0] + b"\x00",
        "boolean byte 2": good[0][:flag_at] + b"\x02" + good[0][flag_at + 1 :],
        "empty": b"",
        "invalid utf-8 in a category": _with_first_string(good[0], b"\xff\xfe"),
        "negative length": b"\x01" + good[0][1:],
    }
    for name, payload in bad_cases.items():
        assert reader.read([*good[:5], payload, *good[6:]], 0) is None, name


def encode_prefix(field: str) -> bytes:
    """The bytes of records(1)[0] before ``field`` (its fields before it, encoded)."""
    record = records(1, seed=3)[0]
    names = [f["name"] for f in SCHEMA["fields"]]
    partial = fastavro.parse_schema(
        {"type": "record", "name": "P", "fields": SCHEMA["fields"][: names.index(field)]}, named_schemas={}
    )
    out = io.BytesIO()
    fastavro.schemaless_writer(out, partial, record)
    return out.getvalue()


def _with_first_string(payload: bytes, text: bytes) -> bytes:
    """``payload`` with its first field (a string) replaced by ``text``."""
    length = payload[0] >> 1  # short ids: a one-byte zigzag length
    return bytes([len(text) << 1]) + text + payload[1 + length :]


@pytest.mark.parametrize(
    ("union", "raw"),
    [
        (["null", "double"], b"\x04"),  # branch 2 of two
        ("long", b"\xff" * 9 + b"\x01"),  # a 10-byte varint
    ],
)
def test_out_of_range_varints_and_branches_are_not_read(union: Any, raw: bytes) -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [{"name": "v", "type": union}]})
    reader = ColumnarReader.of(schema)
    assert reader is not None
    assert reader.read([raw], 0) is None


def test_an_enum_index_out_of_range_is_not_read() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [{"name": "c", "type": {"type": "enum", "name": "E", "symbols": ["A"]}}],
        }
    )
    reader = ColumnarReader.of(schema)
    assert reader is not None
    assert reader.read([b"\x00"], 0) is not None
    assert reader.read([b"\x02"], 0) is None


@pytest.mark.parametrize(
    "kind",
    [
        {"type": "array", "items": "long"},
        {"type": "map", "values": "long"},
        "bytes",
        {"type": "fixed", "name": "F", "size": 2},
        ["null", "long", "string"],
        {"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "long"}]},
        {"type": "string", "logicalType": "uuid"},
        {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
    ],
)
def test_schemas_beyond_flat_primitives_are_left_to_fastavro(kind: Any) -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [{"name": "v", "type": kind}]})
    assert ColumnarReader.of(schema) is None


def test_a_hash_collision_decodes_the_field_row_by_row(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a zero multiplier only a string's last 8-byte word makes its key: these collide.
    monkeypatch.setattr(columnar, "_GOLDEN", np.uint64(0))
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]})
    texts = ["aaaaaaaa-suffix1", "bbbbbbbb-suffix1", "aaaaaaaa-suffix1", "cccccccc"]
    payloads = []
    for t in texts:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, {"s": t})
        payloads.append(out.getvalue())
    reader = ColumnarReader.of(schema)
    assert reader is not None
    columns = reader.read(payloads, 0)
    assert columns is not None
    assert columns.values("s") == texts
    codes, uniques = columns.factorized("s")
    want_codes, want_uniques = pd.factorize(np.array(texts, dtype=object))
    assert codes.tolist() == want_codes.tolist() and list(uniques) == list(want_uniques)


def test_confluent_batches_of_one_known_writer_read_by_columns() -> None:
    decoder = ConfluentDecoder(SCHEMA, Writers({7: SCHEMA, 8: SCHEMA}))
    bodies = [encode(r) for r in records(50, seed=9)]
    framed = [confluent_frame(7, b) for b in bodies]
    # The first batch of a writer too: the writer schema is fetched for it.
    read = read_columns(decoder, framed, 10**6)
    assert read is not None
    expected = one_by_one(bodies)
    for record, want in zip(read.records, expected, strict=True):
        assert list(record.values) == list(want)
        assert all(same(record.values[k], want[k]) for k in want)
    assert all(r.issues == [] and r.writer_schema_id == 7 for r in read.records)
    # Another writer's record, a header, an oversized record, an id the registry lacks: record by record.
    assert read_columns(decoder, [*framed[:3], confluent_frame(8, bodies[3])], 10**6) is None
    assert read_columns(decoder, [confluent_frame(99, b) for b in bodies], 10**6) is None
    assert read_columns(decoder, framed, 10**6, [None, [("__value_schema_id", b"x")]] + [None] * 48) is None
    assert read_columns(decoder, framed, max(map(len, framed)) - 1) is None


def _record_schema(name: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": fields}


WRITER_V2 = _record_schema(
    "Event",
    [
        {"name": "id", "type": "string"},
        {"name": "count", "type": "int"},
        {"name": "amount", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "city", "type": "string"},
        {"name": "added", "type": ["null", "string"], "default": None},
        {"name": "age", "type": "int"},
    ],
)
READER_V1 = _record_schema(
    "Event",
    [
        {"name": "age", "type": ["null", "long"]},  # another order, nullable and promoted
        {"name": "id", "type": "string"},
        {"name": "count", "type": "double"},  # int to double
        {"name": "amount", "type": "float"},  # long to float
        {"name": "ratio", "type": "double"},  # float to double
        {"name": "city", "type": "string"},
        {"name": "country", "type": "string", "default": "NZ"},
        {"name": "segment", "type": ["null", "string"], "default": None},
        {"name": "score", "type": "double", "default": 0.5},
        {"name": "tries", "type": "long", "default": 3},
        {"name": "vip", "type": "boolean", "default": False},
    ],
)


def _v2_payloads(n: int) -> list[bytes]:
    schema = plain_time_types(WRITER_V2)
    rng = np.random.default_rng(11)
    out = []
    for i in range(n):
        record = {
            "id": f"e{i}",
            "count": int(rng.integers(-1000, 1000)),
            "amount": int(rng.integers(-(2**60), 2**60)),
            "ratio": float(np.float32(rng.normal())),
            "city": ["Auckland", "Wellington", "Ōtautahi"][i % 3],
            "added": None if i % 2 else "x",
            "age": int(rng.integers(0, 100)),
        }
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, record)
        out.append(buffer.getvalue())
    return out


def test_a_writer_that_differs_is_resolved_as_fastavro_resolves_it() -> None:
    writer, reader = plain_time_types(WRITER_V2), plain_time_types(READER_V1)
    payloads = _v2_payloads(200)
    columnar_reader = ColumnarReader.of(writer, reader)
    assert columnar_reader is not None
    columns = columnar_reader.read(payloads, 0)
    assert columns is not None
    for i, payload in enumerate(payloads):
        want = fastavro.schemaless_reader(io.BytesIO(payload), writer, reader)
        got = columns.record(i)
        assert list(got) == list(want)
        assert all(same(got[k], want[k]) for k in want), (got, want)


@pytest.mark.parametrize(
    ("writer_type", "reader_field"),
    [
        (["null", "long"], {"name": "v", "type": "long"}),  # a null the reader cannot hold
        ("string", {"name": "v", "type": "long"}),  # no promotion
        ("long", {"name": "v", "type": "int"}),  # narrowing
        ("long", {"name": "other", "type": "long"}),  # missing and no default
        ("long", {"name": "v", "type": "long", "aliases": ["w"]}),  # aliases: left to fastavro
        (
            {"type": "enum", "name": "E", "symbols": ["A", "B"]},
            {"name": "v", "type": {"type": "enum", "name": "E", "symbols": ["B", "A"]}},
        ),
        ("long", {"name": "v", "type": "long"} | {"name": "x", "type": "double", "default": 1}),  # an int default
    ],
)
def test_pairs_beyond_dropping_adding_and_promoting_are_left_to_fastavro(
    writer_type: Any, reader_field: dict[str, Any]
) -> None:
    writer = plain_time_types(_record_schema("R", [{"name": "v", "type": writer_type}]))
    reader_fields = [reader_field] if reader_field["name"] != "x" else [{"name": "v", "type": "long"}, reader_field]
    reader = plain_time_types(_record_schema("R", reader_fields))
    assert ColumnarReader.of(writer, reader) is None


def test_records_of_a_changed_writer_read_by_columns_carry_its_changes() -> None:
    decoder = ConfluentDecoder(READER_V1, Writers({21: WRITER_V2}))
    framed = [confluent_frame(21, p) for p in _v2_payloads(30)]
    read = read_columns(decoder, framed, 10**6)  # the first record tells that the pair resolves
    one_by_one_results = decode_payloads(decoder, framed, 10**6)
    assert read is not None
    assert read.records.changes and all(r.schema_changes == read.records.changes for r in read.records)
    for record, want in zip(read.records, one_by_one_results, strict=True):
        assert not isinstance(want, Exception)
        assert list(record.values) == list(want.values)
        assert all(same(record.values[k], want.values[k]) for k in want.values)
        assert record.schema_changes == want.schema_changes and record.writer_schema_id == want.writer_schema_id


def test_plain_avro_of_a_known_different_writer_reads_by_columns_as_record_by_record() -> None:
    decoder = PlainAvroDecoder(READER_V1, WRITER_V2)
    payloads = _v2_payloads(40)
    read = read_columns(decoder, payloads, 10**6)
    assert read is not None
    for record, want in zip(read.records, decode_payloads(decoder, payloads, 10**6), strict=True):
        assert not isinstance(want, Exception)
        assert list(record.values) == list(want.values)
        assert all(same(record.values[k], want.values[k]) for k in want.values)
        assert record.schema_changes == want.schema_changes


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    edits=st.lists(
        st.tuples(
            st.integers(0, 7), st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["set", "cut", "add"])
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mangled_bytes_read_as_fastavro_reads_them_or_not_at_all(
    seed: int, edits: list[tuple[int, int, int, str]]
) -> None:
    """Whatever the bytes, a batch read by columns holds what fastavro reads from each record
    (every record read whole); any batch fastavro cannot read so is not read by columns."""
    payloads = [bytearray(encode(r)) for r in records(8, seed % 1000)]
    for row, at, byte, how in edits:
        payload = payloads[row]
        at %= len(payload) + 1
        if how == "set" and at < len(payload):
            payload[at] = byte
        elif how == "cut":
            del payload[at:]
        else:
            payload[at:at] = bytes([byte])
    mangled = [bytes(p) for p in payloads]
    reader = ColumnarReader.of(PARSED)
    assert reader is not None
    columns = reader.read(mangled, 0)
    if columns is None:
        return
    for i, payload in enumerate(mangled):
        stream = io.BytesIO(payload)
        want = fastavro.schemaless_reader(stream, PARSED, None)  # raises if columns read what fastavro cannot
        assert stream.tell() == len(payload)
        got = columns.record(i)
        assert list(got) == list(want)
        assert all(same(got[k], want[k]) for k in want)


class NotARecordWriters(Writers):
    """A registry whose schema for the id is valid Avro but no record."""

    def get(self, schema_id: int) -> dict[str, Any]:
        raise SchemaLoadError("the top-level schema must be an Avro record")


def test_a_writer_schema_that_fails_to_load_leaves_each_record_its_dead_letter() -> None:
    decoder = ConfluentDecoder(SCHEMA, NotARecordWriters({}))
    framed = [confluent_frame(7, b"\x02")] * 3
    assert read_columns(decoder, framed, 10**6) is None
    assert all(isinstance(r, DecodeError) for r in decode_payloads(decoder, framed, 10**6))


def test_headers_that_do_not_name_the_schema_leave_the_batch_to_the_columns() -> None:
    decoder = ConfluentDecoder(SCHEMA, Writers({7: SCHEMA}))
    framed = [confluent_frame(7, encode(r)) for r in records(4, seed=2)]
    traced = [[("traceparent", b"00-ab-cd-01")]] * 4
    assert read_columns(decoder, framed, 10**6, traced) is not None  # type: ignore[arg-type]
    named = [*traced[:3], [("__value_schema_id", confluent_frame(7, b"")[:5])]]
    assert read_columns(decoder, framed, 10**6, named) is None  # type: ignore[arg-type]


def test_a_signalling_nan_float_reads_as_fastavro_reads_it_without_a_warning() -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [{"name": "f", "type": "float"}]})
    reader = ColumnarReader.of(schema)
    assert reader is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        columns = reader.read([b"\x01\x00\x80\x7f"], 0)
    assert columns is not None
    assert math.isnan(columns.values("f")[0])
    assert math.isnan(fastavro.schemaless_reader(io.BytesIO(b"\x01\x00\x80\x7f"), schema, None)["f"])


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        (
            _record_schema("R", [{"name": "v", "type": "long"}]),
            _record_schema("Other", [{"name": "v", "type": "long"}]),
        ),
        (
            _record_schema("R", [{"name": "v", "type": {"type": "enum", "name": "E", "symbols": ["A"]}}]),
            _record_schema("R", [{"name": "v", "type": {"type": "enum", "name": "F", "symbols": ["A"]}}]),
        ),
    ],
    ids=["record names differ", "enum names differ"],
)
def test_pairs_fastavro_does_not_resolve_by_name_are_not_read_by_columns(
    writer: dict[str, Any], reader: dict[str, Any]
) -> None:
    with pytest.raises(Exception):  # noqa: B017 -- fastavro's SchemaResolutionError
        fastavro.schemaless_reader(io.BytesIO(b"\x00"), plain_time_types(writer), plain_time_types(reader))
    assert ColumnarReader.of(plain_time_types(writer), plain_time_types(reader)) is None
