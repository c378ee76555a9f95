"""Avro schemas: loading, field typing, and the comparison that reports schema changes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from stream_guard.errors import SchemaLoadError

NUMERIC_TYPES = frozenset({"int", "long", "float", "double", "boolean"})
_NO_DEFAULT = object()


def load_schema_file(path: str | Path) -> dict[str, Any]:
    """Read and parse one ``.avsc`` file; errors name the file and the problem."""
    try:
        return _parse_object(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise SchemaLoadError(f"schema file {path} not found") from None
    except json.JSONDecodeError as exc:
        raise SchemaLoadError(f"schema file {path} is not JSON: {exc}") from None
    except SchemaLoadError as exc:
        raise SchemaLoadError(f"schema file {path}: {exc}") from None


def parse_schema(schema: Any) -> dict[str, Any]:
    """Parse an Avro schema (a dict or its JSON text) into fastavro's parsed form."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaLoadError(f"schema is not JSON: {exc}") from None
    return _parse_object(schema)


def _parse_object(schema: Any) -> dict[str, Any]:
    try:
        parsed = fastavro.parse_schema(schema)
    except Exception as exc:  # noqa: BLE001 -- fastavro raises several unrelated types for bad schemas
        raise SchemaLoadError(f"invalid Avro schema: {exc}") from None
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise SchemaLoadError("the top-level schema must be an Avro record")
    return parsed


def fingerprint(schema: dict[str, Any]) -> str:
    """Parsing Canonical Form: equal for schemas that decode the same bytes identically."""
    return to_parsing_canonical_form(schema)


@dataclass(frozen=True)
class FieldType:
    """The shape of one top-level field, reduced to what validation needs."""

    name: str
    base: str  # "double", "string", "enum", "record"... (the non-null branch of a union)
    nullable: bool
    default: Any = _NO_DEFAULT
    symbols: tuple[str, ...] = ()

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    @property
    def is_numeric(self) -> bool:
        return self.base in NUMERIC_TYPES

    def describe(self) -> str:
        text = f"{'null|' if self.nullable else ''}{self.base}"
        return text + (f" (default {json.dumps(self.default)})" if self.has_default else "")


def record_fields(schema: dict[str, Any]) -> dict[str, FieldType]:
    """Top-level fields of a parsed record schema, by name."""
    return {f["name"]: _field_type(f) for f in schema["fields"]}


def _field_type(avro_field: dict[str, Any]) -> FieldType:
    avro_type = avro_field["type"]
    branches = avro_type if isinstance(avro_type, list) else [avro_type]
    nullable = any(_type_name(b) == "null" for b in branches)
    non_null = [b for b in branches if _type_name(b) != "null"]
    base = "union" if len(non_null) > 1 else (_type_name(non_null[0]) if non_null else "null")
    symbols = tuple(non_null[0].get("symbols", ())) if len(non_null) == 1 and isinstance(non_null[0], dict) else ()
    return FieldType(
        name=avro_field["name"],
        base=base,
        nullable=nullable,
        default=avro_field.get("default", _NO_DEFAULT),
        symbols=symbols,
    )


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, dict):
        # Named types carry their kind in "type"; logical types wrap a primitive.
        return str(avro_type["type"])
    name = str(avro_type)
    return name.rsplit(".", 1)[-1] if "." in name else name


@dataclass(frozen=True)
class SchemaChange:
    """One difference between the expected (reader) schema and a producer's writer schema."""

    change: str  # "field_removed" | "field_added" | "type_changed" | "default_changed"
    field: str
    expected: str
    observed: str


def diff_schemas(expected: dict[str, Any], observed: dict[str, Any]) -> list[SchemaChange]:
    """Compare the top-level fields of two record schemas.

    Reports fields the writer dropped or added, fields whose type or nullability
    changed, and changed defaults. Order and doc changes are not reported: they do
    not change what the model receives.
    """
    return list(_diff_cached(json.dumps(expected, sort_keys=True), json.dumps(observed, sort_keys=True)))


@cache
def _diff_cached(expected_json: str, observed_json: str) -> tuple[SchemaChange, ...]:
    expected = record_fields(json.loads(expected_json))
    observed = record_fields(json.loads(observed_json))
    changes: list[SchemaChange] = []
    for name, want in expected.items():
        got = observed.get(name)
        if got is None:
            changes.append(SchemaChange("field_removed", name, want.describe(), "absent"))
        elif (got.base, got.nullable, got.symbols) != (want.base, want.nullable, want.symbols):
            changes.append(SchemaChange("type_changed", name, want.describe(), got.describe()))
        elif got.has_default != want.has_default or (got.has_default and got.default != want.default):
            changes.append(SchemaChange("default_changed", name, want.describe(), got.describe()))
    for name in observed.keys() - expected.keys():
        changes.append(SchemaChange("field_added", name, "absent", observed[name].describe()))
    return tuple(changes)
