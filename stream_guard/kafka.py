"""Kafka clients configured for the worker's delivery mode, and delivery tracking.

``[kafka] delivery = "at_least_once"``: an idempotent producer whose :meth:`DeliveryTracker.flush`
raises unless every message was acknowledged. ``"exactly_once"``: the same producer with a
``transactional.id`` (:class:`TransactionalProducer`), and consumers reading
``read_committed``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from stream_guard.errors import DeliveryError, ProducerFencedError, TransactionUnavailableError
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
    if kafka.delivery == "exactly_once":
        # The input may come from transactional producers too: never read their aborted records.
        settings["isolation.level"] = "read_committed"
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


class _Tally:
    """One thread's messages since its last flush: how many are unacknowledged, which failed."""

    __slots__ = ("failures", "outstanding")

    def __init__(self) -> None:
        self.outstanding = 0
        self.failures: list[str] = []


class DeliveryTracker:
    """A producer whose ``flush`` raises unless every message the calling thread produced since
    its last flush was acked.

    The worker's loop and its commit thread (:mod:`stream_guard.commit_ahead`) share one
    producer: a window's alerts and a batch's dead letters may be in flight at once. Each
    thread's messages are tallied apart, so a failed delivery is raised by the flush of the
    thread that produced it, whichever thread's flush or poll served its report.
    """

    def __init__(self, settings: Mapping[str, Any], logger: Any = None) -> None:
        self.producer = Producer(dict(settings), logger=logger) if logger is not None else Producer(dict(settings))
        self.max_message_bytes = max_message_bytes(settings)
        self._tallies: dict[int, _Tally] = {}
        self._lock = threading.Lock()
        #: A delivery report that could not read its error (the client failed fatally meanwhile).
        self.client_failure: SystemError | None = None

    def _tally(self) -> _Tally:
        """The calling thread's tally."""
        thread = threading.get_ident()
        with self._lock:
            tally = self._tallies.get(thread)
            if tally is None:
                tally = self._tallies[thread] = _Tally()
            return tally

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        *,
        if_too_large: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Queue a message for the next :meth:`flush` of the calling thread.

        ``if_too_large`` (new ``value`` and ``headers``) replaces the message once if the
        client or the broker refuses it as too large (``MSG_SIZE_TOO_LARGE``): a message
        that can never be delivered must not be retried without end.
        """
        self._produce(self._tally(), topic, value, key, if_too_large, kwargs)

    def _produce(
        self,
        tally: _Tally,
        topic: str,
        value: bytes | None,
        key: bytes | str | None,
        if_too_large: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        def on_delivery(error: KafkaError | None, message: Message) -> None:
            try:
                if error is None:
                    self._delivered(message)
                elif error.code() == KafkaError.MSG_SIZE_TOO_LARGE and if_too_large is not None:
                    self._replace(tally, topic, key, if_too_large, kwargs)
                else:
                    with self._lock:
                        tally.failures.append(f"{message.topic()}: {error.str()}")
            except SystemError as exc:
                # Run by a flush with the client's fatal error pending (its cause): kept for the caller.
                self.client_failure = exc
            finally:
                with self._lock:
                    tally.outstanding -= 1

        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=on_delivery, **kwargs)
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then retry.
                self.producer.poll(0.1)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE or if_too_large is None:
                    raise
                self._replace(tally, topic, key, if_too_large, kwargs)
                return
        with self._lock:
            tally.outstanding += 1

    def _replace(
        self,
        tally: _Tally,
        topic: str,
        key: bytes | str | None,
        if_too_large: Mapping[str, Any],
        kwargs: Mapping[str, Any],
    ) -> None:
        """Produce the ``if_too_large`` replacement of a message refused as too large, in its tally."""
        replacement = {**kwargs, **if_too_large}
        self._produce(tally, topic, replacement.pop("value", None), key, None, replacement)

    def _delivered(self, message: Message) -> None:
        """A message was acknowledged (called from the delivery report)."""

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for the queued messages; raise unless every one the calling thread produced was acked."""
        self.producer.flush(timeout_s)
        tally = self._tally()
        with self._lock:
            failures, tally.failures = tally.failures, []
            remaining = tally.outstanding
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


#: A producer fenced by a newer one with its transactional id (the broker's and librdkafka's codes).
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}

_T = TypeVar("_T")


