"""`stream-guard alerts` on a real alerts topic: JSON-encoded alerts, filters, a start time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamtest import consume_all, new_worker, produce, run_until, write_config

from stream_guard.alerts.reader import alerts_consumer, positions_since
from stream_guard.cli import main
from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000


def test_json_alerts_read_back_filtered_and_from_a_time(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With `[alerts] encoding = "json"` any tool reads the alerts; the CLI filters by kind and starts at --since."""
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        encoding="json",
        window_s=3600,
        sections='[alerts]\nencoding = "json"\n',
    )
    records = Simulator(encoding="json", seed=31).records(50, START_MS, step_ms=10)
    records[3]["debug_flag"] = True  # unexpected_field (info)
    items = [(None, json.dumps(r).encode(), r["ts"]) for r in records] + [(None, b"{broken", START_MS)]
    before_ms = int(time.time() * 1000)
    n = produce(bootstrap, config.models[0].topics[0], items)
    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= n)

    messages = consume_all(bootstrap, config.kafka.alerts_topic, idle_s=2, timeout_s=15)
    plain = [json.loads(m.value()) for m in messages]
    assert {a["kind"] for a in plain} == {"undecodable", "unexpected_field"}
    assert all(dict(m.headers())["content-type"] == b"application/json" for m in messages)

    capsys.readouterr()
    path = str(tmp_path / "config.toml")
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(before_ms / 1000 - 1)) + "+00:00"
    args = ["alerts", "-c", path, "--since", since, "--kind", "undecodable", "--json", "--max", "1"]
    assert main(args) == 0
    (line,) = capsys.readouterr().out.splitlines()
    shown = json.loads(line)
    assert shown["kind"] == "undecodable" and shown["severity"] == "CRITICAL"
    assert shown["window_start"] == "2023-11-14T22:00:00+00:00"  # ISO-8601, not epoch milliseconds

    # Where --since starts: the first alert at or after the time. (Tansu answers a time after the
    # last record with offset 0 where Apache Kafka answers -1, so the end case is not checked here.)
    consumer = alerts_consumer(config, group_id=None, from_beginning=True)
    try:
        earlier = positions_since(consumer, config.kafka.alerts_topic, before_ms - 1000)
        assert [(tp.partition, tp.offset) for tp in earlier] == [(0, 0)]
    finally:
        consumer.close()
