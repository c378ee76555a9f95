"""Slice metrics and delayed labels end to end on a real redis-server, checked against pandas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import redis

from stream_guard.aggregation import build_updates
from stream_guard.batch import EventBatch
from stream_guard.decoding import Decoded, JsonDecoder, encode_avro
from stream_guard.findings import RowFindings
from stream_guard.metrics import (
    LabelJoiner,
    LabelSettings,
    LabelStream,
    MetricsReader,
    MetricsSettings,
    PerformanceEvaluator,
    SliceRecorder,
    slice_underperformance,
)
from stream_guard.metrics.label_messages import make_label_decoder
from stream_guard.metrics.store import MetricKeys
from stream_guard.model import ModelRuntime
from stream_guard.resources import schema_dir
from stream_guard.schemas import parse_schema, record_fields
from stream_guard.settings import Config, ModelConfig
from stream_guard.state.keys import ModelKeys
from stream_guard.state.window_store import StateUpdate, WindowSnapshot, WindowStore
from stream_guard.tools.simulator import SAMPLE_FEATURES, Simulator, inference_schema_json

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000
BUCKET_MS = 60_000
FEATURES = SAMPLE_FEATURES
TOPIC, LABELS_TOPIC = "inferences", "labels"
N_EVENTS, BATCH = 6000, 500
METRICS_RETENTION_S, STORE_RETENTION_S, LOOKBACK_S = 7200, 3600, 5400


def fraud_model() -> ModelRuntime:
    schema = inference_schema_json()
    fields = record_fields(schema)
    config = ModelConfig(
        name="fraud",
        topics=[TOPIC],
        schema="fraud_inference.avsc",
        encoding="json",
        event_id_field="event_id",
        timestamp_field="ts",
        features=FEATURES,
        prediction_field="prediction",
        score_field="score",
        slice_fields=["device_type", "country"],
    )
    return ModelRuntime(
        config=config,
        reader_schema=schema,
        fields=fields,
        decoder=JsonDecoder(schema),
        numeric_features=[f for f in FEATURES if fields[f].is_numeric],
        categorical_features=[f for f in FEATURES if not fields[f].is_numeric],
    )


def make_batch(records: list[dict], partition: int, first_offset: int) -> EventBatch:
    n = len(records)
    return EventBatch(
        model="fraud",
        decoded=[Decoded(values=r, issues=[]) for r in records],
        topics=[TOPIC] * n,
        partitions=np.full(n, partition, dtype=np.int64),
        offsets=np.arange(first_offset, first_offset + n, dtype=np.int64),
        event_time_ms=np.array([r["ts"] for r in records], dtype=np.int64),
        event_ids=[r["event_id"] for r in records],
        failed=np.zeros(n, dtype=bool),
    )


def big_amount_findings(batch: EventBatch) -> list[RowFindings]:
    """A stand-in check: amounts above 300 are out of range."""
    amounts, _ = batch.numeric("amount")
    rows = np.flatnonzero(amounts > 300)
    return [RowFindings("out_of_range", "amount", rows, "> 300", "<= 300")] if len(rows) else []


@dataclass
class Pipeline:
    """Two "workers", one per events partition, each with its own recorder (own value caps)."""

    client: redis.Redis
    keys: ModelKeys
    store: WindowStore
    recorders: dict[int, SliceRecorder]
    applied: list[list[StateUpdate]] = field(default_factory=list)

    def write(self, records: list[dict], partition: int, first_offset: int) -> list[int]:
        batch = make_batch(records, partition, first_offset)
        findings = big_amount_findings(batch)
        updates = build_updates(
            batch,
            findings,
            self.keys,
            window_ms=10_000,
            max_examples=2,
            contributors=[self.recorders[partition].contributor(findings)],
        )
        self.applied.append(updates)
        return list(self.store.apply(updates, now_ms=START_MS))


@pytest.fixture
def setup(redis_client: redis.Redis, unique: str) -> Iterator[tuple[Pipeline, MetricsSettings]]:
    keys = ModelKeys(f"sgm-{unique}", "fraud")
    settings = MetricsSettings(
        bucket_s=BUCKET_MS // 1000, retention_s=METRICS_RETENTION_S, crossings=[["device_type", "country"]]
    )
    model = fraud_model()
    recorders = {p: SliceRecorder.for_model(model, settings, prediction_ttl_s=LOOKBACK_S) for p in (0, 1)}
    store = WindowStore(
        redis_client,
        keys,
        window_ms=10_000,
        lateness_ms=1000,
        idle_ms=2000,
        retention_s=STORE_RETENTION_S,
        worker_id="t",
    )
    yield Pipeline(redis_client, keys, store, recorders), settings
    for key in redis_client.scan_iter(match=f"sgm-{unique}:*"):
        redis_client.delete(key)


def write_events(pipeline: Pipeline) -> pd.DataFrame:
    """Write N_EVENTS simulated events, alternating partitions, in batches of BATCH; return them as a frame."""
    records = Simulator(encoding="json", seed=11).records(N_EVENTS, START_MS, step_ms=50)
    frame = pd.DataFrame(records)
    frame["partition"] = np.arange(len(frame)) % 2
    offsets = {0: 0, 1: 0}
    for lo in range(0, len(records), BATCH):
        chunk = frame.iloc[lo : lo + BATCH]
        for partition in (0, 1):
            part = [records[i] for i in chunk.index[chunk["partition"] == partition]]
            assert pipeline.write(part, partition, offsets[partition]) == [1]
            offsets[partition] += len(part)
    return frame


def draw_labels(frame: pd.DataFrame, seed: int = 5) -> pd.Series:
    """Labels mostly agree with the prediction; android frauds the model missed are injected (low recall)."""
    rng = np.random.default_rng(seed)
    p = np.where(frame["prediction"] == 1, 0.85, 0.003 + 0.02 * frame["score"])
    label = (rng.random(len(frame)) < p).astype(int)
    missed = (frame["device_type"] == "android") & (frame["prediction"] == 0) & (rng.random(len(frame)) < 0.05)
    return pd.Series(np.where(missed, 1, label), index=frame.index)


def expected_by_slice(frame: pd.DataFrame, by_bucket: bool = False) -> pd.DataFrame:
    """The pandas ground truth: counters per slice (and bucket), from the raw events."""
    df = frame.copy()
    df["bucket"] = (df["ts"] // BUCKET_MS) * BUCKET_MS
    df["n"] = 1
    df["pv"], df["pq"], df["sv"] = df["prediction"].astype(float), df["prediction"].astype(float) ** 2, df["score"]
    df["null:age"] = df["age"].isna().astype(int)
    df["v:out_of_range"] = (df["amount"] > 300).astype(int)
    df["h:9"] = (df["score"] >= 0.9).astype(int)
    df["h:0"] = (df["score"] < 0.1).astype(int)
    labelled = df["label"].notna()
    pos_pred, pos_true = df["score"] >= 0.5, df["label"] == 1
    df["lm"] = labelled.astype(int)
    df["tp"] = (labelled & pos_pred & pos_true).astype(int)
    df["fp"] = (labelled & pos_pred & ~pos_true).astype(int)
    df["tn"] = (labelled & ~pos_pred & ~pos_true).astype(int)
    df["fn"] = (labelled & ~pos_pred & pos_true).astype(int)
    df["st"] = 1
    metrics = ["n", "pv", "pq", "sv", "null:age", "v:out_of_range", "h:0", "h:9", "lm", "tp", "fp", "tn", "fn", "st"]
    slices = {
        "*": pd.Series("*", index=df.index),
        "device": "device_type=" + df["device_type"],
        "country": "country=" + df["country"],
        "cross": "country=" + df["country"] + ",device_type=" + df["device_type"],
        "merchant": "merchant_category=" + df["merchant_category"],
    }
    keys = ["bucket", "slice"] if by_bucket else ["slice"]
    parts = [df.assign(slice=label)[[*keys, *metrics]] for label in slices.values()]
    return pd.concat(parts).groupby(keys).sum()


def labels_for(frame: pd.DataFrame, rows: pd.Index, partition: int, first_offset: int) -> list[dict]:
    return [
        {
            "event_id": frame.at[i, "event_id"],
            "label": int(frame.at[i, "label"]),
            "topic": LABELS_TOPIC,
            "partition": partition,
            "offset": first_offset + k,
            "ts": int(frame.at[i, "ts"]) + 3_600_000,
        }
        for k, i in enumerate(rows)
    ]


def assert_matches(rollup: dict, expected: pd.DataFrame) -> None:
    assert set(rollup) == set(expected.index)
    for slice_, row in expected.iterrows():
        got = rollup[slice_]
        for metric, value in row.items():
            if metric in ("pv", "pq", "sv"):
                assert got.get(metric) == pytest.approx(value, rel=1e-9, abs=1e-9), (slice_, metric)
            else:
                assert got.get(metric) == value, (slice_, metric)


def test_rollup_equals_pandas_and_labels_join_once(setup: tuple[Pipeline, MetricsSettings]) -> None:
    """Batches of two partitions and labels of two partitions roll up to the pandas groupby; redelivery is a no-op."""
    pipeline, settings = setup
    client, keys = pipeline.client, pipeline.keys
    frame = write_events(pipeline)
    mkeys = MetricKeys(keys)

    # Redelivered events batches (same updates again): fenced, nothing changes.
    reader = MetricsReader(client, keys, BUCKET_MS)
    end_ms = START_MS + N_EVENTS * 50 + BUCKET_MS
    before = reader.rollup(START_MS, end_ms).to_json()
    for updates in pipeline.applied[3:5]:
        assert pipeline.store.apply(updates, now_ms=START_MS) == [0]
    assert reader.rollup(START_MS, end_ms).to_json() == before

    # TTLs: stored predictions live for the lookback, metric buckets for the metrics retention.
    assert LOOKBACK_S - 5 < client.ttl(mkeys.prediction(frame.at[0, "event_id"])) <= LOOKBACK_S
    assert STORE_RETENTION_S < client.ttl(mkeys.bucket((START_MS // BUCKET_MS) * BUCKET_MS)) <= METRICS_RETENTION_S
    assert STORE_RETENTION_S < client.ttl(mkeys.index) <= METRICS_RETENTION_S

    # Labels for 90 % of the events, on two labels partitions, in three batches; plus unknown ids.
    rng = np.random.default_rng(3)
    frame["label"] = draw_labels(frame)
    labelled = frame.index[rng.random(len(frame)) < 0.9]
    frame.loc[frame.index.difference(labelled), "label"] = np.nan
    halves = {0: labelled[labelled % 3 != 0], 1: labelled[labelled % 3 == 0]}
    labels = {p: labels_for(frame, rows, p, 0) for p, rows in halves.items()}
    unknown = [
        {
            "event_id": f"nope-{i}",
            "label": 1,
            "topic": LABELS_TOPIC,
            "partition": 1,
            "offset": len(labels[1]) + i,
            "ts": START_MS + 10_000,
        }
        for i in range(40)
    ]
    labels[1] += unknown
    joiner = LabelJoiner(keys, settings)
    batches = [labels[0][:2000] + labels[1][:1000], labels[0][2000:] + labels[1][1000:1500], labels[1][1500:]]
    results = [joiner.join(b, client, now_ms=START_MS + 7_200_000) for b in batches]
    assert sum(r.matched for r in results) == len(labelled)
    assert sum(r.unmatched for r in results) == len(unknown)

    # The correctness stream: one 0/1 error per matched label, in label order.
    first = results[0]
    order = frame.set_index("event_id").loc[first.event_ids]
    want = ((order["score"] >= 0.5).astype(int) != order["label"]).astype(int).to_numpy()
    assert first.event_ids == [x["event_id"] for x in batches[0]]
    np.testing.assert_array_equal(first.errors, want)

    # A redelivered labels batch is skipped; one overlapping the fence applies only its new labels.
    snapshot = reader.rollup(START_MS, end_ms).to_json()
    again = joiner.join(batches[1], client, now_ms=START_MS + 7_200_000)
    assert (again.skipped, again.matched, again.unmatched) == (len(batches[1]), 0, 0)
    assert reader.rollup(START_MS, end_ms).to_json() == snapshot
    duplicate = {**labels[1][5], "offset": len(labels[1]), "ts": START_MS + 20_000}  # a second label, joined event
    overlap = joiner.join([*labels[1][-3:], duplicate], client, now_ms=START_MS + 7_200_000)
    assert (overlap.skipped, overlap.matched, overlap.unmatched) == (3, 0, 1)

    # Whole range: every counter of every slice equals pandas.
    rollup = reader.rollup(START_MS, end_ms)
    expected = expected_by_slice(frame)
    assert_matches(rollup, expected)
    overall = rollup["*"]
    assert overall.labels_unmatched == len(unknown) + 1
    assert overall.labels_pending == len(frame) - len(labelled)
    assert overall.events == N_EVENTS

    # Bucket by bucket too (a rollup of one bucket is that bucket).
    per_bucket = expected_by_slice(frame, by_bucket=True)
    for bucket in per_bucket.index.get_level_values(0).unique()[:3]:
        one = reader.rollup(int(bucket), int(bucket) + BUCKET_MS)
        want_bucket = per_bucket.loc[bucket]
        got = {k: v for k, v in one.items()}
        assert_matches(got, want_bucket)

    # Joined predictions were deleted; the pending ones are still stored.
    remaining = list(client.scan_iter(match=f"{mkeys.base}:pred:*", count=1000))
    assert len(remaining) == len(frame) - len(labelled)

    # The injected bias is what the scan and the test find.
    worst = rollup.worst_slices(
        "recall", min_support=30, dimensions=[["device_type"], ["country"], ["merchant_category"]]
    )
    assert worst[0].slice == "device_type=android"
    found = slice_underperformance(rollup, "recall", min_support=30, alpha=0.01)
    assert "device_type=android" in [u.slice for u in found]
    assert all("android" in u.slice for u in found)
    json.loads(rollup.to_json())
    assert "device_type=android" in rollup.to_table()


def test_reader_filters_slices_and_empty_ranges(setup: tuple[Pipeline, MetricsSettings]) -> None:
    """Slice filters keep ``*`` and whole dimensions; a range without buckets is empty."""
    pipeline, _ = setup
    records = Simulator(encoding="json", seed=2).records(300, START_MS, step_ms=100)
    assert pipeline.write(records, 0, 0) == [1]
    reader = MetricsReader(pipeline.client, pipeline.keys, BUCKET_MS)
    rollup = reader.rollup(START_MS, START_MS + 60_000, slices=["device_type", "country=US"])
    assert {"*", "device_type=android", "device_type=ios", "device_type=web", "country=US"} == set(rollup)
    assert reader.rollup(START_MS - 3_600_000, START_MS - 60_000) == {}
    assert reader.buckets() == sorted({(r["ts"] // BUCKET_MS) * BUCKET_MS for r in records})


@dataclass
class LabelMessage:
    """The parts of a consumed Kafka message the labels path reads."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes
    _ts: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


