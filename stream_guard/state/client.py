"""The Redis client of the whole code base: one server or a Redis Cluster, built in one place.

Every key of a model carries its name as a hash tag (``sg:{fraud}:...``), so all of a model's
keys live in one slot of a Cluster: each fenced script, pipeline and multi-key command of the
state touches one slot and runs on the node that owns it. :func:`connect` builds the client
``[redis]`` describes (``cluster = true`` for a Cluster); :data:`RedisClient` is the type the
stores accept, and ``isinstance(x, REDIS_CLIENTS)`` tells a client from the in-memory stores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias, cast

import hiredis
import redis
from redis._parsers import Encoder
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.connection import Connection, PythonRespSerializer
from redis.exceptions import MovedError, NoScriptError, RedisClusterException, ResponseError, SlotNotCoveredError

from stream_guard.backoff import Backoff
from stream_guard.errors import RedisClusterUnreachableError
from stream_guard.settings import RedisConfig
from stream_guard.state.keys import ModelKeys

__all__ = [
    "REDIS_CLIENTS",
    "REDIS_ERRORS",
    "Pipeline",
    "RedisClient",
    "cluster_mode_problem",
    "connect",
    "connect_when_reachable",
    "describe_error",
    "is_unreachable",
    "pipeline",
    "scan_model_keys",
]

#: A client of one Redis server or of a Redis Cluster (responses decoded).
RedisClient: TypeAlias = "redis.Redis | RedisCluster"

#: The client classes, for ``isinstance`` (which narrows to :data:`RedisClient` with it).
REDIS_CLIENTS = (redis.Redis, RedisCluster)


#: What a Redis outage raises: besides ``RedisError``, a Cluster client whose slot table lost a
#: slot (its node down) raises ``SlotNotCoveredError``, which is not one, and one that reaches
#: no node at all :class:`~stream_guard.errors.RedisClusterUnreachableError` (see ``_Cluster``).
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, SlotNotCoveredError, RedisClusterUnreachableError)


@contextmanager
def _unreachable_as_outage() -> Iterator[None]:
    try:
        yield
    except RedisClusterException as exc:
        if isinstance(exc, SlotNotCoveredError) or not is_unreachable(exc):
            raise
        raise RedisClusterUnreachableError(str(exc).splitlines()[0]) from exc


class _Cluster(RedisCluster):
    """The Cluster client of :func:`connect`: no node answering is an outage (``REDIS_ERRORS``).

    redis-py raises a bare ``RedisClusterException`` for it, which would take the worker
    down instead of its batch being retried once the nodes are back.
    """

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with _unreachable_as_outage():
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]


class _Packer:
    """Packs a command into RESP in one ``hiredis.pack_command`` call.

    redis-py's own hiredis packer first encodes the arguments one Python call each: for
    a batch's apply script, whose ``ARGV`` holds tens of thousands of arguments, that is
    most of the time spent sending it. hiredis encodes ``str`` (UTF-8), ``bytes``, ``int``
    and ``float`` itself, as redis-py does by default; anything else (a ``bool``, a
    ``memoryview``...) goes to redis-py's pure-Python packer, which encodes or refuses it
    as redis-py would. The clients :func:`connect` builds use redis-py's default encoding
    (UTF-8, strict), the one hiredis applies.
    """

    def __init__(self) -> None:
        self._fallback = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)  # type: ignore[no-untyped-call]

    def pack(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return cast("list[bytes]", self._fallback.pack(*args))  # type: ignore[no-untyped-call]


class _PackingConnection(Connection):
    """The connection of a Cluster's nodes: :class:`_Packer`'s packing (a Cluster client passes
    only its own list of options to its nodes, ``connection_class`` among them)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("command_packer", _Packer())
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]


#: What building a client raises: a Cluster client's slot-table query fails with ``RedisClusterException``.
_CONNECT_ERRORS: tuple[type[Exception], ...] = (RedisClusterException, *REDIS_ERRORS)


