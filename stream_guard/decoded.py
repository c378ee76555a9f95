"""What decoding one record gives: its values, its field issues, its writer schema's changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast, overload

from stream_guard.columnar import Columns
from stream_guard.record_checker import FieldIssue
from stream_guard.schemas import SchemaChange


@dataclass
class Decoded:
    """One decoded record: its values, its field issues, and the writer schema's changes."""

    values: dict[str, Any]
    issues: list[FieldIssue]
    schema_changes: tuple[SchemaChange, ...] = ()
    #: The registry id of the writer schema, or its GUID (a string) when the record named it so.
    writer_schema_id: int | str | None = None


class ColumnarRecord(Decoded):
    """A record of a batch read column-wise (:mod:`stream_guard.columnar`): no field issues,
    its writer's changes, and its dict of values built on first read."""

    def __init__(
        self, columns: Columns, row: int, changes: tuple[SchemaChange, ...], schema_id: int | str | None
    ) -> None:
        self._columns, self._row, self._values = columns, row, cast("dict[str, Any] | None", None)
        self.issues = []
        self.schema_changes, self.writer_schema_id = changes, schema_id

    @property
    def values(self) -> dict[str, Any]:
        if self._values is None:
            self._values = self._columns.record(self._row)
        return self._values

    @values.setter
    def values(self, values: dict[str, Any]) -> None:
        self._values = values


class ColumnarRecords(Sequence[Decoded]):
    """The records of a batch read column-wise, each a :class:`ColumnarRecord` made when asked for:
    none has field issues, all share their writer's changes."""

    def __init__(self, columns: Columns, changes: tuple[SchemaChange, ...], schema_id: int | str | None) -> None:
        self.columns, self.changes, self.schema_id = columns, changes, schema_id

    def __len__(self) -> int:
        return len(self.columns)

    @overload
    def __getitem__(self, index: int) -> Decoded: ...

    @overload
    def __getitem__(self, index: slice) -> list[Decoded]: ...

    def __getitem__(self, index: int | slice) -> Decoded | list[Decoded]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return ColumnarRecord(self.columns, index % len(self), self.changes, self.schema_id)


@dataclass
class ColumnarRead:
    """A batch decoded by columns: every payload a plain record of one writer schema."""

    columns: Columns
    records: ColumnarRecords
