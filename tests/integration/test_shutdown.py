"""Graceful shutdown: SIGTERM mid-stream finishes the batch, commits, and loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from streamtest import new_worker, produce, run_until, window_totals, write_config

from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        consumer.close()


def test_sigterm_mid_stream_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    """A worker process killed with SIGTERM mid-stream commits what it finished; a successor completes the rest exactly once."""
    config = write_config(tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique, window_s=3600)
    topic = config.models[0].topics[0]
    sim = Simulator(encoding="confluent", seed=21, faults={"truncated": 0.01, "amount_as_string": 0.02})
    events = list(sim.stream(30_000, 1_700_000_000_000, step_ms=10))
    n = produce(bootstrap, topic, ((None, p, r["ts"]) for r, p, _ in events), partitions=3)

    env = {**os.environ, "STREAM_GUARD_WORKER__BATCH_SIZE": "100", "STREAM_GUARD_OBSERVABILITY__PORT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "stream_guard", "run", "-c", str(tmp_path / "config.toml")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    applied_key = f"{config.redis.key_prefix}:{{fraud}}:applied"
    deadline = time.monotonic() + 60
    while sum(int(v) + 1 for v in redis_client.hgetall(applied_key).values()) < 3000:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-3000:]
    stopped = [json.loads(line) for line in stderr.splitlines() if '"worker stopped"' in line]
    assert len(stopped) == 1
    first = stopped[0]
    assert 0 < first["decoded"] + first["dead_lettered"] < n, "SIGTERM should land mid-stream"
    assert _committed(bootstrap, config.kafka.group_id, topic, 3) == first["consumed"]

    successor = new_worker(config)
    run_until([successor], lambda: successor.stats.consumed >= n - first["consumed"], timeout_s=120)
    second = successor.stats
    assert first["decoded"] + first["dead_lettered"] + second.decoded + second.dead_lettered == n
    totals = window_totals(redis_client, config)
    assert totals["n"] + totals["dl"] == n
    assert totals["dl"] == sum(1 for _, _, f in events if f == "truncated")
    assert _committed(bootstrap, config.kafka.group_id, topic, 3) == n
