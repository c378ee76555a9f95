"""Throughput of a worker, measured side by side in one run.

Two measurements, each run for every pipeline variant in the same process:

1. **in-process**: the per-batch work alone (decode, findings, checks, window counters),
   on pre-built messages, no I/O: what the CPU allows;
2. **end to end**: a real worker on the embedded broker and a real redis-server,
   consuming a pre-produced topic from the beginning (group join excluded).

Variants: ``decode-only`` (schema checks, no profile), ``+checks`` (baseline value
checks), ``+checks+drift`` (also window drift counters and online River detectors),
``+all`` (also slice metrics). The ratios printed are relative to ``decode-only`` of the
same run, so the noise of this machine affects both sides alike.

    python bench/throughput.py [--events 100000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream_guard.assembly import build_worker  # noqa: E402
from stream_guard.learning import frame_from_records, learn_from_frame  # noqa: E402
from stream_guard.model import build_models  # noqa: E402
from stream_guard.resources import schema_dir  # noqa: E402
from stream_guard.settings import load_config  # noqa: E402
from stream_guard.state.keys import ModelKeys  # noqa: E402
from stream_guard.tools.embedded import create_topics, local_stack  # noqa: E402
from stream_guard.tools.simulator import SAMPLE_FEATURES, Simulator, write_local_registry  # noqa: E402

FEATURES = SAMPLE_FEATURES
#: variant -> (baseline profile: value checks and drift, drift on, slice metrics on)
VARIANTS = {
    "decode-only": (False, False, False),
    "+checks": (True, False, False),
    "+checks+drift": (True, True, False),
    "+all": (True, True, True),
}


@dataclass
class FakeMessage:
    """A consumed record as the worker sees it (plain data, for the in-process measurement)."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes
    _ts: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def error(self) -> None:
        return None


def write_config(workdir: Path, variant: str, bootstrap: str, redis_url: str, topic: str, batch: int) -> Path:
    with_profile, with_drift, with_metrics = VARIANTS[variant]
    profile = f'profile = "{workdir / "profile.json"}"' if with_profile else ""
    text = f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "bench-{variant}-{time.time_ns()}"
alerts_topic = "bench.alerts"
dead_letter_topic = "bench.dlq"
consumer = {{ "session.timeout.ms" = 6000 }}
[redis]
url = "{redis_url}"
key_prefix = "bench-{variant}-{time.time_ns()}"
[schema_registry]
local_dir = "{workdir / "registry"}"
[worker]
batch_size = {batch}
batch_timeout_s = 0.2
window_s = 60
[drift]
enabled = {str(with_drift).lower()}
[[models]]
name = "fraud"
topics = ["{topic}"]
schema = "{schema_dir() / "fraud_inference.avsc"}"
encoding = "confluent"
event_id_field = "event_id"
timestamp_field = "ts"
features = {json.dumps(FEATURES)}
prediction_field = "prediction"
score_field = "score"
slice_fields = ["device_type", "country"]
{profile}
[models.metrics]
enabled = {str(with_metrics).lower()}
"""
    path = workdir / f"{variant}.toml"
    path.write_text(text)
    return path


def in_process(config_path: Path, messages: list[FakeMessage], batch: int, redis_client: Any) -> float:
    config = load_config(config_path, environ={})
    (model,) = build_models(config)
    worker = build_worker(config, redis_client)  # its pipeline: the same stages as `run`
    pipeline, keys = worker.parts.pipeline, ModelKeys(config.redis.key_prefix, model.name)
    start = time.perf_counter()
    for i in range(0, len(messages), batch):
        pipeline.stage(model, messages[i : i + batch], keys)
    return len(messages) / (time.perf_counter() - start)


def end_to_end(config_path: Path, n: int) -> float:
    config = load_config(config_path, environ={})
    worker = build_worker(config)
    first: list[float] = []
    original = worker.process

    def timed(messages: Any) -> None:
        if messages and not first:
            first.append(time.perf_counter())
        original(messages)

    worker.process = timed  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run)
    thread.start()
    while worker.stats.consumed < n:
        time.sleep(0.01)
    elapsed = time.perf_counter() - first[0]
    worker.stop()
    thread.join()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="sg-bench-"))
    write_local_registry(workdir / "registry")
    reference = Simulator(encoding="confluent", seed=100).records(200_000, 1_700_000_000_000)

    sim = Simulator(encoding="confluent", seed=1)
    start_ms = 1_700_000_000_000
    events = [(r, p) for r, p, _ in sim.stream(args.events, start_ms, step_ms=5)]
    messages = [FakeMessage("bench.in", i % 3, i // 3, p, r["ts"]) for i, (r, p) in enumerate(events)]

    with local_stack() as (broker, redis_server):
        bootstrap, redis_url = f"127.0.0.1:{broker.port}", f"redis://127.0.0.1:{redis_server.port}/0"
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        probe = load_config(
            write_config(workdir, "decode-only", bootstrap, redis_url, "bench.in", args.batch),
            environ={},
            require_profiles=False,  # learned just below
        )
        (model,) = build_models(probe)
        learn_from_frame(model, frame_from_records(reference), "bench reference").save(workdir / "profile.json")

        create_topics(bootstrap, ["bench.in"], partitions=3)
        create_topics(bootstrap, ["bench.alerts", "bench.dlq"], partitions=1)
        from confluent_kafka import Producer

        producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000}
        )
        for i, (record, payload) in enumerate(events):
            producer.produce("bench.in", payload, partition=i % 3, timestamp=record["ts"])
            if i % 10_000 == 0:
                producer.poll(0)
        producer.flush(60)
        producer.close()

        results: dict[str, dict[str, float]] = {}
        for variant in variants:
            path = write_config(workdir, variant, bootstrap, redis_url, "bench.in", args.batch)
            results[variant] = {"in_process": in_process(path, messages, args.batch, client)}
        for variant in variants:
            path = write_config(workdir, variant, bootstrap, redis_url, "bench.in", args.batch)
            results[variant]["end_to_end"] = end_to_end(path, args.events)

    base = results[variants[0]]
    print(f"\n{args.events} events, batch {args.batch}, 3 partitions, one worker")
    print(f"{'variant':<16}{'in-process ev/s':>18}{'ratio':>8}{'end-to-end ev/s':>18}{'ratio':>8}")
    for variant in variants:
        r = results[variant]
        print(
            f"{variant:<16}{r['in_process']:>18,.0f}{r['in_process'] / base['in_process']:>8.2f}"
            f"{r['end_to_end']:>18,.0f}{r['end_to_end'] / base['end_to_end']:>8.2f}"
        )


if __name__ == "__main__":
    main()
