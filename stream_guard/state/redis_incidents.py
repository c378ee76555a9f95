"""The incident records of one model in Redis: three Lua scripts, so workers closing windows concurrently agree.

The rules are :mod:`stream_guard.alerts.lifecycle`'s; :class:`~stream_guard.state.memory.MemoryState`
makes the same decisions in Python (``tests/state/test_conformance.py`` holds them equal).
A resolution has two phases: the incident is marked, its RESOLVED alert published and
acknowledged, and only then is the record replaced by a tombstone, so a kill in between
publishes the resolution again when the window is closed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from stream_guard.state.client import RedisClient, pipeline
from stream_guard.state.incident import Observation, ReminderPolicy, early_args, observe_args
from stream_guard.state.keys import ModelKeys

# KEYS: incident hash, incidents zset. ARGV: observe_args (stream_guard.state.incident): incident id,
# window start, window end, count, summary json, cooldown ms, remind ms, factor, severity rank,
# magnitude, rate (-1: none), member count, refresh (1: the summary replaces the incident's
# on publication), then (member id, kind|feature|slice) pairs.
_OBSERVE = """
local through = redis.call('HGET', KEYS[1], 'resolved_through')
if through then
  -- A window the resolved incident already covered (closed again late): history, not news.
  if tonumber(ARGV[3]) <= tonumber(through) then return 'resolved' end
  redis.call('DEL', KEYS[1])
end
-- The problem is back while a resolution awaits its delivery: the incident goes on.
redis.call('HDEL', KEYS[1], 'resolving')
local w_start, w_end = tonumber(ARGV[2]), tonumber(ARGV[3])
local seen = tonumber(redis.call('HGET', KEYS[1], 'last_seen_end') or '-1')
if w_end > seen then
  redis.call('HINCRBY', KEYS[1], 'windows', 1)
  redis.call('HINCRBY', KEYS[1], 'events', ARGV[4])
  redis.call('HSET', KEYS[1], 'last_seen_end', ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
-- The findings of the window in this incident, each with the end of its last window.
for m = 14, 13 + 2 * tonumber(ARGV[12]), 2 do
  redis.call('HSET', KEYS[1], 'm|' .. ARGV[m], ARGV[m+1])
  if w_end > tonumber(redis.call('HGET', KEYS[1], 's|' .. ARGV[m]) or '-1') then
    redis.call('HSET', KEYS[1], 's|' .. ARGV[m], ARGV[3])
  end
end
local rank, magnitude, rate = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local published = 'pub|' .. ARGV[3]
-- A publication raises the incident's peaks (the bar the next escalation must clear).
local function publish()
  redis.call('HSET', KEYS[1], published, 1)
  if rank > tonumber(redis.call('HGET', KEYS[1], 'peak_rank') or '-1') then
    redis.call('HSET', KEYS[1], 'peak_rank', ARGV[9])
  end
  if magnitude > tonumber(redis.call('HGET', KEYS[1], 'peak_magnitude') or '-1') then
    redis.call('HSET', KEYS[1], 'peak_magnitude', ARGV[10])
  end
  if rate > tonumber(redis.call('HGET', KEYS[1], 'peak_rate') or '-1') then
    redis.call('HSET', KEYS[1], 'peak_rate', ARGV[11])
  end
end
local last = redis.call('HGET', KEYS[1], 'last_published_end')
-- The window an early alert opened the incident at (EARLY below), closed: its window alert,
-- with the complete counts, is an update of the early one (the same alert id), whatever the
-- cooldown says; closed again, it is published again.
if redis.call('HGET', KEYS[1], 'early') == ARGV[3] then
  redis.call('HDEL', KEYS[1], 'early_pending')
  if not last or w_end > tonumber(last) then
    redis.call('HSET', KEYS[1], 'last_published_end', ARGV[3])
    if ARGV[13] == '1' then redis.call('HSET', KEYS[1], 'alert', ARGV[5]) end
  end
  publish()
  return 'update'
end
if not last then
  redis.call('HSET', KEYS[1], 'opened_start', ARGV[2], 'last_published_end', ARGV[3], 'alert', ARGV[5])
  publish()
  return 'open'
end
-- A window published before, closed again (a retry, or late events reopened it): publish
-- again, with its complete counts under the same alert id.
if redis.call('HEXISTS', KEYS[1], published) == 1 then return 'repeat' end
local peak_rank = tonumber(redis.call('HGET', KEYS[1], 'peak_rank') or '-1')
local informational = rank == 0 and peak_rank <= 0
-- A window before the one that opened the incident (closed out of order): the real onset.
if w_start < tonumber(redis.call('HGET', KEYS[1], 'opened_start')) then
  redis.call('HSET', KEYS[1], 'opened_start', ARGV[2])
  if informational then return 'suppress' end
  publish()
  return 'onset'
end
-- The published window nearest to this one, on either side: windows may close out of
-- order (late events, two workers).
local nearest = math.huge
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 4) == 'pub|' then
    nearest = math.min(nearest, math.abs(tonumber(string.sub(f, 5)) - w_end))
  end
