"""Caps on distinct findings: one record, one batch or one window cannot raise an alert storm."""

from __future__ import annotations

import json

from messages import Message

from stream_guard.alerts.evaluate import finding_alerts
from stream_guard.decoding import MAX_UNEXPECTED_FIELDS, JsonDecoder, RecordChecker
from stream_guard.findings import OVERFLOW
from stream_guard.model import ModelRuntime
from stream_guard.pipeline import Pipeline
from stream_guard.schemas import record_fields
from stream_guard.settings import Config, ModelConfig
from stream_guard.state import MemoryState, ModelKeys, WindowSnapshot

SCHEMA = {
    "type": "record",
    "name": "Event",
    "fields": [{"name": "id", "type": "string"}, {"name": "ts", "type": "long"}, {"name": "x", "type": "double"}],
}
KEYS = ModelKeys("sg", "m")
NOW_MS = 1_700_000_000_000


def _model() -> ModelRuntime:
    return ModelRuntime(
        config=ModelConfig(name="m", topics=["events"], timestamp_field="ts"),
        reader_schema=SCHEMA,
        fields=record_fields(SCHEMA),
        decoder=JsonDecoder(SCHEMA),
        numeric_features=["x"],
    )


def test_a_record_with_150000_unknown_keys_reports_a_capped_number_and_the_overflow() -> None:
    """At most MAX_UNEXPECTED_FIELDS unexpected_field issues, plus one ``*overflow*`` issue counting the rest."""
    raw = {"id": "e", "ts": 1, "x": 1.0, **{f"k{i}": i for i in range(150_000)}}
    _, issues = RecordChecker(SCHEMA).check(raw)
    unexpected = [i for i in issues if i.kind == "unexpected_field"]
    assert len(unexpected) == MAX_UNEXPECTED_FIELDS + 1
    assert [i.field for i in unexpected[:3]] == ["k0", "k1", "k2"]
    assert unexpected[-1].field == OVERFLOW
    assert unexpected[-1].observed == f"{150_000 - MAX_UNEXPECTED_FIELDS} more unexpected fields"
    decoded = JsonDecoder(SCHEMA).decode(json.dumps(raw).encode())
    assert len(decoded.issues) == MAX_UNEXPECTED_FIELDS + 1


def test_a_batch_keeps_at_most_max_finding_keys_distinct_findings() -> None:
    """50 records with 19 distinct unknown keys each (half also one shared): the biggest findings kept, the rest in one overflow finding."""
    config = Config()
    config.worker.max_finding_keys = 30
    rows = []
    for r in range(50):
        extra = {f"r{r}_{i}": i for i in range(19)}
        if r % 2:
            extra["common"] = 1
        rows.append(Message(json.dumps({"id": f"e{r}", "ts": NOW_MS, "x": 1.0, **extra}).encode(), r, NOW_MS))
    staged = Pipeline(config).stage(_model(), rows, KEYS)
    keys = [f.key for f in staged.findings]
    assert len(keys) == 30
    assert keys[0] == "unexpected_field|common|"  # the finding of the most rows first
    overflow = staged.findings[-1]
    assert overflow.key == f"unexpected_field|{OVERFLOW}|"
    assert overflow.observed == f"{50 * 19 + 1 - 29} more distinct unexpected_field findings"
    # Ties go by key: record 0's 19 keys are all kept, every other record has one dropped.
    assert overflow.rows.tolist() == list(range(1, 50))
    state = MemoryState(KEYS, window_ms=60_000, lateness_ms=0)
    state.apply(staged.updates, now_ms=NOW_MS)
    assert len([k for k in state.key_names() if ":x:" in k]) == 30


def test_a_window_raises_at_most_max_finding_keys_finding_alerts() -> None:
    """A window whose batches wrote 500 distinct finding keys raises the biggest 20 and one overflow alert."""
    fields = {"n": "1000", **{f"f|unexpected_field|k{i:03d}|": str(i + 1) for i in range(500)}}
    window = WindowSnapshot(NOW_MS, NOW_MS + 60_000, fields)
    alerts = finding_alerts("m", window, max_keys=20)
    assert len(alerts) == 21
    assert [a.feature for a in alerts[:-1]] == [f"k{i}" for i in range(480, 500)]
    assert alerts[-1].feature == OVERFLOW
    assert alerts[-1].count == sum(range(1, 481))
    assert alerts[-1].observed == "480 more distinct unexpected_field findings"


def test_a_window_holds_at_most_max_finding_keys_distinct_findings_across_batches() -> None:
    """Two batches of 19 new unknown keys each, cap 30: the window keeps 30 finding fields, the rest in *overflow*."""
    config = Config()
    config.worker.max_finding_keys = 30
    pipeline, state = Pipeline(config), MemoryState(KEYS, window_ms=60_000, lateness_ms=0)
    for b in range(2):
        extra = {f"b{b}_{i:02d}": i for i in range(19)}
        rows = [
            Message(json.dumps({"id": f"e{r}", "ts": NOW_MS, "x": 1.0, **extra}).encode(), b * 10 + r, NOW_MS)
            for r in range(10)
        ]
        state.apply(pipeline.stage(_model(), rows, KEYS).updates, now_ms=NOW_MS)
    window = state.snapshot(NOW_MS - NOW_MS % 60_000)
    findings = window.with_prefix("f|")
    assert len(findings) == 31 and window.fields["fk"] == "30"
    assert findings[f"unexpected_field|{OVERFLOW}|"] == str(8 * 10)  # 8 of the second batch's 19 keys, 10 rows each
    assert len([k for k in state.key_names() if ":x:" in k]) == 30
