"""Reading settings: a TOML file, ``STREAM_GUARD_*`` environment overrides, and the one coercer.

Every section is a plain dataclass; :func:`build` turns a TOML table into it field by field
from the type hints, and records each mistake as one line ``where.key: message`` in a
:class:`Problems`. A value of the wrong type is replaced by the field's default and its key
is remembered as mistyped, so the semantic checks that follow can skip just the checks that
read it (:meth:`Problems.typed`) and every problem of a file is reported in one pass.

Why a hand-written coercer rather than pydantic: the errors users see are one line each in
the ``where.key: message`` form the CLI prints, and the settings layer needs no dependency
beyond the standard library.

Environment overrides use ``__`` to descend into sections, e.g.
``STREAM_GUARD_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or
``STREAM_GUARD_WORKER__BATCH_SIZE=2000``. Values are parsed as TOML scalars when they can
be (numbers, booleans), and taken as strings otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar

from stream_guard.errors import ConfigError

ENV_PREFIX = "STREAM_GUARD_"

T = TypeVar("T")

#: Set while :func:`build` constructs sections, so their ``__post_init__`` leaves validation to the loader.
_BUILDING: ContextVar[bool] = ContextVar("stream_guard_settings_building", default=False)


class Problems:
    """The problem lines of one load, and the keys whose values had the wrong type."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._mistyped: set[str] = set()

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{key}: {message}")

    def mistyped(self, key: str, message: str) -> None:
        """Record a type mistake (or a missing required value) at ``key``."""
        self.add(key, message)
        self._mistyped.add(key)

    def typed(self, *keys: str) -> bool:
        """True when none of ``keys``, nor anything inside them, had a type mistake."""
        return not any(bad == key or bad.startswith((f"{key}.", f"{key}[")) for key in keys for bad in self._mistyped)

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(self.lines)


