"""The label path's fast paths give what the general code gives, on the inputs that could tell them apart."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import fastavro
import numpy as np
import pytest

from stream_guard.batch import event_time_of, to_epoch_ms
from stream_guard.decoding import Decoded, PlainAvroDecoder, load_json, load_json_object, read_columns
from stream_guard.errors import DecodeError
from stream_guard.metrics.label_messages import _PlainJson, labels_from_messages
from stream_guard.metrics.labels import Label, _is_positive, _label_key
from stream_guard.metrics.store import (
    MetricKeys,
    decode_prediction,
    decode_prediction_table,
    decode_predictions,
    distinct_cells,
    encode_prediction,
    encode_predictions,
    grouped_sums,
)
from stream_guard.settings.metrics import LabelSettings
from stream_guard.state.keys import ModelKeys
from stream_guard.state.update import StateUpdate
from tests.unit.messages import Message

KEYS = ModelKeys("sg", "m")
T0 = 1_700_000_040_000

TRICKY_JSON = [
    b'{"event_id": "e1", "ts": 1700000000000, "label": 1}',
    b"{}",
    b'{"a": 1, "a": 2}',  # duplicate keys: the last wins
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',
    b'{"a": 1e400, "b": -0, "c": -0.0, "d": 123456789012345678901234567890}',
    b'{"a": 1' + b"0" * 5_000 + b"}",  # an integer of too many digits
    b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # nested too deeply
    b'{"a": "x\\ud800y"}',  # a lone surrogate escape
    b'{"a": "\\ud83d\\ude00"}',  # an escaped pair: a real character
    b'{"a": "\xed\xa0\x80"}',  # a surrogate as raw bytes
    b'{"a": "\xff"}',  # not UTF-8
    b'{"a": "\\u00e9", "b": "\xc3\xa9", "c": "\\n\\t\\"\\\\"}',
    b'{"a": 1} ',
    b' {"a": 1}',
    b'{"a": 1}\n',
    b'{"a": 1}{"b": 2}',
    b'{"a": 1}, {"b": 2}',
    b'{"a": 1',
    b'{"a": "unterminated}',
    b'{"a": "tab\there"}',  # a raw control character: json's strict strings refuse it
    b"{'a': 1}",
    b"[1, 2]",
    b"1",
    b'"text"',
    b"null",
    b"",
    b'{\x00"a": 1}',
    '{"a": "é"}'.encode("utf-16-le"),
    b'\xef\xbb\xbf{"a": 1}',
]


def _general(payload: bytes) -> Any:
    """What json.loads makes of ``payload``, or the error class it raises."""
    try:
        return ("ok", json.loads(payload))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc).__name__)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, and of the same types all the way down (1 is not 1.0 or True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return bool(a == b)


@pytest.mark.parametrize("payload", TRICKY_JSON)
def test_the_fast_json_object_is_load_jsons_result_or_none(payload: bytes) -> None:
    """load_json_object returns exactly what load_json returns, or None and leaves the payload to it."""
    fast = load_json_object(payload)
    try:
        general = load_json(payload)
    except DecodeError:
        assert fast is None
        return
    assert fast is None or _same(fast, general)


@pytest.mark.parametrize("payload", TRICKY_JSON)
def test_load_json_still_reads_as_json_loads_reads(payload: bytes) -> None:
    """With its fast path, load_json gives json.loads's value, or a DecodeError where json.loads fails."""
    kind, value = _general(payload)
    if kind == "error" or "\\ud800" in payload.decode("utf-8", "replace"):
        with pytest.raises(DecodeError):
            load_json(payload)
        return
    assert _same(load_json(payload), value)


class _GeneralJson:
    """The plain JSON decoder, behind a type the fast label loop does not recognise."""

    def decode(self, payload: bytes | None) -> Decoded:
        return _PlainJson().decode(payload)


LABEL_PAYLOADS = [
    *TRICKY_JSON,
    b'{"event_id": 17, "ts": 1700000000123.9, "label": true}',
    b'{"event_id": null, "label": 1}',
    b'{"event_id": "e2", "label": null, "ts": true}',
    b'{"event_id": "e3", "label": "yes", "ts": 100000000000000000000000}',  # beyond int64: dead letter
    b'{"event_id": "e4", "label": 0, "ts": "2024-01-01"}',
    b'{"event_id": "e5", "label": [1, 2]}',
    b'{"event_id": "' + b"x" * 300 + b'", "label": 1}',  # over max_record_bytes below
    None,  # a tombstone
]


