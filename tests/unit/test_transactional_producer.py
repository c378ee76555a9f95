"""How the transactional producer reports client errors, without a broker: fenced, fatal, anything else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream_guard.errors import ProducerFencedError, TransactionUnavailableError
from stream_guard.kafka import TransactionalProducer


@pytest.fixture
def producer() -> Iterator[TransactionalProducer]:
    """A transactional producer never initialised: building one contacts no broker."""
    made = TransactionalProducer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}, "sg-group-pod-0")
    yield made
    made.producer.purge()


def _raising(error: KafkaError) -> None:
    raise KafkaException(error)


@pytest.mark.parametrize("code", [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH])
def test_a_fenced_producer_raises_producer_fenced_and_stays_fenced(producer: TransactionalProducer, code: int) -> None:
    """Fatal or first reported as abortable: the worker is a zombie; every later call says so at once."""
    with pytest.raises(ProducerFencedError, match="sg-group-pod-0"):
        producer._call(lambda: _raising(KafkaError(code, "fenced", fatal=code == KafkaError._FENCED)))
    with pytest.raises(ProducerFencedError):
        producer._call(lambda: None)
    producer.abort()  # nothing to abort: the newer producer's init aborted it


def test_another_fatal_error_means_no_transactions(producer: TransactionalProducer) -> None:
    """A fatal error of another kind (a broker without transactions...) stops the worker with its text."""
    with pytest.raises(TransactionUnavailableError, match="unsupported"):
        producer._call(lambda: _raising(KafkaError(KafkaError._UNSUPPORTED_FEATURE, "unsupported", fatal=True)))


def test_an_abortable_error_stays_a_kafka_exception(producer: TransactionalProducer) -> None:
    """The worker aborts the turn and retries it, as for any outage."""
    with pytest.raises(KafkaException):
        producer._call(lambda: _raising(KafkaError(KafkaError._TIMED_OUT, "slow", txn_requires_abort=True)))
    assert not producer.fenced


def test_a_system_error_of_the_client_is_read_through_to_its_kafka_cause(producer: TransactionalProducer) -> None:
    """confluent-kafka's flush runs delivery reports with its fatal error pending: SystemError caused by it."""

    def flush() -> None:
        try:
            _raising(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
        except KafkaException as exc:
            raise SystemError("<method 'code'> returned a result with an exception set") from exc

    with pytest.raises(ProducerFencedError):
        producer._call(flush)
