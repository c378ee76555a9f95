"""Slice names, crossings, value capping and the per-batch increments (no Redis)."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pandas as pd

from stream_guard.aggregation import build_updates
from stream_guard.batch import EventBatch
from stream_guard.decoding import Decoded
from stream_guard.findings import RowFindings
from stream_guard.learning import learn_profile
from stream_guard.metrics.slices import (
    MetricsSettings,
    SliceRecorder,
    ValueCapper,
    _factorize,
    parse_slice,
    slice_dimension,
    slice_name,
)
from stream_guard.metrics.store import (
    FLOAT_METRICS,
    MetricKeys,
    PredictionEncoder,
    add_slice_sums,
    decode_prediction,
    encode_prediction,
)
from stream_guard.state.keys import ModelKeys
from stream_guard.state.ops import Op, split_ops
from stream_guard.state.window_store import StateUpdate

KEYS = ModelKeys("sg", "fraud")
T0 = 1_700_000_040_000  # a bucket start (multiple of 60 s)


def batch_of(records: list[dict], partitions: list[int] | None = None) -> EventBatch:
    n = len(records)
    parts = np.array(partitions if partitions is not None else [0] * n, dtype=np.int64)
    return EventBatch(
        model="fraud",
        decoded=[Decoded(values=r, issues=[]) for r in records],
        topics=["events"] * n,
        partitions=parts,
        offsets=np.arange(n, dtype=np.int64),
        event_time_ms=np.array([r["ts"] for r in records], dtype=np.int64),
        event_ids=[r.get("event_id") for r in records],
        failed=np.zeros(n, dtype=bool),
    )


def increments(updates: list[StateUpdate]) -> dict[tuple[str, str], float]:
    """Sum of the H/F/M ops of ``updates`` per (key, field)."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for update in updates:
        for op, args in split_ops(update.ops):
            if op in (Op.INCR, Op.INCR_FLOAT):
                out[(update.keys[args[0] - 5], args[1])] += float(args[2])
            elif op is Op.INCR_MANY:
                parts = args[1].split("\n")
                for name, amount in zip(parts[::2], parts[1::2], strict=True):
                    out[(update.keys[args[0] - 5], name)] += float(amount)
    return dict(out)


def recorder(**kwargs: object) -> SliceRecorder:
    settings = MetricsSettings(**kwargs)  # type: ignore[arg-type]
    return SliceRecorder(
        [("device_type",), ("country",), ("device_type", "country")],
        ["age", "device_type"],
        "prediction",
        "score",
        settings,
        ValueCapper(max_values=settings.max_values_per_field),
    )


RECORDS = [
    {
        "event_id": "a",
        "ts": T0 + 1,
        "device_type": "android",
        "country": "US",
        "age": 30,
        "prediction": 1,
        "score": 0.95,
    },
    {
        "event_id": "b",
        "ts": T0 + 2,
        "device_type": "android",
        "country": "GB",
        "age": None,
        "prediction": 0,
        "score": 0.05,
    },
    {"event_id": "c", "ts": T0 + 3, "device_type": "ios", "country": "US", "age": 40, "prediction": 0, "score": 0.45},
    {
        "event_id": "d",
        "ts": T0 + 60_001,
        "device_type": None,
        "country": "US",
        "age": 50,
        "prediction": 1,
        "score": 1.2,
    },
]


def test_slice_names_sort_fields_and_round_trip() -> None:
    assert slice_name({}) == "*"
    assert slice_name({"device_type": "android", "country": "US"}) == "country=US,device_type=android"
    assert parse_slice("country=US,device_type=android") == {"country": "US", "device_type": "android"}
    assert parse_slice("*") == {}
    assert slice_dimension("country=US,device_type=ios") == ("country", "device_type")


def test_crossings_are_labelled_with_sorted_fields_and_deduplicated() -> None:
    rec = SliceRecorder([("device_type", "country"), ("country", "device_type"), ("country",)], [], "", "")
    assert rec.dimensions == [("country", "device_type"), ("country",)]
    labels = rec.slice_labels(batch_of(RECORDS), np.arange(4))
    assert labels[("country", "device_type")].tolist() == [
        "country=US,device_type=android",
        "country=GB,device_type=android",
        "country=US,device_type=ios",
        "country=US,device_type=null",
    ]
    assert labels[("country",)].tolist() == ["country=US", "country=GB", "country=US", "country=US"]


