"""Checking a decoded dict against the reader schema's top-level fields, field by field.

What JSON records go through, and Avro records whose writer schema does not resolve
against the reader's: a missing field or a value of the wrong type becomes a
:class:`FieldIssue`, and ``None`` in the values the stages see.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stream_guard.schemas import FieldType, record_fields
from stream_guard.settings.kinds import OVERFLOW

__all__ = ["MAX_UNEXPECTED_FIELDS", "FieldIssue", "RecordChecker"]


@dataclass(frozen=True)
class FieldIssue:
    """A field-level problem in a record that did decode."""

    kind: str  # "missing_field" | "type_mismatch" | "unexpected_field"
    field: str
    observed: str
    expected: str
    value: Any = None


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (float, int),
    "double": (float, int),
    "string": (str,),
    "bytes": (bytes, str),
    "fixed": (bytes, str),
    "enum": (str,),
    "array": (list,),
    "map": (dict,),
    "record": (dict,),
}


#: Integers each Avro type can hold; JSON integers outside them are type mismatches.
_INT_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_MAX_FLOAT_INT = int(sys.float_info.max)
#: Unexpected fields reported per record (in the record's order); the rest become one
#: ``unexpected_field`` issue on feature ``*overflow*`` saying how many there were.
MAX_UNEXPECTED_FIELDS = 20


class RecordChecker:
    """Checks a decoded dict against the reader schema's top-level fields.

    Missing fields take the schema default when there is one (as Avro resolution
    would), else ``None``; values of the wrong type become ``None`` in the output, so
    downstream statistics never see a string where they expect a number. At most
    :data:`MAX_UNEXPECTED_FIELDS` unexpected fields are reported, then one overflow issue.
    """

    def __init__(self, reader_schema: dict[str, Any], *, report_unexpected: bool = True) -> None:
        self._fields = record_fields(reader_schema)
        self._report_unexpected = report_unexpected

    def check(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldIssue]]:
        values: dict[str, Any] = {}
        issues: list[FieldIssue] = []
        for name, spec in self._fields.items():
            if name not in raw:
                if spec.has_default:
                    values[name] = spec.default
                else:
                    values[name] = None
                    issues.append(FieldIssue("missing_field", name, "absent", spec.describe()))
                continue
            value = raw[name]
            if _matches(spec, value):
                values[name] = value
            else:
                values[name] = None
                issues.append(FieldIssue("type_mismatch", name, _json_type(value), spec.describe(), value))
        if self._report_unexpected:
            unexpected = [name for name in raw if name not in self._fields]
            for name in unexpected[:MAX_UNEXPECTED_FIELDS]:
                issues.append(FieldIssue("unexpected_field", name, "present", "absent", raw[name]))
            if len(unexpected) > MAX_UNEXPECTED_FIELDS:
                more = len(unexpected) - MAX_UNEXPECTED_FIELDS
                issues.append(FieldIssue("unexpected_field", OVERFLOW, f"{more} more unexpected fields", "absent"))
        return values, issues


def _matches(spec: FieldType, value: Any) -> bool:
    if value is None:
        return spec.nullable
    if spec.base == "union":
        return True  # multi-branch unions are rare in inference events; accept any value
    allowed = _PYTHON_TYPES.get(spec.base)
    if allowed is None:
        return True
    if isinstance(value, bool) and bool not in allowed:
        return False  # bool is an int subclass in Python, but not an Avro number
    if not isinstance(value, allowed):
        # fastavro turns logical types (timestamp-millis...) into Python objects.
        return spec.base == "long" and hasattr(value, "timestamp")
    if isinstance(value, int):
        bounds = _INT_RANGES.get(spec.base)
        if bounds is not None:
            return bounds[0] <= value <= bounds[1]
        return spec.base not in ("float", "double") or -_MAX_FLOAT_INT <= value <= _MAX_FLOAT_INT
    return not (spec.base == "enum" and spec.symbols and value not in spec.symbols)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__
