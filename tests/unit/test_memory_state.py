"""Unit tests for stream_guard.state.memory: MemoryState runs StateUpdate ops as the Lua scripts define them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from redis.exceptions import ResponseError

from stream_guard.aggregation import build_updates
from stream_guard.batch import EventBatch
from stream_guard.decoding import Decoded
from stream_guard.findings import RowFindings
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState
from stream_guard.state.window_store import StateUpdate

KEYS = ModelKeys("sg", "fraud")
WINDOW_MS = 10_000
LATENESS_MS = 2_000
BASE_MS = 1_700_000_000_000  # a multiple of WINDOW_MS
SOURCE = "fraud.inferences:0"


def new_state(**kwargs: object) -> MemoryState:
    settings: dict[str, object] = {"window_ms": WINDOW_MS, "lateness_ms": LATENESS_MS, "retention_s": 3600}
    settings.update(kwargs)
    return MemoryState(KEYS, **settings)  # type: ignore[arg-type]


def update(first: int = 0, last: int = 9, max_event_ms: int = BASE_MS, source: str = SOURCE) -> StateUpdate:
    return StateUpdate(source, first, last, max_event_ms)


# ------------------------------------------------------------------------------- fence


def test_an_update_records_its_offset_watermark_and_clock() -> None:
    state = new_state()
    assert state.apply([update(0, 9, BASE_MS + 500)], now_ms=42) == [1]
    assert state.applied_offsets([SOURCE, "other:1"]) == {SOURCE: 9}
    assert state.hgetall(KEYS.watermarks) == {SOURCE: str(BASE_MS + 500)}
    assert state.hgetall(KEYS.watermarks_seen) == {SOURCE: "42"}


def test_a_redelivered_update_is_skipped_without_writing() -> None:
    state = new_state()
    first = update(0, 9)
    first.incr(KEYS.window(BASE_MS), "n", 10)
    state.apply([first], now_ms=0)
    again = update(5, 9)
    again.incr(KEYS.window(BASE_MS), "n", 5)
    assert state.apply([again], now_ms=0) == [0]
    assert state.hgetall(KEYS.window(BASE_MS)) == {"n": "10"}


def test_an_overlapping_update_fails_before_writing_and_the_others_still_apply() -> None:
    state = new_state()
    state.apply([update(0, 9)], now_ms=0)
    overlapping = update(5, 14)
    overlapping.incr(KEYS.window(BASE_MS), "n", 10)
    other = update(0, 3, source="fraud.inferences:1")
    other.incr(KEYS.window(BASE_MS), "n", 4)
    with pytest.raises(ResponseError, match=f"FENCE {SOURCE} applied up to 9, batch starts at 5"):
        state.apply([overlapping, other], now_ms=0)
    assert state.applied_offsets([SOURCE, "fraud.inferences:1"]) == {SOURCE: 9, "fraud.inferences:1": 3}
    assert state.hgetall(KEYS.window(BASE_MS)) == {"n": "4"}


def test_the_watermark_never_moves_back() -> None:
    state = new_state()
    state.apply([update(0, 9, BASE_MS + 5_000)], now_ms=0)
    state.apply([update(10, 19, BASE_MS + 1_000)], now_ms=0)
    assert state.hgetall(KEYS.watermarks)[SOURCE] == str(BASE_MS + 5_000)


# ------------------------------------------------------------------------- windows due


def test_windows_are_due_once_the_slowest_active_source_passes_end_plus_lateness() -> None:
    state = new_state(idle_ms=1_000)
    first = update(0, 0, BASE_MS + WINDOW_MS + LATENESS_MS)
    first.open_window(BASE_MS)
    first.open_window(BASE_MS + WINDOW_MS)
    state.apply([first], now_ms=0)
    state.apply([update(0, 0, BASE_MS + WINDOW_MS + LATENESS_MS - 1, source="fraud.inferences:1")], now_ms=0)
    assert state.open_windows() == [BASE_MS, BASE_MS + WINDOW_MS]
    assert state.global_watermark(now_ms=0) == BASE_MS + WINDOW_MS + LATENESS_MS - 1
    assert state.due_windows(now_ms=0) == []
    state.apply([update(1, 1, BASE_MS + WINDOW_MS + LATENESS_MS, source="fraud.inferences:1")], now_ms=0)
    assert state.due_windows(now_ms=0) == [BASE_MS]


def test_idle_sources_stop_holding_windows_and_all_idle_means_all_due() -> None:
    state = new_state(idle_ms=1_000)
    busy = update(0, 0, BASE_MS + 3 * WINDOW_MS)
    busy.open_window(BASE_MS)
    state.apply([busy], now_ms=5_000)
    state.apply([update(0, 0, BASE_MS, source="fraud.inferences:1")], now_ms=0)
    assert state.global_watermark(now_ms=5_000) == BASE_MS + 3 * WINDOW_MS
    assert state.due_windows(now_ms=5_000) == [BASE_MS]
    assert state.global_watermark(now_ms=60_000) == math.inf
    assert new_state().global_watermark(now_ms=0) == math.inf


def test_open_windows_are_ordered_by_start_and_opened_once() -> None:
    state = new_state()
    u = update()
    for start in (BASE_MS + 2 * WINDOW_MS, BASE_MS, BASE_MS + 2 * WINDOW_MS, BASE_MS + 100 * WINDOW_MS):
        u.open_window(start)
    state.apply([u], now_ms=0)
    assert state.open_windows() == [BASE_MS, BASE_MS + 2 * WINDOW_MS, BASE_MS + 100 * WINDOW_MS]


# --------------------------------------------------------------------------------- ops


def test_hash_ops_increment_add_floats_and_set() -> None:
    state = new_state()
    u = update()
    u.incr("h", "n", 3)
    u.incr("h", "n", 4)
    u.incr_float("h", "sum", 0.5)
    u.incr_float("h", "sum", 2.5)
    u.incr_float("h", "frac", 0.1)
    u.set("h", "d", "text")
    u.set("h", "d", "latest")
    state.apply([u], now_ms=0)
    assert state.hgetall("h") == {"n": "7", "sum": "3", "frac": "0.1", "d": "latest"}


def test_incrementing_a_text_field_fails_like_redis() -> None:
    state = new_state()
    u = update()
    u.set("h", "d", "text")
    u.incr("h", "d", 1)
    with pytest.raises(ResponseError, match="not an integer"):
        state.apply([u], now_ms=0)
    assert state.hgetall("h") == {}  # nothing of a failed update stays, as in the validated script


def test_example_lists_stop_at_their_cap() -> None:
    state = new_state()
    u = update()
    for i in range(5):
        u.add_example("x", {"offset": i}, 3)
    state.apply([u], now_ms=0)
    assert [json.loads(item) for item in state.lrange("x")] == [{"offset": 0}, {"offset": 1}, {"offset": 2}]


def test_distinct_values_are_counted_exactly() -> None:
    state = new_state()
    u = update()
    u.add_distinct("hll", ["a", "b", "a"])
    u.add_distinct("hll", ["c", "b"])
    u.add_distinct("hll", [])
    state.apply([u], now_ms=0)
    assert state.pfcount("hll") == 3
    assert state.pfcount("absent") == 0


def test_set_once_counts_only_the_first_time() -> None:
    state = new_state()
    u = update()
    u.set_once("seen:e1", "1", 60, "counter", ["matched", "total"])
    u.set_once("seen:e1", "2", 60, "counter", ["matched"])
    u.set_once("seen:e2", "1", 60, "counter", ["total"])
    state.apply([u], now_ms=1_000)
    assert state.get("seen:e1") == "1"
    assert state.hgetall("counter") == {"matched": "1", "total": "2"}
    assert state.deadline("seen:e1") == 1_000 + 60_000  # its own EX, not the retention


def test_delete_zadd_and_trim() -> None:
    state = new_state()
    u = update()
    u.set("gone", "f", "v")
    u.delete("gone")
    for score, member in ((5, "m5"), (1, "m1"), (3, "m3")):
        u.zadd("z", score, member)
    u.zadd("z", 7, "m1")  # a member's score is replaced
    u.ztrim_below("z", 5)
    state.apply([u], now_ms=0)
    assert not state.exists("gone")
    assert state.zrange("z") == [("m5", 5.0), ("m1", 7.0)]


def test_keys_get_the_retention_unless_given_their_own_ttl() -> None:
    state = new_state(retention_s=3600)
    u = update()
    u.incr("a", "n", 1)
    u.incr("b", "n", 1)
    u.expire("b", 60)
    u.incr("c", "n", 1)
    u.expire("c", 0)  # 0: leave the key's TTL alone
    state.apply([u], now_ms=10_000)
    assert state.deadline("a") == 10_000 + 3_600_000
    assert state.deadline("b") == 10_000 + 60_000
    assert state.deadline("c") is None
    assert state.purge_expired(now_ms=10_000 + 60_000) == 1
    assert not state.exists("b") and state.exists("a") and state.exists("c")


def test_an_unknown_op_and_a_wrong_type_fail() -> None:
    state = new_state()
    u = update()
    u.ops += ["Q", 5]
    with pytest.raises(ResponseError, match="unknown op Q"):
        state.apply([u], now_ms=0)
    wrong = update(10, 19)
    wrong.set("k", "f", "v")
    wrong.add_distinct("k", ["x"])
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        state.apply([wrong], now_ms=0)


# ------------------------------------------------------------------ snapshot and finish


def test_snapshot_carries_counters_examples_and_distinct_counts() -> None:
    state = new_state()
    window = KEYS.window(BASE_MS)
    u = update()
    u.open_window(BASE_MS)
    u.incr(window, "n", 10)
    u.incr(window, "f|nan|amount|", 2)
    u.add_example(KEYS.examples(BASE_MS, "nan|amount|"), {"partition": 0, "offset": 3}, 5)
    u.incr(window, "f|out_of_range|age|", 1)  # a finding without examples
    u.add_distinct(f"{window}:card:country", ["US", "GB", "US"])
    u.set(window, "hll|card|country", f"{window}:card:country")
    state.apply([u], now_ms=0)
    snapshot = state.snapshot(BASE_MS)
    assert (snapshot.start_ms, snapshot.end_ms, snapshot.events) == (BASE_MS, BASE_MS + WINDOW_MS, 10)
    assert snapshot.fields["card|country"] == "2"
    assert snapshot.fields["hll|card|country"] == f"{window}:card:country"
    assert snapshot.examples == {"nan|amount|": [{"partition": 0, "offset": 3}], "out_of_range|age|": []}
    assert state.snapshot(BASE_MS + WINDOW_MS).fields == {}


def test_finish_closes_a_window_unless_events_arrived_since_the_snapshot() -> None:
    state = new_state()
    u = update(0, 0)
    u.open_window(BASE_MS)
    u.incr(KEYS.window(BASE_MS), "n", 1)
    state.apply([u], now_ms=0)
    assert state.claim(BASE_MS, 1_000)
    assert not state.claim(BASE_MS, 1_000)
    snapshot = state.snapshot(BASE_MS)
    late = update(1, 1)
    late.open_window(BASE_MS)
    late.incr(KEYS.window(BASE_MS), "n", 1)
    state.apply([late], now_ms=0)
    state.finish(snapshot)
    assert state.open_windows() == [BASE_MS]
    assert state.claim(BASE_MS, 1_000)  # the lease went with the first finish
    state.finish(state.snapshot(BASE_MS))
    assert state.open_windows() == []


def test_the_counters_of_a_batch_reach_its_window() -> None:
    n = 6
    batch = EventBatch(
        model="fraud",
        decoded=[Decoded({"amount": float(i)}, []) for i in range(n)],
        topics=["fraud.inferences"] * n,
        partitions=np.array([0, 1, 0, 1, 0, 1]),
        offsets=np.array([0, 0, 1, 1, 2, 2]),
        event_time_ms=np.array([BASE_MS, BASE_MS + 1, BASE_MS + 2, BASE_MS + WINDOW_MS, BASE_MS + 4, BASE_MS + 5]),
        event_ids=[f"e{i}" for i in range(n)],
        failed=np.zeros(n, dtype=bool),
    )
    finding = RowFindings("nan", "amount", np.array([0, 1, 3]), "NaN", "no NaN", [0.0, 1.0, 3.0])
    state = new_state()
    updates = build_updates(batch, [finding], KEYS, window_ms=WINDOW_MS, max_examples=2)
    assert state.apply(updates, now_ms=0) == [1, 1]
    assert state.open_windows() == [BASE_MS, BASE_MS + WINDOW_MS]
    first = state.snapshot(BASE_MS)
    assert first.events == 5 and first.count("f|nan|amount|") == 2
    assert [e["event_id"] for e in first.examples["nan|amount|"]] == ["e0", "e1"]
    assert state.snapshot(BASE_MS + WINDOW_MS).count("f|nan|amount|") == 1
    assert state.applied_offsets(["fraud.inferences:0", "fraud.inferences:1"]) == {
        "fraud.inferences:0": 2,
        "fraud.inferences:1": 2,
    }