def test_values_beyond_the_cap_become_other_and_null_stays_null() -> None:
    capper = ValueCapper(max_values=2)
    assert capper.cap("f", ["x", "y", None, "z", "x"]).tolist() == ["x", "y", "null", "other", "x"]
    # The first values seen stay admitted in later batches; new ones keep mapping to other.
    assert capper.cap("f", ["z", "y", "w"]).tolist() == ["other", "y", "other"]
    assert capper.cap("g", [1, 1.0, True, "a|b,c=d e"]).tolist() == ["1", "1", "True", "other"]
    assert ValueCapper(max_values=5).cap("g", ["a|b,c=d e"]).tolist() == ["a_b_c_d_e"]


def test_profile_categories_are_the_known_values() -> None:
    frame = pd.DataFrame({"device_type": ["android"] * 5 + ["ios"] * 3, "x": range(8)})
    profile = learn_profile(frame, model="fraud", numeric=["x"], categorical=["device_type"])
    capper = ValueCapper.from_profile(profile, max_values=1)
    assert capper.cap("device_type", ["ios", "web", "android", None]).tolist() == ["ios", "other", "android", "null"]
    # Fields the profile does not know as categorical fall back to first seen.
    assert capper.cap("country", ["US", "GB"]).tolist() == ["US", "other"]


def test_batch_increments_per_slice_and_bucket() -> None:
    rec = recorder(crossings=[["device_type", "country"]])
    batch = batch_of(RECORDS)
    findings = [
        RowFindings("out_of_range", "score", np.array([3])),
        RowFindings("out_of_range", "age", np.array([3])),  # the same row twice: one violating event
        RowFindings("missing_field", "age", np.array([1])),
    ]
    updates = build_updates(
        batch, findings, KEYS, window_ms=10_000, max_examples=1, contributors=[rec.contributor(findings)]
    )
    inc = increments(updates)
    keys = MetricKeys(KEYS)
    b0, b1 = keys.bucket(T0), keys.bucket(T0 + 60_000)
    assert inc[(b0, "*|n")] == 3 and inc[(b1, "*|n")] == 1
    assert inc[(b0, "device_type=android|n")] == 2
    assert inc[(b0, "country=US,device_type=android|n")] == 1
    assert inc[(b1, "country=US,device_type=null|n")] == 1
    assert inc[(b0, "device_type=android|null:age")] == 1
    assert inc[(b1, "*|v:out_of_range")] == 1
    assert inc[(b0, "country=GB|v:missing_field")] == 1
    assert inc[(b0, "*|pn")] == 3 and inc[(b0, "*|pv")] == 1 and inc[(b0, "*|pq")] == 1
    assert inc[(b0, "*|h:9")] == 1 and inc[(b0, "*|h:0")] == 1 and inc[(b0, "*|h:4")] == 1
    assert inc[(b1, "*|h:9")] == 1  # above the range: the top bin
    assert inc[(b0, "*|sv")] == np.float64(0.95 + 0.05 + 0.45)
    # The metric counters live in the same per-partition update as the window counters.
    assert len(updates) == 1 and {b0, keys.index, KEYS.window(T0)} <= set(updates[0].keys)


def test_updates_follow_the_source_partition() -> None:
    rec = recorder()
    batch = batch_of(RECORDS, partitions=[0, 1, 1, 0])
    updates = build_updates(batch, [], KEYS, window_ms=10_000, max_examples=1, contributors=[rec.contributor([])])
    by_source = {u.source: increments([u]) for u in updates}
    b0 = MetricKeys(KEYS).bucket(T0)
    assert by_source["events:0"][(b0, "*|n")] == 1
    assert by_source["events:1"][(b0, "*|n")] == 2
    assert by_source["events:1"][(b0, "device_type=android|n")] == 1


