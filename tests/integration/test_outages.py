"""Outages at start-up the worker waits out by itself: Redis down, a Redis Cluster down (mid-stream: test_outage_recovery)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from streamtest import new_worker, produce, window_totals, write_config

from stream_guard.tools.embedded import free_cluster_port, free_port, start_redis, start_redis_cluster
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


def _probe(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_redis_cluster_down_at_start_up_is_waited_for(tmp_path: Path, bootstrap: str, unique: str) -> None:
    """`stream-guard run` on a Cluster not started yet: live, not ready, one line; then it counts every record once."""
    port, http_port = free_cluster_port(), free_port()
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=f"redis://127.0.0.1:{port}/0",
        redis_cluster=True,
        unique=unique,
        encoding="json",
        sections=f'[observability]\nport = {http_port}\nbind = "127.0.0.1"\n',
    )
    records = Simulator(encoding="json", seed=43).records(500, START_MS, step_ms=10)
    n = produce(bootstrap, config.models[0].topics[0], ((None, json.dumps(r).encode(), r["ts"]) for r in records))
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream_guard", "run", "-c", str(tmp_path / "config.toml")],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    cluster = None
    try:
        deadline = time.monotonic() + 60
        while not log.read_text().count('"state": "outage"'):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no outage line"
            time.sleep(0.2)
        time.sleep(2)  # several attempts
        assert process.poll() is None, log.read_text()[-3000:]
        status, body = _probe(http_port, "/readyz")
        assert (status, body["redis_ok"], body["subscribed"]) == (503, False, False), body
        assert _probe(http_port, "/healthz")[0] == 200, "waiting is not being stuck"
        cluster = start_redis_cluster(3, tmp_path / "cluster", ports=[port])
        client = RedisCluster.from_url(cluster.url, decode_responses=True)
        while window_totals(client, config).get("n", 0) < n or _probe(http_port, "/readyz")[0] != 200:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline + 60, f"not recovered: {window_totals(client, config)}"
            time.sleep(0.2)
        assert window_totals(client, config)["n"] == n
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(30)
        if cluster is not None:
            cluster.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert returncode == 0 and "Traceback" not in log.read_text()
    changes = [(line["state"], line["event"]) for line in lines if "state" in line]
    assert changes == [
        ("outage", "redis cluster unreachable at start-up; retrying with backoff"),
        ("recovered", "redis cluster reachable"),
    ]
