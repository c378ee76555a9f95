"""Event-time window state in Redis, shared by every worker of a model.

Each batch's contribution to a window (event counts, finding counts, examples,
histograms...) is written by one Lua script per source partition. The script first
checks the partition's *applied offset* fence, so a batch redelivered after a crash
or a rebalance is skipped instead of counted twice, and it advances the partition's
watermark in the same atomic step. All of a batch's scripts go in one pipeline: one
round trip per batch.

A window is *due* once the global watermark (the smallest watermark over the model's
active partitions, whichever worker owns them) has passed its end plus the allowed
lateness. Any worker may close it: it takes a short lease, reads the merged counters,
publishes the alerts, and only then removes the window from the open set. A worker
that dies in between lets the lease expire and another one closes it again
(at-least-once; the alert id is the same).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from stream_guard.state.keys import ModelKeys

_APPLY = """
local applied = redis.call('HGET', KEYS[1], ARGV[1])
if applied and tonumber(applied) >= tonumber(ARGV[2]) then return 0 end
if applied and tonumber(applied) >= tonumber(ARGV[6]) then
  return redis.error_reply('FENCE ' .. ARGV[1] .. ' applied up to ' .. applied .. ', batch starts at ' .. ARGV[6])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local wm = redis.call('HGET', KEYS[2], ARGV[1])
if (not wm) or tonumber(wm) < tonumber(ARGV[3]) then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
local ttl = tonumber(ARGV[5])
-- keys given their own TTL by 'E' (seconds) or managed by 'X'/'D' (0: leave alone)
local own_ttl = {}
local i = 7
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'H' then
    redis.call('HINCRBY', KEYS[tonumber(ARGV[i+1])], ARGV[i+2], ARGV[i+3]); i = i + 4
  elseif op == 'F' then
    redis.call('HINCRBYFLOAT', KEYS[tonumber(ARGV[i+1])], ARGV[i+2], ARGV[i+3]); i = i + 4
  elseif op == 'S' then
    redis.call('HSET', KEYS[tonumber(ARGV[i+1])], ARGV[i+2], ARGV[i+3]); i = i + 4
  elseif op == 'W' then
    redis.call('ZADD', KEYS[4], ARGV[i+1], ARGV[i+1]); i = i + 2
  elseif op == 'L' then
    local k = KEYS[tonumber(ARGV[i+1])]
    if redis.call('LLEN', k) < tonumber(ARGV[i+3]) then redis.call('RPUSH', k, ARGV[i+2]) end
    i = i + 4
  elseif op == 'P' then
    local n = tonumber(ARGV[i+2])
    redis.call('PFADD', KEYS[tonumber(ARGV[i+1])], unpack(ARGV, i+3, i+2+n)); i = i + 3 + n
  elseif op == 'E' then
    own_ttl[tonumber(ARGV[i+1])] = tonumber(ARGV[i+2]); i = i + 3
  elseif op == 'X' then
    local k = tonumber(ARGV[i+1])
    local n = tonumber(ARGV[i+5])
    if redis.call('SET', KEYS[k], ARGV[i+2], 'EX', ARGV[i+3], 'NX') then
      local h = KEYS[tonumber(ARGV[i+4])]
      for f = i + 6, i + 5 + n do redis.call('HINCRBY', h, ARGV[f], 1) end
    end
    own_ttl[k] = 0; i = i + 6 + n
  elseif op == 'D' then
    local k = tonumber(ARGV[i+1])
    redis.call('DEL', KEYS[k]); own_ttl[k] = 0; i = i + 2
  elseif op == 'Z' then
    redis.call('ZADD', KEYS[tonumber(ARGV[i+1])], ARGV[i+2], ARGV[i+3]); i = i + 4
  elseif op == 'R' then
    redis.call('ZREMRANGEBYSCORE', KEYS[tonumber(ARGV[i+1])], '-inf', '(' .. ARGV[i+2]); i = i + 3
  else
    return redis.error_reply('unknown op ' .. op)
  end
end
for j = 5, #KEYS do
  local t = own_ttl[j]
  if t == nil then redis.call('EXPIRE', KEYS[j], ttl) elseif t > 0 then redis.call('EXPIRE', KEYS[j], t) end