def test_stored_predictions_carry_bucket_slices_prediction_and_score() -> None:
    """One O op per source: each event's prediction, and the st counters summed per (bucket, slice)."""
    rec = SliceRecorder([("device_type",)], [], "prediction", "score", MetricsSettings(), prediction_ttl_s=600)
    records = [*RECORDS[:2], {**RECORDS[2], "event_id": None}]
    batch = batch_of(records)
    batch.event_ids[2] = None
    updates = build_updates(batch, [], KEYS, window_ms=10_000, max_examples=1, contributors=[rec.contributor([])])
    (stored,) = [args for op, args in split_ops(updates[0].ops) if op == Op.SET_ONCE_COUNTED]
    ttl, m = stored[0], stored[1]
    assert ttl == 600 and m == 2  # the event without an id is not stored
    key, value, listed = stored[3:6]
    assert updates[0].keys[key - 5] == MetricKeys(KEYS).prediction("a")
    assert decode_prediction(value) == {"bucket": T0, "slices": ["device_type=android"], "prediction": 1, "score": 0.95}
    triples = stored[3 + 3 * m :]
    counters = {
        (updates[0].keys[c - 5], f): a for c, f, a in zip(triples[::3], triples[1::3], triples[2::3], strict=True)
    }
    b0 = MetricKeys(KEYS).bucket(T0)
    assert counters[(b0, "*|st")] == 2
    assert sorted(f for (_, f), a in counters.items() for _ in range(a)) == sorted(
        ["*|st", "*|st", "device_type=android|st", f"device_type={RECORDS[1]['device_type']}|st"]
    )
    # The first event lists its own counters: "*" and its device type.
    names = [triples[3 * (int(x) - 1) + 1] for x in listed.split(",")]
    assert names == ["*|st", "device_type=android|st"]


def test_a_stored_prediction_reads_back_in_either_form() -> None:
    """decode_prediction reads the line form and the JSON objects stored before it."""
    value = encode_prediction(T0, ["a=1", "b=x,c=y"], "yes|no", None)
    assert "\n" in value and not value.startswith("{")
    assert decode_prediction(value) == {
        "bucket": T0,
        "slices": ["a=1", "b=x,c=y"],
        "prediction": "yes|no",
        "score": None,
    }
    legacy = json.dumps({"bucket": T0, "slices": ["a=1"], "prediction": 1, "score": 0.5})
    assert decode_prediction(legacy) == {"bucket": T0, "slices": ["a=1"], "prediction": 1, "score": 0.5}
    assert decode_prediction("garbage") is None and decode_prediction(None) is None


def test_codes_key_each_distinct_value_once_and_keep_booleans_apart_from_numbers() -> None:
    """``codes`` maps rows to sorted slice names; True and 1 (equal in Python) stay distinct values."""
    capper = ValueCapper(max_values=5)
    codes, names = capper.codes("g", [True, 1, 1.0, None, "b", True])
    assert names.tolist() == sorted(["True", "1", "null", "b"])
    assert names[codes].tolist() == ["True", "1", "1", "null", "b", "True"]


def test_crossing_labels_match_their_fields_labels() -> None:
    """A crossing's label of each row is its fields' labels joined, in sorted field order."""
    rec = SliceRecorder([("device_type", "country"), ("device_type",), ("country",)], [], "", "")
    labels = rec.slice_labels(batch_of(RECORDS), np.arange(len(RECORDS)))
    crossed = [f"{c},{d}" for c, d in zip(labels[("country",)], labels[("device_type",)], strict=True)]
    assert labels[("country", "device_type")].tolist() == crossed


def test_a_threshold_inside_a_score_bin_counts_the_scores_at_or_above_it() -> None:
    """``pp``: scored events at or above the threshold, written only when the threshold is not a bin edge."""
    batch = batch_of(RECORDS)  # scores 0.95, 0.05, 0.45 (bucket 0) and 1.2 (bucket 1)
    keys = MetricKeys(KEYS)
    b0, b1 = keys.bucket(T0), keys.bucket(T0 + 60_000)
    inside = recorder(threshold=0.42)
    inc = increments(
        build_updates(batch, [], KEYS, window_ms=10_000, max_examples=1, contributors=[inside.contributor([])])
    )
    assert inc[(b0, "*|pp")] == 2 and inc[(b1, "*|pp")] == 1
    assert inc[(b0, "device_type=ios|pp")] == 1 and (b0, "device_type=android,country=GB|pp") not in inc
    on_edge = recorder(threshold=0.5)
    inc = increments(
        build_updates(batch, [], KEYS, window_ms=10_000, max_examples=1, contributors=[on_edge.contributor([])])
    )
    assert not [name for _, name in inc if name.endswith("|pp")]