@pytest.mark.parametrize("encoding", ["avro", "json"])
def test_label_stream_decodes_and_joins_once(setup: tuple[Pipeline, MetricsSettings], encoding: str) -> None:
    """Avro / JSON label messages are decoded with the existing decoders and joined; a replay is skipped."""
    pipeline, settings = setup
    records = Simulator(encoding="json", seed=4).records(200, START_MS, step_ms=100)
    assert pipeline.write(records, 0, 0) == [1]
    label_settings = LabelSettings(
        topic=LABELS_TOPIC, schema=str(schema_dir() / "fraud_label.avsc"), encoding=encoding, timestamp_field="ts"
    )
    schema = parse_schema((schema_dir() / "fraud_label.avsc").read_text())
    decoder = make_label_decoder(Config(), label_settings)
    stream = LabelStream("fraud", LabelJoiner(pipeline.keys, settings), decoder, label_settings)
    messages = []
    for i, r in enumerate(records[:150]):
        label = {"event_id": r["event_id"], "ts": r["ts"] + 86_400_000, "label": int(r["score"] > 0.3)}
        payload = encode_avro(schema, label) if encoding == "avro" else json.dumps(label).encode()
        messages.append(LabelMessage(LABELS_TOPIC, 0, i, payload, label["ts"]))
    messages.append(LabelMessage(LABELS_TOPIC, 0, 150, b"\x00garbage", START_MS))
    result = stream.process(messages, pipeline.client)
    assert (result.matched, result.unmatched, result.invalid, result.skipped) == (150, 0, 1, 0)
    assert result.last_offsets == {f"{LABELS_TOPIC}:0": 150}
    assert stream.process(messages, pipeline.client).skipped == len(messages)
    assert stream.joiner.applied_offsets(pipeline.client, [f"{LABELS_TOPIC}:0"]) == {f"{LABELS_TOPIC}:0": 150}
    overall = MetricsReader(pipeline.client, pipeline.keys, BUCKET_MS).rollup(START_MS, START_MS + 60_000)["*"]
    expected_tp = sum(1 for r in records[:150] if r["score"] >= 0.5 and r["score"] > 0.3)
    expected_fn = sum(1 for r in records[:150] if r["score"] < 0.5 and r["score"] > 0.3)
    assert (overall.labelled, overall.labels_pending) == (150, 50)
    assert overall.confusion[0] == expected_tp and overall.confusion[3] == expected_fn


