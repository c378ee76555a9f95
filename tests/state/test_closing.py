"""Unit tests for stream_guard.state.closing: one close-due-windows loop over any window store."""

from __future__ import annotations

import pytest

from stream_guard.state import MemoryState, ModelKeys, StateUpdate, WindowSnapshot, close_due_windows

KEYS = ModelKeys("sg", "fraud")
WINDOW_MS = 10_000
BASE_MS = 1_700_000_000_000


def state_with_windows(*event_ms: int) -> MemoryState:
    """A store with one event at each of ``event_ms`` (one source, offsets in order)."""
    state = MemoryState(KEYS, window_ms=WINDOW_MS, lateness_ms=1_000)
    for offset, ms in enumerate(event_ms):
        u = StateUpdate("t:0", offset, offset, ms)
        start = ms // WINDOW_MS * WINDOW_MS
        u.open_window(start)
        u.incr(KEYS.window(start), "n", 1)
        state.apply([u], now_ms=0)
    return state


def test_closes_due_windows_oldest_first_and_returns_what_close_returned() -> None:
    """Windows whose end plus the lateness the watermark passed close in start order; the others stay."""
    state = state_with_windows(BASE_MS + 1, BASE_MS + WINDOW_MS + 2, BASE_MS + 2 * WINDOW_MS + 1_000)
    seen: list[WindowSnapshot] = []

    def close(snapshot: WindowSnapshot) -> int:
        seen.append(snapshot)
        return snapshot.events

    closed = close_due_windows(state, close, now_ms=0, lease_ms=1_000)
    assert closed.starts == [BASE_MS, BASE_MS + WINDOW_MS]
    assert closed.outputs == [1, 1]
    assert [s.start_ms for s in seen] == closed.starts
    assert state.open_windows() == [BASE_MS + 2 * WINDOW_MS]


def test_final_closes_every_open_window() -> None:
    """final=True ignores the watermark (shutdown, end of a replay)."""
    state = state_with_windows(BASE_MS + 1, BASE_MS + 5 * WINDOW_MS)
    closed = close_due_windows(state, lambda s: None, now_ms=0, lease_ms=1_000, final=True)
    assert closed.starts == [BASE_MS, BASE_MS + 5 * WINDOW_MS]
    assert state.open_windows() == []


def test_a_window_not_ready_holds_it_and_every_later_window_until_final() -> None:
    """ready(start) False keeps that due window open, and the ones after it: windows close in start order."""
    state = state_with_windows(
        BASE_MS + 1, BASE_MS + WINDOW_MS + 1, BASE_MS + 2 * WINDOW_MS + 1, BASE_MS + 9 * WINDOW_MS
    )
    waiting = BASE_MS + WINDOW_MS
    closed = close_due_windows(state, lambda s: s.start_ms, now_ms=0, lease_ms=1_000, ready=lambda s: s != waiting)
    assert closed.starts == [BASE_MS]
    assert state.open_windows() == [waiting, waiting + WINDOW_MS, BASE_MS + 9 * WINDOW_MS]
    closed = close_due_windows(state, lambda s: s.start_ms, now_ms=0, lease_ms=1_000, ready=lambda s: True)
    assert closed.starts == [waiting, waiting + WINDOW_MS]
    final = close_due_windows(state, lambda s: s.start_ms, now_ms=0, lease_ms=1_000, final=True, ready=lambda s: False)
    assert final.starts == [BASE_MS + 9 * WINDOW_MS]


def test_a_window_another_holder_claimed_is_skipped() -> None:
    """A held lease means someone else is closing the window: it is neither read nor finished here."""
    state = state_with_windows(BASE_MS + 1, BASE_MS + 3 * WINDOW_MS)
    assert state.claim(BASE_MS, 1_000)
    closed = close_due_windows(state, lambda s: s.start_ms, now_ms=0, lease_ms=1_000)
    assert closed.starts == []
    assert state.open_windows() == [BASE_MS, BASE_MS + 3 * WINDOW_MS]


def test_a_failing_close_leaves_the_window_open() -> None:
    """If close raises (alerts not delivered) the window is not finished: it closes again later."""
    state = state_with_windows(BASE_MS + 1, BASE_MS + 3 * WINDOW_MS)

    def fail(snapshot: WindowSnapshot) -> None:
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError, match="broker down"):
        close_due_windows(state, fail, now_ms=0, lease_ms=1_000)
    assert state.open_windows() == [BASE_MS, BASE_MS + 3 * WINDOW_MS]
    assert state.exists(KEYS.lease(BASE_MS)), "the lease stays until it expires"
