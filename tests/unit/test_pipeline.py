"""Pipeline.stage: one hostile record becomes its own dead letter, the rest of the batch is counted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from messages import Message

from stream_guard.batch import EventBatch
from stream_guard.decoding import JsonDecoder
from stream_guard.errors import RecordValidationError
from stream_guard.findings import RowFindings
from stream_guard.metrics.slices import SliceRecorder
from stream_guard.model import ModelRuntime
from stream_guard.pipeline import Pipeline
from stream_guard.schemas import record_fields
from stream_guard.settings import Config, ModelConfig
from stream_guard.settings.metrics import MetricsSettings
from stream_guard.stages import Stages
from stream_guard.state import MemoryState
from stream_guard.state.keys import ModelKeys

SCHEMA = {
    "type": "record",
    "name": "Event",
    "fields": [{"name": "id", "type": "string"}, {"name": "x", "type": "double"}],
}
KEYS = ModelKeys("sg", "m")


class FailsOn13:
    """A row check with a bug that one value triggers."""

    def findings(self, model: ModelRuntime, batch: EventBatch) -> list[RowFindings]:
        x = np.array([d.values.get("x") or 0.0 for d in batch.decoded])
        if (x == 13).any():
            raise ZeroDivisionError("x is 13")
        return []


class FailsOnPairs:
    """A failure no single record reproduces."""

    def findings(self, model: ModelRuntime, batch: EventBatch) -> list[RowFindings]:
        if len(batch) > 1:
            raise ZeroDivisionError("pairs")
        return []


def _model() -> ModelRuntime:
    return ModelRuntime(
        config=ModelConfig(name="m", topics=["events"]),
        reader_schema=SCHEMA,
        fields=record_fields(SCHEMA),
        decoder=JsonDecoder(SCHEMA),
        numeric_features=["x"],
    )


def _messages(xs: list[float]) -> list[Message]:
    return [Message(json.dumps({"id": f"e{i}", "x": x}).encode(), i) for i, x in enumerate(xs)]


def test_a_record_that_makes_a_stage_raise_is_dead_lettered_alone() -> None:
    """The failing row is a RecordValidationError dead letter; every other row is decoded and counted."""
    pipeline = Pipeline(Config(), Stages(row_checks=[FailsOn13()]))
    messages = [*_messages([1.0, 13.0, 2.0, 3.0]), Message(b"garbage", 4)]
    staged = pipeline.stage(_model(), messages, KEYS)
    assert [(d.row, type(d.error).__name__) for d in staged.dead] == [
        (1, "RecordValidationError"),
        (4, "UndecodablePayloadError"),
    ]
    assert isinstance(staged.dead[0].error, RecordValidationError)
    assert "ZeroDivisionError: x is 13" in str(staged.dead[0].error)
    assert staged.decoded == 3
    undecodable = {f.feature: f.rows.tolist() for f in staged.findings if f.kind == "undecodable"}
    assert undecodable == {"RecordValidationError": [1], "UndecodablePayloadError": [4]}
    (update,) = staged.updates
    assert (update.first_offset, update.last_offset) == (0, 4)


def test_a_failure_no_single_record_reproduces_is_raised() -> None:
    """Nothing is dead-lettered on a guess: the batch fails (and is retried) as before."""
    pipeline = Pipeline(Config(), Stages(row_checks=[FailsOnPairs()]))
    with pytest.raises(ZeroDivisionError):
        pipeline.stage(_model(), _messages([1.0, 2.0]), KEYS)


class AlwaysFails:
    """A broken stage: every record makes it raise."""

    def findings(self, model: ModelRuntime, batch: EventBatch) -> list[RowFindings]:
        raise KeyError("broken stage")


def test_a_stage_that_fails_on_every_record_is_raised_not_dead_lettered() -> None:
    """A bug in a stage must not turn the whole stream into dead letters."""
    pipeline = Pipeline(Config(), Stages(row_checks=[AlwaysFails()]))
    with pytest.raises(KeyError):
        pipeline.stage(_model(), _messages([1.0, 2.0, 3.0]), KEYS)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_record_whose_metrics_overflow_to_inf_is_dead_lettered_alone() -> None:
    """x = 1e200 squared is inf: no store could add it, so that record is a dead letter and the rest is counted."""
    model = _model()
    model.config.prediction_field = "x"
    recorder = SliceRecorder.for_model(model, MetricsSettings(bucket_s=60, retention_s=7_200))
    pipeline = Pipeline(Config(), Stages(slice_recorders={"m": recorder}))
    values = [{"id": "a", "x": 1.0}, {"id": "b", "x": 1e200}, {"id": "c", "x": 2.0}]
    staged = pipeline.stage(model, [Message(json.dumps(v).encode(), i) for i, v in enumerate(values)], KEYS)
    assert [d.row for d in staged.dead] == [1]
    assert "non-finite increment" in str(staged.dead[0].error)
    state = MemoryState(KEYS, window_ms=60_000, lateness_ms=0)
    state.apply(staged.updates, now_ms=0)
    (bucket,) = [int(m) for m, _ in state.zrange(KEYS.metrics_index)]
    assert state.hgetall(KEYS.bucket(bucket))["*|n"] == "2"
