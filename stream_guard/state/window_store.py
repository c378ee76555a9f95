"""Event-time window state in Redis, shared by every worker of a model.

Each batch's contribution to a window (event counts, finding counts, examples,
histograms...) is written by one Lua script per source partition. The script first
checks the partition's *applied offset* fence, so a batch redelivered after a crash
or a rebalance is skipped instead of counted twice, then validates every op against the
current state (types, integer and float fields, finite increments) before its first
write, and advances the fence and the partition's watermark last: a batch applies whole
or not at all, and a failed one is applied by its retry. All of a batch's scripts go in one pipeline: one
round trip per batch. Labels batches run the same script on the labels' fence
(:class:`~stream_guard.state.keys.Fence`).

A window is *due* once the global watermark (the smallest watermark over the model's
active partitions, whichever worker owns them) has passed its end plus the allowed
lateness. Any worker may close it: it takes a short lease, reads the merged counters,
publishes the alerts, and only then removes the window from the open set. A worker
that dies in between lets the lease expire and another one closes it again
(at-least-once; the alert id is the same).

Incidents are decided by more scripts (:mod:`stream_guard.state.redis_incidents`,
behind :meth:`WindowStore.observe_incident`, :meth:`WindowStore.resolve_incident` and
:meth:`WindowStore.close_incident`), so workers closing windows concurrently agree. A
resolution has two phases: the incident is marked, its RESOLVED alert published and
acknowledged, and only then is the record replaced by a tombstone, so a kill in between
publishes the resolution again when the window is closed again.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, cast

from stream_guard.state.client import Pipeline, RedisClient, pipeline
from stream_guard.state.holding import TAKE_CHECK_LUA, TAKE_LUA, RedisLabelReads
from stream_guard.state.incident import Observation, ReminderPolicy
from stream_guard.state.keys import Fence, ModelKeys
from stream_guard.state.lua_stored import CHECK_LUA, WRITE_LUA
from stream_guard.state.ops import SHAPES, Op
from stream_guard.state.redis_incidents import RedisIncidents
from stream_guard.state.update import StateUpdate, WindowSnapshot

__all__ = ["APPLY_SCRIPT", "StateUpdate", "WindowSnapshot", "WindowStore"]

# The body of each op in the apply script; ``i`` points at the op letter.
_OP_LUA: dict[Op, str] = {
    Op.INCR: "redis.call('HINCRBY', KEYS[tonumber(ARGV[i+1])], ARGV[i+2], ARGV[i+3]); i = i + 4",
    Op.INCR_FLOAT: "redis.call('HINCRBYFLOAT', KEYS[tonumber(ARGV[i+1])], ARGV[i+2], ARGV[i+3]); i = i + 4",
    Op.SET: "redis.call('HSET', KEYS[tonumber(ARGV[i+1])], ARGV[i+2], ARGV[i+3]); i = i + 4",
    Op.OPEN_WINDOW: "redis.call('ZADD', KEYS[4], ARGV[i+1], ARGV[i+1]); i = i + 2",
    Op.ADD_EXAMPLE: """local k = KEYS[tonumber(ARGV[i+1])]
    if redis.call('LLEN', k) < tonumber(ARGV[i+3]) then redis.call('RPUSH', k, ARGV[i+2]) end
    i = i + 4""",
    Op.ADD_DISTINCT: """local n = tonumber(ARGV[i+2])
    redis.call('PFADD', KEYS[tonumber(ARGV[i+1])], unpack(ARGV, i+3, i+2+n)); i = i + 3 + n""",
    Op.EXPIRE: "own_ttl[tonumber(ARGV[i+1])] = tonumber(ARGV[i+2]); i = i + 3",
    Op.ZADD: "redis.call('ZADD', KEYS[tonumber(ARGV[i+1])], ARGV[i+2], ARGV[i+3]); i = i + 4",
    Op.ZTRIM_BELOW: "redis.call('ZREMRANGEBYSCORE', KEYS[tonumber(ARGV[i+1])], '-inf', '(' .. ARGV[i+2]); i = i + 3",
    Op.FINDING: """local k = KEYS[tonumber(ARGV[i+1])]
    local f = ARGV[i+2]
    local n = tonumber(ARGV[i+12])
    local known = redis.call('HEXISTS', k, f) == 1
    if known or tonumber(redis.call('HGET', k, 'fk') or '0') < tonumber(ARGV[i+4]) then
      if not known then redis.call('HINCRBY', k, 'fk', 1) end
      redis.call('HINCRBY', k, f, ARGV[i+3])
      if ARGV[i+9] ~= '' then redis.call('HSET', k, ARGV[i+8], ARGV[i+9]) end
      local x = KEYS[tonumber(ARGV[i+10])]
      for e = i + 13, i + 12 + n do
        if redis.call('LLEN', x) < tonumber(ARGV[i+11]) then redis.call('RPUSH', x, ARGV[e]) end
      end
    else
      redis.call('HINCRBY', k, ARGV[i+5], ARGV[i+3])
      redis.call('HSET', k, ARGV[i+6], ARGV[i+7])
    end
    i = i + 13 + n""",
    Op.TAKE: TAKE_LUA,
    **WRITE_LUA,
}
if set(_OP_LUA) != set(Op):
    raise ImportError(f"apply script lacks ops {sorted(set(Op) - set(_OP_LUA))}")

_DISPATCH = "\n  else".join(f"if op == '{op.value}' then\n    {body}" for op, body in _OP_LUA.items())

# The validation pass: everything an op could fail on, checked before the first write, on
# the state as the update's earlier ops will have left it (``kinds``: key types, ``shadow``:
# hash fields). ``j`` is the op's first key index (nil for W), ``a`` its first argument.
_CHECK_LUA: dict[Op, str] = {
    Op.OPEN_WINDOW: "if not need(4, 'zset') then return wrongtype() end",
    Op.INCR: """if not need(j, 'hash') then return wrongtype() end
    local amount = ARGV[i+3]
    if not string.match(amount, '^-?%d+$') then
      return redis.error_reply('ERR value is not an integer or out of range')
    end
    local cur = field(j, ARGV[i+2])
    if cur ~= nil and not is_int(cur) then return redis.error_reply('ERR hash value is not an integer') end
    local sum = tonumber(cur or 0) + tonumber(amount)
    if math.abs(sum) > 9.2e18 then return redis.error_reply('ERR increment or decrement would overflow') end
    shadow[j][ARGV[i+2]] = sum""",
    Op.INCR_FLOAT: """if not need(j, 'hash') then return wrongtype() end
    local amount = tonumber(ARGV[i+3])
    if amount == nil or amount ~= amount then return redis.error_reply('ERR value is not a valid float') end
    if amount == math.huge or amount == -math.huge then return redis.error_reply('ERR value is NaN or Infinity') end
    local cur = field(j, ARGV[i+2])
    if cur ~= nil and tonumber(cur) == nil then return redis.error_reply('ERR hash value is not a float') end
    shadow[j][ARGV[i+2]] = tonumber(cur or 0) + amount""",
    Op.SET: "if not need(j, 'hash') then return wrongtype() end\n    shadow[j][ARGV[i+2]] = ARGV[i+3]",
    Op.ADD_EXAMPLE: "if not need(j, 'list') then return wrongtype() end",
    Op.ADD_DISTINCT: "if not need(j, 'string') then return wrongtype() end",
    Op.EXPIRE: "",
    Op.ZADD: "if not need(j, 'zset') then return wrongtype() end",
    Op.ZTRIM_BELOW: "if not need(j, 'zset') then return wrongtype() end",
    Op.FINDING: """if not need(j, 'hash') then return wrongtype() end
    if not string.match(ARGV[i+3], '^-?%d+$') then
      return redis.error_reply('ERR value is not an integer or out of range')
    end
    for _, name in ipairs({ARGV[i+2], 'fk', ARGV[i+5]}) do
      local cur = field(j, name)
      if cur ~= nil and not is_int(cur) then return redis.error_reply('ERR hash value is not an integer') end
      shadow[j][name] = tonumber(cur or 0)
    end
    shadow[j][ARGV[i+6]] = ARGV[i+7]
    shadow[j][ARGV[i+8]] = ARGV[i+9]
    local x = tonumber(ARGV[i+10])
    if shadow[x] == nil then shadow[x] = {} end
    if not need(x, 'list') then return wrongtype() end""",
    Op.TAKE: TAKE_CHECK_LUA,
    **CHECK_LUA,
}
if set(_CHECK_LUA) != set(Op):
    raise ImportError(f"apply script does not validate ops {sorted(set(Op) - set(_CHECK_LUA))}")

_CHECK_DISPATCH = "\n  else".join(
    f"if op == '{op.value}' then\n    {body or '-- nothing can fail'}" for op, body in _CHECK_LUA.items()
)
_SHAPES_LUA = ", ".join(f"['{op.value}'] = {{{SHAPES[op].fixed}, {str(SHAPES[op].counted).lower()}}}" for op in Op)

#: The fenced apply script. KEYS: the fence's four fixed keys, then the update's keys.
#: ARGV: source, last offset, max event time, clock, retention, first offset, ops.
#: A batch applies whole or not at all: every op is validated before the first write, and
#: the fence, the watermark and the clock are written last.
APPLY_SCRIPT = f"""
local applied = redis.call('HGET', KEYS[1], ARGV[1])
if applied and tonumber(applied) >= tonumber(ARGV[2]) then return 0 end
if applied and tonumber(applied) >= tonumber(ARGV[6]) then
  return redis.error_reply('FENCE ' .. ARGV[1] .. ' applied up to ' .. applied .. ', batch starts at ' .. ARGV[6])
