"""Throughput of stream_guard on the wide sample model, against a bare decode-only consumer, in one run.

The wide model (:mod:`stream_guard.tools.wide`: 22 features, 14 categorical) with every
stage on: baseline checks, window and online drift, slice metrics of every categorical
value, delayed labels joined to stored predictions, performance evaluations. Events are
Confluent-framed Avro, pre-produced to the embedded broker before anything is measured.
Labels (JSON) are produced during each worker run, a label delay behind the events the
group has committed: a pre-produced labels topic would be read before the events (a
backlog is fetched topic by topic), and no label would find its prediction. Then:

a. a bare consumer (confluent-kafka + fastavro ``schemaless_reader``, no stream_guard code);
b. one worker (``stream-guard run`` in a subprocess), with its RSS sampled along the way;
c. two workers of one consumer group (two subprocesses, the same Redis state);
d. the worker's peak RSS after the first ``--rss-at`` events and at the end of (b);
e. one performance evaluation at 1 h and at 24 h lookback, over full buckets (copies of
   the fullest bucket of run (b), so that every bucket of the 24 h holds data): the first,
   the next ones, the same reading every bucket, and the first of a restarted worker;
f. optionally (``--latency``), p50/p99 of the time from producing a record with an immediate
   fault (undecodable, or a writer schema's type change) to its alert being readable on the
   alerts topic, while one worker reads live events at half of (b)'s rate
   (:func:`fault_latency`); ``--latency-before N`` also with early alerts off.

Event time advances ``--step-ms`` per event: 1 ms by default, a stream of 1,000 events/s
(a tenth of the 10k events/s stream one worker should keep up with). The state a worker
writes is per time bucket (a minute) and per window, so its cost per event falls as the
stream gets denser: at ``--step-ms 20`` (a 50 events/s stream, read back as a backlog at a
hundred times its speed) 1M events span 5.6 h of event time, 333 windows and buckets whose
counters are shared by 3,000 events each instead of 60,000.

Each group/worker run starts from the beginning of the topics with a fresh group id and
Redis prefix; its rate counts inference events from its first commit to its last (group
join excluded); the labels are consumed and joined as well. Ratios are within this run: the
machine's noise affects both sides alike. ``--narrow-events N`` also runs the 8-feature
bench (``bench/throughput.py``) first, for its figures beside these.

    python bench/wide.py [--events 200000] [--rss-at 40000] [--narrow-events 0]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "wide"
EVENTS_TOPIC = "wide.events"


def bare_consumer(bootstrap: str, n: int) -> None:
    """(a): read ``n`` events and decode each with fastavro; print the rate as JSON."""
    import fastavro
    from confluent_kafka import Consumer

    from stream_guard.tools.wide import wide_schema_json

    schema = fastavro.parse_schema(wide_schema_json())
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bare-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([EVENTS_TOPIC])
    seen, first = 0, 0.0
    while seen < n:
        for message in consumer.consume(1000, 1.0):
            if message.error():
                continue
            if not first:
                first = time.perf_counter()
            fastavro.schemaless_reader(io.BytesIO(message.value()[5:]), schema, None)
            seen += 1
    elapsed = time.perf_counter() - first
    consumer.close()
    print(json.dumps({"rate": n / elapsed}))


def write_config(workdir: Path, name: str, bootstrap: str, redis_url: str, batch: int) -> Path:
    from stream_guard.resources import schema_dir
    from stream_guard.tools.wide import WIDE_FEATURES, WIDE_SLICE_FIELDS

    text = f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "wide-{name}-{time.time_ns()}"
alerts_topic = "wide.alerts"
dead_letter_topic = "wide.dlq"
consumer = {{ "session.timeout.ms" = 6000 }}
[redis]
url = "{redis_url}"
key_prefix = "wide-{name}-{time.time_ns()}"
[schema_registry]
local_dir = "{workdir / "registry"}"
[observability]
port = 0  # two workers of run (c) would both want the default port
[worker]
batch_size = {batch}
batch_timeout_s = 0.2
window_s = 60
[drift]
enabled = true
[[models]]
name = "{MODEL}"
topics = ["{EVENTS_TOPIC}"]
schema = "{schema_dir() / "wide_inference.avsc"}"
encoding = "confluent"
event_id_field = "event_id"
timestamp_field = "ts"
features = {json.dumps(WIDE_FEATURES)}
prediction_field = "prediction"
score_field = "score"
slice_fields = {json.dumps(WIDE_SLICE_FIELDS)}
profile = "{workdir / "profile.json"}"
[models.metrics]
bucket_s = 60
performance_every_s = 300
performance_lookback_s = 3600
performance_label_delay_s = 60
[models.labels]
topic = "wide.labels.{name}"
encoding = "json"
event_id_field = "event_id"
label_field = "label"
timestamp_field = "ts"
lookback_s = 86400
"""
    path = workdir / f"{name}.toml"
    path.write_text(text)
    return path