end
return 1
"""

# Removes a closed window from the open set unless events arrived since it was read
# (a window of dead letters only has no "n": it counts as 0).
_FINISH = """
if (redis.call('HGET', KEYS[2], 'n') or '0') == ARGV[2] then redis.call('ZREM', KEYS[1], ARGV[1]) end
redis.call('DEL', KEYS[3])
return 1
"""


class StateUpdate:
    """The Redis operations derived from one source partition's rows of a batch."""

    def __init__(self, source: str, first_offset: int, last_offset: int, max_event_ms: int) -> None:
        self.source = source
        self.first_offset = first_offset
        self.last_offset = last_offset
        self.max_event_ms = max_event_ms
        self._keys: list[str] = []
        self._key_index: dict[str, int] = {}
        self.ops: list[Any] = []

    def _key(self, key: str) -> int:
        index = self._key_index.get(key)
        if index is None:
            self._keys.append(key)
            # Lua KEYS is 1-based and the first four are the fixed model keys.
            index = self._key_index[key] = len(self._keys) + 4
        return index

    def script_args(self, now_ms: int, retention_s: int) -> list[Any]:
        """ARGV of the apply script: the fence and watermark arguments, then the ops."""
        return [
            self.source,
            self.last_offset,
            self.max_event_ms,
            now_ms,
            retention_s,
            self.first_offset,
            *self.ops,
        ]

    @property
    def keys(self) -> list[str]:
        return self._keys

    def open_window(self, start_ms: int) -> None:
        self.ops += ["W", start_ms]

    def incr(self, key: str, field: str, amount: int) -> None:
        if amount:
            self.ops += ["H", self._key(key), field, int(amount)]

    def incr_float(self, key: str, field: str, amount: float) -> None:
        if amount:
            self.ops += ["F", self._key(key), field, repr(float(amount))]

    def set(self, key: str, field: str, value: str) -> None:
        self.ops += ["S", self._key(key), field, value]

    def add_example(self, key: str, example: dict[str, Any], cap: int) -> None:
        self.ops += ["L", self._key(key), json.dumps(example, default=str), cap]

    def add_distinct(self, key: str, values: Iterable[str]) -> None:
        values = list(values)
        if values:
            self.ops += ["P", self._key(key), len(values), *values]

    def expire(self, key: str, ttl_s: int) -> None:
        """Give ``key`` its own TTL (seconds) instead of the store's retention."""
        self.ops += ["E", self._key(key), int(ttl_s)]

    def set_once(self, key: str, value: str, ttl_s: int, counter_key: str, counter_fields: Sequence[str]) -> None:
        """``SET key value EX ttl_s NX``; only if it was new, add 1 to each of ``counter_fields``.

        The key keeps its own TTL (the retention does not apply to it).
        """
        counter = self._key(counter_key)
        self.ops += ["X", self._key(key), value, int(ttl_s), counter, len(counter_fields), *counter_fields]

    def delete(self, key: str) -> None:
        self.ops += ["D", self._key(key)]

    def zadd(self, key: str, score: int, member: str) -> None:
        self.ops += ["Z", self._key(key), int(score), member]

    def ztrim_below(self, key: str, min_score: int) -> None:
        """Remove the members of a sorted set whose score is below ``min_score``."""
        self.ops += ["R", self._key(key), int(min_score)]


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


