"""Where the metric buckets are read from: Redis, or the in-memory state of a replay.

:class:`~stream_guard.metrics.query.MetricsReader` reads a model's bucket hashes
(:mod:`stream_guard.metrics.store`) through a :class:`BucketReads`:

* :class:`RedisBucketReads`: Redis (or Redis Cluster: a model's keys share one slot).
  Buckets are summed in a server-side script, so their fields are not sent, parsed and
  summed in Python;
* :class:`MemoryBucketReads`: the :class:`~stream_guard.state.keyspace.MemoryKeySpace` of
  a :class:`~stream_guard.state.memory.MemoryState`, so ``stream-guard evaluate`` replays
  the label-based evaluators without a Redis server.

Both sum a field over buckets in the order of the keys given, so a rollup is the same
number wherever it is read from (up to Redis's ``long double`` float increments; see
:mod:`stream_guard.state.memory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from stream_guard.metrics import store as s
from stream_guard.state.client import REDIS_CLIENTS, RedisClient, pipeline
from stream_guard.state.keyspace import MemoryKeySpace

#: Buckets one summing script reads: bounds how long it holds Redis (a few ms per full bucket).
SUM_CHUNK = 8
#: Summing scripts per round trip. A pipeline's replies come back once Redis ran all of it, so
#: one round trip must end well within ``redis.socket_timeout_s``: a cold 24 h evaluation reads
#: 2,880 full buckets (the lookback and its baseline), seconds of Redis time in all.
SUMS_PER_TRIP = 16

#: KEYS: bucket hashes of one model (one hash tag). Returns ``[buckets present, f1, sum1, ...]``,
#: fields in order of first appearance, sums as ``%.17g`` (exact doubles; ``tostring`` keeps 14 digits).
_SUM_BUCKETS = """
local acc, order, present = {}, {}, 0
for i = 1, #KEYS do
  local flat = redis.call('HGETALL', KEYS[i])
  if #flat > 0 then present = present + 1 end
  for j = 1, #flat, 2 do
    local name = flat[j]
    local sum = acc[name]
    if sum == nil then
      order[#order + 1] = name
      acc[name] = tonumber(flat[j + 1])
    else
      acc[name] = sum + tonumber(flat[j + 1])
    end
  end
end
local out = {present}
for _, name in ipairs(order) do
  out[#out + 1] = name
  out[#out + 1] = string.format('%.17g', acc[name])
end
return out
"""

#: KEYS: bucket hashes; ARGV[1]: the version field. Per bucket: its version, 0 when the bucket
#: does not exist, -1 when it holds counters without a version (written before versions existed).
_VERSIONS = """
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HGET', KEYS[i], ARGV[1])
  if v then
    out[i] = tonumber(v)
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    out[i] = -1
  else
    out[i] = 0
  end
end
return out
"""

#: KEYS[1]: stored sums; ARGV[1]: the signature they must carry. Their fields when it matches, else none.
_STORED_SUMS = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HGETALL', KEYS[1])
end
return {}
"""

#: KEYS[1]: stored sums; ARGV[1]: TTL (s); ARGV[2..]: field, value pairs. Replaced whole, in one script,
#: so two writers of the same sums never leave a mix of both.
_STORE_SUMS = """
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 4000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 3999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: Version of a bucket that does not exist, and of one that cannot be trusted to have one.
ABSENT, UNVERSIONED = 0, -1
#: The field of stored sums (:meth:`BucketReads.store_sums`) that names what they were summed from.
SIGNATURE = "_sig"


class BucketReads(Protocol):
    """The reads :class:`~stream_guard.metrics.query.MetricsReader` makes of a model's buckets."""

    def sum_buckets(self, keys: Sequence[str]) -> tuple[dict[str, float], int]:
        """Field -> its sum over the bucket hashes ``keys`` (in their order), and how many of them exist."""
        ...

    def sum_bucket_groups(self, groups: Sequence[Sequence[str]]) -> list[tuple[dict[str, float], int]]:
        """:meth:`sum_buckets` of each group of keys, in one round trip where it is remote."""
        ...

    def bucket_versions(self, keys: Sequence[str]) -> list[int]:
        """Per bucket: its :data:`~stream_guard.metrics.store.VERSION` (:data:`ABSENT`, :data:`UNVERSIONED`)."""
        ...

    def bucket_fields(self, keys: Sequence[str], fields: Sequence[str] | None) -> list[dict[str, str]]:
        """Per bucket, its fields (only ``fields`` when given; absent ones left out), as stored."""
        ...

    def indexed(self, index_key: str, low: str, high: str) -> list[int]:
        """Bucket starts in the index between ``low`` and ``high`` (``ZRANGEBYSCORE`` bounds)."""
        ...

    def stored_sums(self, keys: Sequence[str], signatures: Sequence[str]) -> list[dict[str, str]]:
        """Per key, the fields of sums stored there with that :data:`SIGNATURE` (else ``{}``), one round trip."""
        ...

    def store_sums(self, sums: Sequence[tuple[str, dict[str, str]]], ttl_s: int) -> None:
        """Replace each key's stored sums with its fields (its :data:`SIGNATURE` among them), one round trip."""
        ...


class RedisBucketReads:
    """:class:`BucketReads` of a Redis client (``decode_responses=True``)."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._sum_script: Any = None
        self._versions_script: Any = None
        self._stored_script: Any = None
        self._store_script: Any = None

    def sum_buckets(self, keys: Sequence[str]) -> tuple[dict[str, float], int]:
        """Each chunk of :data:`SUM_CHUNK` buckets is summed in one script, :data:`SUMS_PER_TRIP` per round trip."""
        return self.sum_bucket_groups([keys])[0]

    def sum_bucket_groups(self, groups: Sequence[Sequence[str]]) -> list[tuple[dict[str, float], int]]:
        if self._sum_script is None:
            self._sum_script = self.client.register_script(_SUM_BUCKETS)
        chunks = []
        calls: list[Sequence[str]] = []
        for keys in groups:
            chunks.append(range(0, len(keys), SUM_CHUNK))
            calls += [keys[i : i + SUM_CHUNK] for i in chunks[-1]]
        results: list[Any] = []
        for first in range(0, len(calls), SUMS_PER_TRIP):
            pipe = pipeline(self.client)
            for chunk_keys in calls[first : first + SUMS_PER_TRIP]:
                pipe.script(self._sum_script, chunk_keys)
            results += pipe.execute()
        replies = iter(results)
        out = []
        for chunk in chunks:
            totals: dict[str, float] = {}
            present = 0
            for _ in chunk:
                reply = next(replies)
                present += int(reply[0])
                get = totals.get
                for j in range(1, len(reply), 2):
                    name = reply[j]
                    totals[name] = get(name, 0.0) + float(reply[j + 1])
            out.append((totals, present))
        return out

    def bucket_versions(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        if self._versions_script is None:
            self._versions_script = self.client.register_script(_VERSIONS)
        return [int(v) for v in self._versions_script(keys=list(keys), args=[s.VERSION])]

    def bucket_fields(self, keys: Sequence[str], fields: Sequence[str] | None) -> list[dict[str, str]]:
        if not keys:
            return []
        pipe = pipeline(self.client)
        for key in keys:
            if fields is None:
                pipe.hgetall(key)
            else:
                pipe.hmget(key, list(fields))
        replies = pipe.execute()
        if fields is None:
            return [dict(reply) for reply in replies]
        return [{f: v for f, v in zip(fields, reply, strict=True) if v is not None} for reply in replies]

    def indexed(self, index_key: str, low: str, high: str) -> list[int]:
        return [int(str(b)) for b in self.client.zrangebyscore(index_key, low, high)]

    def stored_sums(self, keys: Sequence[str], signatures: Sequence[str]) -> list[dict[str, str]]:
        if not keys:
            return []
        if self._stored_script is None:
            self._stored_script = self.client.register_script(_STORED_SUMS)
        pipe = pipeline(self.client)
        for key, signature in zip(keys, signatures, strict=True):
            pipe.script(self._stored_script, [key], [SIGNATURE, signature])
        return [dict(zip(flat[::2], flat[1::2], strict=True)) for flat in pipe.execute()]

    def store_sums(self, sums: Sequence[tuple[str, dict[str, str]]], ttl_s: int) -> None:
        if not sums:
            return
        if self._store_script is None:
            self._store_script = self.client.register_script(_STORE_SUMS)
        pipe = pipeline(self.client)
        for key, fields in sums:
            pipe.script(self._store_script, [key], [ttl_s, *(x for pair in fields.items() for x in pair)])
        pipe.execute()


class MemoryBucketReads:
    """:class:`BucketReads` of an in-memory key space (a :class:`~stream_guard.state.memory.MemoryState`)."""

    def __init__(self, space: MemoryKeySpace) -> None:
        self.space = space
        #: Stored sums live beside the key space, not in it: a replay's state holds only what the worker writes.
        self._stored: dict[str, dict[str, str]] = {}

    def sum_buckets(self, keys: Sequence[str]) -> tuple[dict[str, float], int]:
        totals: dict[str, float] = {}
        present = 0
        for key in keys:
            fields = self.space.hgetall(key)
            present += bool(fields)
            for name, value in fields.items():
                totals[name] = totals.get(name, 0.0) + float(value)
        return totals, present

    def sum_bucket_groups(self, groups: Sequence[Sequence[str]]) -> list[tuple[dict[str, float], int]]:
        return [self.sum_buckets(keys) for keys in groups]

    def bucket_versions(self, keys: Sequence[str]) -> list[int]:
        out = []
        for key in keys:
            fields = self.space.hgetall(key)
            version = fields.get(s.VERSION)
            out.append(int(version) if version is not None else (UNVERSIONED if fields else ABSENT))
        return out

    def bucket_fields(self, keys: Sequence[str], fields: Sequence[str] | None) -> list[dict[str, str]]:
        out = []
        for key in keys:
            stored = self.space.hgetall(key)
            out.append(stored if fields is None else {f: stored[f] for f in fields if f in stored})
        return out

    def indexed(self, index_key: str, low: str, high: str) -> list[int]:
        def bound(text: str) -> tuple[float, bool]:
            """A ``ZRANGEBYSCORE`` bound: its value, and whether it is exclusive (``(``)."""
            return float(text.lstrip("(")), text.startswith("(")

        lo, lo_open = bound(low)
        hi, hi_open = bound(high)
        return [
            int(member)
            for member, score in self.space.zrange(index_key)
            if (score > lo if lo_open else score >= lo) and (score < hi if hi_open else score <= hi)
        ]

    def stored_sums(self, keys: Sequence[str], signatures: Sequence[str]) -> list[dict[str, str]]:
        out = []
        for key, signature in zip(keys, signatures, strict=True):
            stored = self._stored.get(key, {})
            out.append(dict(stored) if stored.get(SIGNATURE) == signature else {})
        return out

    def store_sums(self, sums: Sequence[tuple[str, dict[str, str]]], ttl_s: int) -> None:
        for key, fields in sums:
            self._stored[key] = dict(fields)


def bucket_reads(source: RedisClient | BucketReads | MemoryKeySpace) -> BucketReads:
    """The :class:`BucketReads` of a Redis client, an in-memory key space, or itself."""
    if isinstance(source, MemoryKeySpace):
        return MemoryBucketReads(source)
    if isinstance(source, REDIS_CLIENTS):
        return RedisBucketReads(source)
    return source
