"""Exactly-once delivery against real servers: a newer instance fences the older one, a window lease fences a slow closer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from streamtest import new_worker, produce, write_config

from stream_guard.errors import ProducerFencedError
from stream_guard.kafka import TransactionalProducer, producer_settings
from stream_guard.state.keys import ModelKeys
from stream_guard.state.window_store import WindowStore
from stream_guard.tools.embedded import create_topics
from stream_guard.tools.simulator import Simulator
from stream_guard.transactions import Outcome, read_outcome

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000


def _committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offsets on the three partitions of ``topic``, summed (a missing one counts 0)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        return sum(max(tp.offset, 0) for tp in found)
    finally:
        consumer.close()


def test_a_worker_whose_transactional_id_a_newer_instance_took_stops_fenced(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str
) -> None:
    """The older worker's next commit fails as fenced: run() raises ProducerFencedError, nothing more is committed."""
    config = write_config(tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique)
    config.kafka.delivery = "exactly_once"
    config.kafka.instance_id = "pod-0"
    topic = config.models[0].topics[0]
    # Dead letters in every batch: Tansu 0.6 leaves the offsets of a transaction without
    # records uncommitted (until a later transaction with records), Apache Kafka does not.
    sim = Simulator(encoding="confluent", seed=7, faults={"garbage": 0.05})
    # 12 s of event time: no window closes. (What the zombie produced after the fence is
    # aborted, but Tansu's read_committed consumers see aborted records: not checked here.)
    events = [(None, payload, record["ts"]) for record, payload, _ in sim.stream(1200, START_MS, step_ms=10)]
    first = produce(bootstrap, topic, events[:600], partitions=3)

    worker = new_worker(config)
    failure: list[Exception] = []

    def run() -> None:
        try:
            worker.run()
        except Exception as exc:  # noqa: BLE001  # the test asserts which one
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    newer = None
    try:
        deadline = time.monotonic() + 60
        while _committed(bootstrap, config.kafka.group_id, topic) < first:
            assert thread.is_alive() and time.monotonic() < deadline, (failure, vars(worker.stats))
            time.sleep(0.2)
        newer = TransactionalProducer(producer_settings(config.kafka), config.kafka.transactional_id("pod-0"))
        newer.init()  # as a restarted pod-0 does: the running one is a zombie now
        produce(bootstrap, topic, events[600:], partitions=3, first=600)
        thread.join(60)
        assert not thread.is_alive(), "the fenced worker did not stop"
    finally:
        worker.stop()
        thread.join(60)
        if newer is not None:
            newer.close()
    assert len(failure) == 1 and isinstance(failure[0], ProducerFencedError), failure
    assert "pod-0" in str(failure[0])
    assert _committed(bootstrap, config.kafka.group_id, topic) == first


def test_a_window_lease_is_renewed_only_by_its_holder(redis_client: redis.Redis, unique: str) -> None:
    """The check before a commit: the holder extends its lease; once another worker holds it, renewing fails."""
    keys = ModelKeys(f"sg-{unique}", "fraud")
    stores = [
        WindowStore(redis_client, keys, window_ms=10_000, lateness_ms=0, idle_ms=1, retention_s=60, worker_id=w)
        for w in ("pod-0", "pod-1")
    ]
    assert stores[0].claim(START_MS, lease_ms=50)
    assert stores[0].renew(START_MS, lease_ms=60_000)
    time.sleep(0.1)
    assert not stores[1].claim(START_MS, lease_ms=50), "renewed: still pod-0's"
    redis_client.delete(keys.lease(START_MS))  # as if it expired
    assert stores[1].claim(START_MS, lease_ms=60_000)
    assert not stores[0].renew(START_MS, lease_ms=60_000)


def test_a_pending_transaction_is_read_back_committed_or_undecided(bootstrap: str, unique: str) -> None:
    """The probe of pending steps: its record read ``read_committed`` once committed; undecided while open.

    (An aborted one is not checked: Tansu's ``read_committed`` consumers see aborted records.)
    """
    topic = f"probe-{unique}"
    create_topics(bootstrap, [topic], partitions=1)
    settings = {"bootstrap.servers": bootstrap}
    producer = TransactionalProducer(settings, f"probe-{unique}")
    try:
        producer.init()
        producer.begin()
        producer.produce(topic, b"alert", b"id")
        producer.flush()
        probe = producer.first_position
        assert probe is not None and probe[0] == topic
        assert read_outcome(settings, probe, timeout_s=2) is Outcome.UNDECIDED
        producer.commit()
        assert read_outcome(settings, probe) is Outcome.COMMITTED
    finally:
        producer.close()
