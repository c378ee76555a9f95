"""Helpers of the integration tests: configs, producing, consuming, running workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from stream_guard.assembly import build_worker
from stream_guard.kafka import close_producer
from stream_guard.resources import schema_dir
from stream_guard.settings import Config, load_config
from stream_guard.tools.embedded import create_topics
from stream_guard.tools.simulator import SAMPLE_FEATURES, write_local_registry
from stream_guard.worker import Worker, WorkerStats

FEATURES = SAMPLE_FEATURES


def write_config(
    tmp_path: Path,
    *,
    bootstrap: str,
    redis_url: str,
    unique: str,
    redis_cluster: bool = False,
    encoding: str = "confluent",
    partitions: int = 3,
    window_s: int = 10,
    sections: str = "",
    model_extra: str = "",
) -> Config:
    """A config for one model on fresh topics; creates the topics and a local registry.

    ``redis_cluster``: ``redis_url`` names a node of a Redis Cluster (``[redis] cluster = true``).
    """
    topic = f"inferences-{unique}"
    write_local_registry(tmp_path / "registry")
    text = f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "sg-test-{unique}"
alerts_topic = "alerts-{unique}"
dead_letter_topic = "dlq-{unique}"
consumer = {{ "session.timeout.ms" = 6000, "heartbeat.interval.ms" = 1000 }}

[redis]
url = "{redis_url}"
cluster = {str(redis_cluster).lower()}
key_prefix = "sg-{unique}"

[schema_registry]
local_dir = "registry"

[worker]
batch_size = 200
batch_timeout_s = 0.2
window_s = {window_s}
allowed_lateness_s = 1
idle_partition_s = 2
log_format = "json"

{sections}

[[models]]
name = "fraud"
topics = ["{topic}"]
schema = "{schema_dir() / "fraud_inference.avsc"}"
encoding = "{encoding}"
event_id_field = "event_id"
timestamp_field = "ts"
features = {FEATURES!r}
prediction_field = "prediction"
score_field = "score"
slice_fields = ["device_type", "country"]
{model_extra}
"""
    (tmp_path / "config.toml").write_text(text.replace("'", '"'))
    config = load_config(tmp_path / "config.toml", environ={}, require_profiles=False)
    create_topics(bootstrap, [topic], partitions=partitions)
    create_topics(bootstrap, [config.kafka.alerts_topic, config.kafka.dead_letter_topic], partitions=1)
    return config


def produce(
    bootstrap: str,
    topic: str,
    items: Iterable[tuple[bytes | None, bytes, int]],
    partitions: int | None = None,
    producer_config: dict[str, Any] | None = None,
    first: int = 0,
) -> int:
    """Produce (key, value, timestamp_ms) items, round-robin over partitions when given; returns the count.

    ``first``: the items' position in a longer stream produced in parts (item ``i`` goes to
    partition ``(first + i) % partitions``).
    """
    settings = {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True, **(producer_config or {})}
    producer = Producer(settings)
    n = 0
    for key, value, ts in items:
        kwargs: dict[str, Any] = {"timestamp": ts}
        if partitions:
            kwargs["partition"] = (first + n) % partitions
        producer.produce(topic, value, key, **kwargs)
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
    assert close_producer(producer, 30) == 0, "the broker did not acknowledge every record"
    return n


def new_worker(config: Config, **kwargs: Any) -> Worker:
    """A worker with every stage the config enables (as ``stream-guard run`` builds it)."""
    return build_worker(config, **kwargs)


def run_until(
    workers: list[Worker], done: Callable[[], bool], timeout_s: float = 60, drain: bool = True
) -> list[WorkerStats]:
    """Run workers in threads until ``done()`` holds, then stop them (draining windows)."""
    threads = [threading.Thread(target=w.run, kwargs={"drain_on_exit": drain}) for w in workers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; stats: {[vars(w.stats) for w in workers]}")
            time.sleep(0.1)
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(60)
    stuck = [w.worker_id for w, t in zip(workers, threads, strict=True) if t.is_alive()]
    assert not stuck, f"workers {stuck} did not stop within 60 s of stop()"
    return [w.stats for w in workers]


def consume_all(
    bootstrap: str, topic: str, *, expected: int | None = None, idle_s: float = 3.0, timeout_s: float = 30
) -> list[Message]:
    """Every message of ``topic`` (from the beginning): stops at ``expected`` or after ``idle_s`` of silence.

    The partitions are assigned, not subscribed: no consumer group, so no join to wait for
    and nothing for ``close()`` (which blocks in C, out of pytest-timeout's reach) to leave.
    It reads ``read_committed`` (librdkafka's default, stated): what a consumer of alerts sees.
    """
    settings = {"bootstrap.servers": bootstrap, "group.id": "sg-test-reader", "enable.auto.commit": False}
    consumer = Consumer({**settings, "isolation.level": "read_committed"})
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        partitions: dict[int, Any] = {}
        while not partitions and time.monotonic() < deadline:  # the topic may not exist yet
            partitions = consumer.list_topics(topic, timeout=5).topics[topic].partitions
            if not partitions:
                time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
        while time.monotonic() < deadline:
            batch = consumer.consume(500, 0.5)
            got = [m for m in batch if m.error() is None]
            messages += got
            if got:
                last = time.monotonic()
            if expected is not None and len(messages) >= expected:
                break
            if expected is None and messages and time.monotonic() - last > idle_s:
                break
    finally:
        consumer.close()
    return messages


def window_totals(client: redis.Redis, config: Config, model: str = "fraud") -> dict[str, int]:
    """Sum of every counter over all window hashes of a model."""
    totals: dict[str, int] = {}
    prefix = f"{config.redis.key_prefix}:{{{model}}}:w:"
    for key in client.scan_iter(match=prefix + "*"):
        if key.count(":") != prefix.count(":"):
            continue  # example lists, leases
        if client.type(key) != "hash":
            continue
        for field, value in client.hgetall(key).items():
            if field[:2] in ("d|",):
                continue
            try:
                totals[field] = totals.get(field, 0) + int(float(value))
            except ValueError:
                continue
    return totals


def learn_simulated_profile(config: Config, path: Path, *, n: int = 50_000, seed: int = 1234) -> Any:
    """Learn the model's baseline profile from ``n`` clean simulated records and save it to ``path``.

    ``age`` goes in as a nullable integer column, so its missing values are nulls (as a
    missing field is on the stream), not NaN.
    """
    import pandas as pd

    from stream_guard.learning import learn_from_frame
    from stream_guard.model import build_models
    from stream_guard.tools.simulator import Simulator

    (model,) = [m for m in build_models(config) if m.name == "fraud"]
    records = Simulator(encoding="json", seed=seed).records(n, 0, step_ms=10)
    frame = pd.DataFrame.from_records(records)
    frame["age"] = pd.array([r["age"] for r in records], dtype="Int64")
    profile = learn_from_frame(model, frame, f"simulator seed={seed}, {n} records")
    profile.save(path)
    return profile


def findings_of(alerts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each decoded alert, and each of its ``related`` findings as an alert-like dict of the same window.

    One cause is one alert: the findings it carries as evidence are read here as the
    record they stand for (window, total and status of the carrier; no examples, no text).
    """
    out = []
    for alert in alerts:
        out.append(alert)
        for related in alert.get("related", []):
            carried = {k: alert[k] for k in ("model", "window_start", "window_end", "total", "status", "cause_id")}
            out.append({**carried, **related, "examples": [], "observed": None, "carrier": alert["alert_id"]})
    return out
