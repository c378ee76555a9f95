"""Kafka clients configured for at-least-once processing, and delivery tracking."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from stream_guard.errors import DeliveryError
from stream_guard.settings import KafkaConfig

log = structlog.get_logger(__name__)

# Offsets are committed by the worker, after everything derived from them is durable.
_CONSUMER_FIXED = {"enable.auto.commit": False, "enable.auto.offset.store": False}
_CONSUMER_DEFAULTS = {"auto.offset.reset": "earliest", "enable.partition.eof": False}
_PRODUCER_DEFAULTS = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 20,
    "compression.type": "lz4",
}


def consumer_settings(kafka: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    settings = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": kafka.group_id,
        **_CONSUMER_DEFAULTS,
        **kafka.consumer,
        **overrides,
    }
    settings.update(_CONSUMER_FIXED)
    return settings


def producer_settings(kafka: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    return {"bootstrap.servers": kafka.bootstrap_servers, **_PRODUCER_DEFAULTS, **kafka.producer, **overrides}


def client_property_problems(kafka: KafkaConfig) -> list[str]:
    """One line per property of ``[kafka].consumer`` / ``[kafka].producer`` that librdkafka rejects.

    librdkafka checks property names and values when a client is built, so each configured
    property is tried on a client of its own (built, never polled, then closed); a rejected
    one becomes ``kafka.consumer.<name>: <librdkafka's message>``.
    """
    problems: list[str] = []
    clients: dict[str, tuple[Mapping[str, Any], dict[str, Any], Any]] = {
        "consumer": (kafka.consumer, consumer_settings(kafka), lambda p: Consumer(p).close()),
        "producer": (kafka.producer, producer_settings(kafka), lambda p: Producer(p).flush(0)),
    }
    for role, (extra, settings, build) in clients.items():
        # log_level 0: the probe clients' failed connection attempts are no news to the user.
        base = {"log_level": 0, **{k: v for k, v in settings.items() if k not in extra}}
        for name, value in extra.items():
            try:
                build({**base, name: value})
            except KafkaException as exc:
                error = exc.args[0] if exc.args else exc
                problems.append(f"kafka.{role}.{name}: {error.str() if isinstance(error, KafkaError) else error}")
            except (TypeError, ValueError) as exc:
                problems.append(f"kafka.{role}.{name}: {exc}")
    return problems


def make_consumer(kafka: KafkaConfig, logger: Any = None, **overrides: Any) -> Consumer:
    settings = consumer_settings(kafka, **overrides)
    return Consumer(settings, logger=logger) if logger is not None else Consumer(settings)


#: librdkafka's default ``message.max.bytes``.
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000


def max_message_bytes(settings: Mapping[str, Any]) -> int:
    """The largest record a producer with ``settings`` accepts."""
    return int(settings.get("message.max.bytes", DEFAULT_MAX_MESSAGE_BYTES))


class DeliveryTracker:
    """A producer whose ``flush`` raises unless every message since the last flush was acked."""

    def __init__(self, settings: Mapping[str, Any], logger: Any = None) -> None:
        self.producer = Producer(dict(settings), logger=logger) if logger is not None else Producer(dict(settings))
        self.max_message_bytes = max_message_bytes(settings)
        self._failures: list[str] = []

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        *,
        if_too_large: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Queue a message for the next :meth:`flush`.

        ``if_too_large`` (new ``value`` and ``headers``) replaces the message once if the
        client or the broker refuses it as too large (``MSG_SIZE_TOO_LARGE``): a message
        that can never be delivered must not be retried without end.
        """

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is None:
                return
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE and if_too_large is not None:
                self.produce(topic, key=key, **{**kwargs, **if_too_large})
            else:
                self._failures.append(f"{message.topic()}: {error.str()}")

        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=on_delivery, **kwargs)
                return
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then retry.
                self.producer.poll(0.1)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE or if_too_large is None:
                    raise
                self.produce(topic, key=key, **{**kwargs, **if_too_large})
                return

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self.producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if remaining or failures:
            detail = "; ".join(failures[:3]) or f"{remaining} messages still in flight after {timeout_s}s"
            raise DeliveryError(f"broker did not acknowledge {len(failures) + remaining} messages: {detail}")

    def close(self, timeout_s: float = 30.0) -> int:
        """Wait up to ``timeout_s`` for outstanding deliveries, then release the client.

        Returns how many messages were given up unacknowledged (0 on a clean shutdown).
        confluent-kafka's own ``close()`` flushes without a time limit, in C, where no
        signal reaches Python: whatever is still queued after ``timeout_s`` is purged
        first, so a shutdown never hangs on an unreachable broker. Their source offsets
        were never committed, so the next worker reprocesses them.
        """
        return close_producer(self.producer, timeout_s)


def close_producer(producer: Producer, timeout_s: float = 30.0) -> int:
    """Flush ``producer`` for at most ``timeout_s``, purge what is left, close it; returns the purged count."""
    remaining = int(producer.flush(timeout_s))
    if remaining:
        producer.purge(in_queue=True, in_flight=True)
        producer.poll(0)  # their delivery reports: failed, purged
        log.error("producer closed with unacknowledged messages", messages=remaining, waited_s=timeout_s)
    producer.close()  # type: ignore[attr-defined]  # in the client, missing from 2.15's stub
    return remaining
