"""Unit tests for stream_guard.metrics.rollups: a lookback summed from tiles, each read again only when it changed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_guard.errors import RollupWarmingError
from stream_guard.metrics import rollups
from stream_guard.metrics import store as s
from stream_guard.metrics.query import MetricsReader, Rollup
from stream_guard.metrics.rollups import RollupCache
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState
from stream_guard.state.update import StateUpdate

KEYS = ModelKeys("sg", "wide")
MKEYS = s.MetricKeys(KEYS)
BUCKET = 60_000
TILE = 5 * BUCKET
BASE = 1_700_000_100_000 // TILE * TILE
SLICES = ["*", "channel=web", "channel=app", "region=north"]


class Stream:
    """A MemoryState written the way the slice recorder and the label join write it, one fenced update at a time."""

    def __init__(self) -> None:
        self.state = MemoryState(KEYS, window_ms=BUCKET, lateness_ms=0, retention_s=7 * 24 * 3600)
        self.offset = 0
        self.rng = np.random.default_rng(7)

    def write(self, bucket: int, slices: list[str] | None = None, *, register: bool = True) -> None:
        update = StateUpdate("wide:0", self.offset, self.offset, bucket)
        self.offset += 1
        fields: list[tuple[str, int | float]] = []
        for slice_ in slices or SLICES:
            fields += [
                (s.field_name(slice_, s.EVENTS), int(self.rng.integers(1, 50))),
                (s.field_name(slice_, s.TP), int(self.rng.integers(0, 20))),
                (s.field_name(slice_, s.FN), int(self.rng.integers(0, 5))),
                (s.field_name(slice_, s.SCORE_SUM), float(self.rng.random() * 10)),
            ]
        update.incr_many(MKEYS.bucket(bucket), fields)
        if register:
            s.register_bucket(update, MKEYS, bucket, 7 * 24 * 3600)
        self.state.apply([update], now_ms=bucket)

    def fill(self, start: int, end: int) -> None:
        for bucket in range(start, end, BUCKET):
            self.write(bucket)


def assert_same(cached: Rollup, direct: Rollup) -> None:
    """Same slices, metrics and counts; float sums equal up to the order they were added in."""
    assert cached.buckets == direct.buckets
    assert sorted(cached) == sorted(direct)
    for name, metrics in direct.items():
        assert sorted(cached[name].counters) == sorted(metrics.counters), name
        for metric, value in metrics.counters.items():
            if metric in s.FLOAT_METRICS:
                assert math.isclose(cached[name].counters[metric], value, rel_tol=1e-12), (name, metric)
            else:
                assert cached[name].counters[metric] == value, (name, metric)


@pytest.fixture
def stream() -> Stream:
    return Stream()


def test_a_cached_rollup_equals_the_direct_sum_of_its_buckets(stream: Stream) -> None:
    stream.fill(BASE, BASE + 60 * BUCKET)
    reader = MetricsReader(stream.state, KEYS, BUCKET)
    cache = RollupCache(reader, TILE)
    assert_same(cache.rollup(BASE, BASE + 60 * BUCKET), reader.rollup(BASE, BASE + 60 * BUCKET))
    # ranges off the grid: the partial tiles at both ends are summed directly
    assert_same(
        cache.rollup(BASE + 2 * BUCKET, BASE + 58 * BUCKET), reader.rollup(BASE + 2 * BUCKET, BASE + 58 * BUCKET)
    )
    assert_same(cache.rollup(BASE + BUCKET, BASE + 3 * BUCKET), reader.rollup(BASE + BUCKET, BASE + 3 * BUCKET))


def test_the_version_field_is_no_slice(stream: Stream) -> None:
    stream.fill(BASE, BASE + 2 * BUCKET)
    assert s.VERSION in stream.state.hgetall(MKEYS.bucket(BASE))
    rollup = MetricsReader(stream.state, KEYS, BUCKET).rollup(BASE, BASE + 2 * BUCKET)
    assert sorted(rollup) == sorted(SLICES)


def test_an_evaluation_one_step_later_sums_only_the_new_tile(stream: Stream) -> None:
    lookback = 24 * 60 * BUCKET
    stream.fill(BASE, BASE + lookback + TILE)
    cache = RollupCache(MetricsReader(stream.state, KEYS, BUCKET), TILE)
    cache.rollup(BASE, BASE + lookback)
    assert cache.stats.tiles_read == lookback // TILE
    read_before = cache.stats.buckets_read
    cache.rollup(BASE + TILE, BASE + lookback + TILE)
    assert cache.stats.tiles_read == lookback // TILE + 1
    assert cache.stats.buckets_read - read_before == TILE // BUCKET
    assert cache.tiles_held <= lookback // TILE + 1


def test_a_late_write_to_an_old_bucket_is_seen(stream: Stream) -> None:
    """Labels join to the prediction's bucket, hours back: its tile is summed again, the others are reused."""
    stream.fill(BASE, BASE + 60 * BUCKET)
    reader = MetricsReader(stream.state, KEYS, BUCKET)
    cache = RollupCache(reader, TILE)
    cache.rollup(BASE, BASE + 60 * BUCKET)
    reads = cache.stats.tiles_read
    stream.write(BASE + 7 * BUCKET, ["*", "channel=web"])
    assert_same(cache.rollup(BASE, BASE + 60 * BUCKET), reader.rollup(BASE, BASE + 60 * BUCKET))
    assert cache.stats.tiles_read == reads + 1


