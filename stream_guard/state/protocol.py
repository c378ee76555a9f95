"""The window-state interface: what the worker, the offline replay and the label join need of a store.

Two stores implement it: :class:`~stream_guard.state.window_store.WindowStore` (Redis,
shared by every worker of a model) and :class:`~stream_guard.state.memory.MemoryState`
(process memory, for the offline replay). ``tests/state/test_conformance.py`` runs the
same sequences against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from stream_guard.state.incident import Observation, ReminderPolicy
from stream_guard.state.keys import Fence, ModelKeys
from stream_guard.state.update import HeldInputs, StateUpdate, WindowSnapshot


class FencedState(Protocol):
    """Applies :class:`StateUpdate` s, fenced per source partition."""

    @property
    def keys(self) -> ModelKeys: ...

    def applied_offsets(self, sources: Sequence[str], fence: Fence = Fence.EVENTS) -> dict[str, int]:
        """Last applied offset of each ``topic:partition`` (absent: nothing applied yet)."""
        ...

    def apply(self, updates: Sequence[StateUpdate], now_ms: int) -> Any:
        """Apply ``updates`` in order, each behind its fence: 1 per applied update, 0 per skipped one.

        Every update runs; the first error (an overlapping redelivery: ``FENCE ...``) is
        raised afterwards as :class:`redis.exceptions.ResponseError`.
        """
        ...


class WindowState(FencedState, Protocol):
    """Event-time windows: watermarks, due windows and closing them."""

    @property
    def window_ms(self) -> int: ...

    def register_sources(self, sources: Sequence[str], now_ms: int, fence: Fence = Fence.EVENTS) -> None:
        """Make newly assigned partitions hold windows open until they send data or go idle."""
        ...

    def touch_sources(self, sources: Sequence[str], now_ms: int, fence: Fence = Fence.EVENTS) -> None:
        """Mark ``sources`` active at ``now_ms`` (partitions with a backlog), keeping their watermarks."""
        ...

    def global_watermark(self, now_ms: int) -> float:
        """Smallest watermark over partitions updated within the idle timeout; inf when none is."""
        ...

    def due_windows(self, now_ms: int) -> list[int]:
        """Open windows whose end plus the allowed lateness the global watermark has passed."""
        ...

    def open_windows(self) -> list[int]: ...

    def claim(self, start_ms: int, lease_ms: int) -> bool:
        """Take the right to close a window for ``lease_ms``; False if another holder has it."""
        ...

    def snapshot(self, start_ms: int) -> WindowSnapshot: ...

    def finish(self, snapshot: WindowSnapshot) -> None:
        """Mark a window closed (unless events arrived since ``snapshot``) and drop its lease."""
        ...


class LabelState(FencedState, Protocol):
    """What the label join reads; it writes through :meth:`FencedState.apply` (``Fence.LABELS``)."""

    def join_inputs(self, sources: Sequence[str], event_ids: Sequence[str]) -> tuple[dict[str, int], list[str | None]]:
        """In one read: the labels fence of ``sources``, and the stored prediction of each event id."""
        ...

    def label_inputs(
        self, sources: Sequence[str], event_ids: Sequence[str]
    ) -> tuple[dict[str, int], list[str | None], list[str | None]]:
        """In one read: the labels fence of ``sources``, the stored prediction and the held label of each id."""
        ...

    def held_inputs(self, event_ids: Sequence[str], now_ms: int) -> HeldInputs:
        """The held label of each event id and the stored prediction of each held one, the events'
        global watermark and the label time of the oldest held label."""
        ...

    def held_until(self, until_ms: int) -> list[tuple[str, int]]:
        """Held event ids whose label time is at or before ``until_ms``, with that time, oldest first."""
        ...

    def label_watermark(self, now_ms: int) -> float:
        """Smallest label watermark over labels partitions updated within the idle timeout.

        ``inf`` when every known labels partition is idle, ``-inf`` when none is known yet.
        """
        ...


class IncidentState(Protocol):
    """The incident records of one model (see :mod:`stream_guard.alerts.lifecycle`)."""

    def observe_incident(self, incident_id: str, seen: Observation, policy: ReminderPolicy) -> str:
        """Record a window's findings on their incident: ``open``, ``repeat``, ``onset``, ``escalate``,
        ``remind``, ``suppress``, ``resolved`` (a window the resolved incident already covered) or
        ``update`` (the window an early alert opened the incident at: published, full counts)."""
        ...

    def fire_early(self, incident_id: str, seen: Observation, claims: Sequence[str] = ()) -> str:
        """An early alert: a batch shows critical findings (``seen``, of one cause) in a window.

        Atomically: ``claimed`` if another incident fired early for one of ``claims`` (the
        cause's bursts or features) in the window; ``resolved`` if a resolved incident
        covered the window; ``open`` if the incident is open; else the incident opens (no
        window counted yet: its window's close counts it and publishes the update) and
        ``fire``, which is also the answer while the early alert of this window awaits
        :meth:`early_delivered` (a batch retried after a failure publishes it again).
        """
        ...

    def early_delivered(self, incident_id: str, window_end: int) -> None:
        """The early alert of the incident for the window ending at ``window_end`` was acknowledged."""
        ...

    def open_incidents(self) -> dict[str, dict[str, str]]:
        """Every open incident's record, by id (its members as fields ``m|<id>`` and ``s|<id>``)."""
        ...

    def incidents_seen_until(self, end_ms: int) -> list[str]:
        """Open incidents whose last window ended at or before ``end_ms``, oldest first."""
        ...

    def resolve_incident(self, incident_id: str, window_end: int) -> dict[str, str] | None:
        """Phase 1 of a resolution: mark an open incident resolved by the window ending at ``window_end``.

        Returns its record, again if the same window asks again (closed again after a failure);
        None if it is not open or another window's resolution of it awaits delivery.
        """
        ...

    def confirm_incident(self, incident_id: str, window_end: int) -> bool:
        """Mark an open incident confirmed (by its labels) by the window ending at ``window_end``.

        True the first time, and again when the same window asks again (closed again after a
        failure, so its alert is published again); False if another window confirmed it or it is not open.
        """
        ...

    def close_incident(self, incident_id: str, window_end: int, members: Sequence[str] = ()) -> bool:
        """Phase 2, once the RESOLVED alert was delivered: replace the record by a tombstone.

        The tombstone (TTL: the retention) holds how far the incident reached, so a window it
        covered, closed again later, does not reopen it; each of ``members`` (the incident's
        other findings) not open on its own gets one too. False if the mark is not ``window_end``'s.
        """
        ...


class ModelState(WindowState, LabelState, IncidentState, Protocol):
    """Everything one model keeps: both stores implement all of it."""
