"""Outages mid-stream on real servers: the worker pauses, reports not ready, and recovers by itself.

Four outages while a backlog is being read and more records are produced:

* a persistent redis-server (``appendonly yes``, ``appendfsync always``) shut down with
  SIGTERM and started again on the same port and directory;
* every node of a persistent 3-node Redis Cluster shut down and started again (its
  nodes.conf and data): no node answers, which redis-py reports as no ``RedisError``;
* Redis paused with SIGSTOP for about 10 s, then SIGCONT: replies stop, connections stay
  open, so only the client's socket timeout turns it into an outage;
* the broker (a private Tansu, not the session's) paused with SIGSTOP, then SIGCONT.

After each, every record is counted exactly once: the window totals and the slice
metrics equal a pandas count of the input, and the worker's counters account for every
record it consumed. Readiness is sampled throughout, and the process's CPU time while the
outage lasts shows no busy loop; the captured log shows the outage and the recovery as
one line each.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import structlog
from streamtest import new_worker, produce, window_totals, write_config

from stream_guard.assembly import metrics_reader
from stream_guard.settings import Config, load_config
from stream_guard.state.client import REDIS_ERRORS, RedisClient, connect
from stream_guard.tools.embedded import Server, free_port, start_broker, start_redis, start_redis_cluster
from stream_guard.tools.simulator import Simulator
from stream_guard.worker import Worker

pytestmark = pytest.mark.integration

WINDOW_S = 10
START_MS = 1_700_000_000_000 - 1_700_000_000_000 % (WINDOW_S * 1000)
STEP_MS = 10
#: Records before, during and after the outage.
PARTS = (4000, 1000, 1000)
PAUSE_S = 10.0
#: Redis answers within this long or the worker takes it for an outage.
SOCKET_TIMEOUT_S = 1.0
PERSISTENT = ("--appendonly", "yes", "--appendfsync", "always")


def _records() -> list[dict[str, Any]]:
    return Simulator(encoding="json", seed=61).records(sum(PARTS), START_MS, step_ms=STEP_MS)


def _config(tmp_path: Path, bootstrap: str, redis_port: int, unique: str, *, cluster: bool = False) -> Config:
    """One model on fresh topics; ``[redis] socket_timeout_s`` lowered, so a paused Redis is an outage within a second."""
    write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        redis_cluster=cluster,
        unique=unique,
        encoding="json",
        window_s=WINDOW_S,
    )
    path = tmp_path / "config.toml"
    path.write_text(path.read_text().replace("[redis]\n", f"[redis]\nsocket_timeout_s = {SOCKET_TIMEOUT_S}\n", 1))
    config = load_config(path, environ={}, require_profiles=False)
    assert config.redis.socket_timeout_s == SOCKET_TIMEOUT_S
    return config


@dataclass
class Readiness:
    """Samples ``health.ready()`` every 50 ms in a daemon thread."""

    worker: Worker
    samples: list[tuple[float, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append((time.monotonic(), self.worker.parts.health.ready()[0]))

    def stop(self) -> None:
        self._stop.set()

    def between(self, start: float, end: float) -> list[bool]:
        return [ok for at, ok in self.samples if start <= at <= end]


@dataclass
class Outage:
    """How one kind of outage begins and ends."""

    begin: Callable[[], None]
    end: Callable[[], None]


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class Run:
    """What one run through an outage left: the worker, its log, readiness, and the outage's span."""

    worker: Worker
    logs: list[dict[str, Any]]
    readiness: Readiness
    span: tuple[float, float]
    #: CPU seconds this process used while the outage lasted (every thread: worker, librdkafka, producer).
    cpu_s: float

    def ready_during(self) -> list[bool]:
        return self.readiness.between(*self.span)

    def state_changes(self) -> list[tuple[str, str]]:
        """(state, message) of each outage and recovery line."""
        return [(e["state"], e["event"]) for e in self.logs if e.get("state") in ("outage", "recovered")]


