"""Metrics, probes and structured logs of a worker, without Kafka or Redis."""

from __future__ import annotations

import json
import logging
import time
import urllib.request

import pytest
import structlog

from stream_guard import __version__
from stream_guard.logs import configure_logging, librdkafka_logger
from stream_guard.observability.metrics import WorkerMetrics
from stream_guard.observability.server import HealthServer, WorkerHealth, probe

STATS = {
    "topics": {
        "inferences": {
            "partitions": {
                "0": {"consumer_lag": 120},
                "1": {"consumer_lag": 0},
                "2": {"consumer_lag": -1},  # not assigned: librdkafka reports -1
                "-1": {"consumer_lag": -1},  # the internal UA partition
            }
        }
    }
}


def test_consumer_lag_comes_from_librdkafka_statistics() -> None:
    """The stats callback sets the lag of assigned partitions only."""
    metrics = WorkerMetrics()
    metrics.on_stats(json.dumps(STATS))
    assert metrics.value("stream_guard_consumer_lag_records", topic="inferences", partition="0") == 120
    assert metrics.value("stream_guard_consumer_lag_records", topic="inferences", partition="1") == 0
    assert (
        metrics.registry.get_sample_value(
            "stream_guard_consumer_lag_records", {"topic": "inferences", "partition": "2"}
        )
        is None
    )


def test_malformed_statistics_are_ignored() -> None:
    """A statistics payload that is not JSON changes nothing and raises nothing (it runs in librdkafka's poll)."""
    metrics = WorkerMetrics()
    metrics.on_stats("{not json")
    assert (
        metrics.registry.get_sample_value("stream_guard_consumer_lag_records", {"topic": "t", "partition": "0"}) is None
    )


@pytest.mark.parametrize(
    ("change", "ready"),
    [
        ({}, True),
        ({"subscribed": False}, False),
        ({"redis_ok": False}, False),
        ({"broker_ok": False}, False),
        ({"retrying": True}, False),
    ],
)
def test_readiness_needs_subscription_broker_redis_and_no_retry(change: dict[str, bool], ready: bool) -> None:
    """Ready only while subscribed, with broker and Redis answering and no batch being retried."""
    health = WorkerHealth(subscribed=True)
    for name, value in change.items():
        setattr(health, name, value)
    ok, detail = health.ready()
    assert ok is ready
    assert detail["subscribed"] is health.subscribed


def test_liveness_fails_when_the_loop_stops_turning() -> None:
    """A loop that has not turned within the timeout is not live (nor ready)."""
    health = WorkerHealth(liveness_timeout_s=0.05, subscribed=True)
    assert health.live()[0]
    time.sleep(0.1)
    assert not health.live()[0]
    assert not health.ready()[0]
    health.loop_turned()
    assert health.live()[0]


def test_endpoint_serves_metrics_and_probes() -> None:
    """/metrics is the Prometheus text format; /readyz answers 503 until ready, then 200; unknown paths 404."""
    metrics, health = WorkerMetrics(), WorkerHealth()
    metrics.retries.inc()
    server = HealthServer(metrics, health, bind="127.0.0.1", port=0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}/metrics") as response:
            text = response.read().decode()
        assert "stream_guard_batch_retries_total 1.0" in text
        assert "# TYPE stream_guard_records_consumed_total counter" in text
        ok, body = probe(f"{base}/readyz")
        assert not ok and json.loads(body)["subscribed"] is False
        health.subscribed = True
        ok, body = probe(f"{base}/readyz")
        assert ok and json.loads(body)["ok"] is True
        assert probe(f"{base}/healthz")[0]
        assert not probe(f"{base}/nothing")[0]
    finally:
        server.stop()
    ok, reason = probe(f"{base}/readyz", timeout_s=0.5)
    assert not ok and "no answer" in reason


def test_json_log_lines_carry_service_version_and_logger(capsys: pytest.CaptureFixture[str]) -> None:
    """Every JSON line names the service, its version and the module that logged it; librdkafka's too."""
    configure_logging("info", "json")
    structlog.get_logger("stream_guard.worker").info("worker started", topics=["t"])
    librdkafka_logger().log(logging.WARNING, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", "Connect failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["service"] == "stream-guard" and lines[0]["version"] == __version__
    assert lines[0]["logger"] == "stream_guard.worker" and lines[0]["event"] == "worker started"
    assert lines[1]["logger"] == "librdkafka" and lines[1]["level"] == "warning"
    assert lines[1]["event"] == "FAIL [rdkafka#consumer-1] Connect failed"