class WindowStore:
    """Per-model window state in Redis (see the module docstring for the protocol)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: ModelKeys,
        *,
        window_ms: int,
        lateness_ms: int,
        idle_ms: int,
        retention_s: int,
        worker_id: str,
    ) -> None:
        self._redis = client
        self.keys = keys
        self.window_ms = window_ms
        self._lateness_ms = lateness_ms
        self._idle_ms = idle_ms
        self._retention_s = retention_s
        self._worker_id = worker_id
        self._apply = client.register_script(_APPLY)
        self._finish = client.register_script(_FINISH)

    def applied_offsets(self, sources: list[str]) -> dict[str, int]:
        """Last applied offset of each ``topic:partition`` (absent: nothing applied yet)."""
        if not sources:
            return {}
        values = self._redis.hmget(self.keys.applied, sources)
        return {s: int(v) for s, v in zip(sources, values, strict=True) if v is not None}

    def register_sources(self, sources: list[str], now_ms: int) -> None:
        """Make newly assigned partitions hold windows open until they send data or go idle.

        Without this, a partition whose first batch is still on its way would not count
        in the global watermark, and the windows it contributes to could close early.
        """
        if not sources:
            return
        pipe = self._redis.pipeline(transaction=False)
        for source in sources:
            pipe.hsetnx(self.keys.watermarks, source, 0)
            pipe.hset(self.keys.watermarks_seen, source, now_ms)
        pipe.execute()

    def apply(self, updates: list[StateUpdate], now_ms: int, pipe: Any = None) -> Any:
        """Queue the scripts of ``updates`` on ``pipe`` (or run them in one pipeline)."""
        own = pipe is None
        pipe = pipe if pipe is not None else self._redis.pipeline(transaction=False)
        fixed = [self.keys.applied, self.keys.watermarks, self.keys.watermarks_seen, self.keys.windows]
        for update in updates:
            self._apply(
                keys=fixed + update.keys,
                args=update.script_args(now_ms, self._retention_s),
                client=pipe,
            )
        return pipe.execute() if own else pipe

    def global_watermark(self, now_ms: int) -> float:
        """Smallest watermark over partitions that sent data within the idle timeout.

        When every partition is idle the stream has stopped, and all windows are due.
        """
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.watermarks)
        pipe.hgetall(self.keys.watermarks_seen)
        marks, seen = pipe.execute()
        active = [int(mark) for source, mark in marks.items() if now_ms - int(seen.get(source, 0)) <= self._idle_ms]
        return float(min(active)) if active else math.inf

    def due_windows(self, now_ms: int) -> list[int]:
        watermark = self.global_watermark(now_ms)
        horizon = watermark - self.window_ms - self._lateness_ms
        if horizon == -math.inf:
            return []
        # The client decodes responses (``decode_responses=True``): members are str.
        starts = cast(
            "list[str]",
            self._redis.zrangebyscore(self.keys.windows, "-inf", "+inf" if horizon == math.inf else int(horizon)),
        )
        return [int(s) for s in starts]

    def open_windows(self) -> list[int]:
        return [int(s) for s in cast("list[str]", self._redis.zrange(self.keys.windows, 0, -1))]

    def claim(self, start_ms: int, lease_ms: int) -> bool:
        """Take the right to close a window for ``lease_ms``; False if another worker holds it."""
        return bool(self._redis.set(self.keys.lease(start_ms), self._worker_id, nx=True, px=lease_ms))

    def snapshot(self, start_ms: int) -> WindowSnapshot:
        """The merged counters of a window, its examples, and its distinct counts.

        A field ``hll|<name>`` names a HyperLogLog key; the snapshot carries its
        cardinality as field ``<name>``.
        """
        fields = cast("dict[str, str]", self._redis.hgetall(self.keys.window(start_ms)))  # decoded responses
        finding_keys = [k[2:] for k in fields if k.startswith("f|")]
        distinct = {k[4:]: v for k, v in fields.items() if k.startswith("hll|")}
        examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if finding_keys or distinct:
            pipe = self._redis.pipeline(transaction=False)
            for key in finding_keys:
                pipe.lrange(self.keys.examples(start_ms, key), 0, -1)
            for key in distinct.values():
                pipe.pfcount(key)
            results = pipe.execute()
            for key, items in zip(finding_keys, results, strict=False):
                examples[key] = [json.loads(item) for item in items]
            fields.update(
                {name: str(count) for name, count in zip(distinct, results[len(finding_keys) :], strict=True)}
            )
        return WindowSnapshot(start_ms, start_ms + self.window_ms, fields, dict(examples))

    def finish(self, snapshot: WindowSnapshot) -> None:
        """Mark a window closed after its alerts were delivered."""
        self._finish(
            keys=[self.keys.windows, self.keys.window(snapshot.start_ms), self.keys.lease(snapshot.start_ms)],
            args=[snapshot.start_ms, snapshot.fields.get("n", "0")],
        )
