"""The clean events a replay starts from, and the stream the worker would receive from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from stream_guard.batch import EventBatch, to_epoch_ms
from stream_guard.decoding import Decoded, RecordChecker
from stream_guard.errors import EvaluationInputError
from stream_guard.learning import read_reference
from stream_guard.model import ModelRuntime

#: 2023-11-14T22:00:00Z, a whole hour: synthetic event times start here.
SYNTHETIC_START_MS = 1_699_999_200_000


@dataclass
class Events:
    """Clean events of one model: a frame to learn from, and the same rows as records."""

    frame: pd.DataFrame
    records: list[dict[str, Any]]
    source: str


def simulated_events(n: int, *, seed: int, events_per_second: float) -> Events:
    """``n`` clean events of the sample fraud model, ``events_per_second`` apart in event time."""
    from stream_guard.tools.simulator import Simulator

    records = Simulator(encoding="json", seed=seed).records(n, SYNTHETIC_START_MS, 1000.0 / events_per_second)
    # Arrow keeps None as null and NaN as NaN; a NumPy frame would turn an int column's nulls into NaN.
    frame = pa.Table.from_pylist(records).to_pandas(types_mapper=pd.ArrowDtype)
    return Events(frame, records, f"simulator seed {seed}")


def file_events(path: str | Path, model: ModelRuntime) -> Events:
    """The rows of a Parquet, CSV or JSON-lines file, in the types the model's schema declares.

    Columns that are no field of the schema (labels, row ids) are dropped. A timestamp
    written as ISO-8601 text is parsed, and an int field stored as whole floats (a
    column with missing cells, written by pandas) becomes ints again: the live stream
    carries ints there, and the decoder would report floats as type mismatches.
    """
    try:
        frame = read_reference(path)
    except (ValueError, FileNotFoundError) as exc:
        raise EvaluationInputError(str(exc)) from None
    frame = frame[[c for c in frame.columns if c in model.fields]].copy()
    stamp = model.config.timestamp_field
    if stamp in frame.columns and pd.api.types.is_string_dtype(frame[stamp].dtype):
        try:
            frame[stamp] = pd.to_datetime(frame[stamp], utc=True, format="ISO8601")
        except ValueError as exc:
            raise EvaluationInputError(f"{path}: {stamp} is neither a number nor an ISO-8601 time: {exc}") from None
    for name in frame.columns:
        column = frame[name]
        if model.fields[name].base in ("int", "long") and pd.api.types.is_float_dtype(column.dtype):
            values = column.dropna()
            if bool((values == values.round()).all()):
                frame[name] = column.astype(pd.ArrowDtype(pa.int64()))
    records = pa.Table.from_pandas(frame, preserve_index=False).to_pylist()
    return Events(frame, records, f"file:{path}")


def _epoch_ms(value: Any) -> int | None:
    stamp = to_epoch_ms(value)
    if stamp is None and isinstance(value, str):
        try:
            stamp = to_epoch_ms(datetime.fromisoformat(value))
        except ValueError:
            return None
    return stamp


def event_times(records: Sequence[dict[str, Any]], field_name: str, events_per_second: float) -> np.ndarray:
    """Event time of every record: its ``field_name``, else synthetic at ``events_per_second``.

    Records without a usable stamp among stamped ones take the previous record's stamp.
    """
    stamps = [_epoch_ms(r.get(field_name)) for r in records] if field_name else []
    if not any(s is not None for s in stamps):
        step = 1000.0 / events_per_second
        return (SYNTHETIC_START_MS + np.arange(len(records)) * step).astype(np.int64)
    last = next(s for s in stamps if s is not None)
    out = np.empty(len(records), dtype=np.int64)
    for i, stamp in enumerate(stamps):
        last = stamp if stamp is not None else last
        out[i] = last
    return out


class Stream:
    """The replayed events as the worker receives them: decoded, timed, partitioned."""

    def __init__(
        self,
        model: ModelRuntime,
        records: list[dict[str, Any]],
        *,
        events_per_second: float = 100.0,
        partitions: int = 3,
    ) -> None:
        if not records:
            raise EvaluationInputError("no events to replay")
        self.model = model
        self.records = records
        self.checker = RecordChecker(model.reader_schema, report_unexpected=model.config.report_unexpected_fields)
        self.decoded = [self.decode(r) for r in records]
        self.event_time_ms = event_times(records, model.config.timestamp_field, events_per_second)
        id_field = model.config.event_id_field
        self.event_ids = [None if not id_field or r.get(id_field) is None else str(r[id_field]) for r in records]
        index = np.arange(len(records), dtype=np.int64)
        self.partitions, self.offsets = index % partitions, index // partitions
        self.topic = model.config.topics[0]

    def __len__(self) -> int:
        return len(self.records)

    def decode(self, record: dict[str, Any]) -> Decoded:
        """``record`` after the decoder's field checks, as a JSON payload of it would decode."""
        values, issues = self.checker.check(record)
        return Decoded(values, issues)

    def batch(self, start: int, stop: int, decoded: Sequence[Decoded] | None = None, offset: int = 0) -> EventBatch:
        """Rows ``[start, stop)`` as one micro-batch; ``decoded[i - offset]`` replaces row i's values."""
        n = stop - start
        return EventBatch(
            model=self.model.name,
            decoded=self.decoded[start:stop] if decoded is None else list(decoded[start - offset : stop - offset]),
            topics=[self.topic] * n,
            partitions=self.partitions[start:stop],
            offsets=self.offsets[start:stop],
            event_time_ms=self.event_time_ms[start:stop],
            event_ids=self.event_ids[start:stop],
            failed=np.zeros(n, dtype=bool),
        )
