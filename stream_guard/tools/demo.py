"""The demo: a local broker and redis-server, a simulator with faults, a worker, live alerts.

Run it with ``make demo`` (or ``stream-guard demo``). It learns a baseline profile from
simulated training data, then plays a script of faults on a live stream: bad bytes,
schema changes, bad values, drift and a slice whose labels go bad. Alerts are printed as
they arrive on the alerts topic. It stops after ``--duration`` seconds or on Ctrl-C,
prints the rolling slice metrics, and checks that every record it produced was
accounted for (decoded or dead-lettered).
"""

from __future__ import annotations

import collections
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import Consumer, Producer

from stream_guard.alerts.codec import decode_alert
from stream_guard.alerts.render import render_alert
from stream_guard.assembly import build_worker, metrics_reader
from stream_guard.kafka import close_producer
from stream_guard.learning import frame_from_records, learn_from_frame
from stream_guard.metrics import slice_underperformance
from stream_guard.model import build_models
from stream_guard.resources import schema_dir
from stream_guard.settings import Config, load_config
from stream_guard.tools.embedded import create_topics, local_stack
from stream_guard.tools.simulator import Simulator, write_local_registry

INPUT_TOPIC = "fraud.inferences"
LABELS_TOPIC = "fraud.labels"
#: Labels (chargebacks) arrive this long after the prediction.
LABEL_DELAY_S = 4.0

DEMO_CONFIG = """\
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "stream-guard-demo"
alerts_topic = "stream-guard.alerts"
dead_letter_topic = "stream-guard.dead-letters"
consumer = {{ "session.timeout.ms" = 6000, "log_level" = 3 }}
producer = {{ "log_level" = 3 }}

[redis]
url = "redis://127.0.0.1:{redis_port}/0"

[schema_registry]
local_dir = "registry"

[worker]
batch_size = 500
batch_timeout_s = 0.5
window_s = 10
allowed_lateness_s = 2
idle_partition_s = 5

[alerts]
cooldown_s = 30
resolve_after_s = 20

[[models]]
name = "fraud"
topics = ["{topic}"]
schema = "{schema}"
encoding = "confluent"
event_id_field = "event_id"
timestamp_field = "ts"
features = [
    "amount", "age", "account_age_days", "num_tx_24h", "merchant_category", "device_type", "country", "is_new_user",
]
prediction_field = "prediction"
score_field = "score"
slice_fields = ["device_type", "country", "is_new_user"]
profile = "profile.json"

[models.metrics]
bucket_s = 10
crossings = [["device_type", "is_new_user"]]
# Performance checks every window (real deployments: hourly, over a day).
performance_every_s = 10
performance_lookback_s = 60
performance_label_delay_s = 10
performance_min_support = 100

[models.labels]
topic = "{labels}"
encoding = "json"
event_id_field = "event_id"
label_field = "label"
timestamp_field = "ts"
lookback_s = 3600
"""

#: What goes wrong, and when (seconds after the start): the demo's script.
#: Each phase: (start, description, event faults, extra fraud rate of android negatives).
SCHEDULE: tuple[tuple[float, str, dict[str, float], float], ...] = (
    (0, "clean traffic", {}, 0.0),
    (12, "a producer ships garbage and truncated payloads", {"garbage": 0.02, "truncated": 0.01}, 0.0),
    (22, "a new producer version writes amount as a string", {"amount_as_string": 0.3}, 0.0),
    (
        32,
        "amounts arrive in yen, age defaults to -1, a new merchant category",
        {"amount_in_yen": 0.03, "age_sentinel": 0.08, "unseen_merchant": 0.03},
        0.0,
    ),
    (42, "drift: amounts double, scores shift up", {"amount_drift": 0.6, "score_shift": 0.4}, 0.0),
    (52, "android fraud slips past the model (labels reveal it)", {}, 0.6),
    (68, "clean traffic again", {}, 0.0),
)


def run_demo(duration_s: float = 80.0, rate: int = 400, out: TextIO | None = None) -> dict[str, Any]:
    """Run the whole demo; returns the final counts (also printed)."""
    out = out or sys.stdout
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with local_stack() as (broker, redis_server):
            return _run(broker.port, redis_server.port, duration_s, rate, stop, out)
    finally:
        signal.signal(signal.SIGINT, previous)


def _say(out: TextIO, text: str) -> None:
    out.write(f"{time.strftime('%H:%M:%S')}  {text}\n")
    out.flush()


def _setup(broker_port: int, redis_port: int, out: TextIO) -> Config:
    bootstrap = f"127.0.0.1:{broker_port}"
    workdir = Path(tempfile.mkdtemp(prefix="sg-demo-"))
    write_local_registry(workdir / "registry")
    (workdir / "config.toml").write_text(
        DEMO_CONFIG.format(
            bootstrap=bootstrap,
            redis_port=redis_port,
            topic=INPUT_TOPIC,
            labels=LABELS_TOPIC,
            schema=schema_dir() / "fraud_inference.avsc",
        )
    )
    config = load_config(workdir / "config.toml", environ={}, require_profiles=False)
    (model,) = build_models(config)
    training = frame_from_records(Simulator(encoding="json", seed=1000).records(100_000, 0))
    learn_from_frame(model, training, "simulated training data, 100000 rows").save(workdir / "profile.json")
    _say(out, f"broker on {bootstrap}, redis on {redis_port}; config and learned profile in {workdir}")
    create_topics(bootstrap, [INPUT_TOPIC, LABELS_TOPIC], partitions=3)
    create_topics(bootstrap, [config.kafka.alerts_topic, config.kafka.dead_letter_topic], partitions=1)
    return config