end
if informational or nearest < tonumber(ARGV[6]) then return 'suppress' end
local factor = tonumber(ARGV[8])
local peak_magnitude = tonumber(redis.call('HGET', KEYS[1], 'peak_magnitude') or '-1')
local peak_rate = tonumber(redis.call('HGET', KEYS[1], 'peak_rate') or '-1')
local decision
if rank > peak_rank
  or (peak_magnitude > 0 and magnitude >= factor * peak_magnitude)
  or (peak_rate > 0 and rate >= factor * peak_rate) then
  decision = 'escalate'
elseif nearest >= tonumber(ARGV[7]) then
  decision = 'remind'
else
  return 'suppress'
end
publish()
if w_end > tonumber(last) then
  redis.call('HSET', KEYS[1], 'last_published_end', ARGV[3])
  if ARGV[13] == '1' then redis.call('HSET', KEYS[1], 'alert', ARGV[5]) end
end
return decision
"""

# Phase 1 of a resolution. KEYS: incidents zset, incident hash. ARGV: incident id, end of the
# window resolving it. Marks the incident (the mark names the window) and returns its record;
# the same window asking again (closed again after a failure) gets it again, any other none.
_RESOLVE = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
-- Opened by an early alert, its window not closed yet: it was never judged absent.
if redis.call('HEXISTS', KEYS[2], 'last_seen_end') == 0 then return false end
local mark = redis.call('HGET', KEYS[2], 'resolving')
if mark and mark ~= ARGV[2] then return false end
redis.call('HSET', KEYS[2], 'resolving', ARGV[2])
return redis.call('HGETALL', KEYS[2])
"""

# An early alert (stream_guard.alerts.early): a batch shows a critical finding no open incident
# covers. KEYS: incident hash, incidents zset, then the claims of the cause in the window (one
# per burst or feature of its findings). ARGV: incident id, window start, window end, summary
# json, claim TTL (s), member count, then (member id, kind|feature|slice) pairs.
# Returns 'fire' (publish it: the incident opened, or it opened at this window and its early
# alert awaits its acknowledgement), 'open' (an incident is open), 'claimed' (another cause
# fired early for this burst or feature in this window) or 'resolved' (a window the resolved
# incident covered). The record has no 'last_seen_end' yet: the window's close counts it.
_EARLY = """
for k = 3, #KEYS do
  local owner = redis.call('GET', KEYS[k])
  if owner and owner ~= ARGV[1] then return 'claimed' end
end
local through = redis.call('HGET', KEYS[1], 'resolved_through')
if through then
  if tonumber(ARGV[3]) <= tonumber(through) then return 'resolved' end
  redis.call('DEL', KEYS[1])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'early') == ARGV[3] and redis.call('HEXISTS', KEYS[1], 'early_pending') == 1 then
    return 'fire'
  end
  return 'open'
end
redis.call('HSET', KEYS[1], 'opened_start', ARGV[2], 'alert', ARGV[4], 'early', ARGV[3], 'early_pending', 1)
for m = 7, 6 + 2 * tonumber(ARGV[6]), 2 do
  redis.call('HSET', KEYS[1], 'm|' .. ARGV[m], ARGV[m+1], 's|' .. ARGV[m], ARGV[3])
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
for k = 3, #KEYS do redis.call('SET', KEYS[k], ARGV[1], 'EX', ARGV[5]) end
return 'fire'
"""

# The early alert of the window ending at ARGV[1] was acknowledged: it is not fired again.
# KEYS: incident hash.
_EARLY_DELIVERED = """
if redis.call('HGET', KEYS[1], 'early') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'early_pending')
return 1
"""