def test_warm_and_cold_caches_give_the_same_floats(stream: Stream) -> None:
    """Replays stay deterministic: what was cached does not change a single bit of the result."""
    stream.fill(BASE, BASE + 40 * BUCKET)
    reader = MetricsReader(stream.state, KEYS, BUCKET)
    warm = RollupCache(reader, TILE)
    warm.rollup(BASE, BASE + 30 * BUCKET)
    stream.write(BASE + 12 * BUCKET)
    stream.fill(BASE + 40 * BUCKET, BASE + 45 * BUCKET)
    first = warm.rollup(BASE + TILE, BASE + 45 * BUCKET)
    second = RollupCache(reader, TILE).rollup(BASE + TILE, BASE + 45 * BUCKET)
    assert {k: v.counters for k, v in first.items()} == {k: v.counters for k, v in second.items()}


def test_an_expired_bucket_leaves_the_rollup(stream: Stream) -> None:
    stream.fill(BASE, BASE + 10 * BUCKET)
    reader = MetricsReader(stream.state, KEYS, BUCKET)
    cache = RollupCache(reader, TILE)
    before = cache.rollup(BASE, BASE + 10 * BUCKET)
    stream.state._delete(MKEYS.bucket(BASE + 3 * BUCKET))  # what its TTL does
    after = cache.rollup(BASE, BASE + 10 * BUCKET)
    assert after.buckets == before.buckets - 1
    assert_same(after, reader.rollup(BASE, BASE + 10 * BUCKET))


def test_buckets_without_a_version_are_never_cached(stream: Stream) -> None:
    """A bucket written before versions existed cannot say it changed: its tile is summed every time."""
    stream.fill(BASE, BASE + 10 * BUCKET)
    stream.write(BASE + 6 * BUCKET, register=False)
    state = stream.state
    state._data[MKEYS.bucket(BASE + 6 * BUCKET)].pop(s.VERSION)
    reader = MetricsReader(state, KEYS, BUCKET)
    cache = RollupCache(reader, TILE)
    cache.rollup(BASE, BASE + 10 * BUCKET)
    stream.write(BASE + 6 * BUCKET, register=False)
    assert_same(cache.rollup(BASE, BASE + 10 * BUCKET), reader.rollup(BASE, BASE + 10 * BUCKET))
    assert cache.stats.tiles_read == 3  # both tiles once, the unversioned one again


def test_tiles_of_ranges_no_longer_asked_for_are_dropped(stream: Stream) -> None:
    stream.fill(BASE, BASE + 40 * BUCKET)
    cache = RollupCache(MetricsReader(stream.state, KEYS, BUCKET), TILE, keep_calls=2)
    for step in range(5):
        cache.rollup(BASE + step * TILE, BASE + step * TILE + 2 * TILE)
    assert cache.tiles_held <= 3


