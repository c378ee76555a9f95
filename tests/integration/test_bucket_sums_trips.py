"""Summing many buckets takes several bounded round trips, with the same sums (real redis-server)."""

from __future__ import annotations

import pytest
import redis

from stream_guard.metrics import buckets
from stream_guard.metrics.buckets import RedisBucketReads

pytestmark = pytest.mark.integration


def test_a_long_range_is_summed_in_round_trips_of_bounded_size(
    redis_client: redis.Redis, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 buckets in three groups: the same totals and counts in one trip as in trips of two scripts."""
    keys = [f"sg-{unique}:b:{i}" for i in range(200)]
    for i, key in enumerate(keys):
        redis_client.hset(key, mapping={"*|n": i + 1, f"s{i % 3}|n": 1, "*|sum": 0.5 * i})
    groups = [keys[:17], keys[17:150], [], keys[150:]]
    expected = [
        (
            {
                name: float(sum(float(redis_client.hget(k, name) or 0) for k in group))
                for name in {n for k in group for n in redis_client.hkeys(k)}
            },
            len(group),
        )
        for group in groups
    ]
    per_trip = buckets.SUMS_PER_TRIP
    trips: list[int] = []
    execute = buckets.pipeline

    def counting(client: object) -> object:
        pipe = execute(client)  # type: ignore[arg-type]
        trips.append(0)
        return pipe

    monkeypatch.setattr(buckets, "pipeline", counting)
    reads = RedisBucketReads(redis_client)
    assert reads.sum_bucket_groups(groups) == expected
    one_trip = len(trips)
    monkeypatch.setattr(buckets, "SUMS_PER_TRIP", 2)
    assert RedisBucketReads(redis_client).sum_bucket_groups(groups) == expected
    scripts = sum(-(-len(g) // buckets.SUM_CHUNK) for g in groups)  # 3 + 17 + 0 + 7
    assert (one_trip, len(trips) - one_trip) == (-(-scripts // per_trip), -(-scripts // 2))
