"""Unit tests for stream_guard.schemas: parsing, field typing and schema diffs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from stream_guard.errors import SchemaLoadError
from stream_guard.schemas import (
    SchemaChange,
    diff_schemas,
    fingerprint,
    load_schema_file,
    parse_schema,
    record_fields,
)
from stream_guard.tools.simulator import inference_schema_json


def _base() -> dict[str, Any]:
    return inference_schema_json()


def _with_field(schema: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    for f in out["fields"]:
        if f["name"] == name:
            for key, value in changes.items():
                if value is None and key == "default":
                    f.pop("default", None)
                else:
                    f[key] = value
    return out


def _diff(expected: dict[str, Any], observed: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {(c.change, c.field, c.expected, c.observed) for c in diff_schemas(expected, observed)}


def test_identical_schemas_have_no_changes() -> None:
    """A schema compared with itself (raw or parsed) reports nothing."""
    assert diff_schemas(_base(), _base()) == []
    assert diff_schemas(parse_schema(_base()), parse_schema(_base())) == []


def test_doc_and_order_changes_are_not_reported() -> None:
    """Doc strings and field order do not change what the model receives: no changes."""
    observed = copy.deepcopy(_base())
    observed["doc"] = "rewritten"
    for f in observed["fields"]:
        f["doc"] = f"doc of {f['name']}"
    observed["fields"].reverse()
    assert diff_schemas(_base(), observed) == []


def test_field_removed() -> None:
    """A field the writer dropped is field_removed with its expected type."""
    observed = copy.deepcopy(_base())
    observed["fields"] = [f for f in observed["fields"] if f["name"] != "num_tx_24h"]
    assert diff_schemas(_base(), observed) == [SchemaChange("field_removed", "num_tx_24h", "int", "absent")]


def test_field_added() -> None:
    """Fields the writer adds are field_added, with their type and default."""
    observed = copy.deepcopy(_base())
    observed["fields"].append({"name": "channel", "type": ["null", "string"], "default": None})
    observed["fields"].append({"name": "risk", "type": "float"})
    assert _diff(_base(), observed) == {
        ("field_added", "channel", "absent", "null|string (default null)"),
        ("field_added", "risk", "absent", "float"),
    }


def test_type_changed() -> None:
    """A retyped field is type_changed, describing both types."""
    observed = _with_field(_base(), "amount", type="string")
    assert diff_schemas(_base(), observed) == [SchemaChange("type_changed", "amount", "double", "string")]


@pytest.mark.parametrize(
    ("field", "new_type", "expected", "observed"),
    [
        ("age", "int", "null|int (default null)", "int (default null)"),  # became non-null
        ("amount", ["null", "double"], "double", "null|double"),  # became nullable
        ("amount", ["double", "null"], "double", "null|double"),  # branch order does not matter
    ],
)
def test_nullability_change_is_type_changed(field: str, new_type: Any, expected: str, observed: str) -> None:
    """Adding or removing null from a field's union is a type_changed."""
    assert diff_schemas(_base(), _with_field(_base(), field, type=new_type)) == [
        SchemaChange("type_changed", field, expected, observed)
    ]


def test_enum_symbols_change_is_type_changed() -> None:
    """An enum whose symbols changed is a type_changed."""
    expected: dict[str, Any] = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "device", "type": {"type": "enum", "name": "D", "symbols": ["ios", "android"]}}],
    }
    observed = copy.deepcopy(expected)
    observed["fields"][0]["type"]["symbols"] = ["ios", "android", "web"]
    assert [(c.change, c.field) for c in diff_schemas(expected, observed)] == [("type_changed", "device")]
    assert diff_schemas(expected, copy.deepcopy(expected)) == []


@pytest.mark.parametrize(
    ("field", "default", "expected", "observed"),
    [
        ("model_version", "v2", 'string (default "v1")', 'string (default "v2")'),  # default changed
        ("model_version", None, 'string (default "v1")', "string"),  # default removed
        ("amount", 0.0, "double", "double (default 0.0)"),  # default added
    ],
)
def test_default_changed(field: str, default: Any, expected: str, observed: str) -> None:
    """Adding, removing or changing a field default is default_changed."""
    assert diff_schemas(_base(), _with_field(_base(), field, default=default)) == [
        SchemaChange("default_changed", field, expected, observed)
    ]


def test_several_changes_reported_together() -> None:
    """Removal, retype and addition in one writer are all reported, once each."""
    observed = _with_field(_base(), "amount", type="string")
    observed["fields"] = [f for f in observed["fields"] if f["name"] != "country"]
    observed["fields"].append({"name": "channel", "type": "string", "default": "app"})
    assert {(c.change, c.field) for c in diff_schemas(_base(), observed)} == {
        ("type_changed", "amount"),
        ("field_removed", "country"),
        ("field_added", "channel"),
    }


