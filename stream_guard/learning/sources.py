"""Reference data for ``stream-guard learn``: a file (e.g. the training data) or a warm-up of the stream."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from stream_guard.errors import ReferenceDataUnusableError
from stream_guard.learning.performance import label_column_of, learn_reference_performance
from stream_guard.learning.profiles import learn_profile, read_reference
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile
from stream_guard.progress import Progress
from stream_guard.settings import Config

log = structlog.get_logger("stream_guard.learning")


def profiled_fields(model: ModelRuntime) -> tuple[list[str], list[str]]:
    """(numeric, categorical) fields a profile covers: the features, the score and the prediction."""
    numeric = list(model.numeric_features)
    categorical = list(model.categorical_features)
    for name in (model.config.score_field, model.config.prediction_field):
        if name and name not in numeric and name not in categorical:
            (numeric if model.fields[name].is_numeric else categorical).append(name)
    return numeric, categorical


def frame_from_records(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Decoded events as a frame that keeps null (``None``) apart from NaN.

    ``pandas.DataFrame.from_records`` turns ``None`` in a numeric column into NaN, and the
    profile would then learn a NaN rate where the stream has nulls.
    """
    import pyarrow as pa

    return pa.Table.from_pylist(rows).to_pandas(types_mapper=pd.ArrowDtype)


@dataclass(frozen=True)
class NonNumericValues:
    """Values of a numeric column that are not numbers (``"n/a"``, ``"12,5"``...)."""

    column: str
    count: int
    examples: tuple[str, ...]

    def describe(self) -> str:
        shown = ", ".join(repr(e) for e in self.examples)
        return f"column {self.column!r}: {self.count} non-numeric values (e.g. {shown})"


def coerce_numeric_columns(frame: pd.DataFrame, numeric: list[str], max_examples: int = 3) -> list[NonNumericValues]:
    """Turn text columns of numeric features into numbers in place; report what was not a number.

    A non-numeric value becomes a null, which the profile would learn as part of the
    feature's null rate: the caller says so, or refuses (``learn --strict``).
    """
    found = []
    for name in numeric:
        column = frame[name]
        if not (pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)):
            continue
        converted = pd.to_numeric(column, errors="coerce")
        bad = converted.isna().to_numpy(dtype=bool) & column.notna().to_numpy(dtype=bool)
        if bad.any():
            examples = tuple(str(v) for v in pd.unique(column[bad])[:max_examples])
            found.append(NonNumericValues(name, int(bad.sum()), examples))
        frame[name] = converted
    return found


def learn_from_frame(
    model: ModelRuntime,
    frame: pd.DataFrame,
    source: str,
    *,
    strict: bool = False,
    label_column: str | None = None,
    progress: Progress | None = None,
) -> BaselineProfile:
    """Learn ``model``'s profile from a reference frame.

    Non-numeric values in numeric features are logged (column, count, examples) and
    learned as nulls; with ``strict`` they are a :class:`ReferenceDataUnusableError`.
    With a label column (``label_column``, else the model's ``labels.label_field`` when
    the frame has it) the profile also records the per-slice performance on the
    reference and its known biases (:func:`~stream_guard.learning.performance.learn_reference_performance`).
    """
    numeric, categorical = profiled_fields(model)
    missing = [c for c in numeric + categorical if c not in frame.columns]
    if missing:
        raise ReferenceDataUnusableError(f"reference data {source} lacks columns {missing} (model {model.name})")
    problems = coerce_numeric_columns(frame, numeric)
    if problems and strict:
        detail = "; ".join(p.describe() for p in problems)
        raise ReferenceDataUnusableError(f"reference data {source}: {detail} (learned as nulls without --strict)")
    for problem in problems:
        log.warning(f"non-numeric values learned as nulls: {problem.describe()}", source=source)
    label = label_column_of(model, frame, label_column)
    on_field = None
    if progress is not None:
        progress.stage(f"profiling {len(frame):,} rows", total=len(numeric) + len(categorical), unit="fields")
        on_field = progress.update
    try:
        profile = learn_profile(
            frame, model=model.name, numeric=numeric, categorical=categorical, source=source, on_field=on_field
        )
    except ValueError as exc:
        raise ReferenceDataUnusableError(f"cannot learn from {source}: {exc}") from None
    if label is not None:
        if progress is not None:
            progress.stage(f"performance per slice on label {label!r}")
        profile.performance = learn_reference_performance(model, frame, label, profile=profile)
    return profile


def learn_from_file(
    model: ModelRuntime,
    path: str | Path,
    *,
    strict: bool = False,
    label_column: str | None = None,
    progress: Progress | None = None,
) -> BaselineProfile:
    """Learn from a Parquet, CSV or JSON-lines file (e.g. the training data), with labels if it has them."""
    if progress is not None:
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        progress.stage(f"reading {path} ({size / 1e6:,.1f} MB)")
    try:
        frame = read_reference(path)
    except (ValueError, FileNotFoundError) as exc:
        raise ReferenceDataUnusableError(str(exc)) from None
    return learn_from_frame(model, frame, f"file:{path}", strict=strict, label_column=label_column, progress=progress)


def learn_from_topic(
    config: Config,
    model: ModelRuntime,
    *,
    events: int,
    since_ms: int | None = None,
    until_ms: int | None = None,
    timeout_s: float = 120.0,
    idle_s: float = 3.0,
    progress: Progress | None = None,
) -> BaselineProfile:
    """Learn from the first ``events`` decodable events of the model's topics.

    With ``since_ms``/``until_ms``, only events whose event time falls in that range
    count. Reads from the beginning of every partition without joining the workers'
    consumer group, and commits nothing; stops at ``events``, or when nothing arrived
    for ``idle_s`` (the end of the topic), or after ``timeout_s``.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "group.id": f"{config.kafka.group_id}-learn",
            "enable.auto.commit": False,
            **{k: v for k, v in config.kafka.consumer.items() if k.startswith(("security.", "sasl.", "ssl."))},
        }
    )
    try:
        partitions = []
        for topic in model.config.topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            if metadata.error is not None:
                raise ReferenceDataUnusableError(f"topic {topic}: {metadata.error.str()}")
            partitions += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        consumer.assign(partitions)
        if progress is not None:
            progress.stage(f"reading {', '.join(model.config.topics)}", total=events, unit="events")
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        last_message: float | None = None
        # The end of the topic is where nothing more arrives for idle_s: end offsets
        # reported by some Kafka-compatible brokers lag behind the last record.
        while len(rows) < events and time.monotonic() < deadline:
            if last_message is not None and time.monotonic() - last_message >= idle_s:
                break
            messages = [m for m in consumer.consume(1000, 0.5) if m.error() is None]
            if not messages:
                continue
            last_message = time.monotonic()
            batch, _dead = model.decode(messages)
            for i in batch.valid_rows.tolist():
                t = int(batch.event_time_ms[i])
                if (since_ms is None or t >= since_ms) and (until_ms is None or t < until_ms):
                    rows.append(batch.decoded[i].values)
            if progress is not None:
                progress.update(min(len(rows), events))
    finally:
        consumer.close()
    if not rows:
        raise ReferenceDataUnusableError(f"no decodable events found on {model.config.topics} to learn from")
    rows = rows[:events]
    log.info("learning from topic", model=model.name, events=len(rows))
    frame = frame_from_records(rows)
    window = "" if since_ms is None and until_ms is None else f" in [{since_ms}, {until_ms})"
    source = f"topic:{','.join(model.config.topics)} first {len(rows)} events{window}"
    return learn_from_frame(model, frame, source, progress=progress)
