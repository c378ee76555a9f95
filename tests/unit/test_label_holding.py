"""Unit tests of held labels and the label gate (stream_guard.metrics.holding, .label_gate), in memory."""

from __future__ import annotations

import math

from stream_guard.metrics import store as s
from stream_guard.metrics.holding import ReleaseResult, stored_event_ids
from stream_guard.metrics.label_gate import LabelGate
from stream_guard.metrics.labels import JoinResult, Label, LabelJoiner
from stream_guard.observability.metrics import WorkerMetrics
from stream_guard.settings.metrics import MetricsSettings
from stream_guard.state import Fence, MemoryState, ModelKeys, StateUpdate
from stream_guard.worker import WorkerStats

KEYS = ModelKeys("sg", "fraud")
BASE_MS = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
HOLD_S = 600
LABELS = "fraud.labels:0"
SETTINGS = MetricsSettings(bucket_s=60)


def _state(idle_ms: float = math.inf) -> MemoryState:
    return MemoryState(KEYS, window_ms=600_000, lateness_ms=0, idle_ms=idle_ms)


def _events(state: MemoryState, source: str, offset: int, event_ms: int, *ids: str, now_ms: int = 0) -> list[str]:
    """An events batch of ``source`` storing a positive prediction per id; the ids it stored."""
    u = StateUpdate(source, offset, offset, event_ms)
    bucket = event_ms // 60_000 * 60_000
    for event_id in ids:
        u.set_once(
            KEYS.prediction(event_id), s.encode_prediction(bucket, [], 1, 0.9), 3600, KEYS.bucket(bucket), ["*|st"]
        )
    state.apply([u], now_ms)
    return stored_event_ids([u], s.MetricKeys(KEYS))


def test_a_label_before_its_prediction_is_held_and_joins_it_when_it_arrives() -> None:
    """Held instead of unmatched; the events batch that stores the prediction releases it into lm and tp."""
    state = _state()
    joiner = LabelJoiner(KEYS, SETTINGS, hold_s=HOLD_S)
    joined = joiner.join([Label("e1", 1, LABELS, 0, BASE_MS + 5_000)], state, now_ms=0)
    assert (joined.matched, joined.unmatched, joined.held) == (0, 0, 1)
    released = joiner.release(_events(state, "ev:0", 0, BASE_MS + 4_000, "e1"), state, now_ms=0)
    assert (released.released, released.expired, released.event_ids) == (1, 0, ["e1"])
    bucket = state.hgetall(KEYS.bucket(BASE_MS))
    assert (bucket["*|lh"], bucket["*|lm"], bucket["*|tp"], bucket["*|lr"]) == ("1", "1", "1", "1")


def test_without_holding_a_label_before_its_prediction_is_unmatched() -> None:
    """hold_s = 0: the label is counted unmatched at once, and releasing does nothing."""
    state = _state()
    joiner = LabelJoiner(KEYS, SETTINGS)
    joined = joiner.join([Label("e1", 1, LABELS, 0, BASE_MS)], state, now_ms=0)
    assert (joined.unmatched, joined.held) == (1, 0)
    assert joiner.release(_events(state, "ev:0", 0, BASE_MS, "e1"), state, now_ms=0) == ReleaseResult()


def test_a_hold_expires_once_the_slowest_events_partition_passed_its_time_plus_hold_s() -> None:
    """Expiry is in event time, on the events' global watermark: one partition ahead is not enough."""
    state = _state()
    joiner = LabelJoiner(KEYS, SETTINGS, hold_s=HOLD_S)
    joiner.join([Label("gone", 1, LABELS, 0, BASE_MS)], state, now_ms=0)
    past = BASE_MS + HOLD_S * 1000
    _events(state, "ev:0", 0, past)
    _events(state, "ev:1", 0, past - 1)
    assert joiner.release([], state, now_ms=0).expired == 0
    _events(state, "ev:1", 1, past)
    assert joiner.release([], state, now_ms=0).expired == 1
    assert joiner.release([], state, now_ms=0).expired == 0
    assert state.hgetall(KEYS.bucket(BASE_MS))["*|lx"] == "1"
    assert state.zrange(KEYS.held_index) == []