def per_row_slice_sums(
    places: list[tuple[str, int]], place: np.ndarray, slices: np.ndarray, sums: np.ndarray, metrics: list[str]
) -> dict[str, StateUpdate]:
    """What ``add_slice_sums`` replaced: each row's nonzero fields in Python, sorted, one incr_many per place."""
    entries = []
    for p, slice_, row in zip(place.tolist(), slices.tolist(), sums.tolist(), strict=True):
        amounts = [(j, a) for j, a in enumerate(row) if a]
        entries.append((*places[p], slice_, amounts))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    counters: dict[tuple[str, int], list[tuple[str, int | float]]] = {}
    for source, bucket, slice_, amounts in entries:
        counters.setdefault((source, bucket), []).extend(
            (f"{slice_}|{metrics[j]}", a if metrics[j] in FLOAT_METRICS else round(a)) for j, a in amounts
        )
    updates = {source: StateUpdate(source, 0, 1, 0) for source, _ in places}
    for (source, bucket), fields in counters.items():
        updates[source].incr_many(MetricKeys(KEYS).bucket(bucket), fields)
    return updates


def test_slice_sums_are_the_per_row_increments() -> None:
    """add_slice_sums (vectorised) writes the ops of the per-row loop: order, zeros, floats and rounding."""
    rng = np.random.default_rng(11)
    metrics = ["n", "v:out_of_range", "pv", "pq", "h3", "sv"]
    for _ in range(30):
        places = [(f"t:{p}", T0 + 60_000 * b) for p in rng.permutation(3).tolist() for b in range(2)]
        names = np.array(["*", "a=x", "a=other", "a=null", "b=1,c=2", "b=_"], dtype=object)
        cells = rng.choice(len(places) * len(names), size=int(rng.integers(1, 30)), replace=False)
        place, slices = cells // len(names), names[cells % len(names)]
        sums = rng.integers(0, 4, (len(cells), len(metrics))).astype(float)
        sums[:, [2, 3, 5]] += np.where(rng.random((len(cells), 3)) < 0.5, rng.normal(size=(len(cells), 3)), 0.0)
        sums[rng.random(sums.shape) < 0.3] = 0.0
        got = {source: StateUpdate(source, 0, 1, 0) for source, _ in places}
        add_slice_sums(got, MetricKeys(KEYS), places, place, slices, sums, metrics)
        expected = per_row_slice_sums(places, place, slices, sums, metrics)
        assert {k: (u.keys, u.ops) for k, u in got.items()} == {k: (u.keys, u.ops) for k, u in expected.items()}


def test_a_batch_s_prediction_encoder_writes_what_encode_prediction_writes() -> None:
    """Cached class labels keep their own JSON: True, 1, 1.0, -0.0, None, strings and lists alike."""
    encoder = PredictionEncoder()
    for prediction in [1, True, 1.0, 0.0, -0.0, None, "yes", [1, 2], 1, True, "yes", None, -0.0]:
        for score in (None, 0.25):
            assert encoder.encode(T0, ["a=1", "b=x"], prediction, score) == encode_prediction(
                T0, ["a=1", "b=x"], prediction, score
            )


def test_string_columns_are_coded_like_any_other() -> None:
    """Strings with None (the pandas path) code each row to its own value, distinct values in first-seen order."""
    rng = np.random.default_rng(5)
    for _ in range(30):
        values = [None if rng.random() < 0.2 else f"v{rng.integers(6)}" for _ in range(int(rng.integers(1, 40)))]
        codes, uniques = _factorize(values)
        assert [uniques[c] for c in codes.tolist()] == values
        seen = [v for v in dict.fromkeys(values) if v is not None]
        assert uniques == seen + ([None] if None in values else [])