class TransactionalProducer(DeliveryTracker):
    """A :class:`DeliveryTracker` whose messages go out in Kafka transactions.

    One transaction at a time: :meth:`begin`, produce, :meth:`send_offsets`, :meth:`commit`
    (or :meth:`abort`). :meth:`init` fences every earlier producer with the same
    ``transactional_id`` and aborts its open transaction. A fatal client error raises
    :class:`~stream_guard.errors.ProducerFencedError` when a newer producer fenced this one,
    else :class:`~stream_guard.errors.TransactionUnavailableError`; any other error is a
    :class:`~confluent_kafka.KafkaException` after which the transaction is aborted.
    """

    def __init__(
        self, settings: Mapping[str, Any], transactional_id: str, logger: Any = None, *, timeout_s: float = 30.0
    ) -> None:
        super().__init__({**settings, "transactional.id": transactional_id}, logger)
        self.transactional_id = transactional_id
        self._timeout_s = timeout_s
        #: The first message acknowledged in the open transaction: (topic, partition, offset).
        self.first_position: tuple[str, int, int] | None = None
        #: A newer producer with the same transactional id fenced this one: it can do nothing more.
        self.fenced = False

    def _delivered(self, message: Message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if self.first_position is None and topic is not None and partition is not None and offset is not None:
            self.first_position = (topic, partition, offset)

    def init(self) -> None:
        self._call(lambda: self.producer.init_transactions(self._timeout_s))

    def begin(self) -> None:
        self.first_position = None
        self._call(self.producer.begin_transaction)

    def send_offsets(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Commit ``offsets`` with the transaction, as the consumer group of ``group_metadata`` (KIP-447).

        The group metadata carries the consumer's generation: a worker that lost its
        partitions in a rebalance cannot commit offsets for them (the commit fails and
        the transaction is aborted).
        """
        self._call(lambda: self.producer.send_offsets_to_transaction(offsets, group_metadata, self._timeout_s))

    def flush(self, timeout_s: float = 30.0) -> None:
        self._call(lambda: super(TransactionalProducer, self).flush(timeout_s))

    def commit(self, attempts: int = 3) -> None:
        """Commit the open transaction; a timeout is retried (librdkafka resumes the commit)."""
        for attempt in range(attempts):
            try:
                self._call(lambda: self.producer.commit_transaction(self._timeout_s))
                return
            except KafkaException as exc:
                if not exc.args[0].retriable() or attempt == attempts - 1:
                    raise

    def abort(self) -> None:
        """Abort the open transaction, if any: its messages are never read by ``read_committed`` consumers.

        A fenced producer aborts nothing: the newer one's ``init_transactions`` aborted it.
        """
        if self.fenced:
            return
        try:
            self._call(lambda: self.producer.abort_transaction(self._timeout_s))
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._STATE:  # no transaction open
                raise

    def close(self, timeout_s: float = 30.0) -> int:
        """As :meth:`DeliveryTracker.close`; a fenced producer is released at once (nothing it holds can commit)."""
        if not self.fenced:
            try:
                return close_producer(self.producer, timeout_s)
            except (KafkaException, SystemError) as exc:
                log.warning("transactional producer failed while closing", error=str(exc))
        self.producer.purge(in_queue=True, in_flight=True)
        self.producer.close()  # type: ignore[attr-defined]  # in the client, missing from 2.15's stub
        return 0

    def _fenced_error(self, detail: str) -> ProducerFencedError:
        self.fenced = True
        return ProducerFencedError(
            f"transactional id {self.transactional_id!r} was taken over by a newer worker: {detail}"
        )

    def _call(self, operation: Callable[[], _T]) -> _T:
        if self.fenced:
            raise self._fenced_error("fenced earlier")
        try:
            return operation()
        except SystemError as exc:
            # confluent-kafka runs callbacks with the flush's fatal error pending: a callback's
            # first call into the client raises SystemError, the error as its cause (raised
            # through the flush, or kept by a delivery report), or swallowed (by the logger).
            cause = _kafka_cause(exc) or _kafka_cause(self.client_failure) or self._fatal_error()
            if cause is None:
                raise
            self._raise_for(cause)
            raise cause from exc
        except KafkaException as exc:
            self._raise_for(exc)
            raise

    def _fatal_error(self) -> KafkaException | None:
        """The client's fatal error, if it has one: any transactional call then raises it, at no other cost.

        Asked within a transaction only (beginning one is refused there when all is well).
        """
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            return exc if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].fatal() else None
        self.producer.abort_transaction(self._timeout_s)  # not within one after all: undo the probe
        return None

    def _raise_for(self, exc: KafkaException) -> None:
        """Raise the stream_guard error a fenced or fatal client error stands for; return for any other."""
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError):
            return
        if error.code() in _FENCED:  # fatal, or first reported as abortable by the broker's response
            raise self._fenced_error(error.str()) from exc
        if error.fatal():
            raise TransactionUnavailableError(f"the producer cannot run transactions: {error.str()}") from exc


def _kafka_cause(exc: BaseException | None) -> KafkaException | None:
    """The KafkaException among the causes and contexts of ``exc``, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KafkaException):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def close_producer(producer: Producer, timeout_s: float = 30.0) -> int:
    """Flush ``producer`` for at most ``timeout_s``, purge what is left, close it; returns the purged count."""
    remaining = int(producer.flush(timeout_s))
    if remaining:
        producer.purge(in_queue=True, in_flight=True)
        producer.poll(0)  # their delivery reports: failed, purged
        log.error("producer closed with unacknowledged messages", messages=remaining, waited_s=timeout_s)
    producer.close()  # type: ignore[attr-defined]  # in the client, missing from 2.15's stub
    return remaining
