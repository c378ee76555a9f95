"""Early alerts end to end: an undecodable burst is on the alerts topic long before its 60 s window closes."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from streamtest import consume_all, new_worker, produce, write_config

from stream_guard.alerts.codec import decode_alert
from stream_guard.batch import to_epoch_ms
from stream_guard.checkpoint import Checkpoint
from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000
WINDOW_MS = 60_000
W = START_MS - START_MS % WINDOW_MS  # the window of the burst
PARTITIONS = 3


def _alerts(bootstrap: str, topic: str, expected: int, timeout_s: float) -> list[dict[str, Any]]:
    return [decode_alert(m.value()) for m in consume_all(bootstrap, topic, expected=expected, timeout_s=timeout_s)]


def test_an_undecodable_burst_fires_early_then_its_window_alert_follows_with_the_full_counts(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str
) -> None:
    config = write_config(
        tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique, encoding="json", window_s=60
    )
    # Partitions do not go idle during the test: only event time closes the window.
    config = dataclasses.replace(config, worker=dataclasses.replace(config.worker, idle_partition_s=600))
    topic, alerts_topic = config.models[0].topics[0], config.kafka.alerts_topic
    records = Simulator(encoding="json", seed=21).records(30, W + 1_000, step_ms=100)
    clean = [(None, json.dumps(r).encode(), r["ts"]) for r in records]
    garbage = [(None, b"\x00not json", W + 5_000 + i) for i in range(30)]
    produce(bootstrap, topic, [*clean[:15], *garbage[:12]], partitions=PARTITIONS)

    worker = new_worker(config)
    thread = threading.Thread(target=worker.run, kwargs={"duration_s": 120})
    thread.start()
    try:
        # The first batch that shows the burst fires: the window (event time) is far from closing.
        produced = time.monotonic()
        (early,) = _alerts(bootstrap, alerts_topic, expected=1, timeout_s=30)
        assert time.monotonic() - produced < 30
        assert (early["kind"], early["status"], early["severity"]) == ("undecodable", "FIRING", "CRITICAL")
        assert early["message"].startswith(f"early alert, the first {early['count']} in this batch")
        assert 0 < early["count"] <= 12
        assert to_epoch_ms(early["window_start"]) == W and early["cause_id"] == early["incident_id"]
        assert worker.parts.stores["fraud"].open_windows() == [W]  # still open

        # More of the burst, in the same window: no second early alert.
        produce(bootstrap, topic, [*clean[15:], *garbage[12:]], partitions=PARTITIONS)
        deadline = time.monotonic() + 30
        while worker.stats.dead_lettered < len(garbage):
            assert time.monotonic() < deadline, f"the burst was not consumed: {vars(worker.stats)}"
            time.sleep(0.1)
        assert len(consume_all(bootstrap, alerts_topic, idle_s=2, timeout_s=10)) == 1

        # Event time moves past the window (every partition): it closes, and its alert updates the early one.
        later = Simulator(encoding="json", seed=22).records(PARTITIONS, W + 2 * WINDOW_MS, step_ms=10)
        produce(bootstrap, topic, [(None, json.dumps(r).encode(), r["ts"]) for r in later], partitions=PARTITIONS)
        alerts = _alerts(bootstrap, alerts_topic, expected=2, timeout_s=45)
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()
    early_again, update = alerts
    assert early_again == early
    assert update["alert_id"] == early["alert_id"] and update["status"] == "FIRING"
    assert (update["count"], update["total"]) == (len(garbage), len(garbage) + len(clean))
    assert not update["message"].startswith("early alert")
    assert update["incident_id"] == update["cause_id"] == early["cause_id"]  # one incident
    assert worker.stats.alerts == 2


def test_an_early_alert_survives_a_crash_before_the_checkpoint_and_is_not_fired_again(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the early alert's ack, before its batch's checkpoint: the alert is on the topic; the
    successor reads the batch again and fires nothing; the window alert updates it with the counts once."""
    config = write_config(
        tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique, encoding="json", window_s=60
    )
    config = dataclasses.replace(config, worker=dataclasses.replace(config.worker, idle_partition_s=600))
    topic, alerts_topic = config.models[0].topics[0], config.kafka.alerts_topic
    records = Simulator(encoding="json", seed=23).records(15, W + 1_000, step_ms=100)
    garbage = [(None, b"\x00not json", W + 5_000 + i) for i in range(12)]
    produce(bootstrap, topic, [*((None, json.dumps(r).encode(), r["ts"]) for r in records), *garbage], PARTITIONS)

    first = new_worker(config)
    commit = Checkpoint.commit

    def killed_after_the_early_alert(checkpoint: Checkpoint, *args: Any, **kwargs: Any) -> Any:
        if first.stats.alerts:
            raise RuntimeError("killed before the checkpoint")
        return commit(checkpoint, *args, **kwargs)

    monkeypatch.setattr(Checkpoint, "commit", killed_after_the_early_alert)
    crashed: list[BaseException] = []

    def run_first() -> None:
        try:
            first.run(duration_s=60)
        except RuntimeError as exc:
            crashed.append(exc)

    thread = threading.Thread(target=run_first)
    thread.start()
    thread.join(90)
    assert not thread.is_alive() and crashed, "the first worker was not killed"
    (early,) = _alerts(bootstrap, alerts_topic, expected=1, timeout_s=30)  # acknowledged before the kill
    monkeypatch.setattr(Checkpoint, "commit", commit)

    second = new_worker(config)
    thread = threading.Thread(target=second.run, kwargs={"duration_s": 120})
    thread.start()
    try:
        deadline = time.monotonic() + 45
        while second.stats.dead_lettered < len(garbage) - first.stats.dead_lettered:
            assert time.monotonic() < deadline, f"the batch was not read again: {vars(second.stats)}"
            time.sleep(0.1)
        assert second.stats.dead_lettered >= early["count"]  # the killed batch, read again
        assert len(consume_all(bootstrap, alerts_topic, idle_s=2, timeout_s=10)) == 1
        later = Simulator(encoding="json", seed=24).records(PARTITIONS, W + 2 * WINDOW_MS, step_ms=10)
        produce(bootstrap, topic, [(None, json.dumps(r).encode(), r["ts"]) for r in later], partitions=PARTITIONS)
        alerts = _alerts(bootstrap, alerts_topic, expected=2, timeout_s=45)
    finally:
        second.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert second.stats.alerts == 1  # the window's update only
    update = alerts[1]
    assert update["alert_id"] == early["alert_id"] and update["cause_id"] == early["cause_id"]
    assert update["count"] == len(garbage)  # each record counted once
