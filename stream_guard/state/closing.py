"""Closing the windows the watermark has passed: one loop for the worker and the offline replay."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from stream_guard.state.protocol import WindowState
from stream_guard.state.update import WindowSnapshot

_T = TypeVar("_T")


@dataclass
class ClosedWindows(Generic[_T]):
    """What one pass closed: the window starts, and what ``close`` returned for each, in order."""

    starts: list[int] = field(default_factory=list)
    outputs: list[_T] = field(default_factory=list)


def close_due_windows(
    store: WindowState,
    close: Callable[[WindowSnapshot], _T],
    *,
    now_ms: int,
    lease_ms: int,
    final: bool = False,
    ready: Callable[[int], bool] | None = None,
    finish: bool = True,
) -> ClosedWindows[_T]:
    """Close every due window of ``store`` (every open one if ``final``), oldest first.

    For each window: take its lease (skip it if another holder has it), read its
    snapshot, call ``close(snapshot)`` (evaluate, publish and flush the alerts), and only
    then :meth:`~stream_guard.state.protocol.WindowState.finish` it. If ``close`` raises,
    the window stays open and its lease expires, so it is closed again later
    (at-least-once); the error propagates.

    ``ready(start)`` False keeps a due window open for a later pass, and every due window
    after it too, so windows still close in start order (a window whose label-based checks
    wait for the label watermark: :mod:`stream_guard.metrics.label_gate`); ``final`` closes
    them anyway.

    ``finish=False``: ``close`` finishes the window itself, once its alerts are delivered
    for good (:mod:`stream_guard.transactions`).
    """
    closed: ClosedWindows[_T] = ClosedWindows()
    starts = store.open_windows() if final else store.due_windows(now_ms)
    for start in starts:
        if not final and ready is not None and not ready(start):
            break
        if not store.claim(start, lease_ms):
            continue
        snapshot = store.snapshot(start)
        output = close(snapshot)
        if finish:
            store.finish(snapshot)
        closed.starts.append(start)
        closed.outputs.append(output)
    return closed
