"""The demo: a local broker and redis-server, a simulator with faults, a worker, live alerts.

Run it with ``make demo`` (or ``stream-guard demo``). It stops after ``--duration``
seconds or on Ctrl-C, and checks before leaving that every record it produced was
accounted for (decoded or dead-lettered).
"""

from __future__ import annotations

import json
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import Consumer, Producer

from stream_guard.alerts.codec import decode_alert
from stream_guard.alerts.render import render_alert
from stream_guard.config import load_config
from stream_guard.embedded import create_topics, local_stack
from stream_guard.resources import schema_dir
from stream_guard.simulator import Simulator, write_local_registry
from stream_guard.assembly import build_worker

INPUT_TOPIC = "fraud.inferences"

DEMO_CONFIG = """\
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "stream-guard-demo"
alerts_topic = "stream-guard.alerts"
dead_letter_topic = "stream-guard.dead-letters"
consumer = {{ "session.timeout.ms" = 6000 }}

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

[[models]]
name = "fraud"
topics = ["{topic}"]
schema = "{schema}"
encoding = "confluent"
event_id_field = "event_id"
timestamp_field = "ts"
features = ["amount", "age", "account_age_days", "num_tx_24h", "merchant_category", "device_type", "country", "is_new_user"]
prediction_field = "prediction"
score_field = "score"
slice_fields = ["device_type", "country", "is_new_user"]
"""

#: What goes wrong, and when (seconds after the start): the demo's script.
SCHEDULE = (
    (0, "clean traffic", {}),
    (12, "a producer ships garbage and truncated payloads", {"garbage": 0.02, "truncated": 0.01}),
    (24, "a new producer version writes amount as a string", {"amount_as_string": 0.3}),
    (36, "a producer drops num_tx_24h; some frames have a wrong magic byte", {"dropped_field": 0.2, "wrong_magic": 0.01}),
    (48, "clean traffic again", {}),
)


def run_demo(duration_s: float = 60.0, rate: int = 400, out: TextIO | None = None) -> dict[str, Any]:
    """Run the whole demo; returns the final counts (also printed)."""
    import sys

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


def _run(broker_port: int, redis_port: int, duration_s: float, rate: int, stop: threading.Event, out: TextIO) -> dict[str, Any]:
    bootstrap = f"127.0.0.1:{broker_port}"
    workdir = Path(tempfile.mkdtemp(prefix="sg-demo-"))
    write_local_registry(workdir / "registry")
    (workdir / "config.toml").write_text(
        DEMO_CONFIG.format(
            bootstrap=bootstrap, redis_port=redis_port, topic=INPUT_TOPIC, schema=schema_dir() / "fraud_inference.avsc"
        )
    )
    config = load_config(workdir / "config.toml", environ={})
    _say(out, f"broker on {bootstrap}, redis on {redis_port}, config in {workdir / 'config.toml'}")
    create_topics(bootstrap, [INPUT_TOPIC], partitions=3)
    create_topics(bootstrap, [config.kafka.alerts_topic, config.kafka.dead_letter_topic], partitions=1)

    worker = build_worker(config)
    worker_thread = threading.Thread(target=worker.run, kwargs={"drain_on_exit": True}, name="worker")
    printer_stop = threading.Event()
    printer = threading.Thread(target=_print_alerts, args=(config, printer_stop, out), name="alerts")
    worker_thread.start()
    printer.start()

    produced = _simulate(bootstrap, duration_s, rate, stop, out)
    _say(out, "simulator stopped; letting the worker finish and close the last windows")
    time.sleep(config.worker.idle_partition_s + 2)
    worker.stop()
    worker_thread.join()
    time.sleep(3)
    printer_stop.set()
    printer.join()
    stats = worker.stats
    summary = {
        "produced": produced,
        "consumed": stats.consumed,
        "decoded": stats.decoded,
        "dead_lettered": stats.dead_lettered,
        "alerts": stats.alerts,
        "accounted_for": stats.decoded + stats.dead_lettered + stats.redelivered_skipped == produced,
    }
    _say(out, "summary: " + json.dumps(summary))
    return summary


def _simulate(bootstrap: str, duration_s: float, rate: int, stop: threading.Event, out: TextIO) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    simulator = Simulator(encoding="confluent")
    start = time.time()
    produced = 0
    phase = -1
    tick_s = 0.1
    while not stop.is_set() and time.time() - start < duration_s:
        elapsed = time.time() - start
        current = max(i for i, (at, _, _) in enumerate(SCHEDULE) if elapsed >= at)
        if current != phase:
            phase = current
            _, description, faults = SCHEDULE[phase]
            simulator = Simulator(encoding="confluent", seed=phase, faults=faults)
            _say(out, f"-- simulator: {description}")
        n = max(1, int(rate * tick_s))
        now_ms = int(time.time() * 1000)
        for record, payload, _fault in simulator.stream(n, now_ms, step_ms=tick_s * 1000 / n):
            producer.produce(INPUT_TOPIC, payload, key=record["user_id"], timestamp=record["ts"])
            produced += 1
        producer.poll(0)
        time.sleep(tick_s)
    producer.flush(30)
    producer.close()
    return produced


def _print_alerts(config: Any, stop: threading.Event, out: TextIO) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "group.id": f"demo-alert-printer-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([config.kafka.alerts_topic])
    try:
        while not stop.is_set():
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            _say(out, render_alert(decode_alert(message.value())))
    finally:
        consumer.close()