def _run(
    broker_port: int, redis_port: int, duration_s: float, rate: int, stop: threading.Event, out: TextIO
) -> dict[str, Any]:
    config = _setup(broker_port, redis_port, out)
    worker = build_worker(config)
    worker_thread = threading.Thread(target=worker.run, kwargs={"drain_on_exit": True}, name="worker")
    printer_stop = threading.Event()
    printer = threading.Thread(target=_print_alerts, args=(config, printer_stop, out), name="alerts")
    worker_thread.start()
    printer.start()

    produced = _simulate(config.kafka.bootstrap_servers, duration_s, rate, stop, out)
    _say(out, "simulator stopped; letting the worker finish and close the last windows")
    time.sleep(config.worker.idle_partition_s + 2)
    worker.stop()
    worker_thread.join()
    time.sleep(3)
    printer_stop.set()
    printer.join()
    _print_metrics(config, out)
    stats = worker.stats
    summary = {
        "produced": produced,
        "consumed": stats.consumed,
        "decoded": stats.decoded,
        "dead_lettered": stats.dead_lettered,
        "labels_matched": stats.labels_matched,
        "labels_unmatched": stats.labels_unmatched,
        "labels_held": stats.labels_held,
        "alerts": stats.alerts,
        "accounted_for": stats.accounted == stats.consumed == produced,
    }
    _say(out, "summary: " + json.dumps(summary))
    return summary


def _simulate(bootstrap: str, duration_s: float, rate: int, stop: threading.Event, out: TextIO) -> int:
    """Produce events (and their labels, later) by the schedule; returns the records produced."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "log_level": 3})
    labeller = Simulator(encoding="json", seed=99)
    pending: collections.deque[tuple[float, list[dict[str, Any]], float]] = collections.deque()
    simulator = Simulator(encoding="confluent")
    start = time.time()
    produced = 0
    phase = -1
    misses = 0.0
    tick_s = 0.1
    while not stop.is_set() and time.time() - start < duration_s:
        elapsed = time.time() - start
        current = max(i for i, (at, *_) in enumerate(SCHEDULE) if elapsed >= at)
        if current != phase:
            phase = current
            _, description, faults, misses = SCHEDULE[phase]
            simulator = Simulator(encoding="confluent", seed=phase, faults=faults)
            _say(out, f"-- simulator: {description}")
        n = max(1, int(rate * tick_s))
        now_ms = int(time.time() * 1000)
        records = []
        for record, payload, _fault in simulator.stream(n, now_ms, step_ms=tick_s * 1000 / n):
            producer.produce(INPUT_TOPIC, payload, key=record["user_id"], timestamp=record["ts"])
            records.append(record)
        produced += n
        pending.append((time.time() + LABEL_DELAY_S, records, misses))
        while pending and pending[0][0] <= time.time():
            _, labelled, extra = pending.popleft()
            produced += _produce_labels(producer, labeller, labelled, extra)
        producer.poll(0)
        time.sleep(tick_s)
    while pending:  # the ground truth of the last events still arrives
        _, labelled, extra = pending.popleft()
        produced += _produce_labels(producer, labeller, labelled, extra)
    close_producer(producer, 30)
    return produced


def _produce_labels(producer: Producer, labeller: Simulator, records: list[dict[str, Any]], misses: float) -> int:
    for label in labeller.labels(records, android_misses=misses):
        producer.produce(LABELS_TOPIC, json.dumps(label).encode(), key=label["event_id"])
    return len(records)


def _print_alerts(config: Config, stop: threading.Event, out: TextIO) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "group.id": f"demo-alert-printer-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "log_level": 3,
        }
    )
    consumer.subscribe([config.kafka.alerts_topic])
    try:
        while not stop.is_set():
            message = consumer.poll(0.5)
            if message is None or message.error() or message.value() is None:
                continue  # nothing, a consumer error, or a tombstone of a compacted topic
            _say(out, render_alert(decode_alert(message.value())))
    finally:
        consumer.close()


def _print_metrics(config: Config, out: TextIO) -> None:
    reader = metrics_reader(config, "fraud")
    buckets = reader.buckets()
    if not buckets:
        return
    rollup = reader.rollup(buckets[0], buckets[-1] + reader.bucket_ms, ["*", "device_type", "is_new_user"])
    _say(out, "rolling slice metrics of the whole run (stream-guard metrics prints the same):")
    out.write(rollup.to_table() + "\n")
    for u in slice_underperformance(reader.rollup(buckets[0], buckets[-1] + reader.bucket_ms), "recall", 100, 0.01):
        out.write(f"  slice {u.slice}: recall {u.value:.2f} vs {u.rest_value:.2f} for the rest (p={u.p:.1g})\n")
    out.flush()
