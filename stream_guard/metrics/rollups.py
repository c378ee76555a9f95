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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stream_guard.metrics.buckets import ABSENT, UNVERSIONED
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

#: Tiles of a whole hour are also kept added up: a 24 h lookback on 5-minute tiles adds 24 parts, not 288.
SUPER_TILE_MS = 3600 * 1000


@dataclass
class _Tile:
    #: The versions of its buckets when it was summed.
    versions: tuple[int, ...]
    sums: _Sums
    used: int


@dataclass
class RollupStats:
    """What a cache did, since it was made: tiles summed from Redis, tiles reused, buckets summed."""

    tiles_read: int = 0
    tiles_reused: int = 0
    buckets_read: int = 0


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
    """

    def __init__(self, reader: MetricsReader, tile_ms: int, *, keep_calls: int = 4) -> None:
        bucket = reader.bucket_ms
        self.reader = reader
        self.tile_ms = tile_ms if tile_ms >= bucket and tile_ms % bucket == 0 else bucket
        self.keep_calls = keep_calls
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
            else:
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
        return self._merged(tile_starts, signatures, sums)

    def _merged(self, tile_starts: list[int], signatures: list[tuple[int, ...]], sums: list[_Sums]) -> list[_Sums]:
        """``sums`` with the tiles of each whole :data:`SUPER_TILE_MS` replaced by their (cached) sum.

        Which tiles merge depends on the grid only, so the floats do not depend on the cache.
        """
        per_super = max(1, SUPER_TILE_MS // self.tile_ms)
        if per_super == 1:
            return sums
        span = per_super * self.tile_ms
        out: list[_Sums] = []
        i = 0
        while i < len(sums):
            if tile_starts[i] % span != 0 or i + per_super > len(sums):
                out.append(sums[i])
                i += 1
                continue
            signature = tuple(v for sig in signatures[i : i + per_super] for v in sig)
            cached = self._supers.get(tile_starts[i])
            if cached is None or cached.versions != signature:
                cached = _Tile(signature, self._added(sums[i : i + per_super]), self._calls)
                if UNVERSIONED not in signature:
                    self._supers[tile_starts[i]] = cached
            cached.used = self._calls
            out.append(cached.sums)
            i += per_super
        return out

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
        if not self._tiles:  # nothing refers to the field names: let slices that went away go too
            self._names, self._index = [], {}

    @property
    def tiles_held(self) -> int:
        return len(self._tiles)