def connect(settings: RedisConfig, *, decode_responses: bool = True, **options: Any) -> RedisClient:
    """The client of ``[redis]``: a :class:`~redis.cluster.RedisCluster` if ``cluster = true``, else a
    :class:`~redis.Redis`; both from ``url`` (for a Cluster, any node's: the client discovers the others).

    The stores need decoded responses; ``decode_responses=False`` is for reading binary values.
    Commands and connection attempts time out after ``socket_timeout_s`` whatever redis-py's
    default (none before redis-py 6: a paused server would hold the caller for ever).
    Commands are packed by :class:`_Packer`.
    """
    timeouts = {"socket_timeout": settings.socket_timeout_s, "socket_connect_timeout": settings.socket_timeout_s}
    options = {**timeouts, **options}
    if settings.cluster:
        # rediss:// or ssl = True: redis-py's SSL connection replaces this class (its own packing)
        options.setdefault("connection_class", _PackingConnection)
        return _Cluster.from_url(settings.url, decode_responses=decode_responses, **options)
    options.setdefault("command_packer", _Packer())
    return redis.Redis.from_url(settings.url, decode_responses=decode_responses, **options)


def connect_when_reachable(
    settings: RedisConfig, stop: threading.Event, log: Any, waiting: Callable[[], None] = lambda: None
) -> RedisClient | None:
    """:func:`connect`, waiting out a Redis Cluster that does not answer; None if ``stop`` is set first.

    A one-server client connects on first use (the worker waits for its first ``PING``), but
    a Cluster client asks the startup nodes for the slot table as it is built, and raises if
    none answers (or the slots are not all covered yet, while the cluster forms). Here that is
    an outage: retried with capped backoff, one line when the wait begins and one when it
    ends, ``waiting()`` called before each attempt (the caller reports not ready). A node
    that is not in cluster mode is a configuration mistake, raised at once.
    """
    backoff = Backoff()
    while not stop.is_set():
        waiting()
        try:
            client = connect(settings)
        except _CONNECT_ERRORS as exc:
            if not is_unreachable(exc):
                raise
            stop.wait(backoff.failed(log, "redis cluster unreachable at start-up", exc))
            continue
        backoff.succeeded(log, "redis cluster reachable")
        return client
    return None


def cluster_mode_problem(client: RedisClient) -> str | None:
    """The problem line when a one-server client talks to a Cluster node (``[redis] cluster`` unset), else None.

    Each command would then fail with ``MOVED`` for the keys of the other nodes' slots; a
    Cluster client on a plain server fails when it is built. A server that refuses ``INFO``
    (a managed service may rename it) is taken at its word.
    """
    if isinstance(client, RedisCluster):
        return None
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except redis.ResponseError:
        return None
    if str(enabled) == "1":
        return "redis.cluster: the server is a Redis Cluster node: set cluster = true"
    return None


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the server (or no node of a Cluster) answers, or the Cluster's slots are not all served."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | SlotNotCoveredError | RedisClusterUnreachableError):
        return True
    text = str(exc)
    return isinstance(exc, RedisClusterException) and ("cannot be connected" in text or "not covered" in text)


