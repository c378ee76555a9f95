"""JSON payloads parsed as json.loads parses them, every failure a clear dead-letter reason."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, cast

from stream_guard.errors import UndecodablePayloadError

#: A ``\\uD800``-``\\uDFFF`` escape: the only way JSON text can carry a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


#: json's own C scanner, as :func:`json.loads` runs it (same hooks, strict strings); an instance
#: attribute typeshed does not declare.
_scan_json = cast("Callable[[str, int], tuple[Any, int]]", vars(json.JSONDecoder())["scan_once"])


def load_json_object(payload: bytes) -> dict[str, Any] | None:
    """The JSON object that is all of ``payload``, as :func:`load_json` returns it; None for
    anything else (whitespace around it, another value, an error, a surrogate escape), which
    :func:`load_json` then parses or rejects with its reason.

    The common record in one call of json's scanner, without :func:`json.loads`'s encoding
    detection and whitespace matching around it.
    """
    if payload[:1] != b"{" or payload[1:2] == b"\x00" or _SURROGATE_ESCAPE.search(payload):
        return None
    try:
        text = payload.decode("utf-8", "surrogatepass")
        raw, end = _scan_json(text, 0)
    except (StopIteration, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return cast("dict[str, Any]", raw) if end == len(text) else None


def load_json(payload: bytes | None) -> Any:
    """Parse a JSON payload; any failure (bad syntax, nesting too deep, an integer of
    thousands of digits, a lone surrogate that no UTF-8 encoder accepts) is
    :class:`~stream_guard.errors.UndecodablePayloadError`.
    """
    if payload is None:
        raise UndecodablePayloadError("empty (tombstone) value")
    fast = load_json_object(payload)
    if fast is not None:
        return fast
    try:
        if payload[:1] == b"{" and payload[1:2] != b"\x00":
            # UTF-8 by json's own detection (no BOM, no NUL in the first two bytes): what
            # json.loads(bytes) decodes, without detecting it again per record.
            raw = json.loads(payload.decode("utf-8", "surrogatepass"))
        else:
            raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UndecodablePayloadError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise UndecodablePayloadError("JSON nested too deeply to decode") from None
    except ValueError as exc:  # an integer over sys.get_int_max_str_digits() digits
        raise UndecodablePayloadError(f"JSON number not decodable: {exc}") from None
    if _SURROGATE_ESCAPE.search(payload):
        # Escaped surrogate pairs decode to real characters; only lone ones fail to encode.
        try:
            json.dumps(raw, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise UndecodablePayloadError("JSON string holds a lone UTF-16 surrogate (not valid Unicode)") from None
    return raw
