"""The Redis client factory and its error lines (no server: what needs one is in tests/integration)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.exceptions import MovedError, RedisClusterException, SlotNotCoveredError

from stream_guard.errors import RedisClusterUnreachableError
from stream_guard.settings import RedisConfig
from stream_guard.state.client import REDIS_CLIENTS, REDIS_ERRORS, _Packer, _PackingConnection, connect, describe_error


def test_one_server_client_is_built_without_connecting() -> None:
    """cluster unset: a redis.Redis of the URL, decoding responses; nothing is sent until it is used."""
    client = connect(RedisConfig(url="redis://127.0.0.1:1/3"))
    assert type(client) is redis.Redis and isinstance(client, REDIS_CLIENTS)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["decode_responses"]) == ("127.0.0.1", 1, 3, True)
    assert connect(RedisConfig(), decode_responses=False).connection_pool.connection_kwargs["decode_responses"] is False


def test_commands_and_connections_time_out_after_the_configured_socket_timeout() -> None:
    """A paused server fails a command after ``socket_timeout_s`` instead of holding the worker for ever."""
    kwargs = connect(RedisConfig(socket_timeout_s=2.5)).connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (2.5, 2.5)
    assert connect(RedisConfig()).connection_pool.connection_kwargs["socket_timeout"] == 5.0


def test_outages_and_mismatched_settings_are_one_line_each() -> None:
    """An outage names [redis] url; MOVED says set cluster = true; a plain server says set it to false."""
    assert describe_error(redis.ConnectionError("refused")) == (
        "Redis unreachable (refused); check [redis] url and that the server runs"
    )
    assert describe_error(MovedError("3999 127.0.0.1:7001")) == (
        "Redis answered 3999 127.0.0.1:7001: the server is a Redis Cluster, set [redis] cluster = true"
    )
    assert (describe_error(redis.ResponseError("MOVED 3999 127.0.0.1:7001")) or "").endswith("cluster = true")
    assert describe_error(RedisClusterException("Cluster mode is not enabled on this node")) == (
        "the Redis server is not a Cluster (cluster mode is not enabled): set [redis] cluster = false"
    )
    down = RedisClusterException("Redis Cluster cannot be connected. Please provide at least one reachable node: x")
    assert (describe_error(down) or "").startswith("Redis Cluster unreachable (Redis Cluster cannot be connected")
    assert describe_error(RedisClusterException("EVALSHA - all keys must map to the same key slot")) is None
    assert describe_error(ValueError("no")) is None
    assert issubclass(SlotNotCoveredError, REDIS_ERRORS) and issubclass(redis.TimeoutError, REDIS_ERRORS)
    assert issubclass(RedisClusterUnreachableError, REDIS_ERRORS), "every node of a Cluster down is an outage too"


def _default_packer() -> Any:
    """redis-py's own packer of a connection (hiredis, encoding one argument per call)."""
    return redis.Connection()._command_packer


def test_commands_are_packed_in_one_hiredis_call_to_the_bytes_redis_py_sends() -> None:
    """Strings (UTF-8), bytes, ints and floats: the same RESP as redis-py's packer, a command
    name with a space split as redis-py splits it; both clients :func:`connect` builds use it."""
    packer = _Packer()
    commands: list[tuple[Any, ...]] = [
        ("EVALSHA", "a" * 40, 2, "sg:{m}:w:1", "sg:{m}:f", "I", 5, "n", -3, "é\n", 0.1, 1e300, -2.5e-12, b"\x00\xff"),
        ("CLIENT SETINFO", "LIB-NAME", "redis-py"),
        ("PING",),
    ]
    for command in commands:
        assert packer.pack(*command) == _default_packer().pack(*command)
    one_server = connect(RedisConfig(url="redis://127.0.0.1:1/0"))
    assert isinstance(one_server.connection_pool.connection_kwargs["command_packer"], _Packer)
    assert isinstance(one_server.connection_pool.make_connection()._command_packer, _Packer)
    assert isinstance(_PackingConnection()._command_packer, _Packer), "a Cluster's node connections"


def test_arguments_hiredis_does_not_take_are_packed_or_refused_as_redis_py_would() -> None:
    """A ``memoryview`` is sent as its bytes; a ``bool`` or ``None`` is redis-py's ``DataError``."""
    packer = _Packer()
    assert packer.pack("SET", "k", memoryview(b"abc")) == _default_packer().pack("SET", "k", b"abc")
    for bad in (True, None):
        with pytest.raises(redis.DataError):
            packer.pack("SET", "k", bad)
    with pytest.raises(UnicodeEncodeError):
        packer.pack("SET", "k", "\ud800")