@pytest.mark.parametrize("timestamp_field", ["ts", ""])
def test_plain_json_labels_decode_as_the_general_path_decodes_them(timestamp_field: str) -> None:
    """Labels, dead letters and their reasons are the general decoder path's, message for message."""
    settings = LabelSettings(
        topic="labels", event_id_field="event_id", label_field="label", timestamp_field=timestamp_field
    )
    messages: list[Any] = [Message(p, i) if p is not None else Message(b"", i) for i, p in enumerate(LABEL_PAYLOADS)]
    messages[-1].value_ = None
    fast_dead: list[tuple[Any, DecodeError]] = []
    general_dead: list[tuple[Any, DecodeError]] = []
    fast = labels_from_messages(messages, _PlainJson(), settings, fast_dead, max_record_bytes=200)
    general = labels_from_messages(messages, _GeneralJson(), settings, general_dead, max_record_bytes=200)
    assert len(fast) == len(general) == len(messages)
    for a, b in zip(fast, general, strict=True):
        assert isinstance(a, Label)
        assert (a.event_id, a.source, a.offset, a.ts_ms) == (b.event_id, b.source, b.offset, b.ts_ms)
        assert _same(a.label, b.label)
    assert [(m.offset(), type(e), str(e)) for m, e in fast_dead] == [
        (m.offset(), type(e), str(e)) for m, e in general_dead
    ]
    assert len(fast_dead) > 5


def test_the_common_label_shape_takes_the_fast_path() -> None:
    """A compact object is read by the scanner alone; whitespace around it is left to json.loads."""
    assert load_json_object(b'{"event_id": "e1", "ts": 1, "label": 1}') == {"event_id": "e1", "ts": 1, "label": 1}
    assert load_json_object(b"{}") == {}
    assert load_json_object(b' {"a": 1}') is None
    assert load_json_object(b'{"a": 1} ') is None


PREDICTIONS = [1, True, 1.0, 0.0, -0.0, None, "yes", "", "é\\n", [1, 2], {"a": 1}, 1, True, "yes", None, -0.0, 10**30]


@pytest.mark.parametrize(
    "predictions",
    [PREDICTIONS, [0, 1, 1, 0, True, False, None, "x"], [0.25, float("nan"), float("inf")], []],
)
def test_predictions_encoded_per_column_are_encoded_per_row(predictions: list[Any]) -> None:
    """encode_predictions writes, row for row, what encode_prediction writes (class labels cached by type)."""
    n = len(predictions)
    buckets = [T0 + 60_000 * (i % 3) for i in range(n)]
    scores = [None if i % 4 == 0 else i / 7 for i in range(n)]
    for slices in ([], [[f"a={i % 2}" for i in range(n)]], [["a=1"] * n, [f"b=x{i},c=y" for i in range(n)]]):
        assert encode_predictions(buckets, slices, predictions, scores) == [
            encode_prediction(buckets[i], [c[i] for c in slices], predictions[i], scores[i]) for i in range(n)
        ]


def test_key_lists_are_the_keys_one_by_one() -> None:
    """ModelKeys.predictions and helds name each event id's key as prediction and held do."""
    ids = ["a", "", "x:y", "{m}", "é"]
    assert KEYS.predictions(ids) == [KEYS.prediction(x) for x in ids]
    assert KEYS.helds(ids) == [KEYS.held(x) for x in ids]
    assert MetricKeys(KEYS).predictions(ids) == [KEYS.prediction(x) for x in ids]


def test_set_once_counted_rows_is_set_once_counted_of_the_same_entries() -> None:
    """The columnar op carries the arguments and keys the per-entry one does, repeated keys included."""
    counters = [("sg:{m}:m:1", "*|st"), ("sg:{m}:m:1", "a=1|st"), ("sg:{m}:m:2", "*|st")]
    keys = ["sg:{m}:pred:e1", "sg:{m}:pred:e2", "sg:{m}:pred:e1", "sg:{m}:m:1"]
    values = ["p1", "p2", "p3", "p4"]
    listed = np.array([[0, 1], [2, 1], [0, 1], [2, 0]])
    expected = StateUpdate("events:0", 0, 1, 0)
    expected.set(keys[0], "f", "v")  # a key the update already holds keeps its index
    got = StateUpdate("events:0", 0, 1, 0)
    got.set(keys[0], "f", "v")
    expected.set_once_counted(list(zip(keys, values, listed.tolist(), strict=True)), 600, counters)
    got.set_once_counted_rows(keys, values, listed, 600, counters)
    assert (got.keys, got.ops) == (expected.keys, expected.ops)
    expected.delete_all(["sg:{m}:pred:e3", keys[1], "sg:{m}:pred:e3"])
    got.delete_all(["sg:{m}:pred:e3", keys[1], "sg:{m}:pred:e3"])
    assert (got.keys, got.ops) == (expected.keys, expected.ops)