def describe_error(exc: BaseException) -> str | None:
    """One line for a Redis outage or a ``[redis] cluster`` setting that does not match the server; else None."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | SlotNotCoveredError | RedisClusterUnreachableError):
        return f"Redis unreachable ({exc}); check [redis] url and that the server runs"
    if isinstance(exc, MovedError) or (isinstance(exc, ResponseError) and str(exc).startswith("MOVED ")):
        return f"Redis answered {exc}: the server is a Redis Cluster, set [redis] cluster = true"
    if isinstance(exc, RedisClusterException):
        text = str(exc)
        if "Cluster mode is not enabled" in text:
            return "the Redis server is not a Cluster (cluster mode is not enabled): set [redis] cluster = false"
        if is_unreachable(exc):
            return f"Redis Cluster unreachable ({text.splitlines()[0]}); check [redis] url and that the nodes run"
    return None


class Pipeline:
    """A non-transactional pipeline of one server or a Cluster, that also runs scripts.

    redis-py's cluster pipeline refuses ``Script`` calls (``EVALSHA``), ``MGET`` and ``PFCOUNT``
    by name, though each of those is routed like any keyed command (by the slot of its keys,
    which a model's hash tag makes one). Here they are queued as plain commands on a Cluster,
    and a script a node does not know (``NOSCRIPT``: the node restarted, or a replica took over)
    is loaded on every primary and only the commands that failed for it are sent again: the
    others ran once already. On one server the redis-py pipeline loads scripts itself.

    Any other command is the redis-py pipeline's (``pipe.hgetall(key)``...).
    """

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._pipe: Any = client.pipeline(transaction=False)
        self._cluster = isinstance(client, RedisCluster)
        #: On a Cluster: position in the pipeline -> (script, keys and args) of each script call.
        self._scripts: dict[int, tuple[Script, list[Any]]] = {}
        self._queued = 0

    def __getattr__(self, name: str) -> Any:
        command = getattr(self._pipe, name)

        def queue(*args: Any, **kwargs: Any) -> Pipeline:
            command(*args, **kwargs)
            self._queued += 1
            return self

        return queue

    def __len__(self) -> int:
        return self._queued

    def script(self, script: Script, keys: Sequence[Any], args: Sequence[Any] = ()) -> Pipeline:
        """Queue a call of ``script`` (from ``register_script``)."""
        if self._cluster:
            call = [len(keys), *keys, *args]
            self._scripts[self._queued] = (script, call)
            self._pipe.execute_command("EVALSHA", script.sha, *call)
        else:
            script(keys=list(keys), args=list(args), client=self._pipe)
        self._queued += 1
        return self

    def mget(self, keys: Sequence[str]) -> Pipeline:
        """Queue an ``MGET`` (of keys of one slot, on a Cluster)."""
        self._pipe.execute_command("MGET", *keys)
        self._queued += 1
        return self

    def pfcount(self, key: str) -> Pipeline:
        """Queue a ``PFCOUNT`` of one HyperLogLog."""
        self._pipe.execute_command("PFCOUNT", key)
        self._queued += 1
        return self

    def execute(self) -> list[Any]:
        """Every reply in order; after all ran, the first error is raised, as redis-py does."""
        self._queued = 0
        if not self._cluster:
            return cast("list[Any]", self._pipe.execute())
        with _unreachable_as_outage():
            return self._execute_on_cluster()

    def _execute_on_cluster(self) -> list[Any]:
        scripts, self._scripts = self._scripts, {}
        replies = list(self._pipe.execute(raise_on_error=False))
        missing = [i for i in scripts if isinstance(replies[i], NoScriptError)]
        if missing:
            loaded: dict[str, str] = {}
            for i in missing:
                script = scripts[i][0]
                if script.sha not in loaded:
                    loaded[script.sha] = self.client.script_load(script.script)  # on every primary
                script.sha = loaded[script.sha]
            retry: Any = self.client.pipeline(transaction=False)
            for i in missing:
                script, call = scripts[i]
                retry.execute_command("EVALSHA", script.sha, *call)
            for i, reply in zip(missing, retry.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies


def pipeline(client: RedisClient) -> Pipeline:
    """A :class:`Pipeline` of ``client``."""
    return Pipeline(client)


def scan_model_keys(client: RedisClient, keys: ModelKeys, match: str, count: int = 1000) -> Iterator[str]:
    """``SCAN`` for keys of one model matching ``match``: on a Cluster, on the node of the model's slot only."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(keys.windows)  # type: ignore[no-untyped-call]
        yield from client.scan_iter(match=match, count=count, target_nodes=node)
    else:
        yield from client.scan_iter(match=match, count=count)
