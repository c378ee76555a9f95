"""Outages the worker waits out by itself: Redis down at start-up, Redis gone mid-stream."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import redis
from streamtest import new_worker, produce, window_totals, write_config

from stream_guard.tools.embedded import free_port, start_redis
from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000


def test_redis_down_at_start_up_is_waited_for(tmp_path: Path, bootstrap: str, unique: str) -> None:
    """The worker logs the outage, waits with backoff, reports not ready, and then counts every record once."""
    port = free_port()
    config = write_config(
        tmp_path, bootstrap=bootstrap, redis_url=f"redis://127.0.0.1:{port}/0", unique=unique, encoding="json"
    )
    records = Simulator(encoding="json", seed=41).records(500, START_MS, step_ms=10)
    n = produce(bootstrap, config.models[0].topics[0], ((None, json.dumps(r).encode(), r["ts"]) for r in records))
    worker = new_worker(config)
    thread = threading.Thread(target=worker.run, kwargs={"drain_on_exit": True})
    thread.start()
    server = None
    try:
        time.sleep(3)
        assert worker.stats.consumed == 0, "nothing is consumed before Redis answers"
        assert worker.parts.health.redis_ok is False and not worker.parts.health.ready()[0]
        server = start_redis(port=port)
        deadline = time.monotonic() + 60
        while worker.stats.consumed < n and time.monotonic() < deadline:
            time.sleep(0.2)
        assert worker.parts.health.redis_ok is True
    finally:
        worker.stop()
        thread.join(60)
        client = redis.Redis(port=port, decode_responses=True)
        totals = window_totals(client, config) if server is not None else {}
        if server is not None:
            server.stop()
    assert (worker.stats.consumed, worker.stats.decoded) == (n, n)
    assert totals["n"] == n
