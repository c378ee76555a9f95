"""A partition with a backlog holds windows open, however long it has not been read (real broker and Redis)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from streamtest import new_worker, produce, window_totals, write_config

from stream_guard.delivery import lagging_partitions
from stream_guard.source import Source
from stream_guard.tools.embedded import create_topics
from stream_guard.tools.simulator import Simulator
from stream_guard.worker import Worker

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000


def _process_until(worker: Worker, consumed: int, deadline: float) -> None:
    while worker.stats.consumed < consumed:
        assert time.monotonic() < deadline, vars(worker.stats)
        worker.process(worker.parts.consumer.consume(200, 0.5))


def test_an_unread_partition_with_a_backlog_is_not_idle(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    """Partition 0 read, partition 1 not yet: no window closes on half the data; all close once both are read."""
    config = write_config(tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique, partitions=2)
    config.worker.idle_partition_s = 0  # on the wall clock, every partition is idle at once
    topic = config.models[0].topics[0]
    sim = Simulator(encoding="confluent", seed=5)
    events = ((None, p, r["ts"]) for r, p, _ in sim.stream(400, START_MS, step_ms=250))
    n = produce(bootstrap, topic, events, partitions=2)
    worker = new_worker(config)
    consumer, store = worker.parts.consumer, worker.parts.stores["fraud"]
    p0, p1 = TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)
    deadline = time.monotonic() + 60
    consumer.assign([p0, p1])
    try:
        store.register_sources([f"{topic}:0", f"{topic}:1"], int(time.time() * 1000))
        consumer.pause([p1])  # a backlog replay reading one partition first
        _process_until(worker, n // 2, deadline)
        opened = store.open_windows()
        assert len(opened) == 10  # 100 s of event time in 10 s windows
        assert worker.close_due_windows() == []
        assert store.open_windows() == opened, "windows closed while partition 1 had a backlog"

        consumer.resume([p1])
        _process_until(worker, n, deadline)
        worker.close_due_windows()
        assert store.open_windows() == []
        assert window_totals(redis_client, config)["n"] == n
    finally:
        consumer.close()
        worker.parts.producer.close()


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )


def test_lag_is_measured_from_the_position_or_the_committed_offset(bootstrap: str, unique: str) -> None:
    """Unread partitions lag; drained ones do not, nor do a successor's whose committed offsets are at the end."""
    topic = f"lag-{unique}"
    create_topics(bootstrap, [topic], partitions=2)
    n = produce(bootstrap, topic, ((None, b"x", START_MS + i) for i in range(100)), partitions=2)
    deadline = time.monotonic() + 60
    tps = [TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)]
    fresh = _consumer(bootstrap, f"g-{unique}-fresh")
    try:
        fresh.assign(tps)
        fresh.pause([tps[1]])
        fresh.consume(10, 5)
        assert Source(topic, 1) in lagging_partitions(fresh, tps)
    finally:
        fresh.close()

    first = _consumer(bootstrap, f"g-{unique}")
    try:
        first.subscribe([topic])
        read = 0
        while read < n:
            assert time.monotonic() < deadline, read
            read += sum(1 for m in first.consume(100, 0.5) if m.error() is None)
        assert lagging_partitions(first, first.assignment()) == []
        first.commit(asynchronous=False)
    finally:
        first.close()

    successor = _consumer(bootstrap, f"g-{unique}")
    try:
        successor.subscribe([topic])
        while len(successor.assignment()) < 2:
            assert time.monotonic() < deadline
            successor.consume(10, 0.5)
        assert all(tp.offset < 0 for tp in successor.position(successor.assignment()))  # nothing read yet
        assert lagging_partitions(successor, successor.assignment()) == []
    finally:
        successor.close()
