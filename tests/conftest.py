"""Session fixtures: a real Kafka-protocol broker (Tansu) and a real redis-server on free ports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
import structlog

from stream_guard.tools.embedded import Server, start_broker, start_redis


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
