"""Avro records of one writer schema read a batch at a time, field by field, into numpy columns.

fastavro reads a record into a dict; a batch of them is then pulled apart again into the
columns the checks read. For a flat record (primitive fields, enums, unions of null and
one of those), :class:`ColumnarReader` reads a micro-batch straight into columns: the
payloads are joined into one byte array, and every field is read at once for all rows,
a position per row moved on by the field's width (varints, lengths and union branches
worked out with numpy). Strings are decoded once per distinct value: each row's bytes
are hashed into a 64-bit key, factorised, and then compared byte for byte with the row
that stands for their key, so a collision can only send the field to the row-by-row
decode, never mix two values.

It gives what fastavro gives or nothing: a batch in which any row is not plain (a
varint over 9 bytes, a boolean byte other than 0 or 1, a union branch or enum index out
of range, invalid UTF-8, bytes left over or missing at the end) reads as ``None``, and
the caller decodes it record by record, with the error each bad record earns. Schemas
with logical types fastavro converts (decimals, UUIDs) are not read here; the decoder
hands time types over as plain ints (:func:`~stream_guard.decoding.plain_time_types`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fastavro.read
import numpy as np
import pandas as pd

#: Base types read column-wise; the width of the fixed ones.
_FIXED = {"double": 8, "float": 4}
_VARINT = frozenset({"int", "long"})
_PRIMITIVE = frozenset({"null", "boolean", "string", "enum"}) | _VARINT | set(_FIXED)
#: Distinct strings are hashed from at most this many bytes; longer ones are decoded row by row.
_HASHED_BYTES = 32
_K = np.arange(10, dtype=np.int64)
_SHIFTS = (7 * _K).astype(np.uint64)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str
    #: The union branch that holds null (0 or 1), or -1 for a field that is not a union.
    null_branch: int = -1
    symbols: tuple[str, ...] = ()
    #: An enum's full name (resolution matches names as well as symbols).
    type_name: str = ""


class ColumnarReader:
    """Reads micro-batches of one flat writer schema (parsed by fastavro) into :class:`Columns`."""

    def __init__(self, fields: Sequence[_Field], projection: Sequence[tuple[str, _Source]] | None = None) -> None:
        self._fields = tuple(fields)
        self._projection = None if projection is None else tuple(projection)
        self.names = tuple(f.name for f in fields) if projection is None else tuple(name for name, _ in projection)

    @classmethod
    def of(cls, schema: Any, reader: Any = None) -> ColumnarReader | None:
        """The reader of ``schema`` (resolved to ``reader``, a different reader schema, as fastavro
        resolves it), or None where either is not a flat record of such fields, or the pair needs
        more than dropping fields, adding defaults and promoting ints to longs and numbers to floats."""
        fields = _fields_of(schema)
        if fields is None:
            return None
        if reader is None:
            return cls(fields)
        projection = _projection(fields, schema.get("name"), reader)
        return None if projection is None else cls(fields, projection)

    def read(self, payloads: Sequence[bytes], offset: int) -> Columns | None:
        """The columns of ``payloads`` (each one record after ``offset`` prefix bytes), or None
        where a row is not plain (see the module's docstring)."""
        n = len(payloads)
        if n == 0:
            return None
        raw = b"".join(payloads)
        ends = np.cumsum(np.fromiter(map(len, payloads), dtype=np.int64, count=n))
        pos = np.empty(n, dtype=np.int64)
        pos[0], pos[1:] = offset, ends[:-1] + offset
        if (pos > ends).any():
            return None
        # Padding: a varint or a fixed field read past the end of a short last record stays in bounds.
        buf = np.frombuffer(raw + bytes(_HASHED_BYTES + 16), dtype=np.uint8)
        reading = _Reading(raw, buf, ends)
        data: dict[str, _Column] = {}
        for spec in self._fields:
            column = reading.field(spec, pos)
            if column is None or (pos > ends).any():
                return None
            data[spec.name] = column
        if not np.array_equal(pos, ends):
            return None
        if self._projection is not None:
            data = {name: source.column(data, n) for name, source in self._projection}
        return Columns(n, self.names, data)


def _fields_of(schema: Any) -> list[_Field] | None:
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    named: dict[str, Any] = {}  # enums by full and short name, as later fields may refer to them
    fields = [_field_of(f.get("name"), f.get("type"), named) for f in schema.get("fields", [])]
    if not fields or any(f is None for f in fields) or any(f.get("aliases") for f in schema["fields"]):
        return None
    return [f for f in fields if f is not None]


#: Writer kind -> the reader kinds Avro resolves it to (ints and longs to floats converted).
_PROMOTIONS = {"int": {"long", "float", "double"}, "long": {"float", "double"}, "float": {"double"}}
#: Reader kinds a default of each Python type fills, as given in the schema.
_DEFAULT_KINDS = {bool: {"boolean"}, int: {"int", "long"}, float: {"float", "double"}, str: {"string"}}


@dataclass(frozen=True)
class _Source:
    """Where a reader field's values come from: a writer field's column (turned to floats), or a default."""

    writer: str | None
    to_float: bool = False
    default: Any = None

    def column(self, data: dict[str, _Column], n: int) -> _Column:
        if self.writer is not None:
            column = data[self.writer]
            if self.to_float and isinstance(column, _Numbers):
                return _Numbers(column.values.astype(np.float64), column.nulls, float)
            return column
        value = self.default
        if value is None:
            return _Numbers(np.zeros(n), np.ones(n, dtype=bool), type(None))
        if isinstance(value, str):
            return _Strings(np.zeros(n, dtype=np.int64), np.array([value], dtype=object))
        return _Numbers(np.full(n, value), None, type(value))


def _projection(fields: Sequence[_Field], writer_name: Any, reader: Any) -> list[tuple[str, _Source]] | None:
    """Each reader field's source among the writer's ``fields``, or None where one has none here."""
    wanted = _fields_of(reader)
    if wanted is None or writer_name != reader.get("name"):  # fastavro resolves records of one name only
        return None
    given = {f.name: f for f in fields}
    defaults = {f["name"]: f for f in reader["fields"]}
    out: list[tuple[str, _Source]] = []
    # fastavro's order: the writer's fields the reader has, in the writer's order, then the defaults.
    ranks = {f.name: i for i, f in enumerate(fields)}
    wanted.sort(key=lambda spec: ranks.get(spec.name, len(ranks)))
    for spec in wanted:
        writer = given.get(spec.name)
        if writer is None:
            field = defaults[spec.name]
            if "default" not in field or not _default_fits(spec, field["default"]):
                return None
            out.append((spec.name, _Source(None, default=field["default"])))
        elif writer.null_branch >= 0 and spec.null_branch < 0:
            return None  # a null the reader cannot hold: fastavro refuses that record
        elif writer.kind == spec.kind and (writer.symbols, writer.type_name) == (spec.symbols, spec.type_name):
            out.append((spec.name, _Source(writer.name)))
        elif spec.kind in _PROMOTIONS.get(writer.kind, ()):
            out.append((spec.name, _Source(writer.name, to_float=spec.kind in ("float", "double"))))
        else:
            return None
    return out


def _default_fits(spec: _Field, value: Any) -> bool:
    if value is None:
        return spec.null_branch >= 0 or spec.kind == "null"
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return False
    return spec.kind in _DEFAULT_KINDS.get(type(value), ())


def _field_of(name: Any, kind: Any, named: dict[str, Any]) -> _Field | None:
    if not isinstance(name, str):
        return None
    if isinstance(kind, list):
        kind = [named.get(k, k) if isinstance(k, str) else k for k in kind]
    elif isinstance(kind, str):
        kind = named.get(kind, kind)
    null_branch = -1
    if isinstance(kind, list):
        if len(kind) != 2 or "null" not in kind or kind[0] == kind[1]:
            return None
        null_branch = kind.index("null")
        kind = kind[1 - null_branch]
    logical, symbols, full = None, (), ""
    if isinstance(kind, dict):
        logical = kind.get("logicalType")
        if kind.get("type") == "enum":
            symbols = tuple(kind.get("symbols", ()))
            full = str(kind.get("name"))
            named[full] = named[full.rsplit(".", 1)[-1]] = kind
        kind = kind.get("type")
    if kind not in _PRIMITIVE or (kind == "null" and null_branch >= 0):
        return None
    if logical is not None and f"{kind}-{logical}" in fastavro.read.LOGICAL_READERS:
        return None  # fastavro converts it (a decimal, a UUID...); time types come here as plain ints
    return _Field(name, kind, null_branch, symbols, full if symbols else "")


class _Reading:
    """The joined payloads of one batch, read field by field (positions moved on in place)."""

    def __init__(self, raw: bytes, buf: np.ndarray, ends: np.ndarray) -> None:
        self.raw, self.buf, self.ends = raw, buf, ends

    def field(self, spec: _Field, pos: np.ndarray) -> _Column | None:
        rows: np.ndarray | None = None  # the rows that hold a value (None: all)
        if spec.null_branch >= 0:
            branch = self.varint(pos, np.arange(len(pos)))
            if branch is None or not ((branch == 0) | (branch == 1)).all():
                return None
            rows = np.flatnonzero(branch != spec.null_branch)
        at = np.arange(len(pos)) if rows is None else rows
        null = None if rows is None else np.ones(len(pos), dtype=bool)
        if null is not None:
            null[at] = False
        if spec.kind == "null":
            return _Numbers(np.zeros(len(pos)), np.ones(len(pos), dtype=bool), type(None))
        if spec.kind == "string":
            return self.strings(pos, at, null)
        if spec.kind in _FIXED:
            width = _FIXED[spec.kind]
            gathered = self.buf[pos[at, None] + _K[:width]]
            numbers = np.ascontiguousarray(gathered).view("<f8" if width == 8 else "<f4")[:, 0]
            pos[at] += width
            with np.errstate(invalid="ignore"):  # a signalling NaN stays a NaN, as fastavro reads it
                wide = numbers.astype(np.float64)
            return _Numbers(_spread(wide, at, len(pos), np.nan), null, float)
        if spec.kind == "boolean":
            byte = self.buf[pos[at]]
            if (byte > 1).any():
                return None
            pos[at] += 1
            return _Numbers(_spread(byte.astype(bool), at, len(pos), False), null, bool)
        values = self.varint(pos, at)
        if values is None:
            return None
        if spec.kind == "enum":
            if ((values < 0) | (values >= len(spec.symbols))).any():
                return None
            codes = np.full(len(pos), -1, dtype=np.int64)
            codes[at] = values
            return _Strings.of_codes(codes, np.array(spec.symbols, dtype=object))
        full = _spread(values, at, len(pos), 0)
        return _Numbers(full, null, int)

    def varint(self, pos: np.ndarray, at: np.ndarray) -> np.ndarray | None:
        """Zigzag varints at ``pos[at]`` (moved past them), or None if one is longer than 9 bytes."""
        start = pos[at]
        first = self.buf[start]
        if (first < 0x80).all():  # one byte each: the common case of small ints, lengths and branches
            pos[at] = start + 1
            small = first.astype(np.int64)
            values: np.ndarray = (small >> 1) ^ -(small & 1)
            return values
        b = self.buf[start[:, None] + _K[:9]]
        last = b < 0x80
        if not last.any(axis=1).all():
            return None
        length = np.argmax(last, axis=1) + 1
        kept = _K[:9] < length[:, None]
        u = np.bitwise_or.reduce(((b & 0x7F).astype(np.uint64) << _SHIFTS[:9]) * kept, axis=1)
        pos[at] = start + length
        decoded: np.ndarray = (u >> np.uint64(1)).astype(np.int64) ^ -(u & np.uint64(1)).astype(np.int64)
        return decoded

    def strings(self, pos: np.ndarray, at: np.ndarray, null: np.ndarray | None) -> _Column | None:
        lengths = self.varint(pos, at)
        if lengths is None or (lengths < 0).any():
            return None
        start = pos[at]
        stop = start + lengths
        if (stop > self.ends[at]).any():
            return None
        pos[at] = stop
        n = len(pos)
        if len(at) and int(lengths.max()) <= _HASHED_BYTES:
            codes = self.distinct(start, lengths)
            if codes is not None:
                local, rep = codes
                try:
                    texts = self.texts(start[rep], stop[rep])
                except UnicodeDecodeError:
                    return None
                full = np.full(n, -1, dtype=np.int64)
                full[at] = local
                return _Strings(full, np.fromiter(texts, dtype=object, count=len(texts)))
        try:
            texts = self.texts(start, stop)
        except UnicodeDecodeError:
            return None
        objects = np.full(n, None, dtype=object)
        objects[at] = np.fromiter(texts, dtype=object, count=len(texts))
        return _Strings(objects=objects)

    def texts(self, start: np.ndarray, stop: np.ndarray) -> list[str]:
        raw = self.raw
        return [raw[s:e].decode() for s, e in zip(start.tolist(), stop.tolist(), strict=True)]

    def distinct(self, start: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Codes of the rows' bytes in order of first appearance, and a row of each code; None on a
        hash collision."""
        width = max(8, -(-int(lengths.max()) // 8) * 8)
        offsets = np.arange(width)
        matrix = self.buf[start[:, None] + offsets]
        matrix *= offsets < lengths[:, None]  # the bytes past each string's end read as zeros
        words = matrix.view(np.uint64)
        key = lengths.astype(np.uint64)
        for j in range(words.shape[1]):
            key = (key * _GOLDEN) ^ words[:, j]
        codes = pd.factorize(key)[0].astype(np.int64)
        # Codes are numbered by first appearance: a code's first row is where it exceeds all before it.
        seen = np.maximum.accumulate(codes)
        rep = np.flatnonzero(np.concatenate(([True], codes[1:] > seen[:-1])))
        of_row = rep[codes]
        if not ((words == words[of_row]).all(axis=1) & (lengths == lengths[of_row])).all():
            return None
        return codes, rep


def _spread(values: np.ndarray, at: np.ndarray, n: int, fill: Any) -> np.ndarray:
    """``values`` at rows ``at`` of ``n``, ``fill`` elsewhere."""
    if len(at) == n:
        return values
    out = np.full(n, fill, dtype=values.dtype)
    out[at] = values
    return out


class _Column:
    """One field's values over a batch; the accessors :class:`~stream_guard.batch.EventBatch` serves."""

    def objects(self) -> np.ndarray:
        raise NotImplementedError

    def null(self) -> np.ndarray:
        raise NotImplementedError

    def types(self) -> frozenset[type]:
        raise NotImplementedError

    def numeric(self) -> np.ndarray | None:
        """float64 values (NaN where null) of a column of numbers, else None."""
        return None

    def factorized(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``pandas.factorize`` of a column of strings, else None."""
        return None

    def epoch_ms(self) -> np.ndarray | None:
        """Epoch milliseconds of a long or timestamp column, else None."""
        return None

    def take(self, rows: np.ndarray) -> _Column:
        raise NotImplementedError


@dataclass
class _Numbers(_Column):
    values: np.ndarray
    nulls: np.ndarray | None
    kind: type

    def objects(self) -> np.ndarray:
        out = np.empty(len(self.values), dtype=object)
        if self.kind is type(None):
            return out
        out[:] = self.values.tolist()
        if self.nulls is not None:
            out[self.nulls] = None
        return out

    def null(self) -> np.ndarray:
        return np.zeros(len(self.values), dtype=bool) if self.nulls is None else self.nulls

    def types(self) -> frozenset[type]:
        if self.kind is type(None):
            return frozenset({self.kind}) if len(self.values) else frozenset()
        kinds = {self.kind} if self.nulls is None or not self.nulls.all() else set()
        if self.nulls is not None and self.nulls.any():
            kinds.add(type(None))
        return frozenset(kinds)

    def numeric(self) -> np.ndarray | None:
        if self.kind is type(None):
            return np.full(len(self.values), np.nan)
        numbers = self.values.astype(np.float64)
        if self.nulls is not None:
            numbers[self.nulls] = np.nan
        return numbers

    def epoch_ms(self) -> np.ndarray | None:
        return self.values if self.kind is int else None

    def take(self, rows: np.ndarray) -> _Column:
        return _Numbers(self.values[rows], None if self.nulls is None else self.nulls[rows], self.kind)


class _Strings(_Column):
    """Strings (None where null): codes into distinct values, or the values row by row."""

    def __init__(
        self, codes: np.ndarray | None = None, uniques: np.ndarray | None = None, objects: np.ndarray | None = None
    ) -> None:
        self.codes, self.uniques, self._objects = codes, uniques, objects

    @classmethod
    def of_codes(cls, codes: np.ndarray, values: np.ndarray) -> _Strings:
        """Codes into ``values`` (-1 where null), renumbered in order of first appearance."""
        present = codes[codes >= 0]
        if present.size == 0:
            return cls(codes, np.empty(0, dtype=object))
        used, first = np.unique(present, return_index=True)
        order = used[np.argsort(first, kind="stable")]
        renumber = np.full(len(values) + 1, -1, dtype=np.int64)  # the last slot: -1 stays -1
        renumber[order] = np.arange(len(order))
        return cls(renumber[codes], values[order])

    def objects(self) -> np.ndarray:
        if self._objects is None:
            assert self.codes is not None and self.uniques is not None
            with_none = np.empty(len(self.uniques) + 1, dtype=object)
            with_none[:-1] = self.uniques
            self._objects = with_none[self.codes]
        return self._objects

    def null(self) -> np.ndarray:
        if self.codes is not None:
            return np.asarray(self.codes < 0)
        return np.asarray(self.objects() == None, dtype=bool)  # noqa: E711 -- elementwise

    def types(self) -> frozenset[type]:
        null = self.null()
        kinds: set[type] = set()
        if not null.all():
            kinds.add(str)
        if null.any():
            kinds.add(type(None))
        return frozenset(kinds)

    def factorized(self) -> tuple[np.ndarray, np.ndarray]:
        if self.codes is None or self.uniques is None:
            codes, uniques = pd.factorize(self.objects())
            self.codes, self.uniques = codes.astype(np.int64), np.asarray(uniques, dtype=object)
        return self.codes, self.uniques

    def take(self, rows: np.ndarray) -> _Column:
        return _Strings(objects=self.objects()[rows])


class Columns:
    """The fields of a batch's records, one column each, in the writer's field order."""

    def __init__(self, n: int, names: tuple[str, ...], data: dict[str, _Column]) -> None:
        self.n, self.names, self._data = n, names, data
        self._lists: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return self.n

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def values(self, name: str) -> list[Any]:
        """The values of a field as fastavro gives them (cached; do not modify)."""
        values = self._lists.get(name)
        if values is None:
            values = self._lists[name] = self._data[name].objects().tolist()
        return values

    def objects(self, name: str) -> np.ndarray:
        return self._data[name].objects()

    def null_mask(self, name: str) -> np.ndarray:
        return self._data[name].null()

    def value_types(self, name: str) -> frozenset[type]:
        return self._data[name].types()

    def numeric(self, name: str) -> np.ndarray | None:
        return self._data[name].numeric()

    def factorized(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        return self._data[name].factorized()

    def epoch_ms(self, name: str) -> np.ndarray | None:
        return self._data[name].epoch_ms()

    def record(self, row: int) -> dict[str, Any]:
        """Row ``row`` as the dict fastavro decodes."""
        return {name: self.values(name)[row] for name in self.names}

    def take(self, rows: np.ndarray) -> Columns:
        return Columns(len(rows), self.names, {name: c.take(rows) for name, c in self._data.items()})
