"""Session fixtures: a real Kafka-protocol broker (Tansu), a real redis-server and a 3-node Redis Cluster on free ports."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import structlog

from stream_guard.tools.embedded import ClusterServer, Server, start_broker, start_redis, start_redis_cluster


@pytest.fixture(scope="session")
def broker() -> Iterator[Server]:
    server = start_broker()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterServer]:
    """Three cluster-enabled redis-servers sharing the slots (no replicas), started once per session."""
    cluster = start_redis_cluster(3)
    yield cluster
    cluster.stop()


@pytest.fixture
def bootstrap(broker: Server) -> str:
    return f"127.0.0.1:{broker.port}"


@pytest.fixture
def redis_url(redis_server: Server) -> str:
    return f"redis://127.0.0.1:{redis_server.port}/0"


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and model names of one test."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Undo a test's ``configure_logging``: it binds the stream pytest captured, closed after the test."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """A test ends with every non-daemon thread it started: a leaked one runs into the next test.

    A stuck worker thread would also hold pytest at exit (the interpreter joins non-daemon
    threads), where no timeout reaches it.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 30
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not leaked, f"threads still running 30 s after the test: {[t.name for t in leaked]}"