# KEYS: incidents zset, incident hash. ARGV: incident id, end of the window confirming it. The
# first window marks it; that window asking again (closed again) gets 1 again, any other 0.
_CONFIRM = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local mark = redis.call('HGET', KEYS[2], 'confirmed')
if mark and mark ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'confirmed', ARGV[2])
return 1
"""

# Phase 2, once the RESOLVED alert was delivered. KEYS: incidents zset, incident hash, then
# the hashes of its other findings (members). ARGV: incident id, window end of the mark,
# tombstone TTL (s). The record becomes a tombstone holding how far the incident reached, so
# an older window closed again does not reopen it; each member not open on its own gets one
# too, so an older window of a finding that was evidence does not open an incident of its own.
_CLOSE = """
if redis.call('HGET', KEYS[2], 'resolving') ~= ARGV[2] then return 0 end
local through = redis.call('HGET', KEYS[2], 'last_seen_end')
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'resolved_through', through)
redis.call('EXPIRE', KEYS[2], ARGV[3])
for k = 3, #KEYS do
  if redis.call('HEXISTS', KEYS[k], 'last_seen_end') == 0 then
    redis.call('HSET', KEYS[k], 'resolved_through', through)
    redis.call('EXPIRE', KEYS[k], ARGV[3])
  end
end
return 1
"""


class RedisIncidents:
    """Implements :class:`~stream_guard.state.protocol.IncidentState` on a Redis client (decoded responses)."""

    def __init__(self, client: RedisClient, keys: ModelKeys, retention_s: int) -> None:
        self._redis = client
        self.keys = keys
        self._retention_s = retention_s
        self._observe = client.register_script(_OBSERVE)
        self._resolve = client.register_script(_RESOLVE)
        self._close = client.register_script(_CLOSE)
        self._confirm = client.register_script(_CONFIRM)
        self._early = client.register_script(_EARLY)
        self._early_delivered = client.register_script(_EARLY_DELIVERED)

    def observe_incident(self, incident_id: str, seen: Observation, policy: ReminderPolicy) -> str:
        """Record a window's findings on their incident: ``open``, ``repeat``, ``onset``, ``escalate``,
        ``remind``, ``suppress`` or ``resolved`` (a window the resolved incident already covered)."""
        decision = self._observe(
            keys=[self.keys.incident(incident_id), self.keys.incidents], args=observe_args(incident_id, seen, policy)
        )
        return str(decision)

    def fire_early(self, incident_id: str, seen: Observation, claims: Sequence[str] = ()) -> str:
        """Open an incident at a batch (its early alert): ``fire``, ``open``, ``claimed`` or ``resolved``."""
        keys = [self.keys.incident(incident_id), self.keys.incidents]
        keys += [self.keys.early_claim(seen.window_start, claim) for claim in sorted(set(claims))]
        decision = self._early(keys=keys, args=early_args(incident_id, seen, self._retention_s))
        return str(decision)

    def early_delivered(self, incident_id: str, window_end: int) -> None:
        """The early alert of the incident, for the window ending at ``window_end``, was acknowledged."""
        self._early_delivered(keys=[self.keys.incident(incident_id)], args=[window_end])

    def open_incidents(self) -> dict[str, dict[str, str]]:
        """Every open incident's record, by id."""
        ids = cast("list[str]", self._redis.zrange(self.keys.incidents, 0, -1))
        if not ids:
            return {}
        pipe = pipeline(self._redis)
        for incident_id in ids:
            pipe.hgetall(self.keys.incident(incident_id))
        return {i: dict(record) for i, record in zip(ids, pipe.execute(), strict=True) if record}

    def incidents_seen_until(self, end_ms: int) -> list[str]:
        """Open incidents whose last window ended at or before ``end_ms``, oldest first."""
        return cast("list[str]", self._redis.zrangebyscore(self.keys.incidents, "-inf", end_ms))

    def resolve_incident(self, incident_id: str, window_end: int) -> dict[str, str] | None:
        """Mark an open incident resolved by the window ending at ``window_end``; its record, or None.

        None if it is not open, or another window's resolution of it awaits delivery.
        """
        state = self._resolve(
            keys=[self.keys.incidents, self.keys.incident(incident_id)], args=[incident_id, window_end]
        )
        if not state:
            return None
        return dict(zip(state[::2], state[1::2], strict=True))

    def confirm_incident(self, incident_id: str, window_end: int) -> bool:
        """Mark an open incident confirmed by the window ending at ``window_end`` (once; again for that window)."""
        done = self._confirm(
            keys=[self.keys.incidents, self.keys.incident(incident_id)], args=[incident_id, window_end]
        )
        return bool(done)

    def close_incident(self, incident_id: str, window_end: int, members: Sequence[str] = ()) -> bool:
        """Forget an incident once its RESOLVED alert was delivered, keeping tombstones (retention TTL)."""
        done = self._close(
            keys=[self.keys.incidents, self.keys.incident(incident_id), *map(self.keys.incident, members)],
            args=[incident_id, window_end, self._retention_s],
        )
        return bool(done)
