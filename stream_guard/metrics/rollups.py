"""Rollups that cost what changed: a lookback summed from tiles, each read again only when it changed.

An evaluator rolls up the same long range (24 h by default) at every evaluation, moved
by one step. Summing every bucket of it each time would cost the whole lookback per
evaluation; :class:`RollupCache` cuts the range into **tiles** on a fixed grid (the
evaluator's step, e.g. 1 h) and keeps each tile's sums between evaluations, with the
:data:`~stream_guard.metrics.store.VERSION` of each of its buckets. An evaluation reads
the versions of the range's buckets (one small script), sums again only the tiles where
one changed (new traffic, labels joined to older predictions, expiry) or that are new,
and adds the tiles' sums up. The cost per evaluation is the changed tiles, not the
lookback: at a 24 h lookback the tiles of the last label delay, not 1,440 buckets.

The result does not depend on what was cached: a range is always cut into the same
tiles (the grid is fixed, partial tiles at the ends are read whole each time) and their
sums are added in the same order, so a worker that just started and one that has run
for days compute the same floats. A bucket written before versions existed reads as
unversioned (-1) and keeps its tile out of the cache.

A cache that starts empty (a worker started, restarted, or took the model over in a
rebalance) would read every bucket of the lookback and its baseline once: 2,880 full
buckets at 24 h, seconds of Redis scripting inside the worker's loop. So, with
``stored_ttl_s``, the sums of each whole hour are also **stored** beside the buckets
(``m:sum:<tile>:<start>``, with a digest of the versions they were summed at), once the
hour stayed unchanged from one rollup to the next; a cache that holds nothing of an hour
asks the store first and takes its sums when the versions still match. The stored
fields are ``repr`` of the held doubles, which read back as the same doubles, so a
restarted worker adds the same parts in the same order: the floats still do not depend
on what was cached, here or in Redis. Stored sums are written at evaluation time only,
never by the writers of the buckets. An hour read back as one hash has none of its tiles
held: when the range's start enters it, its remaining tiles are summed once.

With ``warm_in_background`` a cache does not sum a cold range in the call when it spans
more than :data:`COLD_HOURS_INLINE` hours: a thread sums and stores them, and the rollup
raises :class:`~stream_guard.errors.RollupWarmingError` until the thread is done. Which
evaluations run then depends on how fast the thread was; what each one that runs computes
does not.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import structlog

from stream_guard.errors import RollupWarmingError
from stream_guard.metrics.buckets import ABSENT, SIGNATURE, UNVERSIONED, RedisBucketReads
from stream_guard.metrics.query import MetricsReader, Rollup, rollup_of


class Rollups(Protocol):
    """What an evaluator reads rollups from: a :class:`RollupCache` or a :class:`MetricsReader` itself."""

    def rollup(self, start_ms: int, end_ms: int) -> Rollup: ...


@dataclass
class _Sums:
    """Sums of some buckets: the fields present (as indices into the cache's field names) and their sums."""

    fields: np.ndarray
    values: np.ndarray
    present: int


_EMPTY = _Sums(np.zeros(0, dtype=np.int64), np.zeros(0), 0)

_log = structlog.get_logger("stream_guard.metrics.rollups")

#: Tiles of a whole hour are also kept added up: a 24 h lookback on 5-minute tiles adds 24 parts, not 288.
SUPER_TILE_MS = 3600 * 1000
#: Hours stored by one rollup at most: a worker that started cold stores a long lookback's hours
#: over a few evaluations, not all in the first one after it.
STORED_PER_ROLLUP = 8
#: Hours a rollup sums itself when neither held nor stored; more (a long lookback, cold) are summed in the
#: background when the cache may (``warm_in_background``), and the rollup raises :class:`RollupWarmingError`.
COLD_HOURS_INLINE = 2
#: The field of stored sums that holds how many of the hour's buckets exist.
_PRESENT = "_n"


def _signature_text(versions: tuple[int, ...]) -> str:
    """What stored sums were summed at: a digest of their buckets' versions (and so of their count)."""
    return hashlib.blake2b(",".join(map(str, versions)).encode(), digest_size=16).hexdigest()


def _storable(versions: tuple[int, ...]) -> bool:
    """Worth storing, and safe to: some bucket exists and every one has a version."""
    return UNVERSIONED not in versions and any(v != ABSENT for v in versions)


@dataclass
class _Tile:
    #: The versions of its buckets when it was summed.
    versions: tuple[int, ...]
    sums: _Sums
    used: int
    #: Whether the store holds these sums (an hour's; tiles are never stored).
    stored: bool = False


@dataclass
class RollupStats:
    """What a cache did, since it was made: tiles summed from Redis, tiles reused, buckets summed, hours stored."""

    tiles_read: int = 0
    tiles_reused: int = 0
    buckets_read: int = 0
    #: Hours whose sums were read from the store / written to it.
    hours_loaded: int = 0
    hours_stored: int = 0


class RollupCache:
    """:meth:`MetricsReader.rollup` of ranges on a grid of tiles, each tile summed once until it changes.

    Parameters
    ----------
    reader
        The model's metrics reader.
    tile_ms
        The grid; a multiple of the reader's bucket (else the bucket). Ranges whose ends
        lie on the grid are all tiles; the partial tiles at the ends of others are read
        each time.
    keep_calls
        A tile not used by the last ``keep_calls`` rollups is dropped, so memory holds
        the ranges being evaluated and no more.
    stored_ttl_s
        When given, the sums of each whole hour are also stored beside the buckets (for
        this long) and read back by a cache that does not hold them: a worker that just
        started, or took the model over, reads an hour of a long lookback as one hash of
        sums instead of its buckets.
    warm_in_background
        With ``stored_ttl_s``: a rollup that finds more than :data:`COLD_HOURS_INLINE`
        hours neither held nor stored starts a thread that sums and stores them, one hour
        at a time, and raises :class:`~stream_guard.errors.RollupWarmingError` (so does
        every such rollup until the thread is done); the rollups after it read the stored
        hours, with the same floats. Off, a cold range is summed in the call.
    """

    def __init__(
        self,
        reader: MetricsReader,
        tile_ms: int,
        *,
        keep_calls: int = 4,
        stored_ttl_s: int | None = None,
        warm_in_background: bool = False,
    ) -> None:
        if warm_in_background and stored_ttl_s is None:
            raise ValueError("warm_in_background stores the hours it sums: it needs stored_ttl_s")
        bucket = reader.bucket_ms
        self.reader = reader
        self.tile_ms = tile_ms if tile_ms >= bucket and tile_ms % bucket == 0 else bucket
        self.keep_calls = keep_calls
        self.stored_ttl_s = stored_ttl_s
        self.warm_in_background = warm_in_background
        #: What the background warm-ups did (hours stored), since the cache was made.
        self.warm_stats = RollupStats()
        self._warming: threading.Thread | None = None
        #: Hours the warm-up thread has still to sum; it ends when none is left (under the lock).
        self._to_warm: list[int] = []
        self._warm_lock = threading.Lock()
        self.stats = RollupStats()
        self._tiles: dict[int, _Tile] = {}
        #: Sums of the tiles of each whole SUPER_TILE_MS, so a long lookback adds up a few dozen parts.
        self._supers: dict[int, _Tile] = {}
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._calls = 0

    def rollup(self, start_ms: int, end_ms: int) -> Rollup:
        """The rollup of ``[floor(start_ms), end_ms)``, every slice; equal to ``reader.rollup`` up to float rounding."""
        self._calls += 1
        bucket, tile = self.reader.bucket_ms, self.tile_ms
        first = (start_ms // bucket) * bucket
        inner_start = -(-first // tile) * tile
        inner_end = max(inner_start, (end_ms // tile) * tile)
        parts: list[_Sums] = []
        if inner_start >= end_ms:
            parts.append(self._read(self.reader.bucket_starts(first, end_ms)))
        else:
            parts.append(self._read(self.reader.bucket_starts(first, inner_start)))
            parts += self._tiles_of(inner_start, inner_end)
            parts.append(self._read(self.reader.bucket_starts(inner_end, end_ms)))
        added = self._added(parts)
        totals = dict(zip([self._names[i] for i in added.fields.tolist()], added.values.tolist(), strict=True))
        self._evict()
        return rollup_of(totals, start_ms, end_ms, added.present)

    # -- internals -----------------------------------------------------------------------

    def _tiles_of(self, start_ms: int, end_ms: int) -> list[_Sums]:
        """The sums of the tiles of ``[start_ms, end_ms)`` (both on the grid), in order, whole hours merged."""
        per_tile = self.tile_ms // self.reader.bucket_ms
        starts = list(range(start_ms, end_ms, self.reader.bucket_ms))
        versions = self.reader.versions(starts)
        tile_starts = list(range(start_ms, end_ms, self.tile_ms))
        signatures = [tuple(versions[i * per_tile : (i + 1) * per_tile]) for i in range(len(tile_starts))]
        hours = self._hours(tile_starts, signatures)
        known = self._known_hours(tile_starts, hours)
        if self.warm_in_background:
            cold = [tile_starts[i] for i, sig in hours.items() if i not in known and _storable(sig)]
            cold = [start for start in cold if start not in self._supers]  # held at other versions: tiles held
            if len(cold) > COLD_HOURS_INLINE:
                self._warm_up(cold)
                raise RollupWarmingError(
                    f"{len(cold)} hours of [{start_ms}, {end_ms}) are neither held nor stored: summed in the background"
                )
        covered = {i for first in known for i in range(first, first + self._per_super)}
        sums: list[_Sums] = []
        stale: list[int] = []
        for i, (tile_start, signature) in enumerate(zip(tile_starts, signatures, strict=True)):
            cached = self._tiles.get(tile_start)
            if cached is not None and cached.versions == signature:
                cached.used = self._calls
                self.stats.tiles_reused += 1
            elif all(v == ABSENT for v in signature):
                cached = _Tile(signature, _EMPTY, self._calls)
                self._tiles[tile_start] = cached
            elif i not in covered:
                stale.append(i)
            sums.append(cached.sums if cached is not None else _EMPTY)
        fresh = self._read_groups([starts[i * per_tile : (i + 1) * per_tile] for i in stale])
        for i, tile_sums in zip(stale, fresh, strict=True):
            sums[i] = tile_sums
            if UNVERSIONED in signatures[i]:
                self._tiles.pop(tile_starts[i], None)
            else:
                self._tiles[tile_starts[i]] = _Tile(signatures[i], tile_sums, self._calls)
        self.stats.tiles_read += len(stale)
        self._store_settled(tile_starts, known)
        return self._merged(tile_starts, sums, hours, known)

    @property
    def _per_super(self) -> int:
        return max(1, SUPER_TILE_MS // self.tile_ms)

    def _hours(self, tile_starts: list[int], signatures: list[tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
        """Index of the first tile of each whole :data:`SUPER_TILE_MS` -> the versions of its buckets.

        Which tiles merge depends on the grid only, so the floats do not depend on the cache.
        """
        per_super = self._per_super
        if per_super == 1:
            return {}
        span = per_super * self.tile_ms
        return {
            i: tuple(v for sig in signatures[i : i + per_super] for v in sig)
            for i, tile_start in enumerate(tile_starts)
            if tile_start % span == 0 and i + per_super <= len(tile_starts)
        }

    def _known_hours(self, tile_starts: list[int], hours: dict[int, tuple[int, ...]]) -> dict[int, _Tile]:
        """The hours whose sums need no tile: held unchanged, or stored (by any worker) at the same versions.

        Only hours this cache holds nothing of are looked up in the store: one it holds at
        other versions changed since this cache summed it, and so since it stored it.
        """
        known: dict[int, _Tile] = {}
        wanted: list[int] = []
        for i, signature in hours.items():
            cached = self._supers.get(tile_starts[i])
            if cached is not None and cached.versions == signature:
                cached.used = self._calls
                known[i] = cached
            elif cached is None and self.stored_ttl_s is not None and _storable(signature):
                wanted.append(i)
        if not wanted:
            return known
        stored = self.reader.stored_sums(
            self.tile_ms, [tile_starts[i] for i in wanted], [_signature_text(hours[i]) for i in wanted]
        )
        for i, fields in zip(wanted, stored, strict=True):
            if fields:
                loaded = _Tile(hours[i], self._loaded(fields), self._calls, stored=True)
                known[i] = self._supers[tile_starts[i]] = loaded
                self.stats.hours_loaded += 1
        return known

    def _merged(
        self, tile_starts: list[int], sums: list[_Sums], hours: dict[int, tuple[int, ...]], known: dict[int, _Tile]
    ) -> list[_Sums]:
        """``sums`` with the tiles of each whole hour replaced by their sum: known, or added now."""
        out: list[_Sums] = []
        i = 0
        while i < len(sums):
            signature = hours.get(i)
            if signature is None:
                out.append(sums[i])
                i += 1
                continue
            cached = known.get(i)
            if cached is None:
                cached = _Tile(signature, self._added(sums[i : i + self._per_super]), self._calls)
                if UNVERSIONED not in signature:
                    self._supers[tile_starts[i]] = cached
            out.append(cached.sums)
            i += self._per_super
        return out

    def _store_settled(self, tile_starts: list[int], known: dict[int, _Tile]) -> None:
        """Store the hours held unchanged since an earlier rollup and not stored yet (one round trip).

        An hour still being written (new traffic, labels joining) changes at every
        evaluation; it is stored once it stayed the same for one, so a steady worker writes
        each hour of a range about once, not at every evaluation. At most
        :data:`STORED_PER_ROLLUP`, oldest first; the others at the next rollups.
        """
        if self.stored_ttl_s is None:
            return
        settled = [(i, hour) for i, hour in known.items() if not hour.stored and _storable(hour.versions)]
        settled = settled[:STORED_PER_ROLLUP]
        if not settled:
            return
        self.reader.store_sums(
            self.tile_ms, [(tile_starts[i], self._stored_fields(hour)) for i, hour in settled], self.stored_ttl_s
        )
        for _, hour in settled:
            hour.stored = True
        self.stats.hours_stored += len(settled)

    def _stored_fields(self, hour: _Tile) -> dict[str, str]:
        """An hour's sums as stored fields: ``repr`` gives back the same double, so stored and held sums agree."""
        sums = hour.sums
        fields = {self._names[f]: repr(v) for f, v in zip(sums.fields.tolist(), sums.values.tolist(), strict=True)}
        fields[SIGNATURE] = _signature_text(hour.versions)
        fields[_PRESENT] = str(hour.sums.present)
        return fields

    def _loaded(self, fields: dict[str, str]) -> _Sums:
        """The :class:`_Sums` of stored fields (:meth:`_stored_fields`)."""
        present = int(fields.pop(_PRESENT, "0"))
        fields.pop(SIGNATURE, None)
        index = np.fromiter((self._field(name) for name in fields), dtype=np.int64, count=len(fields))
        return _Sums(index, np.fromiter(map(float, fields.values()), dtype=np.float64, count=len(fields)), present)

    @property
    def warming(self) -> bool:
        """Whether a background warm-up is summing hours now."""
        with self._warm_lock:
            return self._warming is not None

    def wait_warm(self, timeout_s: float | None = None) -> bool:
        """Wait for the background warm-up, if any; whether none is running now."""
        with self._warm_lock:
            thread = self._warming
        if thread is not None:
            thread.join(timeout_s)
        return not self.warming

    def _warm_up(self, hour_starts: list[int]) -> None:
        """Queue ``hour_starts`` for the warm-up thread, and start it unless it is at work already."""
        with self._warm_lock:
            self._to_warm += [start for start in hour_starts if start not in self._to_warm]
            if self._warming is not None:
                return
            self._warming = threading.Thread(target=self._store_hours, name="rollup-warm-up", daemon=True)
            self._warming.start()

    def _store_hours(self) -> None:
        """The warm-up thread: sum and store the queued hours, one at a time, until none is left.

        One hour per round of scripts, so Redis serves the worker's batches in between. It
        sums on a cache of its own: nothing is shared with the evaluating cache but the
        reader, the store and the queue. A failure ends the warm-up; the next cold rollup
        starts another.
        """
        helper = RollupCache(self.reader, self.tile_ms, stored_ttl_s=self.stored_ttl_s)
        helper.stats = self.warm_stats
        span = self._per_super * self.tile_ms
        while True:
            with self._warm_lock:
                if not self._to_warm:
                    self._warming = None
                    return
                start = self._to_warm[0]
            try:
                helper._store_hour(start, span)
            except Exception as exc:  # noqa: BLE001 - a thread's failure is logged; the next rollup tries again
                _log.warning("rollup_warm_up_failed", error=repr(exc), hours_left=len(self._to_warm))
                with self._warm_lock:
                    self._to_warm.clear()
                    self._warming = None
                return
            with self._warm_lock:
                self._to_warm.remove(start)

    def _store_hour(self, start: int, span: int) -> None:
        """Sum the hour at ``start`` (unless stored at its versions already) and store it; hold nothing after."""
        self._tiles_of(start, start + span)
        hour = self._supers.get(start)
        if hour is not None and not hour.stored and self.stored_ttl_s is not None:
            self.reader.store_sums(self.tile_ms, [(start, self._stored_fields(hour))], self.stored_ttl_s)
            self.stats.hours_stored += 1
        self._tiles.clear()
        self._supers.clear()
        self._names, self._index = [], {}

    def _added(self, parts: Sequence[_Sums]) -> _Sums:
        """One :class:`_Sums` of ``parts``, added in their order."""
        total = np.zeros(len(self._names))
        seen = np.zeros(len(self._names), dtype=bool)
        for part in parts:
            total[part.fields] += part.values
            seen[part.fields] = True
        fields = np.flatnonzero(seen)
        return _Sums(fields, total[fields], sum(p.present for p in parts))

    def _read(self, starts: Sequence[int]) -> _Sums:
        """Sum the buckets starting at ``starts`` (one round trip)."""
        return self._read_groups([starts])[0] if starts else _EMPTY

    def _read_groups(self, groups: Sequence[Sequence[int]]) -> list[_Sums]:
        """Sum each group of buckets on its own, all groups in one round trip."""
        if not groups:
            return []
        self.stats.buckets_read += sum(len(g) for g in groups)
        out = []
        for totals, present in self.reader.sum_groups(groups):
            fields = np.fromiter((self._field(name) for name in totals), dtype=np.int64, count=len(totals))
            out.append(_Sums(fields, np.fromiter(totals.values(), dtype=np.float64, count=len(totals)), present))
        return out

    def _field(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            index = self._index[name] = len(self._names)
            self._names.append(name)
        return index

    def _evict(self) -> None:
        oldest = self._calls - self.keep_calls
        for cache in (self._tiles, self._supers):
            for start in [t for t, entry in cache.items() if entry.used <= oldest]:
                del cache[start]
        if not self._tiles and not self._supers:  # nothing refers to the field names: let slices that went go
            self._names, self._index = [], {}

    @property
    def tiles_held(self) -> int:
        return len(self._tiles)


def stored_rollups(reader: MetricsReader, tile_ms: int, retention_s: int) -> RollupCache:
    """An evaluator's cache: hours stored for the metrics retention, cold ranges warmed in the background on Redis.

    An in-memory source (a replay) sums a cold range in the call: a replay evaluates every
    window, whatever the speed of the machine.
    """
    background = isinstance(reader.source, RedisBucketReads)
    return RollupCache(reader, tile_ms, stored_ttl_s=retention_s, warm_in_background=background)
