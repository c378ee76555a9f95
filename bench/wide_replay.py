"""The wide model's batch loop without the broker's reads: the worker's CPU per event, profilable.

:func:`bench.wide` measures what a deployment sees, Kafka included; this replays the same
events (Confluent-framed Avro, labels a label delay behind) straight into
:meth:`stream_guard.worker.Worker.process`, on a real redis-server, so that a profiler
(``--pyinstrument``) sees the worker's own CPU and nothing of the consumer's waits. The
messages are stand-ins with the accessors the worker reads (``value()``, ``topic()``...);
window closes run as in the worker's loop (alerts to the embedded broker).

    python bench/wide_replay.py [--events 100000] [--pyinstrument out.html]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from bench.wide import EVENTS_TOPIC, learn_profile, redis_counters, write_config  # noqa: E402
from stream_guard.outages import wait_for_redis  # noqa: E402


class NoOffsets:
    """The offsets sink of a replay: nothing was consumed from the broker, nothing to commit."""

    def commit(self, offsets: Any) -> None:
        return None


class Message:
    """A consumed message as the worker reads it."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes, ts_ms: int) -> None:
        self._topic, self._partition, self._offset, self._value, self._ts = topic, partition, offset, value, ts_ms

    def error(self) -> None:
        return None

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


def batches(n: int, partitions: int, step_ms: float, batch: int, lag: int, labels_topic: str) -> list[list[Message]]:
    """Batches as a consumer returns a backlog: up to ``batch`` messages of one partition at a time.

    Event batches take the partitions in turn; after each, the labels of the events ``lag``
    before the ones read so far, a batch of one labels partition (the bench produces labels
    as the group commits events).
    """
    from stream_guard.tools.wide import WideSimulator

    sim = WideSimulator(seed=1)
    records = sim.records(n, 1_700_000_000_000, step_ms)
    events: list[list[Message]] = [[] for _ in range(partitions)]
    labels: list[list[Message]] = [[] for _ in range(partitions)]
    for i, (record, label) in enumerate(zip(records, sim.labels(records), strict=True)):
        p, offset = i % partitions, i // partitions
        events[p].append(Message(EVENTS_TOPIC, p, offset, sim.encode(record), record["ts"]))
        labels[p].append(Message(labels_topic, p, offset, json.dumps(label).encode(), record["ts"]))
    out: list[list[Message]] = []
    read = [0] * partitions
    labelled = [0] * partitions
    turn = 0
    while sum(labelled) < n:
        p = turn % partitions
        turn += 1
        if read[p] < len(events[p]):
            out.append(events[p][read[p] : read[p] + batch])
            read[p] += len(out[-1])
        done = sum(read)
        due = (done - lag if done < n else n) // partitions
        q = turn % partitions
        if done >= n:
            due = len(labels[q])
        if labelled[q] < due:
            out.append(labels[q][labelled[q] : min(due, labelled[q] + batch)])
            labelled[q] += len(out[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument("--label-delay-s", type=float, default=60.0)
    parser.add_argument("--pyinstrument", type=Path, help="profile the loop into this HTML file")
    args = parser.parse_args()

    from stream_guard.assembly import build_worker
    from stream_guard.settings import load_config
    from stream_guard.tools.embedded import create_topics, local_stack
    from stream_guard.tools.wide import write_wide_registry

    workdir = Path(tempfile.mkdtemp(prefix="sg-wide-replay-"))
    write_wide_registry(workdir / "registry")
    with local_stack() as (broker, redis_server):
        bootstrap, redis_url = f"127.0.0.1:{broker.port}", f"redis://127.0.0.1:{redis_server.port}/0"
        config_path = write_config(workdir, "replay", bootstrap, redis_url, args.batch)
        learn_profile(workdir, config_path)
        create_topics(bootstrap, ["wide.alerts", "wide.dlq"], partitions=1)
        config = load_config(config_path, environ={})
        (model,) = config.models
        lag = int(args.label_delay_s * 1000 / args.step_ms)
        work = batches(args.events, args.partitions, args.step_ms, args.batch, lag, model.labels.topic)
        worker = build_worker(config, close_interval_s=1.0)
        worker.parts.sinks = dataclasses.replace(worker.parts.sinks, offsets=NoOffsets())
        # The loop's start, without subscribing.
        wait_for_redis(worker.parts.redis_client, worker.parts.health, threading.Event(), structlog.get_logger("bench"))
        profiler: Any = None
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            profiler.start()
        before = redis_counters(redis_url)
        started = time.perf_counter()
        cpu = time.process_time()
        for messages in work:
            worker.process(messages)
            if time.monotonic() - worker._last_close >= 1.0:  # as the loop does
                worker.close_due_windows()
        worker.close_due_windows(final=True)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        after = redis_counters(redis_url)
        if profiler is not None:
            profiler.stop()
            args.pyinstrument.write_text(profiler.output_html())
            print(profiler.output_text(unicode=True, show_all=False, color=False))
        worker.parts.producer.close()
        worker.parts.consumer.close()
    n = args.events
    redis = {k: (after[k] - before.get(k, 0)) / n for k in after}
    print(f"{n:,} events + labels, batch {args.batch}: {n / elapsed:,.0f} ev/s wall, {cpu / n * 1e6:.1f} µs CPU/event")
    print(
        f"Redis: {redis['cpu_us']:.1f} µs CPU/event, {redis['commands']:.2f} commands/event, "
        f"{redis['bytes_in']:.0f} B in/event"
    )
    top = sorted(((v, k[4:]) for k, v in redis.items() if k.startswith("cmd:") and v > 0.01), reverse=True)
    print("  " + ", ".join(f"{name} {v:.2f}" for v, name in top))
    spent = sorted(((v, k[5:]) for k, v in redis.items() if k.startswith("usec:") and v > 0.01), reverse=True)
    print("  server µs/event: " + ", ".join(f"{name} {v:.2f}" for v, name in spent))
    print(f"worker: {vars(worker.stats)}")


if __name__ == "__main__":
    main()