def test_an_idle_events_stream_expires_no_held_label() -> None:
    """Every events partition idle (watermark inf): the holds wait for events to flow again."""
    state = _state(idle_ms=1_000)
    joiner = LabelJoiner(KEYS, SETTINGS, hold_s=HOLD_S)
    joiner.join([Label("e1", 1, LABELS, 0, BASE_MS)], state, now_ms=0)
    _events(state, "ev:0", 0, BASE_MS + 10 * HOLD_S * 1000, now_ms=0)
    assert state.global_watermark(5_000) == math.inf
    assert joiner.release([], state, now_ms=5_000).expired == 0
    assert joiner.release([], state, now_ms=500).expired == 1


def test_the_label_gate_waits_for_the_label_watermark_past_the_window_end_plus_the_delay() -> None:
    """Off the cadence a window is always ready; on it, once the label watermark reached end + delay."""
    state = _state()
    gate = LabelGate(state, window_ms=600_000, every_ms=3_600_000, delay_ms=60_000)
    assert gate.ready(BASE_MS + 600_000, now_ms=0)
    assert not gate.ready(BASE_MS, now_ms=0)  # no labels partition known yet
    state.register_sources([LABELS], 0, Fence.LABELS)
    assert not gate.ready(BASE_MS, now_ms=0)
    state.apply([StateUpdate(LABELS, 0, 0, BASE_MS + 660_000 - 1, fence=Fence.LABELS)], 0)
    assert not gate.ready(BASE_MS, now_ms=0)
    state.apply([StateUpdate(LABELS, 1, 1, BASE_MS + 660_000, fence=Fence.LABELS)], 0)
    assert gate.ready(BASE_MS, now_ms=0)


def test_held_labels_are_accounted_once_as_consumed_records() -> None:
    """A held label is a consumed record; its later release or expiry is not a second one."""
    stats = WorkerStats(consumed=10, decoded=4, labels_matched=2, labels_held=4, labels_released=3, labels_expired=1)
    assert stats.accounted == stats.consumed


def test_prometheus_counts_labels_held_released_and_expired() -> None:
    """stream_guard_labels_total has the outcomes held, released and expired."""
    metrics = WorkerMetrics()
    metrics.observe_batch(
        consumed={},
        redelivered={},
        staged={},
        rejected=[],
        joins={"fraud": JoinResult(matched=2, held=3)},
        applied={},
        seconds=0.0,
        releases={"fraud": ReleaseResult(released=1, expired=4)},
    )
    got = {
        o: metrics.value("stream_guard_labels_total", model="fraud", outcome=o)
        for o in ("matched", "held", "released", "expired")
    }
    assert got == {"matched": 2, "held": 3, "released": 1, "expired": 4}


def test_a_hold_whose_prediction_was_stored_meanwhile_joins_it_instead_of_expiring() -> None:
    """A prediction stored without releasing its held label (a race, a stop in between) is joined at expiry."""
    state = _state()
    joiner = LabelJoiner(KEYS, SETTINGS, hold_s=HOLD_S)
    joiner.join([Label("e1", 1, LABELS, 0, BASE_MS)], state, now_ms=0)
    _events(state, "ev:0", 0, BASE_MS, "e1")  # stored, but never released
    _events(state, "ev:0", 1, BASE_MS + HOLD_S * 1000)
    late = joiner.release([], state, now_ms=0)
    assert (late.released, late.expired, late.event_ids) == (1, 0, ["e1"])
    bucket = state.hgetall(KEYS.bucket(BASE_MS))
    assert (bucket["*|lm"], bucket["*|lr"], "*|lx" in bucket) == ("1", "1", False)