end
local shapes = {{{_SHAPES_LUA}}}
local kinds, cleared, shadow = {{}}, {{}}, {{}}
local function kind_of(j)
  if kinds[j] == nil then kinds[j] = redis.call('TYPE', KEYS[j]).ok end
  return kinds[j]
end
local function need(j, t)
  local have = kind_of(j)
  if have ~= 'none' and have ~= t then return false end
  kinds[j] = t
  if shadow[j] == nil then shadow[j] = {{}} end
  return true
end
local function field(j, f)
  local v = shadow[j][f]
  if v == nil and not cleared[j] then
    v = redis.call('HGET', KEYS[j], f)
    if v == false then v = nil end
  end
  return v
end
local function is_int(v)
  if type(v) == 'number' then return v == math.floor(v) end
  return string.match(v, '^-?%d+$') ~= nil
end
local function wrongtype()
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
local i = 7
while i <= #ARGV do
  local op = ARGV[i]
  local shape = shapes[op]
  if shape == nil then return redis.error_reply('unknown op ' .. op) end
  local j = tonumber(ARGV[i+1])
  if j ~= nil and shadow[j] == nil then shadow[j] = {{}} end
  {_CHECK_DISPATCH}
  end
  local step = 1 + shape[1]
  if shape[2] then step = step + tonumber(ARGV[i + shape[1]]) end
  i = i + step