STORED = [
    encode_prediction(T0, ["a=1", "b=x,c=y"], 1, 0.75),
    encode_prediction(T0, [], "yes", None),
    encode_prediction(T0, ["a=1"], [1, {"b": None}], float("inf")),
    encode_prediction(T0, ["a=1"], True, -0.0),
    json.dumps({"bucket": T0, "slices": ["a=1"], "prediction": 1, "score": 0.5}),  # the older JSON form
    encode_prediction(T0, ["a=1"], 0, 0.1).encode(),  # bytes
    None,
    "",
    "garbage",
    "1\n2",
    "x\n0.5\n1",
    "1\nnope\n1",
    "1\n0.5\n{not json",
    "1\n\nnull\n",
    "{}",
    "[1]",
    '{"bucket": 60000, "score": "high", "prediction": 1, "slices": ["a=1"]}',  # the older JSON form
    '{"bucket": 60000, "score": [0.1, 0.9], "prediction": 0, "slices": ["a=1"]}',
    '{"bucket": 60000, "score": {"p": 0.9}, "prediction": 1, "slices": []}',
    '{"bucket": 60000, "score": "0.75", "prediction": 1, "slices": []}',
]


def test_stored_predictions_decoded_together_are_decoded_one_by_one() -> None:
    """decode_predictions reads each stored value as decode_prediction does, unreadable ones as None."""
    assert decode_predictions(STORED) == [decode_prediction(x) for x in STORED]


def _as_rows(table: Any) -> list[dict[str, Any] | None]:
    """The table's rows as decode_predictions gives them."""
    out: list[dict[str, Any] | None] = []
    for i in range(len(table.found)):
        if not table.found[i]:
            out.append(None)
            continue
        score = float(table.scores[i])
        out.append(
            {
                "bucket": int(table.buckets[i]),
                "slices": list(table.slices[i]),
                "prediction": table.predictions[i],
                "score": None if math.isnan(score) else score,
            }
        )
    return out


LINE_FORM = [
    encode_predictions([T0, T0 + 60_000], [["a=x", "a=y"], ["b=1", "b=2"]], [1, "no"], [0.25, None])[0],
    encode_predictions([T0], [["a=\u00e9"], ["b=,"]], [{"k": [1]}], [float("nan")])[0],
    "5\n\n0\ns=1\ns=2",
]


@pytest.mark.parametrize(
    "texts",
    [
        LINE_FORM,  # one form, as many lines each: split at once
        [*LINE_FORM, "7\n0.5\n1\ns=1"],  # one slice fewer
        [*LINE_FORM, "x\n0.5\n1\ns=1\ns=2"],  # a bucket that is not a number
        [*LINE_FORM, "7\nnope\n1\ns=1\ns=2"],  # nor a score
        [*LINE_FORM, "7\n0.5\n{bad\ns=1\ns=2"],  # nor JSON
        STORED,
        [],
    ],
)
def test_stored_predictions_as_a_table_are_decoded_one_by_one(texts: list[Any]) -> None:
    """decode_prediction_table holds what decode_predictions reads, row for row, NaN for no score."""
    table = decode_prediction_table(texts)
    got, want = _as_rows(table), decode_predictions(texts)
    for g, w in zip(got, want, strict=True):
        if w is not None:  # the table holds scores as numbers: NaN, none, or not a number read alike
            w = {**w, "score": _score_number(w["score"])}
        assert g == w


def _score_number(value: Any) -> float | None:
    try:
        number = math.nan if value is None else float(value)
    except (TypeError, ValueError):
        number = math.nan
    return None if math.isnan(number) else number


def test_one_form_of_stored_predictions_is_split_at_once() -> None:
    table = decode_prediction_table(LINE_FORM)
    assert isinstance(table.slices, np.ndarray) and table.slices.shape == (3, 2)
    assert table.buckets.tolist() == [T0, T0, 5]


@pytest.mark.parametrize(
    "labels",
    [
        [0, 1, 1, 0],
        [True, False, 1, 1.0, "1", "True", -0.0, 0.0, float("nan"), None],
        ["yes", "no", "yes"],
        [np.int64(1), 1, np.bool_(True), [1]],
    ],
)
@pytest.mark.parametrize("positive", [1, True, "yes", 0])
def test_positive_labels_keyed_per_distinct_value_are_keyed_per_label(labels: list[Any], positive: Any) -> None:
    """_is_positive agrees with the category key of each label, whatever the mix of types."""
    key = _label_key(positive)
    assert _is_positive(labels, key).tolist() == [_label_key(v) == key for v in labels]


