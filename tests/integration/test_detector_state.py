"""Online drift state survives a restart: a worker stopped (or killed) mid-drift, then restarted, reports the drift once.

A sustained drift of ``amount`` starts at a window boundary; River's ADWIN (one detector per
partition) sees it in that window and learns the new regime. The window statistics are
switched off (``min_count`` out of reach) so that the incident is the online detector's
alone, and ``resolve_after_s`` is one window: the incident resolves while the drift goes on.
A worker restarted with fresh detectors would see the same drift again against the
baseline, and open a second incident; restored from its checkpoint, it does not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from streamtest import consume_all, learn_simulated_profile, new_worker, produce, run_until, write_config

from stream_guard.alerts.codec import decode_alert
from stream_guard.drift.checkpoint import decode_checkpoint
from stream_guard.settings import Config
from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration

WINDOW_MS = 60_000
START_MS = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW_MS
STEP_MS = 20  # 3000 events per window, 1000 per partition
PER_WINDOW = WINDOW_MS // STEP_MS
STABLE_WINDOWS, DRIFTED_WINDOWS = 2, 6
CHANGE_MS = START_MS + STABLE_WINDOWS * WINDOW_MS
SECTIONS = """
[drift]
online_features = ["amount"]
min_count = 1000000000

[alerts]
cooldown_s = 60
resolve_after_s = 60
encoding = "json"
"""


def _config(tmp_path: Path, bootstrap: str, redis_url: str, unique: str, partitions: int = 3) -> Config:
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        partitions=partitions,
        window_s=WINDOW_MS // 1000,
        sections=SECTIONS,
        model_extra='profile = "profile.json"',
    )
    learn_simulated_profile(config, tmp_path / "profile.json", n=50_000, seed=1234)
    return config


def _produce_drift(config: Config, bootstrap: str, partitions: int = 3) -> int:
    sim = Simulator(seed=31)
    items = []
    for record in sim.records((STABLE_WINDOWS + DRIFTED_WINDOWS) * PER_WINDOW, START_MS, step_ms=STEP_MS):
        if record["ts"] >= CHANGE_MS:
            record = sim.corrupt(record, "amount_drift")
        items.append((None, sim.encode(record), record["ts"]))
    return produce(bootstrap, config.models[0].topics[0], items, partitions=partitions)


def _online_drift_firing(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """The FIRING online_drift alerts of the topic, newest message per alert_id."""
    latest: dict[str, dict[str, Any]] = {}
    for message in consume_all(bootstrap, topic, idle_s=2):
        alert = decode_alert(message.value())
        latest[alert["alert_id"]] = alert
    return {i: a for i, a in latest.items() if a["kind"] == "online_drift" and a["status"] == "FIRING"}


def _assert_one_incident(bootstrap: str, config: Config) -> None:
    firing = _online_drift_firing(bootstrap, config.kafka.alerts_topic)
    windows = sorted(int(a["window_start"].timestamp() * 1000) - START_MS for a in firing.values())
    assert len(firing) == 1, f"online_drift FIRING in windows {windows} (ms after start); expected one, at the change"
    (alert,) = firing.values()
    assert int(alert["window_start"].timestamp() * 1000) == CHANGE_MS


#: Consumed records at which the first worker stops: 60 % into the drift.
STOP_AT = (STABLE_WINDOWS + 0.6 * DRIFTED_WINDOWS) * PER_WINDOW


def _assert_checkpoints_at_the_fence(redis_client: redis.Redis, config: Config) -> None:
    """Each partition's detector checkpoint reflects exactly the offset its fence says was applied."""
    base = f"{config.redis.key_prefix}:{{fraud}}"
    fences = {s: int(v) for s, v in redis_client.hgetall(f"{base}:applied").items()}
    checkpoints = {s: decode_checkpoint(v).offset for s, v in redis_client.hgetall(f"{base}:detectors").items()}
    assert checkpoints == fences and fences


def test_a_stopped_and_restarted_worker_reports_a_sustained_drift_once(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    """stop() at 60 % of a sustained drift, a successor with the same group: one online_drift incident."""
    config = _config(tmp_path, bootstrap, redis_url, unique)
    n = _produce_drift(config, bootstrap)

    first = new_worker(config)
    run_until([first], lambda: first.stats.consumed >= STOP_AT, timeout_s=90, drain=False)
    assert first.stats.consumed < n, "the stop should land mid-stream"
    _assert_checkpoints_at_the_fence(redis_client, config)

    successor = new_worker(config)
    run_until([successor], lambda: first.stats.consumed + successor.stats.consumed >= n, timeout_s=90)
    assert first.stats.decoded + successor.stats.decoded == n
    _assert_one_incident(bootstrap, config)


def test_a_killed_and_restarted_worker_reports_a_sustained_drift_once(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    """kill -9 of a worker process at 60 % of a sustained drift, then a successor: one online_drift incident.

    One partition: a worker drains the partitions of a backlog one after another, so with
    three the kill could land before the drift in the partition read last.
    """
    config = _config(tmp_path, bootstrap, redis_url, unique, partitions=1)
    n = _produce_drift(config, bootstrap, partitions=1)

    env = {**os.environ, "STREAM_GUARD_WORKER__BATCH_SIZE": "200", "STREAM_GUARD_OBSERVABILITY__PORT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "stream_guard", "run", "-c", str(tmp_path / "config.toml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    applied_key = f"{config.redis.key_prefix}:{{fraud}}:applied"

    def applied() -> int:
        return sum(int(v) + 1 for v in redis_client.hgetall(applied_key).values())

    deadline = time.monotonic() + 90
    try:
        while applied() < STOP_AT:
            assert process.poll() is None, process.stderr.read()[-3000:] if process.stderr else ""
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    assert applied() < n, "the kill should land mid-stream"
    _assert_checkpoints_at_the_fence(redis_client, config)

    # The killed worker's membership holds its partitions until its session times out (6 s).
    successor = new_worker(config)
    run_until([successor], lambda: applied() >= n, timeout_s=120)
    _assert_one_incident(bootstrap, config)
