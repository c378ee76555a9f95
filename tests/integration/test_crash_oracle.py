"""Killed three times, a worker ends where a clean run ends: the same Redis counts, the same alerts.

The oracle is a clean run: one worker reads the whole stream once. The same stream on
fresh topics and a fresh key prefix is then read by worker processes killed with SIGKILL
at three moments (a quarter, half and three quarters of the records applied: mid-batch,
between a batch's Redis apply and its commit, during a window's closing, wherever the
signal lands), each followed by a new one, and a last worker that finishes the stream.

Compared with the oracle: every window and metrics counter in Redis (exactly once: the
fenced scripts skip a redelivered batch), the decoded and dead-lettered totals against
the input, and the alerts topic read as a consumer of at-least-once alerts reads it: each
``alert_id`` once, with its kind, feature, slice, status and counts.

With ``[kafka] delivery = "exactly_once"`` the worker is stopped at named steps instead
(:func:`stream_guard.transactions.crash_point`, an ``os._exit`` as abrupt as SIGKILL), and
the alerts topic read ``read_committed`` must equal the oracle's record for record, with
no deduplication. The steps are those where the open transaction holds no alert yet
(a batch applied to Redis; a window's decisions taken, its alerts not produced) or has
committed (its Redis steps not run): Tansu 0.6 returns no aborted-transaction ranges in
its fetch responses, so its ``read_committed`` consumers see the records of aborted
transactions, which Apache Kafka hides.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from streamtest import consume_all, learn_simulated_profile, new_worker, produce, run_until, window_totals, write_config

from stream_guard.alerts.codec import decode_alert
from stream_guard.metrics import MetricsReader
from stream_guard.metrics import store as s
from stream_guard.settings import Config
from stream_guard.state.keys import ModelKeys
from stream_guard.tools.simulator import PAYLOAD_FAULTS, Simulator
from stream_guard.transactions import CRASH_POINT_ENV, CRASH_POINTS

pytestmark = pytest.mark.integration

WINDOW_S = 10
START_MS = 1_700_000_000_000 - 1_700_000_000_000 % (WINDOW_S * 1000)
STEP_MS = 5
PART = 6_000  # events per stretch: 30 s of event time, three windows
#: Early alerts off: an early alert names the window of the first faulty record a worker
#: happens to read, and which partition a restarted or rebalanced worker reads first
#: decides that (README, "Critical alerts fast"); the oracle compares window alerts.
SECTIONS = """
[alerts]
resolve_after_s = 20
encoding = "json"
early_kinds = []
"""


def _stream() -> list[tuple[bytes, int, str | None]]:
    """A clean stretch, a stretch of broken payloads and values, a clean stretch: (payload, ts, fault)."""
    stretches = [
        Simulator(encoding="confluent", seed=51),
        Simulator(
            encoding="confluent",
            seed=52,
            faults={"truncated": 0.02, "garbage": 0.01, "amount_as_string": 0.02, "age_sentinel": 0.05},
        ),
        Simulator(encoding="confluent", seed=53),
    ]
    items = []
    for i, sim in enumerate(stretches):
        for record, payload, fault in sim.stream(PART, START_MS + i * PART * STEP_MS, step_ms=STEP_MS):
            items.append((payload, int(record["ts"]), fault))
    return items


def _setup(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str, items: list[Any], profile: Path | None = None
) -> Config:
    """Fresh topics holding ``items`` and a config reading them; the profile learned, or ``profile`` (one baseline for both runs)."""
    tmp_path.mkdir()
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        window_s=WINDOW_S,
        sections=SECTIONS,
        model_extra='profile = "profile.json"',
    )
    if profile is None:
        learn_simulated_profile(config, tmp_path / "profile.json", n=20_000, seed=1234)
    else:
        shutil.copy(profile, tmp_path / "profile.json")
    produce(bootstrap, config.models[0].topics[0], ((None, p, ts) for p, ts, _ in items), partitions=3)
    return config


def _applied(client: redis.Redis, config: Config) -> int:
    return sum(int(v) + 1 for v in client.hgetall(f"{config.redis.key_prefix}:{{fraud}}:applied").values())


def _kill_at(client: redis.Redis, config: Config, tmp_path: Path, records: int) -> None:
    """Start a worker process and SIGKILL it once ``records`` records are applied in Redis."""
    # Port 0: no metrics endpoint, whose fixed default port another test's worker may hold.
    env = {**os.environ, "STREAM_GUARD_WORKER__BATCH_SIZE": "150", "STREAM_GUARD_OBSERVABILITY__PORT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "stream_guard", "run", "-c", str(tmp_path / "config.toml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    try:
        while _applied(client, config) < records:
            assert process.poll() is None, process.stderr.read()[-3000:] if process.stderr else ""
            assert time.monotonic() < deadline, f"no progress past {_applied(client, config)} records"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)


def _exact(totals: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in totals.items() if not k.startswith("top|")}


def _alerts(bootstrap: str, config: Config) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Each (alert_id, status) once, as a consumer deduplicating at-least-once alerts sees it."""
    seen: dict[tuple[str, str], tuple[Any, ...]] = {}
    for message in consume_all(bootstrap, config.kafka.alerts_topic, idle_s=3, timeout_s=60):
        a = decode_alert(message.value())
        seen[(a["alert_id"], a["status"])] = (a["kind"], a["feature"], a["slice"], a["count"], a["total"])
    return seen