@pytest.mark.parametrize(("size", "n"), [(1, 5), (50, 1_000), (3_000, 200), (1 << 20, 100), (10, 0)])
def test_cells_counted_are_the_cells_sorted(size: int, n: int) -> None:
    """The counting path of the label sums finds np.unique's cells and inverse, dense or sparse."""
    cells = np.random.default_rng(size + n).integers(0, size, n)
    present, at = distinct_cells(cells, size)
    expected, inverse = np.unique(cells, return_inverse=True)
    assert present.tolist() == expected.tolist()
    assert at.tolist() == inverse.reshape(-1).tolist()


@pytest.mark.parametrize(("size", "n"), [(1, 5), (400, 5_000), (40_000, 3_000), (10, 1)])
def test_grouped_sums_are_the_sorted_groups_sums_bit_for_bit(size: int, n: int) -> None:
    """grouped_sums adds each cell's rows in row order: the floats of sorting by np.unique's inverse."""
    rng = np.random.default_rng(size)
    cells, values = rng.integers(0, size, n), rng.random((n, 7)) * 1e6
    present, sums = grouped_sums(cells, size, values)
    expected, inverse = np.unique(cells, return_inverse=True)
    order = np.argsort(inverse.reshape(-1), kind="stable")
    starts = np.searchsorted(inverse.reshape(-1)[order], np.arange(len(expected)))
    assert present.tolist() == expected.tolist()
    assert np.array_equal(sums, np.add.reduceat(values[order], starts, axis=0))


AVRO_LABEL = {
    "type": "record",
    "name": "Label",
    "fields": [
        {"name": "event_id", "type": ["null", "string"]},
        {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        {"name": "label", "type": ["null", "int", "string"]},
    ],
}
AVRO_LABEL_SIMPLE = {**AVRO_LABEL, "fields": [*AVRO_LABEL["fields"][:2], {"name": "label", "type": "int"}]}


class _RecordByRecord:
    """An Avro decoder the batch paths do not know: every label decoded on its own."""

    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder

    def decode(self, payload: bytes | None) -> Decoded:
        return self._decoder.decode(payload)


@pytest.mark.parametrize("schema", [AVRO_LABEL_SIMPLE, AVRO_LABEL], ids=["by columns", "a union beyond them"])
@pytest.mark.parametrize("timestamp_field", ["ts", ""])
def test_avro_labels_read_by_columns_are_the_labels_read_one_by_one(
    schema: dict[str, Any], timestamp_field: str
) -> None:
    parsed = fastavro.parse_schema(schema)
    rows = [
        {"event_id": "e1", "ts": 1_700_000_000_123, "label": 1},
        {"event_id": None, "ts": None, "label": 0},
        {"event_id": "e3", "ts": None, "label": 1},
        {"event_id": "é4", "ts": -5, "label": 0},
    ]
    payloads = []
    for row in rows:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, row)
        payloads.append(out.getvalue())
    messages: list[Any] = [Message(p, i) for i, p in enumerate(payloads)]
    settings = LabelSettings(
        topic="labels", event_id_field="event_id", label_field="label", timestamp_field=timestamp_field
    )
    decoder = PlainAvroDecoder(schema, schema, report_unexpected=False)
    by_columns = labels_from_messages(messages, decoder, settings)
    one_by_one = labels_from_messages(messages, _RecordByRecord(decoder), settings)  # type: ignore[arg-type]
    assert by_columns == one_by_one
    assert (read_columns(decoder, payloads, 10**6) is not None) == (schema is AVRO_LABEL_SIMPLE)


@pytest.mark.parametrize(
    "stamp",
    [1_700_000_000_123, 0, -5, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, True, False, 1.5e12, None, "2024", [1]],
)
def test_a_label_time_is_to_epoch_ms_of_its_stamp_or_the_kafka_time(stamp: Any) -> None:
    """The plain-int shortcut of labels_from_messages gives what to_epoch_ms and event_time_of give."""
    settings = LabelSettings(topic="labels", event_id_field="event_id", label_field="label", timestamp_field="ts")
    message = Message(json.dumps({"event_id": "e", "label": 1, "ts": stamp}).encode(), 3)
    dead: list[tuple[Any, DecodeError]] = []
    (label,) = labels_from_messages([message], _PlainJson(), settings, dead)
    try:
        converted = to_epoch_ms(stamp)
        want = event_time_of(converted, message.timestamp()[1] if converted is None else 0)
    except DecodeError:
        assert label.event_id is None and len(dead) == 1
        return
    assert (label.event_id, label.ts_ms, dead) == ("e", want, [])