def test_performance_evaluator_alerts_on_the_biased_slice(setup: tuple[Pipeline, MetricsSettings]) -> None:
    """The window-close evaluator rolls up its lookback and raises one alert per underperforming slice."""
    pipeline, settings = setup
    frame = write_events(pipeline)
    frame["label"] = draw_labels(frame)
    LabelJoiner(pipeline.keys, settings).join(labels_for(frame, frame.index, 0, 0), pipeline.client)
    reader = MetricsReader(pipeline.client, pipeline.keys, BUCKET_MS)
    evaluate = PerformanceEvaluator(
        {"fraud": reader}, metrics=["recall"], lookback_ms=3_600_000, every_ms=60_000, min_support=30, alpha=0.01
    )
    end = (START_MS // BUCKET_MS + 10) * BUCKET_MS
    alerts = evaluate(fraud_model(), WindowSnapshot(end - 60_000, end, {}))
    assert "device_type=android" in {a.slice for a in alerts}
    assert all(a.kind == "slice_underperformance" and a.feature == "recall" for a in alerts)
    assert evaluate(fraud_model(), WindowSnapshot(end - 50_000, end + 10_000, {})) == []  # not on the hour grid


def test_a_labelled_reference_counts_what_the_live_metrics_count_and_its_bias_is_reported_once(
    setup: tuple[Pipeline, MetricsSettings],
) -> None:
    """learn's per-slice counts of a frame equal the Redis rollup of the same frame streamed and labelled;
    evaluated against that reference, nothing underperforms and the android bias is one known_bias, published once."""
    from stream_guard.alerts.lifecycle import IncidentTracker, LifecycleSettings
    from stream_guard.learning import learn_from_frame, learn_reference_performance

    pipeline, settings = setup
    frame = write_events(pipeline)
    frame["label"] = draw_labels(frame)
    LabelJoiner(pipeline.keys, settings).join(labels_for(frame, frame.index, 0, 0), pipeline.client)
    reader = MetricsReader(pipeline.client, pipeline.keys, BUCKET_MS)
    end = (START_MS // BUCKET_MS + 10) * BUCKET_MS
    live = reader.rollup(end - 3_600_000, end)
    model = fraud_model()
    reference = learn_reference_performance(model, frame, "label", settings)
    for name, counts in reference.slices.items():
        assert (counts.tp, counts.fp, counts.tn, counts.fn) == live[name].confusion, name
    assert set(reference.slices) == {n for n, m in live.items() if m.labelled}
    assert reference.known_bias("recall", "device_type=android") is not None

    model.config.metrics = settings
    model.profile = learn_from_frame(model, frame.copy(), "same events")
    model.profile.created_at = "2023-11-01T00:00:00Z"
    evaluate = PerformanceEvaluator(
        {"fraud": reader}, metrics=["recall"], lookback_ms=3_600_000, every_ms=60_000, min_support=30
    )
    tracker = IncidentTracker(pipeline.client, pipeline.keys, LifecycleSettings(cooldown_s=600, resolve_after_s=60))
    published = []
    for start in range(end - 60_000, end + 600_000, 60_000):
        raised = evaluate(model, WindowSnapshot(start, start + 60_000, {}))
        assert [a for a in raised if a.kind == "slice_underperformance"] == []
        published += tracker.publishable(raised) + tracker.resolved(start + 60_000, {a.incident_id for a in raised})
        tracker.delivered(start + 60_000)
    firing = [(a.feature, a.slice) for a in published if a.status == "FIRING"]
    assert ("recall", "device_type=android") in firing
    assert (
        len(firing)
        == len(set(firing))
        == len([b for b in model.profile.performance.known_biases if b.metric == "recall"])
    )
