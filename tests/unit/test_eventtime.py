"""Event times far from their record's Kafka timestamp: clamped, reported, and no threat to the metrics index."""

from __future__ import annotations

import json

from messages import Message

from stream_guard.decoding import JsonDecoder
from stream_guard.metrics.slices import SliceRecorder
from stream_guard.model import ModelRuntime
from stream_guard.pipeline import Pipeline
from stream_guard.schemas import record_fields
from stream_guard.settings import Config, ModelConfig
from stream_guard.settings.metrics import MetricsSettings
from stream_guard.stages import Stages
from stream_guard.state import MemoryState, ModelKeys

SCHEMA = {
    "type": "record",
    "name": "Event",
    "fields": [{"name": "id", "type": "string"}, {"name": "ts", "type": "long"}, {"name": "x", "type": "double"}],
}
KEYS = ModelKeys("sg", "m")
NOW_MS = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
METRICS = MetricsSettings(bucket_s=60, retention_s=7_200)


def _model() -> ModelRuntime:
    return ModelRuntime(
        config=ModelConfig(name="m", topics=["events"], timestamp_field="ts"),
        reader_schema=SCHEMA,
        fields=record_fields(SCHEMA),
        decoder=JsonDecoder(SCHEMA),
        numeric_features=["x"],
    )


def _messages(stamps: list[tuple[int, int]]) -> list[Message]:
    return [
        Message(json.dumps({"id": f"e{i}", "ts": ts, "x": 1.0}).encode(), i, kafka_ms)
        for i, (ts, kafka_ms) in enumerate(stamps)
    ]


def _stage(config: Config, stamps: list[tuple[int, int]]) -> tuple[MemoryState, list[str]]:
    model = _model()
    recorder = SliceRecorder.for_model(model, METRICS)
    pipeline = Pipeline(config, Stages(slice_recorders={"m": recorder}))
    staged = pipeline.stage(model, _messages(stamps), KEYS)
    state = MemoryState(KEYS, window_ms=60_000, lateness_ms=0)
    state.apply(staged.updates, now_ms=NOW_MS)
    return state, [f.key for f in staged.findings]


def test_one_event_in_microseconds_does_not_evict_the_last_hour_from_the_metrics_index() -> None:
    """200 events of the last hour and one stamped in µs: the index keeps every real bucket, all 201 counted."""
    stamps = [(NOW_MS - 3_600_000 + i * 18_000, NOW_MS - 3_600_000 + i * 18_000) for i in range(200)]
    stamps.append((NOW_MS * 1000, NOW_MS))
    state, findings = _stage(Config(), stamps)
    buckets = [int(member) for member, _ in state.zrange(KEYS.metrics_index)]
    assert buckets == sorted({ts - ts % 60_000 for ts, _ in stamps[:200]} | {NOW_MS})
    assert sum(int(state.hgetall(KEYS.bucket(b)).get("*|n", 0)) for b in buckets) == 201
    assert "event_time_skew|ts|" in findings


def test_event_times_within_the_bound_are_kept_and_ancient_ones_clamped() -> None:
    """An event 10 min off its Kafka timestamp keeps its time; one a year in the past is clamped to it."""
    stamps = [(NOW_MS - 600_000, NOW_MS), (NOW_MS - 365 * 86_400_000, NOW_MS)]
    state, findings = _stage(Config(), stamps)
    assert [int(m) for m, _ in state.zrange(KEYS.metrics_index)] == [NOW_MS - 600_000, NOW_MS]
    assert findings == ["event_time_skew|ts|"]


def test_a_zero_bound_turns_the_rule_off() -> None:
    """worker.max_event_time_skew_s = 0: event times are taken as they are (a backfill with current Kafka times)."""
    config = Config()
    config.worker.max_event_time_skew_s = 0
    stamps = [(NOW_MS - 365 * 86_400_000, NOW_MS)]
    state, findings = _stage(config, stamps)
    assert [int(m) for m, _ in state.zrange(KEYS.metrics_index)] == [NOW_MS - 365 * 86_400_000]
    assert findings == []
