"""A real worker's /metrics and probes, scraped over HTTP while it consumes the embedded broker."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from streamtest import new_worker, produce, write_config

from stream_guard.assembly import start_http_endpoint
from stream_guard.cli import main
from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> dict[str, float]:
    """Samples of the Prometheus text format, by ``name{labels}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_and_probes_of_a_running_worker(tmp_path: Path, bootstrap: str, redis_url: str, unique: str) -> None:
    """/metrics counts what the worker counted; /readyz is 200 while it runs; `stream-guard health` agrees."""
    port = _free_port()
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        encoding="json",
        sections=f'[observability]\nport = {port}\nbind = "127.0.0.1"\nstats_interval_s = 1\n',
    )
    records = Simulator(encoding="json", seed=21).records(300, START_MS, step_ms=10)
    items = [(None, json.dumps(r).encode(), r["ts"]) for r in records] + [(None, b"{broken", START_MS)]
    # Round-robin: every partition holds records, so librdkafka reports a lag for each (the
    # sticky partitioner could leave one empty, and an empty partition gets no position).
    n = produce(bootstrap, config.models[0].topics[0], items, partitions=3)

    worker = new_worker(config)
    endpoint = start_http_endpoint(config, worker.parts.metrics, worker.parts.health)
    assert endpoint is not None and endpoint.port == port
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while worker.stats.consumed < n and time.monotonic() < deadline:
            time.sleep(0.2)
        # librdkafka reports a partition's lag once it has a position there: wait a few
        # statistics intervals (1 s each) for all three.
        for _ in range(30):
            samples = _metrics(port)
            if sum(k.startswith("stream_guard_consumer_lag_records") for k in samples) == 3:
                break
            time.sleep(0.5)
        topic = config.models[0].topics[0]
        assert samples[f'stream_guard_records_consumed_total{{model="fraud",topic="{topic}"}}'] == n
        assert samples['stream_guard_records_decoded_total{model="fraud"}'] == worker.stats.decoded == n - 1
        assert samples['stream_guard_records_dead_lettered_total{model="fraud"}'] == 1
        assert samples['stream_guard_findings_total{kind="undecodable",model="fraud"}'] == 1
        assert samples["stream_guard_batch_size_records_count"] == worker.stats.batches
        assert samples["stream_guard_redis_roundtrip_seconds_count"] >= 1
        assert samples["stream_guard_assigned_partitions"] == 3
        lags = {k: v for k, v in samples.items() if k.startswith("stream_guard_consumer_lag_records")}
        assert len(lags) == 3 and all(v == 0 for v in lags.values()), lags
        applied = {k: v for k, v in samples.items() if k.startswith("stream_guard_last_applied_offset")}
        assert len(applied) == 3
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            assert response.status == 200 and json.loads(response.read())["assigned"] == 3
        assert main(["health", "--url", f"http://127.0.0.1:{port}/readyz"]) == 0
        assert main(["health", "--url", f"http://127.0.0.1:{port}/healthz"]) == 0
    finally:
        worker.stop()
        thread.join(60)
        endpoint.stop()
    assert main(["health", "--url", f"http://127.0.0.1:{port}/readyz", "--timeout", "1"]) == 1
