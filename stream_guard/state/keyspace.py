"""The in-memory key space under :class:`~stream_guard.state.memory.MemoryState`: Redis types on dicts.

Values keep the Redis types the scripts use (hash, list, sorted set, string, and a set
standing in for a HyperLogLog), a write op on a key of another type fails with Redis's
``WRONGTYPE`` error, and TTLs are deadlines on the caller's clock (expired by
:meth:`MemoryKeySpace.purge_expired`). Readers see what ``redis-cli`` would show.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from redis.exceptions import ResponseError

_WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"


class ZSet(dict[str, float]):
    """A sorted set: member -> score, ordered on read (score, then member)."""

    def ordered(self) -> list[tuple[str, float]]:
        return sorted(self.items(), key=lambda item: (item[1], item[0]))


_T = TypeVar("_T", dict[str, str], list[str], set[str], ZSet)


def _format_float(value: float) -> str:
    if value.is_integer() and abs(value) < 1e17:
        return str(int(value))
    return repr(value)


class MemoryKeySpace:
    """Keys and their values, typed as in Redis, with deadlines for their TTLs."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._deadlines: dict[str, int] = {}

    # -- reading (what redis-cli would show) ---------------------------------------------

    def hgetall(self, key: str) -> dict[str, str]:
        return dict(self._existing(key, dict) or {})

    def lrange(self, key: str) -> list[str]:
        return list(self._existing(key, list) or [])

    def pfcount(self, key: str) -> int:
        return len(self._existing(key, set) or ())

    def zrange(self, key: str) -> list[tuple[str, float]]:
        """Members with scores, in score order."""
        return (self._existing(key, ZSet) or ZSet()).ordered()

    def get(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is not None and not isinstance(value, str):
            raise ResponseError(_WRONGTYPE)
        return value

    def exists(self, key: str) -> bool:
        return key in self._data

    def key_names(self) -> list[str]:
        """Every key held, sorted (``KEYS *``)."""
        return sorted(self._data)

    def key_type(self, key: str) -> str:
        """``hash``, ``list``, ``zset``, ``string``, ``hll`` (a distinct-value set) or ``none``."""
        value = self._data.get(key)
        kinds: dict[type, str] = {dict: "hash", list: "list", ZSet: "zset", str: "string", set: "hll"}
        return "none" if value is None else kinds[type(value)]

    def deadline(self, key: str) -> int | None:
        """When ``key`` expires, on the clock of :meth:`apply` (ms); None if it has no TTL."""
        return self._deadlines.get(key) if key in self._data else None

    def purge_expired(self, now_ms: int) -> int:
        """Delete the keys whose TTL ran out by ``now_ms``; returns how many."""
        expired = [key for key, deadline in self._deadlines.items() if deadline <= now_ms]
        for key in expired:
            self._delete(key)
        return len(expired)

    # -- typed access to the key space -----------------------------------------------------

    def _existing(self, key: str, kind: type[_T]) -> _T | None:
        """The value at ``key`` if there is one; WRONGTYPE if it is not a ``kind``."""
        value = self._data.get(key)
        if value is not None and type(value) is not kind:
            raise ResponseError(_WRONGTYPE)
        return value

    def _create(self, key: str, kind: type[_T]) -> _T:
        """The value at ``key``, created empty if absent (as a Redis write op does)."""
        value = self._existing(key, kind)
        if value is None:
            value = self._data[key] = kind()
        return value

    def _delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._deadlines.pop(key, None)

    def _hincrby(self, key: str, field: str, amount: int) -> None:
        fields = self._create(key, dict)
        current = fields.get(field, "0")
        try:
            value = int(current)
        except ValueError:
            raise ResponseError("ERR hash value is not an integer") from None
        fields[field] = str(value + amount)

    def _hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        if math.isnan(amount):
            raise ResponseError("ERR value is not a valid float")
        if math.isinf(amount):
            raise ResponseError("ERR value is NaN or Infinity")
        fields = self._create(key, dict)
        try:
            value = float(fields.get(field, "0")) + amount
        except ValueError:
            raise ResponseError("ERR hash value is not a float") from None
        if not math.isfinite(value):
            raise ResponseError("ERR increment would produce NaN or Infinity")
        fields[field] = _format_float(value)
