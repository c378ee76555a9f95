"""A micro-batch of decoded events of one model, with the columns the checks read."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from stream_guard.columnar import Columns
from stream_guard.decoding import Decoded
from stream_guard.errors import EventTimeRangeError


@dataclass
class EventBatch:
    """Decoded events of one model from one micro-batch.

    Row ``i`` of every array describes the same event. ``event_time_ms`` is the
    event's own timestamp field when the model declares one and the event carries
    it, else the Kafka message timestamp.
    """

    model: str
    decoded: Sequence[Decoded]
    topics: list[str]
    partitions: np.ndarray
    offsets: np.ndarray
    event_time_ms: np.ndarray
    event_ids: list[str | None]
    #: Rows whose payload could not be decoded (dead-lettered): no values, no feature checks.
    failed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: Every row's values by field, where the batch was read by columns (then no row failed).
    columns: Columns | None = None
    _columns: dict[str, list[Any]] = field(default_factory=dict, repr=False)
    _nulls: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _numbers: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _objects: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _types: dict[str, frozenset[type]] = field(default_factory=dict, repr=False)
    _factorized: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _transposed: bool = field(default=False, repr=False)

    def __len__(self) -> int:
        return len(self.decoded)

    @property
    def valid_rows(self) -> np.ndarray:
        """Indices of the rows that decoded."""
        return np.flatnonzero(~self.failed)

    def take(self, rows: np.ndarray) -> EventBatch:
        """The batch of these rows only."""
        picked = rows.tolist()
        return EventBatch(
            model=self.model,
            decoded=[self.decoded[r] for r in picked],
            topics=[self.topics[r] for r in picked],
            partitions=self.partitions[rows],
            offsets=self.offsets[rows],
            event_time_ms=self.event_time_ms[rows],
            event_ids=[self.event_ids[r] for r in picked],
            failed=self.failed[rows],
            columns=None if self.columns is None else self.columns.take(rows),
        )

    def with_failed(self, rows: Iterable[int]) -> EventBatch:
        """The batch with these rows marked failed: they count in their window, in no feature check."""
        failed = self.failed.copy()
        decoded, event_ids = list(self.decoded), list(self.event_ids)
        for r in rows:
            failed[r], decoded[r], event_ids[r] = True, Decoded({}, []), None
        return dataclasses.replace(
            self,
            decoded=decoded,
            event_ids=event_ids,
            failed=failed,
            columns=None,
            _columns={},
            _nulls={},
            _numbers={},
            _objects={},
            _types={},
            _factorized={},
            _transposed=False,
        )

    def column(self, name: str) -> list[Any]:
        """The values of one field, ``None`` where absent."""
        if self.columns is not None:
            return self.columns.values(name) if name in self.columns else [None] * len(self)
        if not self._transposed:
            self._columns = {**_transpose([d.values for d in self.decoded]), **self._columns}
            self._transposed = True
        values = self._columns.get(name)
        if values is None:
            values = self._columns[name] = [d.values.get(name) for d in self.decoded]
        return values

    def values_at(self, name: str, rows: np.ndarray) -> list[Any]:
        """The values of one field at ``rows`` (all of them when ``rows`` are every row, in order)."""
        column = self.column(name)
        if len(rows) == len(column):
            return column
        return [column[r] for r in rows.tolist()]

    def objects(self, name: str) -> np.ndarray:
        """The values of one field as an object array (cached per batch; do not modify)."""
        values = self._objects.get(name)
        if values is None:
            if self.columns is not None and name in self.columns:
                values = self._objects[name] = self.columns.objects(name)
            else:
                values = self._objects[name] = np.fromiter(self.column(name), dtype=object, count=len(self))
        return values

    def value_types(self, name: str) -> frozenset[type]:
        """The types of one field's values, ``NoneType`` among them where null or absent (cached per batch)."""
        kinds = self._types.get(name)
        if kinds is None:
            if self.columns is not None and name in self.columns:
                kinds = self._types[name] = self.columns.value_types(name)
            else:
                kinds = self._types[name] = frozenset(map(type, self.column(name)))
        return kinds

    def factorized(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``pandas.factorize`` of one field's values: codes (-1 where null) and the distinct values
        in order of first appearance (cached per batch; do not modify)."""
        cached = self._factorized.get(name)
        if cached is None and self.columns is not None and name in self.columns:
            cached = self.columns.factorized(name)
        if cached is None:
            codes, uniques = pd.factorize(self.objects(name))
            cached = self._factorized[name] = (codes, np.asarray(uniques, dtype=object))
        return cached

    def null_mask(self, name: str) -> np.ndarray:
        """Where a field is null or absent (cached per batch)."""
        mask = self._nulls.get(name)
        if mask is None:
            if self.columns is not None and name in self.columns:
                mask = self._nulls[name] = self.columns.null_mask(name)
            elif _NONE not in self.value_types(name):
                mask = self._nulls[name] = np.zeros(len(self), dtype=bool)
            else:
                mask = self._nulls[name] = np.asarray(self.objects(name) == None, dtype=bool)  # noqa: E711 -- elementwise
        return mask

    def numeric(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A numeric field as float64 (NaN where null) and its null mask (cached per batch; do not modify)."""
        cached = self._numbers.get(name)
        if cached is None and self.columns is not None and name in self.columns:
            numbers = self.columns.numeric(name)
            if numbers is not None:
                cached = self._numbers[name] = (numbers, self.null_mask(name))
        if cached is None:
            values = self.column(name)
            null = self.null_mask(name)
            if self.value_types(name) <= {int, float}:
                numbers = np.array(values, dtype=np.float64).reshape(len(values))
            else:
                numbers = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
            cached = self._numbers[name] = (numbers, null)
        return cached


def _transpose(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The columns of the fields of the first non-empty record, ``None`` where absent.

    The records that hold exactly those fields in that order (one writer schema's, as
    fastavro decodes them) are transposed at once; the others (failed rows, records of
    another writer schema) are read field by field.
    """
    first = next((r for r in records if r), None)
    if first is None:
        return {}
    names = tuple(first)
    if len(names) > 1 and all(len(r) == len(names) for r in records):
        try:  # every record holds these fields (in any order): one pass of itemgetter
            columns = zip(*map(itemgetter(*names), records), strict=True)
            return {name: list(column) for name, column in zip(names, columns, strict=True)}
        except KeyError:
            pass  # records of another writer schema, as many fields: read them as below
    alike = [i for i, r in enumerate(records) if len(r) == len(names) and tuple(r) == names]
    columns = zip(*[tuple(records[i].values()) for i in alike], strict=True)
    if len(alike) == len(records):
        return {name: list(column) for name, column in zip(names, columns, strict=True)}
    others = sorted(set(range(len(records))) - set(alike))
    out: dict[str, list[Any]] = {}
    for name, column in zip(names, columns, strict=True):
        values: list[Any] = [None] * len(records)
        for i, value in zip(alike, column, strict=True):
            values[i] = value
        for i in others:
            values[i] = records[i].get(name)
        out[name] = values
    return out


_NONE = type(None)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def to_epoch_ms(value: Any) -> int | None:
    """An event timestamp as epoch milliseconds: ints are taken as ms, datetimes converted."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and np.isfinite(value):
        return int(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        # Integer arithmetic on the timedelta: float seconds would lose the last millisecond.
        return (aware - _EPOCH) // timedelta(milliseconds=1)
    return None


def event_time_of(stamp: int | None, fallback_ms: int) -> int:
    """The event time of a record: its own stamp, else ``fallback_ms`` (the Kafka timestamp)."""
    if stamp is None:
        return fallback_ms
    if not _INT64_MIN <= stamp <= _INT64_MAX:
        raise EventTimeRangeError(f"event time {stamp} is beyond int64 epoch milliseconds")
    return stamp