def test_a_grid_off_the_bucket_falls_back_to_buckets(stream: Stream) -> None:
    stream.fill(BASE, BASE + 4 * BUCKET)
    reader = MetricsReader(stream.state, KEYS, BUCKET)
    cache = RollupCache(reader, BUCKET + 1)
    assert cache.tile_ms == BUCKET
    assert_same(cache.rollup(BASE, BASE + 4 * BUCKET), reader.rollup(BASE, BASE + 4 * BUCKET))


def test_whole_hours_are_added_up_once_and_follow_late_writes(stream: Stream) -> None:
    """A 3 h range on 5-minute tiles: whole hours are kept added up; a write into one of them is still seen,
    and a warm cache gives the floats a cold one does."""
    hour = 60 * BUCKET
    start = BASE // hour * hour + hour
    stream.fill(start, start + 3 * hour + TILE)
    reader = MetricsReader(stream.state, KEYS, BUCKET)
    warm = RollupCache(reader, TILE)
    warm.rollup(start, start + 3 * hour)
    stream.write(start + hour + 17 * BUCKET, ["*", "region=north"])
    late = warm.rollup(start + TILE, start + 3 * hour + TILE)
    assert warm.stats.tiles_read == 3 * 12 + 2  # the new tile, and the one the late write changed
    assert_same(late, reader.rollup(start + TILE, start + 3 * hour + TILE))
    cold = RollupCache(reader, TILE).rollup(start + TILE, start + 3 * hour + TILE)
    assert {k: v.counters for k, v in late.items()} == {k: v.counters for k, v in cold.items()}


HOUR = 60 * BUCKET
HOUR_START = BASE // HOUR * HOUR + HOUR
HOURS_TTL_S = 7 * 24 * 3600


def counters(rollup: Rollup) -> dict[str, dict[str, float]]:
    return {name: metrics.counters for name, metrics in rollup.items()}


def test_a_restarted_cache_reads_the_stored_hours_not_their_buckets(stream: Stream) -> None:
    """The first worker stores each hour once it stayed the same; the next reads it as one hash, same floats."""
    stream.fill(HOUR_START, HOUR_START + 3 * HOUR + TILE)
    reader = MetricsReader(stream.state, KEYS, BUCKET)
    first = RollupCache(reader, TILE, stored_ttl_s=HOURS_TTL_S)
    first.rollup(HOUR_START, HOUR_START + 3 * HOUR)
    assert first.stats.hours_stored == 0  # just summed: not known yet to have settled
    first.rollup(HOUR_START + TILE, HOUR_START + 3 * HOUR + TILE)
    assert first.stats.hours_stored == 2  # the two whole hours it held unchanged

    restarted = RollupCache(reader, TILE, stored_ttl_s=HOURS_TTL_S)
    warm = restarted.rollup(HOUR_START + TILE, HOUR_START + 3 * HOUR + TILE)
    assert restarted.stats.hours_loaded == 2
    assert restarted.stats.buckets_read == 11 * 5 + 5  # the first, partial hour and the last tile
    unstored = RollupCache(reader, TILE).rollup(HOUR_START + TILE, HOUR_START + 3 * HOUR + TILE)
    assert counters(warm) == counters(unstored)
    assert warm.buckets == unstored.buckets


def test_stored_hours_summed_at_other_versions_are_not_used(stream: Stream) -> None:
    """A label joined into an hour after it was stored: that hour is summed again from its tiles."""
    stream.fill(HOUR_START, HOUR_START + 2 * HOUR)
    reader = MetricsReader(stream.state, KEYS, BUCKET)
    first = RollupCache(reader, TILE, stored_ttl_s=HOURS_TTL_S)
    for _ in range(2):
        first.rollup(HOUR_START, HOUR_START + 2 * HOUR)
    assert first.stats.hours_stored == 2
    stream.write(HOUR_START + HOUR + 7 * BUCKET, ["*", "channel=web"])

    restarted = RollupCache(reader, TILE, stored_ttl_s=HOURS_TTL_S)
    after = restarted.rollup(HOUR_START, HOUR_START + 2 * HOUR)
    assert restarted.stats.hours_loaded == 1
    assert restarted.stats.tiles_read == 12
    assert counters(after) == counters(RollupCache(reader, TILE).rollup(HOUR_START, HOUR_START + 2 * HOUR))
    assert_same(after, reader.rollup(HOUR_START, HOUR_START + 2 * HOUR))


