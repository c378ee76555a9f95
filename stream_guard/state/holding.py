"""Held labels on Redis: the ``T`` (take) op of the apply script, and the reads of the label join.

A label that arrives before its prediction is *held* (``sg:{m}:held:<event_id>``, indexed by
label time in ``sg:{m}:m:held``) until the prediction is stored or the hold expires
(:mod:`stream_guard.metrics.holding`). Whoever ends a hold, the prediction's arrival or the
expiry, does it with ``T``: it deletes the held label only if it is still there, and counts
only then, so a hold ends, and is counted, once.

:class:`RedisLabelReads` is the part of :class:`~stream_guard.state.window_store.WindowStore`
that reads for the label join: one pipelined round trip each.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from redis.exceptions import ResponseError

from stream_guard.state.client import pipeline
from stream_guard.state.keys import ModelKeys
from stream_guard.state.keyspace import MemoryKeySpace, ZSet
from stream_guard.state.update import FIXED_KEYS, HeldInputs

#: The body of ``T`` in the apply script (see :class:`~stream_guard.state.ops.Op`); ``i`` points at the letter.
TAKE_LUA = """local x, c = KEYS[tonumber(ARGV[i+1])], KEYS[tonumber(ARGV[i+2])]
    local m, n = tonumber(ARGV[i+3]), tonumber(ARGV[i+4])
    local taken = 0
    for e = i + 5, i + 2 + 3 * m, 3 do
      local k, also = tonumber(ARGV[e]), tonumber(ARGV[e+1])
      if redis.call('EXISTS', KEYS[k]) == 1 then
        redis.call('DEL', KEYS[k], KEYS[also])
        redis.call('ZREM', x, ARGV[e+2])
        taken = taken + 1
      end
      own_ttl[k] = 0; own_ttl[also] = 0
    end
    if taken > 0 then
      for f = i + 5 + 3 * m, i + 4 + n, 2 do
        if string.match(ARGV[f+1], '^-?%d+$') then
          redis.call('HINCRBY', c, ARGV[f], tostring(tonumber(ARGV[f+1]) * taken))
        else
          for _ = 1, taken do redis.call('HINCRBYFLOAT', c, ARGV[f], ARGV[f+1]) end
        end
      end
    end
    i = i + 5 + n"""

#: Its validation, before the script's first write: types, and the counter fields it may add to.
TAKE_CHECK_LUA = """local c, m = tonumber(ARGV[i+2]), tonumber(ARGV[i+3])
    if shadow[c] == nil then shadow[c] = {} end
    if not need(j, 'zset') or not need(c, 'hash') then return wrongtype() end
    for e = i + 5, i + 2 + 3 * m, 3 do
      local k, also = tonumber(ARGV[e]), tonumber(ARGV[e+1])
      for _, key in ipairs({k, also}) do
        if shadow[key] == nil then shadow[key] = {} end
        if not need(key, 'string') then return wrongtype() end
        kinds[key] = nil
      end
    end
    for f = i + 5 + 3 * m, i + 4 + tonumber(ARGV[i+4]), 2 do
      local amount, cur = ARGV[f+1], field(c, ARGV[f])
      if string.match(amount, '^-?%d+$') then
        if cur ~= nil and not is_int(cur) then return redis.error_reply('ERR hash value is not an integer') end
      elseif tonumber(amount) == nil or tonumber(amount) ~= tonumber(amount) then
        return redis.error_reply('ERR value is not a valid float')
      elseif cur ~= nil and tonumber(cur) == nil then
        return redis.error_reply('ERR hash value is not a float')
      end
      shadow[c][ARGV[f]] = tonumber(cur or 0) + tonumber(amount) * m
    end"""


def slowest_active(marks: Mapping[str, str], seen: Mapping[str, str], now_ms: int, idle_ms: float) -> float:
    """Smallest of ``marks`` over the sources ``seen`` within ``idle_ms`` of ``now_ms``; inf if none is."""
    active = [int(mark) for source, mark in marks.items() if now_ms - int(seen.get(source, 0)) <= idle_ms]
    return float(min(active)) if active else math.inf


class RedisLabelReads:
    """The label join's reads on Redis (mixed into :class:`~stream_guard.state.window_store.WindowStore`)."""

    _redis: Any
    keys: ModelKeys
    _idle_ms: int

    def label_inputs(
        self, sources: Sequence[str], event_ids: Sequence[str]
    ) -> tuple[dict[str, int], list[str | None], list[str | None]]:
        """The labels fence of ``sources``, and the stored prediction and held label of each event id."""
        pipe = pipeline(self._redis)
        pipe.hmget(self.keys.labels_applied, list(sources) or [""])
        if event_ids:
            pipe.mget(self.keys.predictions(event_ids))
            pipe.mget(self.keys.helds(event_ids))
        replies = pipe.execute()
        fences = {src: int(v) for src, v in zip(sources, replies[0], strict=False) if v is not None}
        if not event_ids:
            return fences, [], []
        return fences, list(replies[1]), list(replies[2])

    def held_inputs(self, event_ids: Sequence[str], now_ms: int) -> HeldInputs:
        """The held label of each event id and the stored prediction of each held one, the events'
        global watermark and the label time of the oldest held label.

        One round trip while no label is held: a held label is in the index (``sg:{m}:m:held``)
        from the script that holds it to the one that takes it, and the index outlives it (the
        same TTL, renewed by every labels update), so an empty index means no held label to
        read. Otherwise a second for the held labels, and a third for the predictions of the
        held ones only: an events batch whose events no label waits for reads none of its
        predictions back.
        """
        pipe = pipeline(self._redis)
        pipe.hgetall(self.keys.watermarks)
        pipe.hgetall(self.keys.watermarks_seen)
        pipe.zrange(self.keys.held_index, 0, 0, withscores=True)
        marks, seen, oldest = pipe.execute()
        held: list[str | None] = [None] * len(event_ids)
        if oldest and event_ids:
            held = list(self._redis.mget(self.keys.helds(event_ids)))
        waiting = [x for x, value in zip(event_ids, held, strict=True) if value is not None]
        predictions: list[str | None] = [None] * len(event_ids)
        if waiting:
            stored = dict(zip(waiting, self._redis.mget(self.keys.predictions(waiting)), strict=True))
            predictions = [stored.get(x) for x in event_ids]
        watermark = slowest_active(marks, seen, now_ms, self._idle_ms)
        return HeldInputs(held, predictions, watermark, int(oldest[0][1]) if oldest else None)

    def held_until(self, until_ms: int) -> list[tuple[str, int]]:
        """Held event ids whose label time is at or before ``until_ms``, with that time, oldest first."""
        found = self._redis.zrangebyscore(self.keys.held_index, "-inf", int(until_ms), withscores=True)
        return [(str(member), int(score)) for member, score in cast("list[tuple[str, float]]", found)]

    def label_watermark(self, now_ms: int) -> float:
        """Smallest label watermark over labels partitions updated within the idle timeout.

        ``inf`` when every known labels partition is idle (the labels stopped), ``-inf`` when
        no labels partition is known yet.
        """
        pipe = pipeline(self._redis)
        pipe.hgetall(self.keys.labels_watermarks)
        pipe.hgetall(self.keys.labels_seen)
        marks, seen = pipe.execute()
        return slowest_active(marks, seen, now_ms, self._idle_ms) if marks else -math.inf


