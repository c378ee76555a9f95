"""The same labelled backlog replayed twice gives the same label-based alerts (real broker and Redis).

The labels topic is filled before the events topic. The first run reads every label before
any event (each label is held until its prediction is stored); the second, with a fresh
Redis prefix and group on the same topics, reads every event before any label (the windows
on the performance cadence wait for the label watermark). Both end with every label matched
and publish the same label-based alerts, with the same counts.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from streamtest import new_worker, produce, write_config

from stream_guard.alerts.model import Alert
from stream_guard.cli import main
from stream_guard.settings import Config
from stream_guard.settings.kinds import CONCEPT_DRIFT, PERFORMANCE_DEGRADATION, SLICE_UNDERPERFORMANCE
from stream_guard.state.keys import Fence
from stream_guard.tools.embedded import create_topics
from stream_guard.tools.simulator import Simulator
from stream_guard.worker import WorkerStats

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
HOUR_START = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS
N_EVENTS = 4000
#: 4000 events 2.5 s apart: 2 h 47 min of event time, over three windows on the hourly cadence.
STEP_MS = 2500
PARTITIONS = 2
LABEL_KINDS = {SLICE_UNDERPERFORMANCE, CONCEPT_DRIFT, PERFORMANCE_DEGRADATION}


def _replay(config: Config, first: str, n_labels: int) -> tuple[WorkerStats, list[Alert]]:
    """One worker over both topics from the start, reading the ``first`` topic whole before the other."""
    worker = new_worker(config)
    consumer, store = worker.parts.consumer, worker.parts.stores["fraud"]
    events, labels = config.models[0].topics[0], config.models[0].labels.topic
    assigned = [TopicPartition(t, p, 0) for t in (events, labels) for p in range(PARTITIONS)]
    later = [tp for tp in assigned if tp.topic != first]
    consumer.assign(assigned)
    now_ms = int(time.time() * 1000)
    store.register_sources([f"{events}:{p}" for p in range(PARTITIONS)], now_ms)
    store.register_sources([f"{labels}:{p}" for p in range(PARTITIONS)], now_ms, Fence.LABELS)
    consumer.pause(later)
    first_n = n_labels if first == labels else N_EVENTS
    alerts: list[Alert] = []
    deadline = time.monotonic() + 40
    try:
        while worker.stats.consumed < N_EVENTS + n_labels:
            assert time.monotonic() < deadline, vars(worker.stats)
            worker.process(consumer.consume(500, 0.2))
            if worker.stats.consumed >= first_n:
                consumer.resume(later)
            alerts += worker.close_due_windows()
        alerts += worker.close_due_windows(final=True)
    finally:
        consumer.close()
    return worker.stats, alerts


def _label_alerts(alerts: list[Alert]) -> dict[str, tuple[str, str, str, int]]:
    return {a.alert_id: (a.kind, a.slice, str(a.status), a.count) for a in alerts if a.kind in LABEL_KINDS}


def test_a_labelled_backlog_replayed_twice_gives_the_same_label_alerts(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Labels first or events first: every label matched, the same label-based alert ids and counts."""
    labels_topic = f"labels-{unique}"
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        partitions=PARTITIONS,
        window_s=600,
        model_extra=f"""
[models.labels]
topic = "{labels_topic}"
encoding = "json"
timestamp_field = "ts"
""",
    )
    create_topics(bootstrap, [labels_topic], partitions=PARTITIONS)
    sim = Simulator(encoding="confluent", seed=61)
    events = list(sim.stream(N_EVENTS, HOUR_START + 60_000, step_ms=STEP_MS))
    labels = sim.labels([r for r, _, _ in events], android_misses=0.5)
    label_items = ((None, json.dumps(x).encode(), x["ts"]) for x in labels)
    produce(bootstrap, labels_topic, label_items, partitions=PARTITIONS)
    produce(bootstrap, config.models[0].topics[0], ((None, p, r["ts"]) for r, p, _ in events), partitions=PARTITIONS)
    assert all(fault is None for _, _, fault in events)  # every event stores its prediction

    held_first, alerts_1 = _replay(config, labels_topic, len(labels))
    second = dataclasses.replace(
        config,
        redis=dataclasses.replace(config.redis, key_prefix=f"sg2-{unique}"),
        kafka=dataclasses.replace(config.kafka, group_id=f"sg2-test-{unique}"),
    )
    events_first, alerts_2 = _replay(second, config.models[0].topics[0], len(labels))

    for stats in (held_first, events_first):
        assert stats.accounted == stats.consumed == N_EVENTS + len(labels)
        assert stats.labels_unmatched == stats.labels_expired == 0
    assert (held_first.labels_held, held_first.labels_released, held_first.labels_matched) == (N_EVENTS, N_EVENTS, 0)
    assert (events_first.labels_held, events_first.labels_matched) == (0, N_EVENTS)
    capsys.readouterr()
    assert main(["metrics", "-c", str(tmp_path / "config.toml"), "--window", "24h", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["labels"]  # the first run's prefix
    assert counts == {
        "matched": N_EVENTS,
        "held": N_EVENTS,
        "released": N_EVENTS,
        "expired": 0,
        "unmatched": 0,
        "pending": 0,
    }
    first, again = _label_alerts(alerts_1), _label_alerts(alerts_2)
    assert any(kind == SLICE_UNDERPERFORMANCE for kind, *_ in first.values()), first
    assert first == again
