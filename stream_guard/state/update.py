"""What a batch writes (:class:`StateUpdate`) and what a closed window reads (:class:`WindowSnapshot`)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from stream_guard.state.exceptions import StateUpdateInvalidError
from stream_guard.state.keys import Fence
from stream_guard.state.ops import Op

#: Lua ``KEYS`` is 1-based and the first four are the fence's fixed keys.
FIXED_KEYS = 4


class StateUpdate:
    """The state operations derived from one source partition's rows of a batch.

    Applied atomically by a store, behind the fence of ``source``: an update whose
    ``last_offset`` the fence already holds is skipped; one that overlaps it fails.

    Parameters
    ----------
    source
        ``topic:partition`` the rows came from.
    first_offset, last_offset
        Offsets of the first and last row.
    max_event_ms
        Largest event (or label) time of the rows: the source's watermark moves to it.
    fence
        Events (the default) or labels partitions: which fence and watermarks it moves.
    ttl_s
        TTL of the keys the update touches that get none of their own; ``None``: the
        store's retention.
    """

    def __init__(
        self,
        source: str,
        first_offset: int,
        last_offset: int,
        max_event_ms: int,
        *,
        fence: Fence = Fence.EVENTS,
        ttl_s: int | None = None,
    ) -> None:
        self.source = source
        self.first_offset = first_offset
        self.last_offset = last_offset
        self.max_event_ms = max_event_ms
        self.fence = fence
        self.ttl_s = ttl_s
        self._keys: list[str] = []
        self._key_index: dict[str, int] = {}
        #: The ops as the script's arguments (see :mod:`stream_guard.state.ops`).
        self.ops: list[Any] = []

    def _key(self, key: str) -> int:
        index = self._key_index.get(key)
        if index is None:
            self._keys.append(key)
            index = self._key_index[key] = len(self._keys) + FIXED_KEYS
        return index

    def _key_list(self, keys: Sequence[str]) -> list[int]:
        """:meth:`_key` of each of ``keys``, in one pass per list rather than a call per key."""
        index = self._key_index
        fresh = [k for k in dict.fromkeys(keys) if k not in index]
        if fresh:
            start = len(self._keys) + FIXED_KEYS + 1
            index.update(zip(fresh, range(start, start + len(fresh)), strict=True))
            self._keys += fresh
        return list(map(index.__getitem__, keys))

    def _push(self, op: Op, *args: Any) -> None:
        self.ops += [op.value, *args]

    def script_args(self, now_ms: int, retention_s: int) -> list[Any]:
        """ARGV of the apply script: the fence and watermark arguments, then the ops."""
        return [
            self.source,
            self.last_offset,
            self.max_event_ms,
            now_ms,
            retention_s if self.ttl_s is None else self.ttl_s,
            self.first_offset,
            *self.ops,
        ]

    @property
    def keys(self) -> list[str]:
        """The update's own keys, in the order of their ``KEYS`` index (from 5)."""
        return self._keys

    def open_window(self, start_ms: int) -> None:
        self._push(Op.OPEN_WINDOW, start_ms)

    def incr(self, key: str, field: str, amount: int) -> None:
        if amount:
            self._push(Op.INCR, self._key(key), field, int(amount))

    def incr_float(self, key: str, field: str, amount: float) -> None:
        """``HINCRBYFLOAT``; a NaN or infinite ``amount`` raises :class:`StateUpdateInvalidError`."""
        if not math.isfinite(amount):
            raise StateUpdateInvalidError(f"non-finite increment {amount!r} of {key} {field}")
        if amount:
            self._push(Op.INCR_FLOAT, self._key(key), field, repr(float(amount)))

    def incr_many(self, key: str, amounts: Iterable[tuple[str, int | float]]) -> None:
        """Add each ``(field, amount)`` to the hash ``key`` in one op: an ``int`` by ``HINCRBY``, a
        ``float`` by ``HINCRBYFLOAT``; zeros are skipped.

        A non-finite float, or a field that is empty or holds a newline, raises
        :class:`StateUpdateInvalidError`.
        """
        parts: list[str] = []
        for name, amount in amounts:
            if not amount:
                continue
            if not name or "\n" in name:
                raise StateUpdateInvalidError(f"field {name!r} of {key} cannot be packed")
            if isinstance(amount, float):
                if not math.isfinite(amount):
                    raise StateUpdateInvalidError(f"non-finite increment {amount!r} of {key} {name}")
                parts += (name, repr(amount))
            else:
                parts += (name, str(int(amount)))
        if parts:
            self._push(Op.INCR_MANY, self._key(key), "\n".join(parts))

    def incr_array(self, key: str, names: Sequence[str], amounts: np.ndarray, is_float: np.ndarray) -> None:
        """:meth:`incr_many` of parallel arrays, validated and formatted per array, not per field.

        ``names[i]`` gains ``amounts[i]``: a float where ``is_float[i]``, else the amount rounded
        to an integer (half to even, as :func:`round`). The op's text is the one
        :meth:`incr_many` writes for the same pairs; zeros are skipped and the same inputs raise
        :class:`StateUpdateInvalidError`.
        """
        values = np.where(is_float, amounts, np.rint(amounts))
        kept = np.flatnonzero(values != 0)
        if len(kept) == 0:
            return
        picked = [names[i] for i in kept.tolist()] if len(kept) < len(names) else list(names)
        floats = is_float[kept]
        bad = np.flatnonzero(floats & ~np.isfinite(values[kept]))
        if len(bad):
            at = int(kept[bad[0]])
            raise StateUpdateInvalidError(f"non-finite increment {float(values[at])!r} of {key} {names[at]}")
        if "" in picked or sum(map(len, picked)) != len("".join(picked).replace("\n", "")):
            name = next(n for n in picked if not n or "\n" in n)
            raise StateUpdateInvalidError(f"field {name!r} of {key} cannot be packed")
        text = np.empty(len(kept), dtype=object)
        at_float, at_int = np.flatnonzero(floats), np.flatnonzero(~floats)
        text[at_float] = list(map(repr, values[kept[at_float]].tolist()))
        text[at_int] = list(map(str, values[kept[at_int]].astype(np.int64).tolist()))
        packed = "\n".join(chain.from_iterable(zip(picked, text.tolist(), strict=True)))
        self._push(Op.INCR_MANY, self._key(key), packed)

    def set(self, key: str, field: str, value: str) -> None:
        self._push(Op.SET, self._key(key), field, value)

    def add_example(self, key: str, example: dict[str, Any], cap: int) -> None:
        self._push(Op.ADD_EXAMPLE, self._key(key), json.dumps(example, default=str), cap)

    def add_distinct(self, key: str, values: Iterable[str]) -> None:
        values = list(values)
        if values:
            self._push(Op.ADD_DISTINCT, self._key(key), len(values), *values)

    def expire(self, key: str, ttl_s: int) -> None:
        """Give ``key`` its own TTL (seconds) instead of the store's retention."""
        self._push(Op.EXPIRE, self._key(key), int(ttl_s))

    def set_once(self, key: str, value: str, ttl_s: int, counter_key: str, counter_fields: Sequence[str]) -> None:
        """``SET key value EX ttl_s NX``; only if it was new, add 1 to each of ``counter_fields``.

        The key keeps its own TTL (the retention does not apply to it).
        """
        counter = self._key(counter_key)
        self._push(Op.SET_ONCE, self._key(key), value, int(ttl_s), counter, len(counter_fields), *counter_fields)

    def set_once_counted(
        self, entries: Sequence[tuple[str, str, Sequence[int]]], ttl_s: int, counters: Sequence[tuple[str, str]]
    ) -> None:
        """``SET key value EX ttl_s NX`` for each ``(key, value, listed)`` entry; each counter
        ``(hash key, field)`` gains 1 per entry that lists its index (0-based) and whose key was new.

        What :meth:`set_once` per entry would count, with one increment per counter instead
        of one per entry and counter. The keys keep their own TTL.
        """
        if not entries:
            return
        args: list[Any] = []
        flat = list(chain.from_iterable(listed for _, _, listed in entries))
        listed_total = np.bincount(np.asarray(flat, dtype=np.int64), minlength=len(counters)).tolist()
        numbers = [str(c + 1) for c in range(len(counters))]
        for key, value, listed in entries:
            args += [self._key(key), value, ",".join(map(numbers.__getitem__, listed))]
        for (counter_key, name), amount in zip(counters, listed_total, strict=True):
            args += [self._key(counter_key), name, amount]
        self._push(Op.SET_ONCE_COUNTED, int(ttl_s), len(entries), len(args), *args)

    def set_once_counted_rows(
        self,
        keys: Sequence[str],
        values: Sequence[str],
        listed: np.ndarray,
        ttl_s: int,
        counters: Sequence[tuple[str, str]],
    ) -> None:
        """:meth:`set_once_counted` of entries given as columns: ``keys[i]`` is set to ``values[i]``
        and lists the counters of row ``i`` of ``listed`` (an integer matrix, one row per entry).

        The same op, with its arguments formatted per column instead of per entry.
        """
        if not len(keys):
            return
        listed = np.asarray(listed, dtype=np.int64).reshape(len(keys), -1)
        listed_total = np.bincount(listed.reshape(-1), minlength=len(counters)).tolist()
        numbers = np.array([str(c + 1) for c in range(len(counters))], dtype=object)
        columns = [numbers[listed[:, j]].tolist() for j in range(listed.shape[1])]
        listed_text = list(map(",".join, zip(*columns, strict=True))) if columns else [""] * len(keys)
        args: list[Any] = list(chain.from_iterable(zip(self._key_list(keys), values, listed_text, strict=True)))
        for (counter_key, name), amount in zip(counters, listed_total, strict=True):
            args += [self._key(counter_key), name, amount]
        self._push(Op.SET_ONCE_COUNTED, int(ttl_s), len(keys), len(args), *args)

    def delete(self, key: str) -> None:
        self._push(Op.DELETE, self._key(key))

    def delete_all(self, keys: Sequence[str]) -> None:
        """``DEL`` of every one of ``keys``, in one command."""
        if keys:
            self._push(Op.DELETE_ALL, len(keys), *self._key_list(keys))

    def zadd(self, key: str, score: int, member: str) -> None:
        self._push(Op.ZADD, self._key(key), int(score), member)

    def add_finding(
        self,
        key: str,
        field: str,
        amount: int,
        *,
        cap: int,
        overflow: tuple[str, str, str],
        detail: tuple[str, str],
        examples: tuple[str, Sequence[dict[str, Any]], int],
    ) -> None:
        """Count a finding in the hash ``key``, which holds at most ``cap`` distinct finding fields.

        A field already there, or one that fits, gets ``amount``, its ``detail`` (field,
        value; value "" to leave it) and the ``examples`` (list key, items, list cap);
        otherwise ``amount`` goes to ``overflow`` (field, detail field, detail value).
        """
        overflow_field, overflow_detail_field, overflow_detail = overflow
        detail_field, detail_value = detail
        examples_key, items, example_cap = examples
        self._push(
            Op.FINDING,
            self._key(key),
            field,
            int(amount),
            int(cap),
            overflow_field,
            overflow_detail_field,
            overflow_detail,
            detail_field,
            detail_value,
            self._key(examples_key),
            int(example_cap),
            len(items),
            *(json.dumps(item, default=str) for item in items),
        )

    def take(
        self, taken: Sequence[tuple[str, str, str]], index: str, counter_key: str, amounts: Sequence[tuple[str, float]]
    ) -> None:
        """Of ``taken`` (key, also, member) triples, delete each key that still exists with its
        ``also`` and drop its ``member`` from ``index``; add ``amounts`` per key taken to the
        fields of ``counter_key`` (an ``int`` by ``HINCRBY``, a ``float`` by ``HINCRBYFLOAT``).

        Taking is idempotent: a second take of the same keys finds them gone and counts nothing.
        """
        args: list[Any] = []
        for key, also, member in taken:
            args += [self._key(key), self._key(also), member]
        for name, amount in amounts:
            if isinstance(amount, float) and not math.isfinite(amount):
                raise StateUpdateInvalidError(f"non-finite increment {amount!r} of {counter_key} {name}")
            args += [name, repr(amount) if isinstance(amount, float) else int(amount)]
        self._push(Op.TAKE, self._key(index), self._key(counter_key), len(taken), len(args), *args)

    def ztrim_below(self, key: str, min_score: int) -> None:
        """Remove the members of a sorted set whose score is below ``min_score``."""
        self._push(Op.ZTRIM_BELOW, self._key(key), int(min_score))


@dataclass
class WindowSnapshot:
    """The merged state of one window, as read when it closed."""

    start_ms: int
    end_ms: int
    fields: dict[str, str]
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return int(self.fields.get("n", 0))

    def count(self, field: str) -> int:
        return int(float(self.fields.get(field, 0)))

    def with_prefix(self, prefix: str) -> dict[str, str]:
        """Fields starting with ``prefix``, keyed by the rest of their name."""
        return {k[len(prefix) :]: v for k, v in self.fields.items() if k.startswith(prefix)}


@dataclass
class HeldInputs:
    """What releasing held labels reads (``LabelState.held_inputs``)."""

    #: Per asked event id: its held label (JSON), or None.
    held: list[str | None]
    #: Per asked event id with a held label: its stored prediction, or None (None for the others).
    predictions: list[str | None]
    #: The events' global watermark (``inf`` when every events partition is idle).
    events_watermark: float
    #: Label time of the oldest held label, or None when none is held.
    oldest_ms: int | None