end
local ttl = tonumber(ARGV[5])
-- keys given their own TTL by 'E' (seconds) or managed by 'X'/'D' (0: leave alone)
local own_ttl = {{}}
i = 7
while i <= #ARGV do
  local op = ARGV[i]
  {_DISPATCH}
  end
end
for j = 5, #KEYS do
  local t = own_ttl[j]
  if t == nil then redis.call('EXPIRE', KEYS[j], ttl) elseif t > 0 then redis.call('EXPIRE', KEYS[j], t) end
end
if ARGV[1] == '' then return 1 end -- not fenced: its ops are idempotent themselves ('T')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local wm = redis.call('HGET', KEYS[2], ARGV[1])
if (not wm) or tonumber(wm) < tonumber(ARGV[3]) then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
return 1
"""

# Removes a closed window from the open set unless events arrived since it was read
# (a window of dead letters only has no "n": it counts as 0).
_FINISH = """
if (redis.call('HGET', KEYS[2], 'n') or '0') == ARGV[2] then redis.call('ZREM', KEYS[1], ARGV[1]) end
redis.call('DEL', KEYS[3])
return 1
"""


# Extends a window's lease if this worker still holds it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class WindowStore(RedisLabelReads):
    """Per-model state in Redis (see the module docstring for the protocol).

    Implements :class:`~stream_guard.state.protocol.ModelState`. The client must decode
    responses (``decode_responses=True``).
    """

    def __init__(
        self,
        client: RedisClient,
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
        self._apply = client.register_script(APPLY_SCRIPT)
        self._finish = client.register_script(_FINISH)
        self._renew = client.register_script(_RENEW)
        self._incidents = RedisIncidents(client, keys, retention_s)

    @classmethod
    def for_client(cls, client: RedisClient, keys: ModelKeys, retention_s: int = 7 * 24 * 3600) -> WindowStore:
        """A store for callers that join labels or track incidents but close no windows."""
        return cls(client, keys, window_ms=0, lateness_ms=0, idle_ms=0, retention_s=retention_s, worker_id="")

    # -- fenced updates ----------------------------------------------------------------------

    def applied_offsets(self, sources: Sequence[str], fence: Fence = Fence.EVENTS) -> dict[str, int]:
        """Last applied offset of each ``topic:partition`` (absent: nothing applied yet)."""
        if not sources:
            return {}
        values = self._redis.hmget(self.keys.fenced(fence)[0], list(sources))
        return {s: int(v) for s, v in zip(sources, values, strict=True) if v is not None}

    def detector_checkpoints(self, sources: Sequence[str]) -> dict[str, str]:
        """The online detectors' checkpoint of each ``topic:partition`` that has one."""
        if not sources:
            return {}
        values = cast("list[str | None]", self._redis.hmget(self.keys.detectors, list(sources)))
        return {s: v for s, v in zip(sources, values, strict=True) if v is not None}

    def register_sources(self, sources: Sequence[str], now_ms: int, fence: Fence = Fence.EVENTS) -> None:
        """Make newly assigned partitions hold windows open until they send data or go idle.

        Without this, a partition whose first batch is still on its way would not count
        in the global watermark, and the windows it contributes to could close early.
        """
        if not sources:
            return
        pipe = pipeline(self._redis)
        for source in sources:
            pipe.hsetnx(self.keys.fenced(fence)[1], source, 0)
            pipe.hset(self.keys.fenced(fence)[2], source, now_ms)
        pipe.execute()

    def touch_sources(self, sources: Sequence[str], now_ms: int, fence: Fence = Fence.EVENTS) -> None:
        """Mark ``sources`` active at ``now_ms`` (partitions with a backlog), keeping their watermarks."""
        if sources:
            self._redis.hset(self.keys.fenced(fence)[2], mapping=dict.fromkeys(sources, now_ms))

    def apply(self, updates: Sequence[StateUpdate], now_ms: int, pipe: Pipeline | None = None) -> Any:
        """Queue the scripts of ``updates`` on ``pipe`` (returned), or run them in one pipeline.

        Run here, the result is 1 (applied) or 0 (skipped by the fence) per update.
        """
        own = pipe is None
        queue = pipe if pipe is not None else pipeline(self._redis)
        for update in updates:
            queue.script(
                self._apply,
                [*self.keys.fenced(update.fence), *update.keys],
                update.script_args(now_ms, self._retention_s),
            )
        return queue.execute() if own else queue

    # -- windows -------------------------------------------------------------------------------

    def global_watermark(self, now_ms: int) -> float:
        """Smallest watermark over partitions that sent data within the idle timeout.

        When every partition is idle the stream has stopped, and all windows are due.
        """
        pipe = pipeline(self._redis)
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

    def renew(self, start_ms: int, lease_ms: int) -> bool:
        """Extend this worker's lease on a window to ``lease_ms`` from now; False if it is not held any more."""
        return bool(self._renew(keys=[self.keys.lease(start_ms)], args=[self._worker_id, lease_ms]))

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
            pipe = pipeline(self._redis)
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

    # -- labels ----------------------------------------------------------------------------------

    def join_inputs(self, sources: Sequence[str], event_ids: Sequence[str]) -> tuple[dict[str, int], list[str | None]]:
        """In one round trip: the labels fence of ``sources`` and the stored predictions of ``event_ids``."""
        pipe = pipeline(self._redis)
        if sources:
            pipe.hmget(self.keys.labels_applied, list(sources))
        if event_ids:
            pipe.mget([self.keys.prediction(x) for x in event_ids])
        replies = pipe.execute() if sources or event_ids else []
        fences_reply = replies.pop(0) if sources else []
        fences = {src: int(v) for src, v in zip(sources, fences_reply, strict=True) if v is not None}
        stored = list(replies[0]) if event_ids else []
        return fences, stored

    # -- incidents (stream_guard.state.redis_incidents) -------------------------------------

    def observe_incident(self, incident_id: str, seen: Observation, policy: ReminderPolicy) -> str:
        return self._incidents.observe_incident(incident_id, seen, policy)

    def fire_early(self, incident_id: str, seen: Observation, claims: Sequence[str] = ()) -> str:
        return self._incidents.fire_early(incident_id, seen, claims)

    def early_delivered(self, incident_id: str, window_end: int) -> None:
        self._incidents.early_delivered(incident_id, window_end)

    def open_incidents(self) -> dict[str, dict[str, str]]:
        return self._incidents.open_incidents()

    def incidents_seen_until(self, end_ms: int) -> list[str]:
        return self._incidents.incidents_seen_until(end_ms)

    def resolve_incident(self, incident_id: str, window_end: int) -> dict[str, str] | None:
        return self._incidents.resolve_incident(incident_id, window_end)

    def confirm_incident(self, incident_id: str, window_end: int) -> bool:
        return self._incidents.confirm_incident(incident_id, window_end)

    def close_incident(self, incident_id: str, window_end: int, members: Sequence[str] = ()) -> bool:
        return self._incidents.close_incident(incident_id, window_end, members)
