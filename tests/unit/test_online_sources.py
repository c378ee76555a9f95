"""OnlineDrift's per-batch bookkeeping: source partitions of the rows, detections at their positions."""

from __future__ import annotations

import numpy as np
from river.drift import ADWIN

from stream_guard.batch import EventBatch
from stream_guard.decoding import Decoded
from stream_guard.drift.detectors import OnlineDriftMonitor
from stream_guard.drift.online import _sources
from stream_guard.settings.detectors import DetectorSpec


def test_sources_are_the_sorted_topic_partition_names_of_the_rows() -> None:
    """Names sorted as strings (``t:10`` before ``t:2``), each row's index into them."""
    rng = np.random.default_rng(8)
    topics = [str(t) for t in rng.choice(["b", "a", "a.b"], 300)]
    partitions = rng.choice([0, 2, 10, 11], 300).astype(np.int64)
    batch = EventBatch(
        model="m",
        decoded=[Decoded({}, []) for _ in topics],
        topics=topics,
        partitions=partitions,
        offsets=np.arange(300, dtype=np.int64),
        event_time_ms=np.zeros(300, dtype=np.int64),
        event_ids=[None] * 300,
    )
    names, of_row = _sources(batch)
    want_names, want_of_row = np.unique([f"{t}:{p}" for t, p in zip(topics, partitions.tolist())], return_inverse=True)
    assert names.tolist() == want_names.tolist()
    assert of_row.tolist() == want_of_row.reshape(-1).tolist()


def test_update_batch_reports_the_positions_a_river_loop_detects_at() -> None:
    """Non-finite values are skipped; each detection is reported at its position in the values given."""
    rng = np.random.default_rng(9)
    values = np.concatenate([rng.random(3000) * 0.2, 0.8 + rng.random(3000) * 0.2, rng.random(3000) * 0.2])
    values[rng.random(values.size) < 0.05] = np.nan
    values[::97] = np.inf
    monitor = OnlineDriftMonitor(DetectorSpec("ADWIN", {}))
    got = monitor.update_batch("k", values) + [values.size + p for p in monitor.update_batch("k", values)]
    detector, want = ADWIN(), []
    for i, v in enumerate([*values.tolist(), *values.tolist()]):
        if np.isfinite(v):
            detector.update(v)
            if detector.drift_detected:
                want.append(i)
    assert got == want and len(want) >= 2