def _key_at(keys: list[str], fixed: Sequence[str], index: Any) -> str:
    """The key at a Lua ``KEYS`` index: 1-4 are the fence's fixed keys, the update's own follow."""
    i = int(index)
    return fixed[i - 1] if i <= FIXED_KEYS else keys[i - FIXED_KEYS - 1]


class MemoryLabelReads(MemoryKeySpace):
    """The same reads, and the ``O`` and ``T`` ops, in process memory (a base of ``MemoryState``)."""

    keys: ModelKeys
    _idle_ms: float
    _clock: int

    def label_inputs(
        self, sources: Sequence[str], event_ids: Sequence[str]
    ) -> tuple[dict[str, int], list[str | None], list[str | None]]:
        """The labels fence of ``sources``, and the stored prediction and held label of each event id."""
        applied = self._existing(self.keys.labels_applied, dict) or {}
        fences = {s: int(applied[s]) for s in sources if s in applied}
        return fences, [self._string(self.keys.prediction(x)) for x in event_ids], self._held(event_ids)

    def held_inputs(self, event_ids: Sequence[str], now_ms: int) -> HeldInputs:
        """The held label of each event id and the stored prediction of each held one, the events'
        global watermark and the label time of the oldest held label."""
        marks = self._existing(self.keys.watermarks, dict) or {}
        seen = self._existing(self.keys.watermarks_seen, dict) or {}
        oldest = self.zrange(self.keys.held_index)[:1]
        held = self._held(event_ids)
        return HeldInputs(
            held,
            [
                None if h is None else self._string(self.keys.prediction(x))
                for x, h in zip(event_ids, held, strict=True)
            ],
            slowest_active(marks, seen, now_ms, self._idle_ms),
            int(oldest[0][1]) if oldest else None,
        )

    def held_until(self, until_ms: int) -> list[tuple[str, int]]:
        """Held event ids whose label time is at or before ``until_ms``, with that time, oldest first."""
        return [(member, int(score)) for member, score in self.zrange(self.keys.held_index) if score <= until_ms]

    def label_watermark(self, now_ms: int) -> float:
        """Smallest label watermark over labels partitions updated within the idle timeout (see Redis's)."""
        marks = self._existing(self.keys.labels_watermarks, dict) or {}
        seen = self._existing(self.keys.labels_seen, dict) or {}
        return slowest_active(marks, seen, now_ms, self._idle_ms) if marks else -math.inf

    def _string(self, key: str) -> str | None:
        value = self._data.get(key)
        return value if isinstance(value, str) else None

    def _held(self, event_ids: Sequence[str]) -> list[str | None]:
        return [self._string(self.keys.held(x)) for x in event_ids]

    def _op_set_once_counted(
        self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]
    ) -> None:
        ttl_s, m = int(args[0]), int(args[1])
        triples = args[3 + 3 * m :]
        counters = [(_key_at(keys, fixed, c), str(f), int(a)) for c, f, a in zip(*[iter(triples)] * 3, strict=True)]
        for counter, name, _ in counters:  # checked even if every key was there, as the script validates
            current = (self._existing(counter, dict) or {}).get(name, "0")
            if not current.lstrip("-").isdigit():
                raise ResponseError("ERR hash value is not an integer")
        again = [0] * len(counters)
        for e in range(m):
            key_index, value, listed = args[3 + 3 * e : 6 + 3 * e]
            target = _key_at(keys, fixed, key_index)
            if target in self._data:
                for t in str(listed).split(","):
                    if t:
                        again[int(t) - 1] += 1
            else:
                self._data[target] = str(value)
                self._deadlines[target] = self._clock + ttl_s * 1000
            own_ttl[int(key_index)] = 0
        for (counter, name, amount), taken_back in zip(counters, again, strict=True):
            if amount - taken_back:
                self._hincrby(counter, name, amount - taken_back)

    def _op_take(self, args: list[Any], keys: list[str], fixed: Sequence[str], own_ttl: dict[int, int]) -> None:
        def at(index: Any) -> str:
            i = int(index)
            return fixed[i - 1] if i <= FIXED_KEYS else keys[i - FIXED_KEYS - 1]

        index, counter, m = at(args[0]), at(args[1]), int(args[2])
        self._existing(index, ZSet), self._existing(counter, dict)  # WRONGTYPE either way, as the script validates
        triples = [args[4 + 3 * e : 7 + 3 * e] for e in range(m)]
        for key_index, also_index, _ in triples:
            self.get(at(key_index)), self.get(at(also_index))
        taken = 0
        for key_index, also_index, member in triples:
            key = at(key_index)
            if key in self._data:
                self._delete(key)
                self._delete(at(also_index))
                members = self._existing(index, ZSet)
                if members is not None:
                    members.pop(str(member), None)
                    if not members:
                        self._delete(index)  # Redis drops an emptied sorted set
                taken += 1
            own_ttl[int(key_index)] = 0
            own_ttl[int(also_index)] = 0
        pairs = args[4 + 3 * m :]
        for name, amount in zip(pairs[::2], pairs[1::2], strict=True) if taken else ():
            if re.fullmatch(r"-?\d+", str(amount)):
                self._hincrby(counter, str(name), int(amount) * taken)
            else:
                for _ in range(taken):
                    self._hincrbyfloat(counter, str(name), float(amount))