def _committed(probe: Any, topics: dict[str, int]) -> int:
    from confluent_kafka import TopicPartition

    parts = [TopicPartition(t, p) for t, count in topics.items() for p in range(count)]
    return sum(max(tp.offset, 0) for tp in probe.committed(parts, timeout=10))


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_workers(
    config: Path,
    workers: int,
    labels: list[tuple[bytes, int]],
    partitions: int,
    rss_at: list[int],
    label_lag: int,
    profile_to: Path | None = None,
) -> tuple[float, dict[int, int], dict[str, str]]:
    """Run ``workers`` workers on ``config`` until they committed every event and label.

    Label ``i`` is produced once the group committed ``i + label_lag`` events. With
    ``profile_to``, py-spy samples the first worker into that file (raw, folded stacks). Returns the
    rate of inference events, the peak RSS (kB) of the first worker by events committed,
    and the first worker's Redis prefix and labels matched.
    """
    from confluent_kafka import Consumer, Producer

    from stream_guard.settings import load_config
    from stream_guard.tools.embedded import create_topics

    loaded = load_config(config, environ={})
    (model,) = loaded.models
    labels_topic = model.labels.topic
    bootstrap = loaded.kafka.bootstrap_servers
    create_topics(bootstrap, [labels_topic], partitions=partitions)
    n = len(labels)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    logs = [(config.parent / f"{config.stem}-{i}.log").open("w") for i in range(workers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "stream_guard", "run", "-c", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    spy = None
    if profile_to is not None:
        command = ["py-spy", "record", "--pid", str(procs[0].pid), "-o", str(profile_to), "-f", "raw", "-r", "200"]
        spy = subprocess.Popen([str(Path(sys.executable).parent / command[0]), *command[1:]], stdout=subprocess.DEVNULL)
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": loaded.kafka.group_id})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    first: tuple[float, int] | None = None
    rss: dict[int, int] = {}
    pending = deque(sorted(rss_at))
    produced = 0
    try:
        while True:
            done_events = _committed(probe, {EVENTS_TOPIC: partitions})
            done_labels = _committed(probe, {labels_topic: partitions})
            now = time.perf_counter()
            if first is None and done_events > 0:
                first = (now, done_events)
            while pending and done_events >= pending[0]:
                rss[pending.popleft()] = _rss_kb(procs[0].pid, "VmHWM")
            due = n if done_events >= n else max(0, done_events - label_lag)
            for i in range(produced, due):
                producer.produce(labels_topic, labels[i][0], partition=i % partitions, timestamp=labels[i][1])
            produced = max(produced, due)
            producer.poll(0)
            if done_events >= n and done_labels >= n:
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker exited early (rc {[p.returncode for p in procs]})")
            time.sleep(0.2)
        rss[n] = _rss_kb(procs[0].pid, "VmHWM")
    finally:
        producer.flush(30)
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        if spy is not None:
            spy.wait(30)
        for log in logs:
            log.close()
        probe.close()
    assert first is not None
    matched = sum(_logged_count(Path(log.name), "labels_matched") for log in logs)
    # Events only: the labels are the same work in every run, but not the bare consumer's.
    rate = (n - first[1]) / (now - first[0])
    return rate, rss, {"prefix": loaded.redis.key_prefix, "labels_matched": str(matched)}


def redis_counters(redis_url: str) -> dict[str, int]:
    """Commands executed (scripts' own commands included), client calls and network bytes so far."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        commands = client.info("commandstats")
        stats = client.info("stats")
        cpu = client.info("cpu")
    finally:
        client.close()
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in commands.items()}
    scripted = sum(n for name, n in calls.items() if name in ("evalsha", "eval", "fcall"))
    usec = {name.removeprefix("cmdstat_"): int(v["usec"]) for name, v in commands.items()}
    return {
        **{f"cmd:{name}": n for name, n in calls.items()},
        # Server time per command (a script's includes its own commands').
        **{f"usec:{name}": n for name, n in usec.items()},
        "commands": sum(calls.values()),
        "scripts": scripted,
        "bytes_in": int(stats["total_net_input_bytes"]),
        "bytes_out": int(stats["total_net_output_bytes"]),
        # Microseconds of CPU the (single-threaded) server spent: its ceiling is one core.
        "cpu_us": int((float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6),
    }


def _logged_count(log: Path, name: str) -> int:
    """The last ``name=<n>`` a worker logged (its stats when it stopped)."""
    found = re.findall(rf"{name}\W+(\d+)", log.read_text())
    return int(found[-1]) if found else 0


def evaluation_cost(
    redis_url: str,
    prefix: str,
    lookbacks_h: list[int],
    *,
    every_s: int = 300,
    steps: int = 6,
    label_delay_buckets: int = 10,
) -> dict[int, dict[str, float]]:
    """(e): seconds per performance evaluation at each lookback, over buckets that are all full.

    Every bucket of the range is a copy of the fullest bucket of run (b). Per lookback:
    ``inline``, a first evaluation that sums every tile in the call (the cache without its
    background warm-up); ``cold``, the first evaluation of the worker's evaluator, which
    hands the cold hours to its warm-up thread and is skipped; ``warm_up``, how long that
    thread took to sum and store them; ``first``, the evaluation after it; ``step``, the mean of ``steps``
    evaluations each one ``every_s`` later, after the newest buckets were written and the
    last ``label_delay_buckets`` buckets got labels (their versions bumped, as a label join
    does), the steady state of a running worker; ``uncached``, the same steps reading every
    bucket of the lookback (the evaluator on the reader itself, as before the cache);
    ``restart``, the first evaluation of a new evaluator (a worker that just started, or
    took the model over) at the last step, reading the hours the first one stored.
    """
    import redis

    from stream_guard.metrics import MetricsReader, PerformanceEvaluator
    from stream_guard.metrics import store as s
    from stream_guard.metrics.rollups import RollupCache
    from stream_guard.settings.metrics import MetricsSettings
    from stream_guard.state.keys import ModelKeys
    from stream_guard.state.update import WindowSnapshot

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    raw = redis.Redis.from_url(redis_url)
    source = s.MetricKeys(ModelKeys(prefix, MODEL))
    buckets = [int(b) for b in client.zrange(source.index, 0, -1)]
    fullest = max(buckets, key=lambda b: client.hlen(source.bucket(b)))
    dump = raw.dump(source.bucket(fullest))
    target_keys = ModelKeys(f"{prefix}-eval", MODEL)
    target = s.MetricKeys(target_keys)
    every_ms = every_s * 1000
    end = 100 * 86400 * 1000
    model = type("M", (), {"name": MODEL, "profile": None})()
    out: dict[int, dict[str, float]] = {}
    for hours in lookbacks_h:
        lookback_ms = hours * 3600 * 1000
        raw.delete(*[target.bucket(b) for b in range(end - 2 * lookback_ms, end + steps * every_ms, 60_000)])
        stored = list(raw.scan_iter(match=target_keys.rollup_sum(0, 0).removesuffix("0:0") + "*"))
        if stored:  # the hours the previous lookback's evaluators stored: this one starts from none
            raw.delete(*stored)
        pipe = raw.pipeline(transaction=False)
        for b in range(end - 2 * lookback_ms, end, 60_000):  # the lookback and the one before it (the baseline)
            pipe.restore(target.bucket(b), 0, dump, replace=True)
        pipe.execute()
        reader = MetricsReader(client, target_keys, 60_000)
        settings = MetricsSettings(performance_every_s=every_s, performance_lookback_s=hours * 3600)
        cached = PerformanceEvaluator.for_settings(MODEL, reader, settings)
        direct = PerformanceEvaluator(
            {MODEL: reader}, lookback_ms=lookback_ms, every_ms=every_ms, metrics=cached.metrics
        )
        grid = math.gcd(every_ms, lookback_ms)
        inline = PerformanceEvaluator(
            {MODEL: RollupCache(reader, grid, stored_ttl_s=3600)},
            lookback_ms=lookback_ms,
            every_ms=every_ms,
            metrics=cached.metrics,
        )
        first_window = WindowSnapshot(end - every_ms, end, {})
        started = time.perf_counter()
        inline(model, first_window)  # one call: nothing settled, nothing stored
        figures = {"inline": time.perf_counter() - started, "step": 0.0, "uncached": 0.0}
        started = time.perf_counter()
        cached(model, first_window)
        figures["cold"] = time.perf_counter() - started
        cache = cached.readers[MODEL]
        assert isinstance(cache, RollupCache)
        cache.wait_warm()
        figures["warm_up"] = time.perf_counter() - started if cache.warm_stats.hours_stored else 0.0
        started = time.perf_counter()
        cached(model, first_window)
        figures["first"] = time.perf_counter() - started
        for step in range(1, steps + 1):
            now = end + step * every_ms
            pipe = raw.pipeline(transaction=False)
            for b in range(now - every_ms, now, 60_000):
                pipe.restore(target.bucket(b), 0, dump, replace=True)
            for b in range(now - label_delay_buckets * 60_000, now, 60_000):
                pipe.hincrby(target.bucket(b), s.VERSION, 1)
            pipe.execute()
            window = WindowSnapshot(now - every_ms, now, {})
            for name, evaluator in (("step", cached), ("uncached", direct)):
                started = time.perf_counter()
                evaluator(model, window)
                figures[name] += (time.perf_counter() - started) / steps
        restarted = PerformanceEvaluator.for_settings(MODEL, MetricsReader(client, target_keys, 60_000), settings)
        started = time.perf_counter()
        restarted(model, window)
        figures["restart"] = time.perf_counter() - started
        out[hours] = figures
    return out


#: Writer schema id of the schema-violating producer of run (f): ``income`` as a string.
RETYPED_SCHEMA_ID = 12


def write_latency_config(
    workdir: Path, name: str, bootstrap: str, redis_url: str, batch: int, faults: int, early: bool
) -> Path:
    """Run (f)'s config: the wide model on a live topic, and ``faults`` fault models (each its own topic).

    Each fault sample opens an incident of its own: an incident fires early once (its cause
    is then open), so every sample goes to a model of its own, all sharing the wide schema.
    """
    from stream_guard.resources import schema_dir
    from stream_guard.tools.wide import WIDE_FEATURES, WIDE_SLICE_FIELDS

    def model(model_name: str, topic: str, slices: list[str], profile: bool) -> str:
        return f"""
[[models]]
name = "{model_name}"
topics = ["{topic}"]
schema = "{schema_dir() / "wide_inference.avsc"}"
encoding = "confluent"
event_id_field = "event_id"
timestamp_field = "ts"
features = {json.dumps(WIDE_FEATURES)}
prediction_field = "prediction"
score_field = "score"
slice_fields = {json.dumps(slices)}
""" + (f'profile = "{workdir / "profile.json"}"\n' if profile else "")

    text = f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "wide-{name}-{time.time_ns()}"
alerts_topic = "wide.alerts.{name}"
dead_letter_topic = "wide.dlq"
consumer = {{ "session.timeout.ms" = 6000 }}
[redis]
url = "{redis_url}"
key_prefix = "wide-{name}-{time.time_ns()}"
[schema_registry]
local_dir = "{workdir / "registry"}"
[observability]
port = 0
[worker]
batch_size = {batch}
batch_timeout_s = 0.2
window_s = 60
[alerts]
{"" if early else "early_kinds = []"}
[drift]
enabled = true
"""
    text += model(MODEL, f"wide.live.{name}", WIDE_SLICE_FIELDS, True)
    text += "".join(model(f"{MODEL}_f{i}", f"wide.fault.{name}.{i}", [], False) for i in range(faults))
    path = workdir / f"{name}.toml"
    path.write_text(text)
    return path


def fault_latency(
    workdir: Path, bootstrap: str, redis_url: str, batch: int, rate: float, samples: int, *, early: bool = True
) -> list[float]:
    """(f): seconds from producing a faulty record to its alert being readable, at ``rate`` ev/s of live traffic.

    One worker (``stream-guard run``) consumes live wide events (event time: now) at ``rate``
    and a trickle on each fault model's topic (so that only event time closes their windows:
    no partition goes idle). Every 1.5 s, one fault model gets a faulty record: undecodable
    bytes, or (every other sample) a record of a writer schema with ``income`` as a string (a
    type mismatch and a schema change). Its latency ends when an alert of that model is
    read from the alerts topic. Returns the latencies (samples without an alert left out).
    """
    import threading

    from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

    from stream_guard.decoding import confluent_frame, encode_avro
    from stream_guard.settings import load_config
    from stream_guard.tools.embedded import create_topics
    from stream_guard.tools.wide import WideSimulator, wide_schema_json

    name = "latency" if early else "latency-off"
    config = write_latency_config(workdir, name, bootstrap, redis_url, batch, samples, early)
    retyped = wide_schema_json()
    for f in retyped["fields"]:
        if f["name"] == "income":  # ["null", "double"]: ["null", "string"]
            f["type"] = [t if t == "null" else "string" for t in f["type"]] if isinstance(f["type"], list) else "string"
    (workdir / "registry" / f"{RETYPED_SCHEMA_ID}.avsc").write_text(json.dumps(retyped))
    # Topics of this run's own: no backlog of another run's.
    alerts_topic, live_topic = f"wide.alerts.{name}", f"wide.live.{name}"
    fault_topics = [f"wide.fault.{name}.{i}" for i in range(samples)]
    create_topics(bootstrap, [live_topic], partitions=4)
    create_topics(bootstrap, fault_topics, partitions=1)
    create_topics(bootstrap, [alerts_topic], partitions=1)

    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}"})
    reader.assign([TopicPartition(alerts_topic, 0, OFFSET_END)])
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": load_config(config, environ={}).kafka.group_id})
    sim, faulty = WideSimulator(seed=5), WideSimulator(seed=6)
    stop = threading.Event()

    def live() -> None:
        """Clean events at ``rate`` (event time: now), and 2 ev/s on every fault topic."""
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        t0, sent, tick = time.perf_counter(), 0, 0
        while not stop.is_set():
            due = int((time.perf_counter() - t0) * rate)
            now_ms = int(time.time() * 1000)
            records = sim.records(due - sent, now_ms) if due > sent else []
            for i, record in enumerate(records):
                record["ts"] = now_ms
                producer.produce(live_topic, sim.encode(record), partition=(sent + i) % 4, timestamp=now_ms)
            sent = due
            if tick % 50 == 0:  # every 0.5 s
                for i, record in enumerate(sim.records(samples, now_ms)):
                    record["ts"] = now_ms
                    producer.produce(fault_topics[i], sim.encode(record), timestamp=now_ms)
            tick += 1
            producer.poll(0)
            time.sleep(0.01)
        producer.flush(10)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = (workdir / f"{name}.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "stream_guard", "run", "-c", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    feeder = threading.Thread(target=live, daemon=True)
    feeder.start()
    faults = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    sent_at: dict[str, float] = {}
    latencies: dict[str, float] = {}
    try:
        started = time.monotonic()
        while _committed(probe, {live_topic: 4}) == 0:  # group joined, first batches committed
            if worker.poll() is not None or time.monotonic() - started > 120:
                raise RuntimeError(f"the worker did not start consuming; see {log.name}")
            time.sleep(0.5)
        warm_until = time.monotonic() + 5
        next_fault, k = warm_until, 0
        deadline = warm_until + samples * 1.5 + (10 if early else 100)
        while time.monotonic() < deadline and len(latencies) < samples:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited (rc {worker.returncode}); see {log.name}")
            now = time.monotonic()
            if k < samples and now >= next_fault:
                model_name, now_ms = f"{MODEL}_f{k}", int(time.time() * 1000)
                (record,) = faulty.records(1, now_ms)
                record["ts"] = now_ms
                if k % 2:
                    record["income"] = str(record["income"])
                    record.pop("_p", None)
                    value = confluent_frame(RETYPED_SCHEMA_ID, encode_avro(retyped, record))
                else:
                    value = b"\x07not a Confluent frame"  # wrong magic byte: undecodable
                sent_at[model_name] = time.perf_counter()
                faults.produce(fault_topics[k], value, timestamp=now_ms)
                faults.poll(0)
                k, next_fault = k + 1, next_fault + 1.5
            for message in reader.consume(100, 0.02):
                if message.error() is not None:
                    continue
                model_name = dict(message.headers() or []).get("model", b"").decode()
                if model_name in sent_at and model_name not in latencies:
                    latencies[model_name] = time.perf_counter() - sent_at[model_name]
    finally:
        stop.set()
        feeder.join(30)
        faults.flush(10)
        worker.terminate()
        worker.wait(30)
        log.close()
        reader.close()
        probe.close()
    return list(latencies.values())


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


def produce(bootstrap: str, n: int, partitions: int, step_ms: float, label_delay_ms: int) -> list[tuple[bytes, int]]:
    """Pre-produce ``n`` wide events; returns their labels (JSON payloads, Kafka timestamps), in event order.

    A label's timestamp is its event's plus the label delay, as a labels producer would stamp
    it: the worker's label pacing compares the two topics' timestamps.
    """
    from confluent_kafka import Producer

    from stream_guard.tools.wide import WideSimulator

    sim = WideSimulator(seed=1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
    start_ms = 1_700_000_000_000
    labels: list[tuple[bytes, int]] = []
    chunk = 20_000
    for offset in range(0, n, chunk):
        records = sim.records(min(chunk, n - offset), int(start_ms + offset * step_ms), step_ms)
        for i, record in enumerate(records):
            partition = (offset + i) % partitions
            producer.produce(EVENTS_TOPIC, sim.encode(record), partition=partition, timestamp=record["ts"])
        labels += [(json.dumps(label).encode(), label["ts"] + label_delay_ms) for label in sim.labels(records)]
        producer.poll(0)
    producer.flush(120)
    return labels


def learn_profile(workdir: Path, config: Path) -> None:
    from stream_guard.learning import frame_from_records, learn_from_frame
    from stream_guard.model import build_models
    from stream_guard.settings import load_config
    from stream_guard.tools.wide import WideSimulator

    (model,) = build_models(load_config(config, environ={}, require_profiles=False))
    reference = [{k: v for k, v in r.items() if k != "_p"} for r in WideSimulator(seed=100).records(100_000, 0)]
    learn_from_frame(model, frame_from_records(reference), "wide reference").save(workdir / "profile.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="inference events pre-produced (labels as many)")
    parser.add_argument("--rss-at", default="", help="events after which to read peak RSS (default: a fifth)")
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--step-ms", type=float, default=1.0, help="event time between events (1: a stream of 1,000 ev/s)"
    )
    parser.add_argument("--label-delay-s", type=float, default=60.0)
    parser.add_argument("--lookbacks-h", default="1,24")
    parser.add_argument("--py-spy", type=Path, help="profile run (b)'s worker with py-spy into this file (raw)")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip: a,b,c,e")
    parser.add_argument("--latency", action="store_true", help="(f): fault-to-alert latency at half of (b)'s rate")
    parser.add_argument("--latency-samples", type=int, default=20, help="(f): faulty records, one incident each")
    parser.add_argument("--latency-before", type=int, default=0, help="(f): also N samples with early_kinds = []")
    parser.add_argument("--max-rate", type=float, default=0.0, help="(f): the max rate, when (b) is skipped")
    parser.add_argument("--narrow-events", type=int, default=0, help="also run bench/throughput.py on this many")
    parser.add_argument("--bare-consumer", nargs=2, metavar=("BOOTSTRAP", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_consumer:
        bare_consumer(args.bare_consumer[0], int(args.bare_consumer[1]))
        return

    import redis

    from stream_guard.tools.embedded import create_topics, local_stack
    from stream_guard.tools.wide import write_wide_registry

    skip = set(filter(None, args.skip.split(",")))
    rss_at = [int(x) for x in args.rss_at.split(",") if x] or [args.events // 5]
    narrow = ""
    if args.narrow_events:
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "throughput.py"), "--events", str(args.narrow_events)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        # Its workers log to stdout too: keep its table (from the "<n> events" line on).
        lines = out.splitlines()
        table = next((i for i, line in enumerate(lines) if line.startswith(f"{args.narrow_events} events")), 0)
        narrow = "\n" + "\n".join(lines[table:])
    t0 = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="sg-wide-"))
    write_wide_registry(workdir / "registry")
    results: dict[str, Any] = {}
    with local_stack() as (broker, redis_server):
        bootstrap, redis_url = f"127.0.0.1:{broker.port}", f"redis://127.0.0.1:{redis_server.port}/0"
        learn_profile(workdir, write_config(workdir, "probe", bootstrap, redis_url, args.batch))
        create_topics(bootstrap, [EVENTS_TOPIC], partitions=args.partitions)
        create_topics(bootstrap, ["wide.alerts", "wide.dlq"], partitions=1)
        labels = produce(bootstrap, args.events, args.partitions, args.step_ms, int(args.label_delay_s * 1000))
        lag = int(args.label_delay_s * 1000 / args.step_ms)
        print(f"produced {args.events:,} events in {time.perf_counter() - t0:.0f} s", flush=True)
        if "a" not in skip:
            out = subprocess.run(
                [sys.executable, __file__, "--bare-consumer", bootstrap, str(args.events)],
                check=True,
                capture_output=True,
                text=True,
            )
            results["a"] = json.loads(out.stdout.strip().splitlines()[-1])["rate"]
            print(f"(a) bare consumer: {results['a']:,.0f} ev/s", flush=True)
        prefix = ""
        if "b" not in skip:
            config = write_config(workdir, "one", bootstrap, redis_url, args.batch)
            before = redis_counters(redis_url)
            results["b"], results["rss"], info = run_workers(
                config, 1, labels, args.partitions, rss_at, lag, args.py_spy
            )
            after = redis_counters(redis_url)
            results["redis"] = {k: (after[k] - before.get(k, 0)) / args.events for k in after}
            prefix = info["prefix"]
            print(
                f"(b) one worker: {results['b']:,.0f} ev/s, {info['labels_matched']} labels matched; "
                f"peak RSS (kB) by events {results['rss']}",
                flush=True,
            )
        if "c" not in skip:
            config = write_config(workdir, "two", bootstrap, redis_url, args.batch)
            results["c"], _, _ = run_workers(config, 2, labels, args.partitions, [], lag)
            print(f"(c) two workers: {results['c']:,.0f} ev/s", flush=True)
        if args.latency:
            rate = (results.get("b") or args.max_rate) / 2
            if not rate:
                raise SystemExit("(f) needs (b)'s rate, or --max-rate")
            results["f_rate"] = rate
            results["f"] = fault_latency(workdir, bootstrap, redis_url, args.batch, rate, args.latency_samples)
            print(f"(f) fault to alert at {rate:,.0f} ev/s: {sorted(results['f'])}", flush=True)
            if args.latency_before:
                results["f_off"] = fault_latency(
                    workdir, bootstrap, redis_url, args.batch, rate, args.latency_before, early=False
                )
                print(f"(f) early_kinds = []: {sorted(results['f_off'])}", flush=True)
        if "e" not in skip and prefix:
            lookbacks = [int(h) for h in args.lookbacks_h.split(",")]
            results["e"] = evaluation_cost(redis_url, prefix, lookbacks)
            redis.Redis.from_url(redis_url).close()
    elapsed = time.perf_counter() - t0

    print(
        f"\nwide model: {args.events:,} events and their labels, batch {args.batch}, "
        f"{args.partitions} partitions, every stage on ({elapsed:.0f} s)"
    )
    rows = [
        ("(a) bare decode-only consumer", results.get("a"), "ev/s"),
        ("(b) one worker", results.get("b"), "ev/s"),
        ("(c) two workers, one group", results.get("c"), "ev/s"),
    ]
    redis_cost = results.get("redis", {})
    if redis_cost:
        rows += [
            ("(b) Redis commands per event", redis_cost["commands"], "(scripts' own included)"),
            ("(b) Redis script calls per event", redis_cost["scripts"], "(one per partition and batch)"),
            ("(b) bytes to Redis per event", redis_cost["bytes_in"], "B"),
            ("(b) bytes from Redis per event", redis_cost["bytes_out"], "B"),
        ]
        rows.append(("(b) Redis CPU per event", redis_cost["cpu_us"], "µs"))
        rows.append(("(b) one Redis core's ceiling", 1e6 / redis_cost["cpu_us"], "ev/s (this model, labels on)"))
        top = sorted((v, k.removeprefix("cmd:")) for k, v in redis_cost.items() if k.startswith("cmd:"))[::-1][:6]
        rows += [(f"(b)   of which {name}", per_event, "per event") for per_event, name in top if per_event > 0]
    for events, kb in sorted(results.get("rss", {}).items()):
        rows.append((f"(d) peak RSS after {events:,} events", kb / 1024, "MB"))
    for hours, figures in results.get("e", {}).items():
        rows.append((f"(e) evaluation, lookback {hours} h, inline", figures["inline"] * 1000, "ms (every tile summed)"))
        rows.append((f"(e) evaluation, lookback {hours} h, cold", figures["cold"] * 1000, "ms (in the loop)"))
        if figures["warm_up"]:
            rows.append(
                (f"(e)   warm-up thread, lookback {hours} h", figures["warm_up"] * 1000, "ms (beside the loop)")
            )
        rows.append((f"(e) evaluation, lookback {hours} h, first", figures["first"] * 1000, "ms (after the warm-up)"))
        rows.append((f"(e) evaluation, lookback {hours} h, next", figures["step"] * 1000, "ms (changed tiles only)"))
        rows.append((f"(e) evaluation, lookback {hours} h, uncached", figures["uncached"] * 1000, "ms (every bucket)"))
        rows.append((f"(e) evaluation, lookback {hours} h, restart", figures["restart"] * 1000, "ms (stored hours)"))
    for key, label in (("f", "(f) fault to alert"), ("f_off", "(f) fault to alert, early_kinds = []")):
        figures = results.get(key)
        if figures:
            rows.append((f"{label}, p50", percentile(figures, 0.5), f"s ({len(figures)} samples)"))
            rows.append((f"{label}, p99", percentile(figures, 0.99), f"s (at {results['f_rate']:,.0f} ev/s)"))
    for label, value, unit in rows:
        if value is not None:
            print(f"{label:<40}{value:>14,.{3 if value < 10 else 1}f} {unit}")
    if results.get("a") and results.get("b"):
        print(f"(b)/(a) = {results['b'] / results['a']:.3f}")
    if results.get("b") and results.get("c"):
        print(f"(c)/(b) = {results['c'] / results['b']:.2f}")
    if narrow:
        print("\n8-feature model (bench/throughput.py, in this run):" + narrow)


if __name__ == "__main__":
    main()
