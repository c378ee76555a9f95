"""Event-time window state in process memory: the offline engine of ``stream-guard evaluate``.

:class:`MemoryState` executes the same :class:`~stream_guard.state.window_store.StateUpdate`
operations as :class:`~stream_guard.state.window_store.WindowStore`, with the semantics
of its Lua scripts (apply, finish and the incident scripts), on Python dicts instead of Redis. It is
a real implementation, used to replay a stream through the worker's stages without a
Redis server (:mod:`stream_guard.evaluation`), not a test double: readers of a closed
window (the evaluators) get the same :class:`~stream_guard.state.window_store.WindowSnapshot`
from either store.

Semantics kept from the scripts
-------------------------------
* The fence: a source's update whose ``last_offset`` is at or below the source's
  applied offset is skipped (result 0); one that overlaps it (applied offset at or
  above its ``first_offset``) fails with ``FENCE ...`` before writing anything.
* Watermarks: per source, the largest event time applied, and the clock (``now_ms``)
  of its last update; the global watermark is the smallest over sources updated
  within ``idle_ms`` of the caller's clock, ``inf`` when none is.
* Updates are fenced on the keys of their :class:`~stream_guard.state.keys.Fence`
  (events or labels), as the script is.
* The ops of :class:`~stream_guard.state.ops.Op` as the script runs them, in order: hash increments
  (integers, or floats for ``F``), plain sets, capped example lists, distinct-value
  sets, ``SET NX`` with counters, deletes, sorted-set adds and trims.
* Errors are :class:`redis.exceptions.ResponseError`, as the scripts' replies become in
  redis-py, so callers handle both stores alike; :meth:`MemoryState.apply` runs every
  update, then raises the first error, as a redis-py pipeline does. An update whose op
  fails leaves nothing behind, fence included (the script validates every op before its
  first write; here the touched keys are restored), so its retry applies it.
* Types: one key space; an op on a key of another type fails with ``WRONGTYPE``.
* Incidents open, repeat, escalate, remind, are suppressed and resolve (in two phases,
  leaving tombstones) as the incident scripts decide (:mod:`~stream_guard.state.memory_incidents`).
* ``finish`` removes a window from the open set only if its ``n`` field still equals
  the snapshot's, and drops the lease, exactly as ``_FINISH`` does.

Differences, by design
----------------------
* Distinct values (``P``) are kept in a Python set: counts are exact where Redis's
  HyperLogLog estimates them (standard error 0.81 %).
* TTLs (the retention, ``E`` and ``X``'s ``EX``) are recorded as deadlines on the
  clock passed to :meth:`MemoryState.apply`, but keys only expire when
  :meth:`MemoryState.purge_expired` is called. A finite offline replay never calls it:
  its windows close long before any retention would matter.
* Leases (``claim``) expire, like other keys, only through :meth:`MemoryState.purge_expired`:
  one process owns the state.
* Float fields (``F``) are summed in double precision and written as Python's shortest
  ``repr`` (integral values without a decimal point); Redis sums in ``long double``, so
  a sum of fractions may differ in its last digits (``123470.58900010001`` here,
  ``123470.5890000999999998`` there). Readers parse them with ``float()`` either way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from stream_guard.state.exceptions import StateOpUnknownError
from stream_guard.state.holding import MemoryLabelReads
from stream_guard.state.keys import Fence, ModelKeys
from stream_guard.state.keyspace import ZSet
from stream_guard.state.memory_incidents import MemoryIncidents
from stream_guard.state.ops import Op, split_ops
from stream_guard.state.update import FIXED_KEYS, StateUpdate, WindowSnapshot

_Handler = Callable[[list[Any], list[str], Sequence[str], dict[int, int]], None]


def _key(keys: list[str], fixed: Sequence[str], index: Any) -> str:
    """The key at a Lua ``KEYS`` index: 1-4 are the fence's fixed keys, the update's own follow."""
    i = int(index)
    return fixed[i - 1] if i <= FIXED_KEYS else keys[i - FIXED_KEYS - 1]


class MemoryState(MemoryLabelReads, MemoryIncidents):
    """Per-model window state in process memory (see the module docstring).

    Parameters
    ----------
    keys
        The model's key layout; key names are the ones Redis would hold.
    window_ms, lateness_ms
        Window length, and how far behind the watermark a window's end may lag
        before the window is due.
    idle_ms
        A source not updated within this long (on the clock passed to
        :meth:`due_windows`) stops holding windows open; ``math.inf``: never.
    retention_s
        TTL the apply script gives every key an update touches (unless set otherwise).
    worker_id
        Value of the lease keys.
    """

    def __init__(
        self,
        keys: ModelKeys,
        *,
        window_ms: int,
        lateness_ms: int,
        idle_ms: float = math.inf,
        retention_s: int = 7 * 24 * 3600,
        worker_id: str = "memory",
    ) -> None:
        self.keys = keys
        self.window_ms = window_ms
        self._lateness_ms = lateness_ms
        self._idle_ms = idle_ms
        self._retention_s = retention_s
        self._worker_id = worker_id
        super().__init__()
        self._clock = 0  # now_ms of the update being applied: X's EX counts from it

    # -- the window-state interface (stream_guard.state.protocol) ------------------------------------------------------

    def applied_offsets(self, sources: Sequence[str], fence: Fence = Fence.EVENTS) -> dict[str, int]:
        """Last applied offset of each ``topic:partition`` (absent: nothing applied yet)."""
        applied = self._existing(self.keys.fenced(fence)[0], dict) or {}
        return {s: int(applied[s]) for s in sources if s in applied}

    def detector_checkpoints(self, sources: Sequence[str]) -> dict[str, str]:
        """The online detectors' checkpoint of each ``topic:partition`` that has one."""
        stored = self._existing(self.keys.detectors, dict) or {}
        return {s: str(stored[s]) for s in sources if s in stored}

    def register_sources(self, sources: Sequence[str], now_ms: int, fence: Fence = Fence.EVENTS) -> None:
        """Make newly assigned partitions hold windows open until they send data or go idle."""
        for source in sources:
            self._create(self.keys.fenced(fence)[1], dict).setdefault(source, "0")
            self._create(self.keys.fenced(fence)[2], dict)[source] = str(now_ms)

    def touch_sources(self, sources: Sequence[str], now_ms: int, fence: Fence = Fence.EVENTS) -> None:
        """Mark ``sources`` active at ``now_ms`` (partitions with a backlog), keeping their watermarks."""
        for source in sources:
            self._create(self.keys.fenced(fence)[2], dict)[source] = str(now_ms)

    def apply(self, updates: Sequence[StateUpdate], now_ms: int, pipe: Any = None) -> list[int]:
        """Apply ``updates`` in order; 1 per applied update, 0 per fenced-off one.

        ``pipe`` is accepted for the WindowStore signature and ignored. Every update is
        run; the first error is raised afterwards, as a redis-py pipeline does.
        """
        results: list[int] = []
        errors: list[ResponseError] = []
        for update in updates:
            try:
                results.append(self._apply_one(update, now_ms))
            except ResponseError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return results

    def global_watermark(self, now_ms: int) -> float:
        """Smallest watermark over sources updated within ``idle_ms`` of ``now_ms``; inf if none."""
        marks = self._existing(self.keys.watermarks, dict) or {}
        seen = self._existing(self.keys.watermarks_seen, dict) or {}
        active = [int(mark) for source, mark in marks.items() if now_ms - int(seen.get(source, 0)) <= self._idle_ms]
        return float(min(active)) if active else math.inf

    def due_windows(self, now_ms: int) -> list[int]:
        """Open windows whose end plus the lateness the global watermark has passed."""
        horizon = self.global_watermark(now_ms) - self.window_ms - self._lateness_ms
        if horizon == -math.inf:
            return []
        windows = self._existing(self.keys.windows, ZSet) or ZSet()
        return [int(member) for member, score in windows.ordered() if score <= horizon]

    def open_windows(self) -> list[int]:
        windows = self._existing(self.keys.windows, ZSet) or ZSet()
        return [int(member) for member, _ in windows.ordered()]

    def claim(self, start_ms: int, lease_ms: int) -> bool:
        """Take the lease of a window; False while it is held.

        The lease's deadline counts from the clock of the last update; like every TTL
        here it only runs out through :meth:`purge_expired`.
        """
        key = self.keys.lease(start_ms)
        if key in self._data:
            return False
        self._data[key] = self._worker_id
        self._deadlines[key] = self._clock + lease_ms
        return True

    def snapshot(self, start_ms: int) -> WindowSnapshot:
        """The merged counters of a window, its examples, and its distinct counts.

        As :meth:`WindowStore.snapshot`: a field ``hll|<name>`` names a distinct-value
        key, whose count the snapshot carries as field ``<name>``; every ``f|<key>``
        field gets its (possibly empty) list of examples.
        """
        fields = dict(self._existing(self.keys.window(start_ms), dict) or {})
        finding_keys = [k[2:] for k in fields if k.startswith("f|")]
        distinct = {k[4:]: v for k, v in fields.items() if k.startswith("hll|")}
        examples = {
            key: [json.loads(item) for item in self.lrange(self.keys.examples(start_ms, key))] for key in finding_keys
        }
        fields.update({name: str(self.pfcount(key)) for name, key in distinct.items()})
        return WindowSnapshot(start_ms, start_ms + self.window_ms, fields, examples)

    def finish(self, snapshot: WindowSnapshot) -> None:
        """Mark a window closed: drop it from the open set unless events arrived since ``snapshot``."""
        window = self._existing(self.keys.window(snapshot.start_ms), dict) or {}
        # As _FINISH: a hash without "n" (dead letters only) counts as "0".
        if window.get("n", "0") == snapshot.fields.get("n", "0"):
            windows = self._existing(self.keys.windows, ZSet)
            if windows is not None:
                windows.pop(str(snapshot.start_ms), None)
                if not windows:
                    self._delete(self.keys.windows)  # Redis drops an emptied sorted set
        self._delete(self.keys.lease(snapshot.start_ms))

    # -- labels ------------------------------------------------------------------------------

    def join_inputs(self, sources: Sequence[str], event_ids: Sequence[str]) -> tuple[dict[str, int], list[str | None]]:
        """The labels fence of ``sources`` and the stored predictions of ``event_ids`` (``MGET``)."""
        stored = [
            value if isinstance(value := self._data.get(self.keys.prediction(x)), str) else None for x in event_ids
        ]
        return self.applied_offsets(sources, Fence.LABELS), stored

    # -- the apply script ------------------------------------------------------------------

    def _apply_one(self, update: StateUpdate, now_ms: int) -> int:
        self._clock = now_ms
        source = update.source
        fixed = self.keys.fenced(update.fence)
        applied = (self._existing(fixed[0], dict) or {}).get(source)
        if applied is not None and int(applied) >= update.last_offset:
            return 0
        if applied is not None and int(applied) >= update.first_offset:
            raise ResponseError(f"FENCE {source} applied up to {applied}, batch starts at {update.first_offset}")
        keys = update.keys
        saved = self._save([*fixed, *keys])
        own_ttl: dict[int, int] = {}
        try:
            self._run_ops(update.ops, keys, fixed, own_ttl)
        except ResponseError:
            self._restore(saved)  # whole or not at all, as the script's validation pass ensures
            raise
        retention = self._retention_s if update.ttl_s is None else update.ttl_s
        for index, key in enumerate(keys, start=FIXED_KEYS + 1):
            ttl = own_ttl.get(index, retention)
            if ttl > 0 and key in self._data:
                self._deadlines[key] = now_ms + ttl * 1000
        if not source:
            return 1  # not fenced: its ops are idempotent themselves ('T')
        # The fence last: a batch that failed is applied by its retry.
        self._create(fixed[0], dict)[source] = str(update.last_offset)
        marks = self._create(fixed[1], dict)
        if source not in marks or int(marks[source]) < update.max_event_ms:
            marks[source] = str(update.max_event_ms)
        self._create(fixed[2], dict)[source] = str(now_ms)
        return 1

    def _save(self, keys: Sequence[str]) -> dict[str, tuple[Any, int | None]]:
        """Copies of ``keys`` (value, deadline); absent keys as ``None``."""
        saved: dict[str, tuple[Any, int | None]] = {}
        for key in keys:
            value = self._data.get(key)
            saved[key] = (None if value is None else type(value)(value), self._deadlines.get(key))
        return saved

    def _restore(self, saved: dict[str, tuple[Any, int | None]]) -> None:
        for key, (value, deadline) in saved.items():
            self._delete(key)
            if value is not None:
                self._data[key] = value
            if deadline is not None:
                self._deadlines[key] = deadline

    def _run_ops(self, ops: Sequence[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        handlers = self._handlers
        try:
            # An unknown op fails the update; the caller restores what the ops before it wrote.
            for op, args in split_ops(ops):
                handlers[op](args, keys, fixed, own_ttl)
        except StateOpUnknownError as exc:
            raise ResponseError(str(exc)) from None

    @property
    def _handlers(self) -> dict[Op, _Handler]:
        return {
            Op.OPEN_WINDOW: self._op_open_window,
            Op.INCR: self._op_incr,
            Op.INCR_FLOAT: self._op_incr_float,
            Op.INCR_MANY: self._op_incr_many,
            Op.SET: self._op_set,
            Op.ADD_EXAMPLE: self._op_add_example,
            Op.ADD_DISTINCT: self._op_add_distinct,
            Op.EXPIRE: self._op_expire,
            Op.SET_ONCE: self._op_set_once,
            Op.SET_ONCE_COUNTED: self._op_set_once_counted,
            Op.DELETE: self._op_delete,
            Op.DELETE_ALL: self._op_delete_all,
            Op.ZADD: self._op_zadd,
            Op.ZTRIM_BELOW: self._op_ztrim_below,
            Op.FINDING: self._op_finding,
            Op.TAKE: self._op_take,
        }

    # One method per op, with the semantics of its body in the apply script. ``keys`` are
    # the update's own keys (KEYS[5:]), ``fixed`` the fence's four (KEYS[1:5]).

    def _op_open_window(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        self._create(fixed[3], ZSet)[str(args[0])] = float(args[0])

    def _op_incr(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        self._hincrby(_key(keys, fixed, args[0]), str(args[1]), int(args[2]))

    def _op_incr_float(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        self._hincrbyfloat(_key(keys, fixed, args[0]), str(args[1]), float(args[2]))

    def _op_incr_many(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        key = _key(keys, fixed, args[0])
        parts = str(args[1]).split("\n")
        for name, amount in zip(parts[::2], parts[1::2], strict=True):
            if amount.lstrip("-").isdigit():
                self._hincrby(key, name, int(amount))
            else:
                self._hincrbyfloat(key, name, float(amount))

    def _op_set(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        self._create(_key(keys, fixed, args[0]), dict)[str(args[1])] = str(args[2])

    def _op_add_example(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        items = self._create(_key(keys, fixed, args[0]), list)
        if len(items) < int(args[2]):
            items.append(str(args[1]))

    def _op_add_distinct(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        self._create(_key(keys, fixed, args[0]), set).update(map(str, args[2:]))

    def _op_expire(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        own_ttl[int(args[0])] = int(args[1])

    def _op_set_once(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        target = _key(keys, fixed, args[0])
        if target not in self._data:
            self._data[target] = str(args[1])
            self._deadlines[target] = self._clock + int(args[2]) * 1000
            counter = _key(keys, fixed, args[3])
            for name in args[5:]:
                self._hincrby(counter, str(name), 1)
        own_ttl[int(args[0])] = 0

    def _op_delete_all(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        for index in args[1:]:
            self._delete(_key(keys, fixed, index))
            own_ttl[int(index)] = 0

    def _op_delete(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        self._delete(_key(keys, fixed, args[0]))
        own_ttl[int(args[0])] = 0

    def _op_zadd(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        self._create(_key(keys, fixed, args[0]), ZSet)[str(args[2])] = float(args[1])

    def _op_ztrim_below(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        key = _key(keys, fixed, args[0])
        zset = self._existing(key, ZSet)
        if zset is not None:
            low = float(args[1])
            for member in [m for m, score in zset.items() if score < low]:
                del zset[member]
            if not zset:
                self._delete(key)

    def _op_finding(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        key = _key(keys, fixed, args[0])
        field, amount, cap = str(args[1]), int(args[2]), int(args[3])
        self._existing(_key(keys, fixed, args[9]), list)  # WRONGTYPE either way, as the script validates
        fields = self._create(key, dict)
        known = field in fields
        if known or int(fields.get("fk", "0")) < cap:
            if not known:
                self._hincrby(key, "fk", 1)
            self._hincrby(key, field, amount)
            if str(args[8]) != "":
                self._create(key, dict)[str(args[7])] = str(args[8])
            items = self._create(_key(keys, fixed, args[9]), list)
            for example in args[12:]:
                if len(items) < int(args[10]):
                    items.append(str(example))
            if not items:
                self._delete(_key(keys, fixed, args[9]))  # Redis holds no empty list
        else:
            self._hincrby(key, str(args[4]), amount)
            self._create(key, dict)[str(args[5])] = str(args[6])