def _metrics(client: redis.Redis, config: Config) -> dict[str, dict[str, float]]:
    reader = MetricsReader(client, ModelKeys(config.redis.key_prefix, "fraud"), 60_000)
    rollup = reader.rollup(START_MS - 60_000, START_MS + 3 * PART * STEP_MS + 60_000)
    return {name: dict(m.counters) for name, m in rollup.items()}


def _assert_same_metrics(crashed: dict[str, dict[str, float]], clean: dict[str, dict[str, float]]) -> None:
    assert sorted(crashed) == sorted(clean)
    for name, counters in clean.items():
        assert sorted(crashed[name]) == sorted(counters), name
        for metric, value in counters.items():
            if metric in s.FLOAT_METRICS:  # summed in another order: batches split the stream elsewhere
                assert math.isclose(crashed[name][metric], value, rel_tol=1e-9), (name, metric)
            else:
                assert crashed[name][metric] == value, (name, metric)


def test_a_worker_killed_three_times_ends_like_a_clean_run(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    items = _stream()
    n = len(items)
    undecodable = sum(1 for _, _, fault in items if fault in PAYLOAD_FAULTS)
    assert 0 < undecodable < n

    clean = _setup(tmp_path / "clean", bootstrap, redis_url, f"{unique}-clean", items)
    oracle = new_worker(clean)
    run_until([oracle], lambda: _applied(redis_client, clean) >= n, timeout_s=120)
    assert (oracle.stats.decoded, oracle.stats.dead_lettered) == (n - undecodable, undecodable)

    crashed = _setup(
        tmp_path / "crashed",
        bootstrap,
        redis_url,
        f"{unique}-crashed",
        items,
        profile=tmp_path / "clean" / "profile.json",
    )
    for share in (0.25, 0.5, 0.75):
        _kill_at(redis_client, crashed, tmp_path / "crashed", int(share * n))
    applied_before_last = _applied(redis_client, crashed)
    assert applied_before_last < n, "the last kill should land mid-stream"
    last = new_worker(crashed)
    run_until([last], lambda: _applied(redis_client, crashed) >= n, timeout_s=180)

    totals, expected = window_totals(redis_client, crashed), window_totals(redis_client, clean)
    assert totals["n"] + totals["dl"] == n
    # Counts of values that are new to the baseline (``top|``) start when the value became
    # frequent in the worker's own recent values, which a restart empties: left out.
    assert _exact(totals) == _exact(expected)
    _assert_same_metrics(_metrics(redis_client, crashed), _metrics(redis_client, clean))
    alerts, oracle_alerts = _alerts(bootstrap, crashed), _alerts(bootstrap, clean)
    assert oracle_alerts, "the oracle should have alerted on the broken stretch"
    assert alerts == oracle_alerts


def test_workers_joining_and_leaving_a_group_end_like_a_clean_run(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    """Three joins and two leaves while the stream is produced: the same Redis counts and alerts as one worker alone.

    The stream is produced in six chunks, a group change after each, so every change lands
    mid-stream; the next chunk waits until the group owns every partition again.
    """
    items = _stream()
    n = len(items)
    clean = _setup(tmp_path / "clean", bootstrap, redis_url, f"{unique}-clean", items)
    run_until([new_worker(clean)], lambda: _applied(redis_client, clean) >= n, timeout_s=120)

    moved = _setup(
        tmp_path / "moved", bootstrap, redis_url, f"{unique}-moved", [], profile=tmp_path / "clean" / "profile.json"
    )
    moved.worker.batch_size = 150
    topic = moved.models[0].topics[0]
    running: list[tuple[Any, threading.Thread]] = []

    def join() -> None:
        worker = new_worker(moved)
        thread = threading.Thread(target=worker.run, kwargs={"drain_on_exit": False})
        thread.start()
        running.append((worker, thread))

    def leave() -> None:
        worker, thread = running.pop(0)
        worker.stop()
        thread.join(60)
        assert not thread.is_alive(), "a leaving worker did not stop"

    def settled() -> None:
        """Until the running workers own the three partitions between them, and each owns one."""
        deadline = time.monotonic() + 60
        while True:
            owned = [{tp.partition for tp in w._consumer.assignment()} for w, _ in running]
            if all(owned) and set().union(*owned) == {0, 1, 2}:
                return
            assert time.monotonic() < deadline, f"the group did not settle: {owned}"
            time.sleep(0.1)

    def produce_chunk(k: int) -> None:
        chunk = items[k * n // 6 : (k + 1) * n // 6]
        offset = k * n // 6
        produce(bootstrap, topic, ((None, p, ts) for p, ts, _ in chunk), partitions=3, first=offset)
        deadline = time.monotonic() + 120
        while _applied(redis_client, moved) < offset + len(chunk):
            assert time.monotonic() < deadline, f"no progress past {_applied(redis_client, moved)} records"
            time.sleep(0.02)

    try:
        for k, change in enumerate([join, join, leave, leave, None, None]):
            if k == 0:
                join()
            settled()
            produce_chunk(k)
            if change is not None:
                change()
    finally:
        while running:
            leave()
    last = new_worker(moved)  # closes the windows left open, as a drained worker does at exit
    run_until([last], lambda: True, timeout_s=60)

    totals, expected = window_totals(redis_client, moved), window_totals(redis_client, clean)
    assert totals["n"] + totals["dl"] == n
    assert _exact(totals) == _exact(expected)
    _assert_same_metrics(_metrics(redis_client, moved), _metrics(redis_client, clean))
    oracle_alerts = _alerts(bootstrap, clean)
    assert oracle_alerts, "the oracle should have alerted on the broken stretch"
    assert _alerts(bootstrap, moved) == oracle_alerts


#: Where the exactly-once worker processes stop, one after another: after a batch's Redis
#: apply, its transaction open (in the broken stretch: the next worker replays the batch's
#: dead letters); at the close of the next window with alerts, before they are produced;
#: right after the next commit with Redis steps (that window's, closed again once the lease
#: expired: its alerts committed, the window not finished, its incidents not closed), which
#: the last worker resolves at start-up. (A restarted worker reads its backlog fast: by the
#: third stop it may have read the whole stream.)
CRASHES = ("applied@50", "closing", "committed")


def _exactly_once(config: Config, instance: str) -> Config:
    config.kafka.delivery = "exactly_once"
    config.kafka.instance_id = instance
    return config


def _crash_at(tmp_path: Path, point: str) -> None:
    """Run an exactly-once worker process (instance ``w1``) until it stops itself at ``point``."""
    env = {
        **os.environ,
        "STREAM_GUARD_WORKER__BATCH_SIZE": "150",
        "STREAM_GUARD_OBSERVABILITY__PORT": "0",
        "STREAM_GUARD_KAFKA__DELIVERY": "exactly_once",
        "STREAM_GUARD_KAFKA__INSTANCE_ID": "w1",
        CRASH_POINT_ENV: point,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "stream_guard", "run", "-c", str(tmp_path / "config.toml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    assert process.returncode == 137, f"{point}: exited {process.returncode} before the point: {stderr[-3000:]}"


def _committed_alerts(bootstrap: str, config: Config) -> list[tuple[Any, ...]]:
    """Every record of the alerts topic a ``read_committed`` consumer reads, in no particular order."""
    out = []
    for message in consume_all(bootstrap, config.kafka.alerts_topic, idle_s=3, timeout_s=60):
        a = decode_alert(message.value())
        out.append((a["alert_id"], a["status"], a["kind"], a["feature"], a["slice"], a["count"], a["total"]))
    return out


def test_an_exactly_once_worker_crashed_at_each_step_publishes_each_alert_once(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    """Three crashes at named steps, each followed by a restart of the same instance: the oracle's alerts, each once.

    The oracle runs exactly once too; its alerts are each (``alert_id``, status) once.
    """
    assert {c.split("@")[0] for c in CRASHES} == set(CRASH_POINTS)
    items = _stream()
    n = len(items)
    clean = _exactly_once(_setup(tmp_path / "clean", bootstrap, redis_url, f"{unique}-clean", items), "oracle")
    run_until([new_worker(clean)], lambda: _applied(redis_client, clean) >= n, timeout_s=120)

    crashed_dir = tmp_path / "crashed"
    crashed = _setup(
        crashed_dir, bootstrap, redis_url, f"{unique}-crashed", items, profile=tmp_path / "clean" / "profile.json"
    )
    for point in CRASHES:
        _crash_at(crashed_dir, point)
        if point.startswith("closing"):
            time.sleep(31)  # the dead worker's lease on the window it was closing expires (30 s)
    pending = f"{crashed.redis.key_prefix}:{{fraud}}:txn"
    assert redis_client.hgetall(pending), "the last crash should leave a committed transaction's steps pending"
    last = new_worker(_exactly_once(crashed, "w1"))
    run_until([last], lambda: _applied(redis_client, crashed) >= n, timeout_s=180)

    totals, expected = window_totals(redis_client, crashed), window_totals(redis_client, clean)
    assert totals["n"] + totals["dl"] == n
    assert _exact(totals) == _exact(expected)
    _assert_same_metrics(_metrics(redis_client, crashed), _metrics(redis_client, clean))
    alerts, oracle_alerts = _committed_alerts(bootstrap, crashed), _committed_alerts(bootstrap, clean)
    assert oracle_alerts, "the oracle should have alerted on the broken stretch"
    assert len({a[:2] for a in oracle_alerts}) == len(oracle_alerts), "the oracle published an alert twice"
    assert Counter(alerts) == Counter(oracle_alerts)
    assert not redis_client.hgetall(pending), "steps left pending"
