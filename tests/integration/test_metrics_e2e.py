"""Rolling slice metrics and delayed labels end to end: two workers, real broker, real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamtest import consume_all, new_worker, produce, run_until, write_config

from stream_guard.alerts.codec import decode_alert
from stream_guard.assembly import metrics_reader
from stream_guard.metrics import slice_underperformance
from stream_guard.tools.embedded import create_topics
from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
#: An hour boundary: the performance checks run when a window starting on one closes.
HOUR_START = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS
WINDOW_S = 600
#: The events fill [HOUR_START + 10 min, HOUR_START + 50 min): no window of theirs starts on the hour.
EVENTS_START = HOUR_START + 600_000
N_EVENTS = 8000
STEP_MS = 300
#: A few events after the labels, in the window that starts on the next hour: closing it runs
#: the performance checks over the labelled hour.
TRIGGER_MS = HOUR_START + HOUR_MS
N_TRIGGER = 8
EVENT_PARTITIONS = 4
LABEL_PARTITIONS = 2
REPO = Path(__file__).resolve().parents[2]


def _expected_slices(frame: pd.DataFrame) -> dict[str, int]:
    """Events per slice, computed by pandas: all traffic, each slice field, the crossing."""
    expected = {"*": len(frame)}
    for name in ("device_type", "country", "merchant_category"):
        for value, count in frame[name].value_counts().items():
            expected[f"{name}={value}"] = int(count)
    for (country, device), count in frame.groupby(["country", "device_type"]).size().items():
        expected[f"country={country},device_type={device}"] = int(count)
    return expected


def _confusion(predicted: pd.Series, actual: pd.Series) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn) by pandas."""
    return (
        int((predicted & actual).sum()),
        int((predicted & ~actual).sum()),
        int((~predicted & ~actual).sum()),
        int((~predicted & actual).sum()),
    )


