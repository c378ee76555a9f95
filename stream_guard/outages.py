"""Outages the worker waits out: Redis at start-up, a broker that stops answering, what a failed batch says.

Each waits with capped exponential backoff (:class:`~stream_guard.backoff.Backoff`), marks the
worker not ready in :class:`~stream_guard.observability.server.WorkerHealth` meanwhile, and logs
one line when the outage begins and one when it ends (``state = "outage"`` / ``"recovered"``).
A failed batch is rewound and retried by the worker's loop (:mod:`stream_guard.worker`); a
Redis Cluster that is down before its client can be built is waited for by
:func:`stream_guard.state.client.connect_when_reachable`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException

from stream_guard.backoff import Backoff
from stream_guard.errors import ConfigError, RegistryUnavailableError
from stream_guard.observability.server import WorkerHealth
from stream_guard.state.client import REDIS_ERRORS, RedisClient, cluster_mode_problem


def outage_of(exc: Exception) -> str:
    """What a retryable batch failure says is unavailable, for the outage's log line."""
    if isinstance(exc, REDIS_ERRORS):
        return "redis unavailable"
    if isinstance(exc, RegistryUnavailableError):
        return "schema registry unavailable"
    return "kafka unavailable"


def wait_for_redis(client: RedisClient, health: WorkerHealth, stop: threading.Event, log: Any) -> None:
    """Return once Redis answers ``PING`` (or ``stop`` is set): live and not ready meanwhile.

    A one-server client on a Redis Cluster node is a configuration error, raised here.
    """
    backoff = Backoff()
    while not stop.is_set():
        health.loop_turned()  # waiting, not stuck
        try:
            client.ping()
            problem = cluster_mode_problem(client)
        except REDIS_ERRORS as exc:
            health.redis_ok = False
            stop.wait(backoff.failed(log, "redis unreachable at start-up", exc))
            continue
        if problem is not None:
            raise ConfigError([problem])
        health.redis_ok = True
        backoff.succeeded(log, "redis reachable")
        return


class BrokerProbe:
    """Asks the cluster for a topic's metadata every few seconds: not ready while it does not answer.

    librdkafka reconnects and retries by itself, and a paused or overloaded broker (its
    connections open, no answers) raises nothing: ``consume()`` returns no records, as on an
    idle topic. The metadata request tells the two apart. While it fails, probes back off and
    the worker reports not ready. "All brokers down" (librdkafka's ``error_cb`` clears
    ``health.broker_ok``) begins such an outage too.
    """

    #: Seconds between probes while the cluster answers.
    every_s = 5.0
    #: A metadata answer slower than this counts as none.
    timeout_s = 2.0

    def __init__(self, consumer: Consumer, health: WorkerHealth, log: Any) -> None:
        self._consumer = consumer
        self._health = health
        self._log = log
        self._outage = Backoff()
        self._next = 0.0

    def __call__(self, topic: str) -> None:
        """Probe ``topic``'s metadata if it is time to (a no-op otherwise)."""
        now = time.monotonic()
        if not self._health.broker_ok and not self._outage.failing:
            self._next = now + self._outage.failed(self._log, "kafka brokers down")
        if now < self._next:
            return
        try:
            self._consumer.list_topics(topic, timeout=self.timeout_s)
        except KafkaException as exc:
            self._health.broker_ok = False
            self._next = now + self._outage.failed(self._log, "kafka brokers not answering", exc)
            return
        self._health.broker_ok = True
        self._outage.succeeded(self._log, "kafka brokers answering again")
        self._next = now + self.every_s