def _applied(client: RedisClient, config: Config) -> int:
    """Records applied to Redis, from the fence of each partition (its last applied offset); 0 while Redis fails."""
    try:
        fences = client.hgetall(f"{config.redis.key_prefix}:{{fraud}}:applied")
    except REDIS_ERRORS:
        return 0
    return sum(int(offset) + 1 for offset in fences.values())


def _run_through(
    config: Config, bootstrap: str, outage: Outage, client: RedisClient, *, hold_s: float = PAUSE_S
) -> Run:
    """Read a backlog, run the outage mid-stream (more records produced meanwhile), finish the stream.

    The stream is done when Redis holds every record: the worker's own counters may not
    get there, for a batch applied whose answer the outage swallowed is failed, read again
    and skipped as redelivered.
    """
    records = _records()
    topic = config.models[0].topics[0]
    n1, n2, _ = PARTS

    def items(part: list[dict[str, Any]]) -> Iterator[tuple[None, bytes, int]]:
        return ((None, json.dumps(r).encode(), r["ts"]) for r in part)

    produce(bootstrap, topic, items(records[:n1]), partitions=3)
    with structlog.testing.capture_logs() as logs:
        worker = new_worker(config)
        readiness = Readiness(worker)
        thread = threading.Thread(target=worker.run, kwargs={"drain_on_exit": True})
        thread.start()
        try:
            _wait(lambda: worker.stats.decoded >= n1 // 4, 60, "the first records")
            assert worker.stats.decoded < n1, "the outage should begin with a backlog left"
            started, cpu = time.monotonic(), time.process_time()
            outage.begin()
            during = threading.Thread(
                target=produce,
                args=(bootstrap, topic, items(records[n1 : n1 + n2])),
                kwargs={"partitions": 3, "first": n1},
            )
            during.start()
            time.sleep(hold_s)
            ended, cpu = time.monotonic(), time.process_time() - cpu
            outage.end()
            during.join(60)
            assert not during.is_alive(), "the records produced during the outage were not acknowledged"
            produce(bootstrap, topic, items(records[n1 + n2 :]), partitions=3, first=n1 + n2)
            _wait(lambda: _applied(client, config) >= len(records), 60, "every record applied")
            _wait(lambda: worker.parts.health.ready()[0], 30, "readiness after the outage")
        finally:
            worker.stop()
            thread.join(60)
            readiness.stop()
    assert not thread.is_alive(), "the worker did not stop"
    return Run(worker, logs, readiness, (started, ended), cpu)


def _assert_exactly_once(run: Run, config: Config, client: RedisClient) -> None:
    """Every input record counted once: window totals and slice metrics equal a pandas count of the input.

    The worker accounts for every record it consumed; it decoded each record once at most
    (a batch Redis applied but whose answer was lost is skipped when read again).
    """
    frame = pd.DataFrame.from_records(_records())
    n = len(frame)
    stats = run.worker.stats
    assert stats.accounted == stats.consumed, vars(stats)
    assert stats.decoded + stats.dead_lettered <= n <= stats.decoded + stats.dead_lettered + stats.redelivered_skipped
    totals = window_totals(client, config)
    assert totals["n"] + totals.get("dl", 0) == n
    expected = {"*": n}
    for name in ("device_type", "country"):
        for value, count in frame[name].value_counts().items():
            expected[f"{name}={value}"] = int(count)
    rollup = metrics_reader(config, "fraud", client).rollup(START_MS - 60_000, START_MS + n * STEP_MS + 60_000)
    assert {name: rollup[name].events for name in expected if name in rollup} == expected


def _assert_waited(run: Run) -> None:
    """Not ready during the outage, no busy loop meanwhile, one line when it began and one when it ended."""
    during = run.ready_during()
    assert during and not all(during), "the worker should report not ready during the outage"
    # A loop retrying without a pause burns a core: the whole process used a fraction of one.
    assert run.cpu_s < 0.5 * PAUSE_S, f"{run.cpu_s:.1f} s of CPU in a {PAUSE_S:.0f} s outage"
    states = [state for state, _ in run.state_changes()]
    assert states == ["outage", "recovered"], run.state_changes()


def _persistent_redis(tmp_path: Path, port: int | None = None) -> Server:
    """A redis-server writing every command to its append-only file before answering."""
    workdir = tmp_path / "redis"
    workdir.mkdir(exist_ok=True)
    return start_redis(port or free_port(), workdir, extra=PERSISTENT)


def _pause(process: subprocess.Popen[bytes]) -> Outage:
    return Outage(lambda: process.send_signal(signal.SIGSTOP), lambda: process.send_signal(signal.SIGCONT))


def test_redis_shut_down_mid_stream_and_restarted_loses_and_duplicates_nothing(
    tmp_path: Path, bootstrap: str, unique: str
) -> None:
    """SIGTERM to a persistent Redis mid-stream, restarted on its port and data: each record counted once."""
    servers = [_persistent_redis(tmp_path)]
    port = servers[0].port
    config = _config(tmp_path, bootstrap, port, unique)
    try:
        client = connect(config.redis)
        restart = Outage(servers[0].stop, lambda: servers.append(_persistent_redis(tmp_path, port)))
        run = _run_through(config, bootstrap, restart, client)
        _assert_exactly_once(run, config, client)
        _assert_waited(run)
        assert run.state_changes()[0][1].startswith("redis unavailable: batch rewound, consumption paused")
    finally:
        for server in servers:
            server.stop()


def test_every_cluster_node_shut_down_mid_stream_and_restarted_loses_and_duplicates_nothing(
    tmp_path: Path, bootstrap: str, unique: str
) -> None:
    """A persistent 3-node Redis Cluster, every node stopped mid-stream and restarted: an outage, not a crash."""
    cluster = start_redis_cluster(3, tmp_path / "cluster", extra=PERSISTENT)
    config = _config(tmp_path, bootstrap, cluster.ports[0], unique, cluster=True)
    try:
        client = connect(config.redis)
        run = _run_through(config, bootstrap, Outage(cluster.stop, cluster.restart), client)
        _assert_exactly_once(run, config, client)
        _assert_waited(run)
        assert run.state_changes()[0][1].startswith("redis unavailable: batch rewound, consumption paused")
    finally:
        cluster.stop()


def test_redis_paused_mid_stream_is_an_outage_not_a_hang(tmp_path: Path, bootstrap: str, unique: str) -> None:
    """SIGSTOP to Redis for 10 s, then SIGCONT: the socket timeout makes it an outage; each record counted once."""
    server = start_redis(free_port(), tmp_path)
    config = _config(tmp_path, bootstrap, server.port, unique)
    try:
        client = connect(config.redis)
        run = _run_through(config, bootstrap, _pause(server.process), client)
        _assert_exactly_once(run, config, client)
        _assert_waited(run)
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.stop()


def test_broker_paused_mid_stream_loses_and_duplicates_nothing(tmp_path: Path, unique: str) -> None:
    """SIGSTOP to a private broker for 10 s while records are produced and read: the worker recovers by itself."""
    broker = start_broker(workdir=tmp_path)
    server = start_redis(free_port(), tmp_path)
    bootstrap = f"127.0.0.1:{broker.port}"
    config = _config(tmp_path, bootstrap, server.port, unique)
    try:
        client = connect(config.redis)
        run = _run_through(config, bootstrap, _pause(broker.process), client)
        _assert_exactly_once(run, config, client)
        _assert_waited(run)
        assert run.state_changes()[0][1].startswith("kafka brokers not answering")
    finally:
        broker.process.send_signal(signal.SIGCONT)
        broker.stop()
        server.stop()
