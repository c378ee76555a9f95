"""Hours of tiles stored in Redis beside the buckets: a restarted cache reads them back, same floats (real redis-server)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest
import redis
from redis.cluster import RedisCluster

from stream_guard.metrics import store as s
from stream_guard.metrics.buckets import SIGNATURE, BucketReads, MemoryBucketReads, RedisBucketReads
from stream_guard.metrics.query import MetricsReader, Rollup
from stream_guard.metrics.rollups import RollupCache
from stream_guard.metrics.slice_alerts import PerformanceEvaluator
from stream_guard.settings.metrics import MetricsSettings
from stream_guard.state.keys import ModelKeys
from stream_guard.state.keyspace import MemoryKeySpace
from stream_guard.state.update import WindowSnapshot

if TYPE_CHECKING:
    from stream_guard.model import ModelRuntime

pytestmark = pytest.mark.integration

BUCKET = 60_000
TILE = 5 * BUCKET
HOUR = 60 * BUCKET
START = 1_700_000_000_000 // HOUR * HOUR
TTL_S = 3600


def fill(client: redis.Redis, keys: ModelKeys, start: int, end: int) -> None:
    """Buckets the way the writers leave them: integer counters, float sums, a version."""
    pipe = client.pipeline(transaction=False)
    for i, bucket in enumerate(range(start, end, BUCKET)):
        fields: dict[str, str | int | float] = {s.VERSION: 1 + i % 3}
        for j, slice_ in enumerate(["*", "device=ios", "device=android", f"country=c{i % 7}"]):
            fields[s.field_name(slice_, s.EVENTS)] = 10 + (i * 7 + j) % 13
            fields[s.field_name(slice_, s.TP)] = (i + j) % 5
            fields[s.field_name(slice_, s.SCORE_SUM)] = 0.1 * i + 1 / (j + 3)
        pipe.hset(keys.bucket(bucket), mapping=fields)
    pipe.execute()


def counters(rollup: Rollup) -> dict[str, dict[str, float]]:
    return {name: metrics.counters for name, metrics in rollup.items()}


def test_a_restarted_cache_gives_the_same_floats_from_the_stored_hours(redis_client: redis.Redis, unique: str) -> None:
    """Stored sums round-trip as the same doubles; they carry the metrics TTL and are read by a new reader."""
    keys = ModelKeys(f"sg-{unique}", "m")
    fill(redis_client, keys, START, START + 3 * HOUR)
    first = RollupCache(MetricsReader(redis_client, keys, BUCKET), TILE, stored_ttl_s=TTL_S)
    for _ in range(2):
        first.rollup(START + TILE, START + 3 * HOUR)
    assert first.stats.hours_stored == 2
    stored = keys.rollup_sum(TILE, START + HOUR)
    assert 0 < int(redis_client.ttl(stored)) <= TTL_S

    restarted = RollupCache(MetricsReader(redis_client, keys, BUCKET), TILE, stored_ttl_s=TTL_S)
    rollup = restarted.rollup(START + TILE, START + 3 * HOUR)
    assert restarted.stats.hours_loaded == 2
    direct = RollupCache(MetricsReader(redis_client, keys, BUCKET), TILE).rollup(START + TILE, START + 3 * HOUR)
    assert counters(rollup) == counters(direct)
    assert rollup.buckets == direct.buckets == 3 * 60 - 5


@pytest.fixture(params=["redis", "cluster", "memory"])
def reads(request: pytest.FixtureRequest) -> Iterator[BucketReads]:
    """Every store of :class:`BucketReads`: one contract."""
    if request.param == "memory":
        yield MemoryBucketReads(MemoryKeySpace())
    elif request.param == "redis":
        yield RedisBucketReads(request.getfixturevalue("redis_client"))
    else:
        cluster = RedisCluster.from_url(request.getfixturevalue("redis_cluster").url, decode_responses=True)
        yield RedisBucketReads(cluster)
        cluster.close()


def test_stored_sums_are_replaced_whole_and_read_only_at_their_signature(reads: BucketReads, unique: str) -> None:
    key = f"sg-{unique}:{{m}}:m:sum:{TILE}:{START}"
    reads.store_sums([(key, {SIGNATURE: "a", "*|n": "3", "x=1|n": "2"})], TTL_S)
    many = {f"s={i}|n": str(i) for i in range(5000)}  # more fields than one HSET's arguments
    reads.store_sums([(key, {SIGNATURE: "b", **many})], TTL_S)
    assert reads.stored_sums([key, key], ["a", "b"]) == [{}, {SIGNATURE: "b", **many}]
    assert reads.stored_sums([f"{key}:absent"], ["b"]) == [{}]


def test_a_cold_evaluation_is_deferred_to_the_warm_up_then_evaluates_as_a_warm_one(
    redis_client: redis.Redis, unique: str
) -> None:
    """The worker's evaluator on a cold 3 h lookback: no alerts and no bucket read in the call; the same
    results as an evaluator summing inline once the thread stored both ranges' hours."""
    keys = ModelKeys(f"sg-{unique}", "m")
    fill(redis_client, keys, START, START + 6 * HOUR)
    settings = MetricsSettings(performance_every_s=300, performance_lookback_s=3 * 3600)
    evaluator = PerformanceEvaluator.for_settings("m", MetricsReader(redis_client, keys, BUCKET), settings)
    cache = evaluator.readers["m"]
    assert isinstance(cache, RollupCache) and cache.warm_in_background
    model = cast("ModelRuntime", SimpleNamespace(name="m", profile=None))
    window = WindowSnapshot(START + 6 * HOUR - TILE, START + 6 * HOUR, {})
    assert evaluator(model, window) == []
    assert cache.stats.buckets_read == 0
    assert cache.wait_warm(timeout_s=60)
    assert cache.warm_stats.hours_stored == 6  # the lookback's and its baseline's, queued by one evaluation

    inline_reader = MetricsReader(redis_client, keys, BUCKET)
    inline = PerformanceEvaluator(
        {"m": RollupCache(inline_reader, TILE)}, lookback_ms=3 * HOUR, every_ms=TILE, metrics=evaluator.metrics
    )
    assert evaluator(model, window) == inline(model, window)
    assert cache.stats.hours_loaded == 6
    assert counters(cache.rollup(START + 3 * HOUR, START + 6 * HOUR)) == counters(
        RollupCache(inline_reader, TILE).rollup(START + 3 * HOUR, START + 6 * HOUR)
    )
