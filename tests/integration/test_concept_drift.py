"""Concept drift end to end on a real redis-server: events and labels through the real write path."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from stream_guard.aggregation import build_updates
from stream_guard.batch import EventBatch
from stream_guard.decoding import Decoded, JsonDecoder
from stream_guard.metrics import LabelJoiner, MetricsReader, MetricsSettings, SliceRecorder
from stream_guard.metrics.concept import ConceptDriftEvaluator
from stream_guard.model import ModelRuntime
from stream_guard.schemas import record_fields
from stream_guard.settings import ModelConfig
from stream_guard.state.keys import ModelKeys
from stream_guard.state.window_store import WindowSnapshot, WindowStore
from stream_guard.tools.simulator import Simulator, inference_schema_json

pytestmark = pytest.mark.integration

BUCKET_MS = 60_000
EVERY_MS = 10 * BUCKET_MS
LOOKBACK_MS = 60 * BUCKET_MS
#: A multiple of the lookback, so the detector's stream starts with the data.
START_MS = (1_700_000_000_000 // LOOKBACK_MS) * LOOKBACK_MS
BUCKETS, PER_BUCKET = 100, 200
CHANGE_BUCKET = 72  # labels turn bad in the 3rd bucket of the period [70, 80)
WINDOW_MS = 10_000
FEATURES = ["amount", "age", "account_age_days", "num_tx_24h", "merchant_category", "device_type", "country"]


def fraud_model() -> ModelRuntime:
    schema = inference_schema_json()
    fields = record_fields(schema)
    config = ModelConfig(
        name="fraud",
        topics=["inferences"],
        schema="fraud_inference.avsc",
        encoding="json",
        event_id_field="event_id",
        timestamp_field="ts",
        features=FEATURES,
        prediction_field="prediction",
        score_field="score",
        slice_fields=["device_type"],
    )
    return ModelRuntime(
        config=config,
        reader_schema=schema,
        fields=fields,
        decoder=JsonDecoder(schema),
        numeric_features=[f for f in FEATURES if fields[f].is_numeric],
        categorical_features=[f for f in FEATURES if not fields[f].is_numeric],
    )


def make_batch(records: list[dict[str, Any]], partition: int, first_offset: int) -> EventBatch:
    n = len(records)
    return EventBatch(
        model="fraud",
        decoded=[Decoded(values=r, issues=[]) for r in records],
        topics=["inferences"] * n,
        partitions=np.full(n, partition, dtype=np.int64),
        offsets=np.arange(first_offset, first_offset + n, dtype=np.int64),
        event_time_ms=np.array([r["ts"] for r in records], dtype=np.int64),
        event_ids=[r["event_id"] for r in records],
        failed=np.zeros(n, dtype=bool),
    )


@dataclass
class Written:
    client: redis.Redis
    keys: ModelKeys
    frame: pd.DataFrame


def settings(**overrides: object) -> MetricsSettings:
    values: dict[str, object] = {
        "bucket_s": BUCKET_MS // 1000,
        "retention_s": 7 * 24 * 3600,
        "performance_every_s": EVERY_MS // 1000,
        "performance_lookback_s": LOOKBACK_MS // 1000,
        "performance_min_support": 100,
        "performance_alpha": 0.01,
    }
    return MetricsSettings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def written(redis_client: redis.Redis, unique: str) -> Iterator[Written]:
    """Events of two partitions (two "workers"), then labels of two labels partitions, all through Redis.

    The model's error rate is 5 % before CHANGE_BUCKET and 25 % from it on.
    """
    keys = ModelKeys(f"sgc-{unique}", "fraud")
    metrics = settings()
    model = fraud_model()
    recorders = {p: SliceRecorder.for_model(model, metrics, prediction_ttl_s=7 * 24 * 3600) for p in (0, 1)}
    store = WindowStore(
        redis_client, keys, window_ms=WINDOW_MS, lateness_ms=1000, idle_ms=2000, retention_s=3600, worker_id="t"
    )
    n = BUCKETS * PER_BUCKET
    records = Simulator(encoding="json", seed=21).records(n, START_MS, step_ms=BUCKET_MS / PER_BUCKET)
    frame = pd.DataFrame(records)
    frame["partition"] = np.arange(n) % 2
    offsets = {0: 0, 1: 0}
    for lo in range(0, n, 2000):
        chunk = frame.iloc[lo : lo + 2000]
        for partition in (0, 1):
            rows = chunk.index[chunk["partition"] == partition]
            batch = make_batch([records[i] for i in rows], partition, offsets[partition])
            updates = build_updates(
                batch,
                [],
                keys,
                window_ms=WINDOW_MS,
                max_examples=2,
                contributors=[recorders[partition].contributor([])],
            )
            assert list(store.apply(updates, now_ms=START_MS)) == [1]
            offsets[partition] += len(rows)

    rng = np.random.default_rng(5)
    bucket = (frame["ts"] - START_MS) // BUCKET_MS
    error_rate = np.where(bucket >= CHANGE_BUCKET, 0.25, 0.05)
    predicted = (frame["score"] >= metrics.threshold).astype(int)
    wrong = rng.random(n) < error_rate
    frame["label"] = np.where(wrong, 1 - predicted, predicted)
    frame["bucket"] = bucket
    joiner = LabelJoiner(keys, metrics)
    label_offsets = {0: 0, 1: 0}
    for lo in range(0, n, 5000):
        labels = []
        for i in range(lo, min(lo + 5000, n)):
            partition = i % 3 == 0
            labels.append(
                {
                    "event_id": frame.at[i, "event_id"],
                    "label": int(frame.at[i, "label"]),
                    "topic": "labels",
                    "partition": int(partition),
                    "offset": label_offsets[partition],
                    "ts": int(frame.at[i, "ts"]) + 3_600_000,
                }
            )
            label_offsets[partition] += 1
        assert joiner.join(labels, redis_client, now_ms=START_MS).matched == len(labels)
    yield Written(redis_client, keys, frame)
    for key in redis_client.scan_iter(match=f"sgc-{unique}:*"):
        redis_client.delete(key)


def closing(period_end_bucket: int) -> WindowSnapshot:
    """The window that closes the period ending at bucket ``period_end_bucket`` (an event-time window)."""
    start = START_MS + period_end_bucket * BUCKET_MS
    return WindowSnapshot(start, start + WINDOW_MS, {})


def test_series_reads_one_slice_per_bucket(written: Written) -> None:
    reader = MetricsReader(written.client, written.keys, BUCKET_MS)
    start, end = START_MS + 10 * BUCKET_MS, START_MS + 20 * BUCKET_MS
    series = reader.series(start, end, metrics=["lm", "tp", "fp", "tn", "fn", "ae"])
    assert [b for b, _ in series] == list(range(start, end, BUCKET_MS))
    frame = written.frame
    for b, counters in series:
        rows = frame[frame["bucket"] == (b - START_MS) // BUCKET_MS]
        wrong = int((rows["label"] != (rows["score"] >= 0.5)).sum())
        # Zero increments are not written, so a missing counter is 0.
        assert counters["lm"] == len(rows) and counters.get("fp", 0) + counters.get("fn", 0) == wrong
        assert "ae" not in counters  # absent metrics are left out
        assert counters == {m: v for m, v in reader.rollup(b, b + BUCKET_MS)["*"].counters.items() if m in counters}
    # Every metric of another slice, in bucket order; nothing outside the range.
    ios = reader.series(start, end, "device_type=ios")
    assert [b for b, _ in ios] == [b for b, _ in series]
    first = reader.rollup(start, start + BUCKET_MS)["device_type=ios"].counters
    assert ios[0][1] == first and "n" in first
    assert reader.series(START_MS - 10 * BUCKET_MS, START_MS) == []


def test_concept_drift_and_degradation_appear_at_the_change(written: Written) -> None:
    reader = MetricsReader(written.client, written.keys, BUCKET_MS)
    model = fraud_model()
    evaluate = ConceptDriftEvaluator.for_settings("fraud", reader, settings())
    by_period = {end: evaluate(model, closing(end)) for end in (20, 40, 60, 70, 80, 90)}
    kinds = {end: sorted(a.kind for a in alerts) for end, alerts in by_period.items()}
    assert kinds[20] == kinds[40] == kinds[60] == kinds[70] == []
    assert kinds[80] == ["concept_drift", "performance_degradation"]
    assert "concept_drift" not in kinds[90]  # one change, one report
    for alert in by_period[80]:
        assert alert.model == "fraud" and alert.slice == "" and alert.feature == "error_rate"
        assert (alert.window_start, alert.window_end) == (START_MS + 70 * BUCKET_MS, START_MS + 80 * BUCKET_MS)
    alerts = {a.kind: a for a in by_period[80]}
    drift, degraded = alerts["concept_drift"], alerts["performance_degradation"]
    assert drift.detector == "river.ADWIN"
    assert drift.threshold == pytest.approx(0.05, abs=0.01) and drift.value is not None and drift.value > 0.15
    assert degraded.detector == "two_proportion_test" and degraded.threshold == pytest.approx(0.05, abs=0.01)
    frame = written.frame
    period = frame[(frame["bucket"] >= 70) & (frame["bucket"] < 80)]
    assert degraded.total == len(period)
    assert degraded.count == int((period["label"] != (period["score"] >= 0.5)).sum())
    # Off the cadence, or another model: nothing.
    assert evaluate(model, WindowSnapshot(closing(80).start_ms + WINDOW_MS, closing(80).end_ms + WINDOW_MS, {})) == []
    other = ModelRuntime(
        config=ModelConfig(name="other", topics=["x"], schema="x.avsc"),
        reader_schema=model.reader_schema,
        fields=model.fields,
        decoder=model.decoder,
    )
    assert evaluate(other, closing(80)) == []


def test_baseline_error_rate_and_label_delay(written: Written) -> None:
    reader = MetricsReader(written.client, written.keys, BUCKET_MS)
    model = fraud_model()
    baseline = ConceptDriftEvaluator.for_settings("fraud", reader, settings(baseline_error_rate=0.05))
    assert [a.kind for a in baseline(model, closing(70))] == []
    degraded = [a for a in baseline(model, closing(80)) if a.kind == "performance_degradation"]
    assert len(degraded) == 1 and degraded[0].detector == "binomial_test" and degraded[0].threshold == 0.05
    # With a label delay of one period, the window closing at 90 evaluates the period [70, 80).
    delayed = ConceptDriftEvaluator.for_settings("fraud", reader, settings(performance_label_delay_s=EVERY_MS // 1000))
    assert delayed(model, closing(80)) == []
    kinds = sorted(a.kind for a in delayed(model, closing(90)))
    assert kinds == ["concept_drift", "performance_degradation"]