def read_toml(path: str | Path | None) -> tuple[dict[str, Any], Path]:
    """The raw tables of ``path`` and the directory relative paths resolve against."""
    if path is None:
        return {}, Path(".")
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError([f"config file {file} does not exist"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: invalid TOML: {exc}"]) from None
    return raw, file.resolve().parent


def apply_env(raw: dict[str, Any], environ: Mapping[str, str], problems: Problems) -> None:
    """Overlay ``STREAM_GUARD_A__B=value`` variables onto ``raw`` (``raw["a"]["b"] = value``)."""
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.add(name, f"{'.'.join(path[:-1])} is not a section")
                break
            node = child
        else:
            node[path[-1]] = _parse_scalar(value)


def _parse_scalar(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


@contextlib.contextmanager
def building() -> Iterator[None]:
    """Sections built inside skip their ``__post_init__`` checks: the loader runs them, collecting all."""
    token = _BUILDING.set(True)
    try:
        yield
    finally:
        _BUILDING.reset(token)


def is_building() -> bool:
    return _BUILDING.get()


def build(cls: type[T], raw: Any, where: str, problems: Problems) -> T | None:
    """Turn the table ``raw`` into ``cls`` field by field, recording every type mistake.

    ``where`` is the key of the table (``""`` for the whole file). Returns None only when
    ``raw`` is not a table. A section may set the class variables ``TABLE_OF`` (what its
    table holds, for the "expected a table of ..." line) and ``KEY_NOUN`` (what an unknown
    key is: ``"setting"`` unless set).
    """
    prefix = f"{where}." if where else ""
    if not isinstance(raw, Mapping):
        table_of = getattr(cls, "TABLE_OF", "")
        what = f"a table of {table_of}" if table_of else "a table"
        problems.mistyped(where or "config", f"expected {what}, got {type(raw).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    # A field with ``metadata={"setting": False}`` is not read from the file (``Config.base_dir``).
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.metadata.get("setting", True)}  # type: ignore[arg-type]
    noun = getattr(cls, "KEY_NOUN", "setting")
    for unknown in sorted(set(raw) - set(fields), key=str):
        problems.add(f"{prefix}{unknown}", f"unknown {noun} (known: {', '.join(sorted(fields))})")
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        key = f"{prefix}{name}"
        required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        if name not in raw:
            if required:
                problems.mistyped(key, "required setting is missing")
                values[name] = _placeholder(hints[name])
            continue
        value = _coerce(hints[name], raw[name], key, problems)
        if value is not _BAD:
            values[name] = value
        elif required:
            values[name] = _placeholder(hints[name])
    with building():
        return cls(**values)


class _Bad:
    """Marks a value that had the wrong type; the field keeps its default."""


_BAD: Any = _Bad()


def _placeholder(hint: Any) -> Any:
    """A well-typed stand-in for a missing required value (its key is marked mistyped)."""
    origin = typing.get_origin(hint) or hint
    if origin in (list, tuple, dict, str, int, float, bool):
        return origin()
    return None


def _describe(hint: Any) -> str:
    if hint is float:
        return "a number"
    if hint is bool:
        return "true or false"
    return getattr(hint, "__name__", str(hint))


def _coerce(hint: Any, value: Any, key: str, problems: Problems) -> Any:
    """``value`` as ``hint``, or ``_BAD`` after recording why it is not one."""
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        built = build(hint, value, key, problems)
        return _BAD if built is None else built
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(arms) == 1:  # ``X | None``: TOML has no null, so a given value is an X
            return _coerce(arms[0], value, key, problems)
        if any(_is_instance(value, arm) for arm in arms):
            return value
        problems.mistyped(key, f"expected {' or '.join(map(_describe, arms))}, got {value!r}")
        return _BAD
    if origin in (list, tuple):
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            problems.mistyped(key, f"expected a list, got {value!r}")
            return _BAD
        coerced = [_coerce(args[0], v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        kept = [item for item in coerced if item is not _BAD]
        return tuple(kept) if origin is tuple else kept
    if origin in (dict, Mapping):
        _, item_hint = typing.get_args(hint)
        if not isinstance(value, Mapping):
            problems.mistyped(key, f"expected a table, got {value!r}")
            return _BAD
        items = {k: _coerce(item_hint, v, f"{key}.{k}", problems) for k, v in value.items()}
        return {k: v for k, v in items.items() if v is not _BAD}
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            problems.mistyped(key, f"expected one of {', '.join(map(str, choices))}, got {value!r}")
            return _BAD
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _coerce_enum(hint, value, key, problems)
    if hint is float and _is_instance(value, int):
        return float(value)
    if hint in (int, float, str, bool) and not _is_instance(value, hint):
        problems.mistyped(key, f"expected {_describe(hint)}, got {value!r}")
        return _BAD
    if hint is Path:
        if not isinstance(value, str):
            problems.mistyped(key, f"expected a path, got {value!r}")
            return _BAD
        return Path(value)
    return value


def _is_instance(value: Any, hint: Any) -> bool:
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, float | int) and not isinstance(value, bool)
    return isinstance(hint, type) and isinstance(value, hint)


def _coerce_enum(hint: type[enum.Enum], value: Any, key: str, problems: Problems) -> Any:
    """Enum members by value, ignoring case (``"critical"`` is ``Severity.CRITICAL``)."""
    if isinstance(value, hint):
        return value
    for member in hint:
        if isinstance(value, str) and str(member.value).lower() == value.lower():
            return member
    problems.mistyped(key, f"expected one of {', '.join(str(m.value) for m in hint)}, got {value!r}")
    return _BAD


def build_section(cls: type[T], raw: Any, where: str) -> tuple[T | None, Problems]:
    """Build one section alone (for code and tests that configure a stage directly)."""
    problems = Problems()
    return build(cls, raw, where, problems), problems


def coerce_value(hint: Any, value: Any, where: str) -> Any:
    """``value`` coerced to ``hint``; raises ValueError (all problems, ``; ``-joined) when it cannot be."""
    problems = Problems()
    coerced = _coerce(hint, value, where, problems)
    if problems.lines:
        raise ValueError("; ".join(problems.lines))
    return coerced