def test_two_workers_with_labels_keep_exact_slice_metrics_and_flag_the_bad_slice(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str
) -> None:
    """Two workers' slice counts, predictions, confusion equal pandas'; android is ranked, flagged, alerted worst."""
    labels_topic = f"labels-{unique}"
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        partitions=EVENT_PARTITIONS,
        window_s=WINDOW_S,
        model_extra=f"""
[models.metrics]
crossings = [["device_type", "country"]]

[models.labels]
topic = "{labels_topic}"
encoding = "json"
timestamp_field = "ts"
""",
    )
    create_topics(bootstrap, [labels_topic], partitions=LABEL_PARTITIONS)
    topic = config.models[0].topics[0]
    sim = Simulator(encoding="confluent", seed=51)
    events = list(sim.stream(N_EVENTS, EVENTS_START, step_ms=STEP_MS))
    records = [r for r, _, _ in events]
    labels = sim.labels(records, android_misses=0.5)
    triggers = list(Simulator(encoding="confluent", seed=52).stream(N_TRIGGER, TRIGGER_MS, step_ms=1000))
    assert all(f is None for _, _, f in events + triggers)

    workers = [new_worker(config), new_worker(config)]

    def decoded() -> int:
        return sum(w.stats.decoded for w in workers)

    def labels_done() -> int:
        return sum(w.stats.labels_matched + w.stats.labels_unmatched + w.stats.labels_invalid for w in workers)

    stages: list[str] = []
    failure: list[BaseException] = []

    def wait_for(condition: Any, what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def drive() -> None:
        try:
            time.sleep(8)  # both workers in the group before any data, so the partitions are split
            produce(bootstrap, topic, ((None, p, r["ts"]) for r, p, _ in events), partitions=EVENT_PARTITIONS)
            wait_for(lambda: decoded() >= N_EVENTS, "the events")  # every prediction stored before its label
            stages.append("events")
            label_items = ((None, json.dumps(x).encode(), x["ts"]) for x in labels)
            produce(bootstrap, labels_topic, label_items, partitions=LABEL_PARTITIONS)
            wait_for(lambda: labels_done() >= N_EVENTS, "the labels")
            stages.append("labels")
            items = ((None, p, r["ts"]) for r, p, _ in triggers)
            produce(bootstrap, topic, items, partitions=EVENT_PARTITIONS)
            stages.append("triggers")
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)

    driver = threading.Thread(target=drive)
    driver.start()
    total = 2 * N_EVENTS + N_TRIGGER
    stats = run_until(
        workers,
        lambda: bool(failure) or (stages[-1:] == ["triggers"] and sum(w.stats.consumed for w in workers) >= total),
        timeout_s=150,
    )
    driver.join(30)
    assert not failure, failure
    assert all(s.consumed > 0 for s in stats), [vars(s) for s in stats]
    assert sum(s.consumed for s in stats) == total
    assert sum(s.decoded for s in stats) == N_EVENTS + N_TRIGGER
    assert sum(s.labels_matched for s in stats) == N_EVENTS
    assert sum(s.labels_unmatched + s.labels_invalid + s.dead_lettered for s in stats) == 0

    # -- the rollup of the labelled hour against pandas --------------------------------------
    frame = pd.DataFrame.from_records(records)
    frame["label"] = [x["label"] for x in labels]
    reader = metrics_reader(config, "fraud")
    rollup = reader.rollup(HOUR_START, HOUR_START + HOUR_MS)
    expected = _expected_slices(frame)
    got = {name: rollup[name].events for name in expected if name in rollup}
    assert got == expected
    overall = rollup.overall
    assert overall.get("pn") == N_EVENTS
    assert overall.get("pv") == float(frame["prediction"].sum())
    assert overall.labelled == N_EVENTS
    assert (overall.labels_pending, overall.labels_unmatched) == (0, 0)
    predicted = frame["score"] >= 0.5
    actual = frame["label"] == 1
    for device, part in frame.groupby("device_type"):
        m = rollup[f"device_type={device}"]
        p, y = predicted[part.index], actual[part.index]
        assert m.confusion == _confusion(p, y), device
        assert (m.get("pn"), m.get("pv")) == (len(part), float(part["prediction"].sum())), device
        assert (m.labelled, m.labels_pending) == (len(part), 0), device
    assert overall.confusion == _confusion(predicted, actual)

    worst = rollup.worst_slices("recall", dimensions=[["device_type"]])
    assert worst[0].slice == "device_type=android", worst
    assert "device_type=android" in rollup.worst_slices("recall")[0].slice
    flagged = slice_underperformance(rollup, "recall")
    assert "device_type=android" in {u.slice for u in flagged}, flagged
    assert not {u.slice for u in flagged} & {"device_type=ios", "device_type=web"}

    # -- the performance check ran when the hour's next window closed ---------------------------
    alerts = [decode_alert(m.value()) for m in consume_all(bootstrap, config.kafka.alerts_topic, idle_s=2)]
    # One incident per slice: android's recall and accuracy findings are one alert, the
    # first the primary or among its related findings (evidence).
    underperforming = [a for a in alerts if a["kind"] == "slice_underperformance"]
    findings = [(a["feature"], a["slice"], a["count"], a["value"], a["status"]) for a in underperforming]
    findings += [
        (r["feature"], r["slice"], r["count"], r["value"], a["status"])
        for a in underperforming
        for r in a["related"]
        if r["kind"] == "slice_underperformance"
    ]
    recall = [f for f in findings if f[:2] == ("recall", "device_type=android")]
    assert recall, sorted(f[:2] for f in findings)
    android = rollup["device_type=android"]
    _, _, count, value, status = recall[0]
    assert status == "FIRING"
    assert count == android.support("recall")
    assert value == pytest.approx(android.recall)
    assert not {f[1] for f in findings} & {"device_type=ios", "device_type=web"}

    # -- the metrics CLI ---------------------------------------------------------------------
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_GUARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    config_path = tmp_path / "config.toml"
    done = subprocess.run(
        [sys.executable, "-m", "stream_guard", "metrics", "-c", str(config_path), "--window", "24h", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["slices"]["*"]["events"] == N_EVENTS + N_TRIGGER
    assert out["slices"]["device_type=android"]["events"] == int((frame["device_type"] == "android").sum()) + sum(
        1 for r, _, _ in triggers if r["device_type"] == "android"
    )
