"""Incidents: repeats of one problem update one incident, which opens, cools down and resolves.

An incident is keyed by (model, kind, feature, slice). When a closed window yields an
alert for it:

* no open incident: the incident opens and the alert is published (``FIRING``);
* a window of the incident that was published before (its publication is retried, or
  late events completed its counts): published again under the same ``alert_id``;
* a published window of the incident closer than ``cooldown`` (event time, on either
  side: windows may close out of order): the window is recorded, nothing is published;
* otherwise the alert is published again, as a reminder carrying the new counts. A
  window older than the incident's first (its true onset, closed late) moves its start.

An open incident whose problem was absent for ``resolve_after`` of event time (judged
when later windows close) is closed with one ``RESOLVED`` alert, in two phases:
:meth:`IncidentTracker.resolved` marks the incident and returns the alert, and
:meth:`IncidentTracker.delivered`, called once the broker acknowledged it, replaces the
incident by a tombstone. A worker killed in between leaves the mark; the window is closed
again and the same alert (same ``alert_id``) is returned again. The tombstone keeps an older
window, closed again after the resolution, from reopening the incident.

A window older than the one that opened its incident (windows closed out of order by two
workers) is published too (decision ``onset``): the onset alert names the first window
that showed the problem. A window whose alert was published, closed again (a retry, or
late events reopened it), is published again (``repeat``, the same ``alert_id``) with its
complete counts; the incident records its published windows (``pub|<window end>``).

The records live in the model's state (:class:`~stream_guard.state.protocol.IncidentState`):
on Redis the decisions run in Lua scripts, so workers closing windows concurrently agree
on them; the in-memory store makes the same decisions for the offline replay. Event time, not
wall-clock time, drives both timers: replaying a backlog gives
the same incidents as the live stream did.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import redis

from stream_guard.alerts.model import Alert, Severity
from stream_guard.state.keys import ModelKeys
from stream_guard.state.protocol import IncidentState
from stream_guard.state.window_store import WindowStore


@dataclass(frozen=True)
class LifecycleSettings:
    cooldown_s: int = 600
    resolve_after_s: int = 300


class IncidentTracker:
    """Filters a closed window's alerts through the incidents of one model.

    Parameters
    ----------
    state
        The model's incident records: a store (:class:`~stream_guard.state.protocol.IncidentState`,
        Redis or memory), or a Redis client for a Redis store on ``keys``.
    keys
        The model's keys; only used with a Redis client.
    settings
        Cooldown and resolve timers (event time).
    """

    def __init__(
        self,
        state: IncidentState | redis.Redis,
        keys: ModelKeys | None = None,
        settings: LifecycleSettings | None = None,
    ) -> None:
        if isinstance(state, redis.Redis):
            if keys is None:
                raise TypeError("IncidentTracker on a Redis client needs the model's keys")
            state = WindowStore.for_client(state, keys)
        self._state: IncidentState = state
        self._settings = settings or LifecycleSettings()
        #: Incidents marked resolved, by the end of the window that resolved them.
        self._resolving: dict[int, list[str]] = {}

    def publishable(self, alerts: list[Alert]) -> list[Alert]:
        """The alerts of one window that open an incident or remind of one."""
        out = []
        for alert in alerts:
            decision = self._state.observe_incident(
                alert.incident_id,
                alert.window_start,
                alert.window_end,
                self._settings.cooldown_s * 1000,
                alert.count,
                json.dumps(_summary(alert)),
            )
            if decision in ("open", "remind", "repeat", "onset"):
                out.append(alert)
        return out

    def resolved(self, window_end: int, still_firing: set[str]) -> list[Alert]:
        """RESOLVED alerts for incidents absent from every window up to ``window_end``.

        The incidents stay (marked) until :meth:`delivered` is called with the same ``window_end``.
        """
        horizon = window_end - self._settings.resolve_after_s * 1000
        candidates = self._state.incidents_seen_until(horizon)
        out = []
        marked = self._resolving.setdefault(window_end, [])
        for incident_id in candidates:
            if incident_id in still_firing:
                continue
            fields = self._state.resolve_incident(incident_id, window_end)
            if fields is None:
                continue
            if incident_id not in marked:
                marked.append(incident_id)
            summary = json.loads(fields["alert"])
            opened, last_seen = int(fields["opened_start"]), int(fields["last_seen_end"])
            out.append(
                Alert(
                    model=summary["model"],
                    kind=summary["kind"],
                    feature=summary["feature"],
                    slice=summary["slice"],
                    severity=Severity(summary["severity"]),
                    window_start=opened,
                    window_end=last_seen,
                    count=int(fields["events"]),
                    total=0,
                    rate=0.0,
                    observed=f"clear since {last_seen} (event time), {fields['windows']} windows affected",
                    expected=summary["expected"],
                    detector=summary["detector"],
                    message=(
                        f"RESOLVED {summary['kind']} {summary['feature'] or ''}: no finding for "
                        f"{self._settings.resolve_after_s}s of event time; {fields['events']} events "
                        f"in {fields['windows']} windows were affected"
                    ),
                    status="RESOLVED",
                )
            )
        return out

    def delivered(self, window_end: int) -> None:
        """The RESOLVED alerts of the window ending at ``window_end`` were acknowledged: forget the incidents."""
        for incident_id in self._resolving.pop(window_end, []):
            self._state.close_incident(incident_id, window_end)


def _summary(alert: Alert) -> dict[str, object]:
    keep = ("model", "kind", "feature", "slice", "expected", "detector")
    record = {k: v for k, v in dataclasses.asdict(alert).items() if k in keep}
    record["severity"] = alert.severity.value
    return record