def test_an_hour_still_being_written_is_not_stored(stream: Stream) -> None:
    stream.fill(HOUR_START, HOUR_START + 2 * HOUR)
    cache = RollupCache(MetricsReader(stream.state, KEYS, BUCKET), TILE, stored_ttl_s=HOURS_TTL_S)
    cache.rollup(HOUR_START, HOUR_START + 2 * HOUR)
    stream.write(HOUR_START + HOUR + 30 * BUCKET)
    cache.rollup(HOUR_START, HOUR_START + 2 * HOUR)
    assert cache.stats.hours_stored == 1  # the first hour; the second changed since the last rollup


def test_a_cold_start_stores_a_long_range_over_several_rollups(stream: Stream) -> None:
    hours = rollups.STORED_PER_ROLLUP + 3
    stream.fill(HOUR_START, HOUR_START + hours * HOUR)
    cache = RollupCache(MetricsReader(stream.state, KEYS, BUCKET), TILE, stored_ttl_s=HOURS_TTL_S)
    stored = []
    for _ in range(3):
        cache.rollup(HOUR_START, HOUR_START + hours * HOUR)
        stored.append(cache.stats.hours_stored)
    assert stored == [0, rollups.STORED_PER_ROLLUP, hours]


def test_without_a_ttl_nothing_is_stored_or_looked_up(stream: Stream) -> None:
    stream.fill(HOUR_START, HOUR_START + 2 * HOUR)
    reader = MetricsReader(stream.state, KEYS, BUCKET)
    storing = RollupCache(reader, TILE, stored_ttl_s=HOURS_TTL_S)
    for _ in range(2):
        storing.rollup(HOUR_START, HOUR_START + 2 * HOUR)
    assert storing.stats.hours_stored == 2
    cache = RollupCache(reader, TILE)
    for _ in range(2):
        cache.rollup(HOUR_START, HOUR_START + 2 * HOUR)
    assert (cache.stats.hours_loaded, cache.stats.hours_stored, cache.stats.tiles_read) == (0, 0, 24)


def test_a_cold_long_range_is_warmed_in_the_background_then_gives_the_same_floats(stream: Stream) -> None:
    """The rollup that finds it cold raises at once; once the thread stored the hours, the floats are a warm cache's."""
    hours = rollups.COLD_HOURS_INLINE + 2
    stream.fill(HOUR_START, HOUR_START + hours * HOUR)
    reader = MetricsReader(stream.state, KEYS, BUCKET)
    cache = RollupCache(reader, TILE, stored_ttl_s=HOURS_TTL_S, warm_in_background=True)
    with pytest.raises(RollupWarmingError, match=f"{hours} hours"):
        cache.rollup(HOUR_START, HOUR_START + hours * HOUR)
    assert cache.stats.buckets_read == 0
    assert cache.wait_warm(timeout_s=60)
    assert cache.warm_stats.hours_stored == hours
    warm = cache.rollup(HOUR_START, HOUR_START + hours * HOUR)
    assert cache.stats.hours_loaded == hours
    inline = RollupCache(reader, TILE).rollup(HOUR_START, HOUR_START + hours * HOUR)
    assert counters(warm) == counters(inline)


def test_a_few_cold_hours_are_summed_in_the_call(stream: Stream) -> None:
    stream.fill(HOUR_START, HOUR_START + rollups.COLD_HOURS_INLINE * HOUR)
    reader = MetricsReader(stream.state, KEYS, BUCKET)
    cache = RollupCache(reader, TILE, stored_ttl_s=HOURS_TTL_S, warm_in_background=True)
    cache.rollup(HOUR_START, HOUR_START + rollups.COLD_HOURS_INLINE * HOUR)
    assert not cache.warming
    assert cache.stats.tiles_read == 12 * rollups.COLD_HOURS_INLINE


def test_warming_in_the_background_needs_a_store(stream: Stream) -> None:
    with pytest.raises(ValueError, match="stored_ttl_s"):
        RollupCache(MetricsReader(stream.state, KEYS, BUCKET), TILE, warm_in_background=True)
