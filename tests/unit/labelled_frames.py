"""The 8-feature fraud model and seeded labelled frames of it, shared by the slice-baseline tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from stream_guard.decoding import JsonDecoder
from stream_guard.learning.performance import learn_reference_performance
from stream_guard.metrics.baseline import reference_rollup
from stream_guard.metrics.query import Rollup
from stream_guard.model import ModelRuntime
from stream_guard.schemas import record_fields
from stream_guard.settings import ModelConfig
from stream_guard.settings.metrics import MetricsSettings
from stream_guard.tools.simulator import SAMPLE_FEATURES, Simulator, inference_schema_json

CROSSING = ("device_type", "is_new_user")


def fraud_model(crossings: Sequence[Sequence[str]] = (CROSSING,), **metrics: object) -> ModelRuntime:
    """The simulator's fraud model: slices on device type and country, one crossing, every categorical feature."""
    schema = inference_schema_json()
    fields = record_fields(schema)
    config = ModelConfig(
        name="fraud",
        topics=["fraud.inferences"],
        schema="fraud_inference.avsc",
        encoding="json",
        event_id_field="event_id",
        timestamp_field="ts",
        features=SAMPLE_FEATURES,
        prediction_field="prediction",
        score_field="score",
        slice_fields=["device_type", "country"],
        metrics=MetricsSettings(crossings=[list(c) for c in crossings], **metrics),  # type: ignore[arg-type]
    )
    return ModelRuntime(
        config=config,
        reader_schema=schema,
        fields=fields,
        decoder=JsonDecoder(schema),
        numeric_features=[f for f in SAMPLE_FEATURES if fields[f].is_numeric],
        categorical_features=[f for f in SAMPLE_FEATURES if not fields[f].is_numeric],
    )


def labelled_frame(seed: int, n: int, *, android_misses: float = 0.0, new_android_misses: float = 0.0) -> pd.DataFrame:
    """``n`` simulated events with labels; the misses add fraud the model did not predict.

    ``android_misses``: on every android event (recall sinks for ``device_type=android``);
    ``new_android_misses``: on android events of new users only (one crossing).
    """
    sim = Simulator(seed=seed)
    frame = pd.DataFrame(sim.records(n, 0))
    rng = np.random.default_rng(seed + 1)
    missed = (frame["prediction"] == 0).to_numpy()
    android = (frame["device_type"] == "android").to_numpy()
    extra = android_misses * (android & missed) + new_android_misses * (android & missed & frame["is_new_user"])
    p = np.clip(frame["score"].to_numpy() + extra, 0, 1)
    frame["label"] = (rng.random(n) < p).astype(int)
    return frame


def rollup_of(model: ModelRuntime, frame: pd.DataFrame, start_ms: int = 0, end_ms: int = 0) -> Rollup:
    """The label counters of ``frame`` per live slice, as a rollup of ``[start_ms, end_ms)``."""
    counts = reference_rollup(learn_reference_performance(model, frame, "label"))
    return Rollup(dict(counts), start_ms, end_ms, 1)


class FixedReader:
    """A metrics reader whose rollups are given per range (no Redis: the evaluator's logic only)."""

    def __init__(self, rollups: dict[tuple[int, int], Rollup]) -> None:
        self.rollups = rollups
        self.asked: list[tuple[int, int]] = []

    def rollup(self, start_ms: int, end_ms: int) -> Rollup:
        self.asked.append((start_ms, end_ms))
        return self.rollups.get((start_ms, end_ms), Rollup({}, start_ms, end_ms, 0))