def test_record_fields_types() -> None:
    """record_fields reduces fields to base type, nullability, default and symbols."""
    fields = record_fields(parse_schema(_base()))
    assert (fields["amount"].base, fields["amount"].nullable, fields["amount"].has_default) == ("double", False, False)
    assert (fields["age"].base, fields["age"].nullable, fields["age"].default) == ("int", True, None)
    assert fields["ts"].base == "long"  # timestamp-millis is a long underneath
    assert fields["model_version"].describe() == 'string (default "v1")'
    assert fields["is_new_user"].is_numeric and fields["score"].is_numeric
    assert not fields["country"].is_numeric


def test_fingerprint_ignores_docs_but_not_types() -> None:
    """The Parsing Canonical Form fingerprint is equal across doc edits and differs across retypes."""
    documented = copy.deepcopy(_base())
    documented["doc"] = "other"
    assert fingerprint(parse_schema(documented)) == fingerprint(parse_schema(_base()))
    assert fingerprint(parse_schema(_with_field(_base(), "amount", type="string"))) != fingerprint(
        parse_schema(_base())
    )


@pytest.mark.parametrize(
    "schema",
    [
        "string",  # not even JSON text
        '"string"',  # JSON text of a primitive schema
        {"type": "array", "items": "int"},
        {"type": "enum", "name": "E", "symbols": ["A"]},
        ["null", "string"],
        '["null", {"type": "record", "name": "R", "fields": []}]',
    ],
)
def test_parse_schema_requires_a_record(schema: Any) -> None:
    """Anything but a record at the top level (or text that is not JSON) is a SchemaLoadError."""
    with pytest.raises(SchemaLoadError):
        parse_schema(schema)


@pytest.mark.parametrize("text", ['{"type": "record", "name": "R", "fields": [', "{'type': 'record'}", ""])
def test_parse_schema_rejects_invalid_json(text: str) -> None:
    """Invalid JSON text is a SchemaLoadError saying it is not JSON."""
    with pytest.raises(SchemaLoadError, match="not JSON"):
        parse_schema(text)


def test_parse_schema_rejects_invalid_avro() -> None:
    """A record with an unknown field type is a SchemaLoadError, not a fastavro exception."""
    with pytest.raises(SchemaLoadError, match="invalid Avro schema"):
        parse_schema({"type": "record", "name": "R", "fields": [{"name": "x", "type": "decimal128"}]})


def test_parse_schema_accepts_json_text_and_dicts() -> None:
    """A record schema parses the same from a dict and from its JSON text."""
    from_text = parse_schema(json.dumps(_base()))
    from_dict = parse_schema(_base())
    assert from_text["type"] == "record"
    assert fingerprint(from_text) == fingerprint(from_dict)
    assert [f["name"] for f in from_text["fields"]] == [f["name"] for f in _base()["fields"]]


def test_load_schema_file_errors_name_the_file(tmp_path: Path) -> None:
    """load_schema_file errors name the file: missing, not JSON, not a record."""
    missing = tmp_path / "missing.avsc"
    with pytest.raises(SchemaLoadError, match=re.escape("missing.avsc not found")):
        load_schema_file(missing)
    broken = tmp_path / "broken.avsc"
    broken.write_text("{nope")
    with pytest.raises(SchemaLoadError, match=re.escape("broken.avsc is not JSON")):
        load_schema_file(broken)
    enum = tmp_path / "enum.avsc"
    enum.write_text(json.dumps({"type": "enum", "name": "E", "symbols": ["A"]}))
    with pytest.raises(SchemaLoadError, match=re.escape("enum.avsc: the top-level schema must be an Avro record")):
        load_schema_file(enum)


def test_load_schema_file_reads_a_record(tmp_path: Path) -> None:
    """A record schema file loads into the parsed form with the namespace applied."""
    path = tmp_path / "fraud.avsc"
    path.write_text(json.dumps(_base()))
    parsed = load_schema_file(path)
    assert parsed["name"] == "com.example.fraud.FraudInference"
    assert set(record_fields(parsed)) == {f["name"] for f in _base()["fields"]}


def test_load_schema_file_primitive_is_reported_as_not_a_record(tmp_path: Path) -> None:
    """A file holding a primitive schema (valid JSON) is rejected as 'not an Avro record', not as 'not JSON'."""
    primitive = tmp_path / "primitive.avsc"
    primitive.write_text('"string"')
    with pytest.raises(SchemaLoadError, match=re.escape("primitive.avsc: the top-level schema must be an Avro record")):
        load_schema_file(primitive)
