"""Incidents: repeats of one problem update one incident, which opens, cools down and resolves.

An incident is keyed by (model, kind, feature, slice). When a closed window yields an
alert for it:

* no open incident: the incident opens and the alert is published (``FIRING``);
* an open incident last published less than ``cooldown`` ago (event time): the
  window is recorded on the incident but nothing is published;
* otherwise the alert is published again, as a reminder carrying the new counts.

An open incident whose problem was absent for ``resolve_after`` of event time (judged
when later windows close) is closed with one ``RESOLVED`` alert.

The decisions run in Redis Lua scripts, so workers closing windows concurrently agree
on them. Event time, not wall-clock time, drives both timers: replaying a backlog gives
the same incidents as the live stream did.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import cast

import redis

from stream_guard.alerts.model import Alert, Severity
from stream_guard.state.keys import ModelKeys

# KEYS: incident hash, incidents zset. ARGV: incident id, window start, window end, cooldown ms, count, alert json.
_OBSERVE = """
local seen = tonumber(redis.call('HGET', KEYS[1], 'last_seen_end') or '-1')
if tonumber(ARGV[3]) > seen then
  redis.call('HINCRBY', KEYS[1], 'windows', 1)
  redis.call('HINCRBY', KEYS[1], 'events', ARGV[5])
  redis.call('HSET', KEYS[1], 'last_seen_end', ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
local last = redis.call('HGET', KEYS[1], 'last_published_end')
if not last then
  redis.call('HSET', KEYS[1], 'opened_start', ARGV[2], 'last_published_end', ARGV[3], 'alert', ARGV[6])
  return 'open'
end
-- The same window again (its earlier publication failed and is retried): publish again.
if tonumber(last) == tonumber(ARGV[3]) then return 'repeat' end
if tonumber(ARGV[3]) - tonumber(last) >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'last_published_end', ARGV[3], 'alert', ARGV[6])
  return 'remind'
end
return 'suppress'
"""

# KEYS: incidents zset, incident hash. ARGV: incident id. Only one worker wins the ZREM.
_RESOLVE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
local state = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
return state
"""


@dataclass(frozen=True)
class LifecycleSettings:
    cooldown_s: int = 600
    resolve_after_s: int = 300


class IncidentTracker:
    """Filters a closed window's alerts through the incidents of one model."""

    def __init__(self, client: redis.Redis, keys: ModelKeys, settings: LifecycleSettings) -> None:
        self._keys = keys
        self._settings = settings
        self._observe = client.register_script(_OBSERVE)
        self._resolve = client.register_script(_RESOLVE)
        self._redis = client

    def _incident_key(self, incident_id: str) -> str:
        return f"{self._keys.base}:incident:{incident_id}"

    @property
    def _index(self) -> str:
        return f"{self._keys.base}:incidents"

    def publishable(self, alerts: list[Alert]) -> list[Alert]:
        """The alerts of one window that open an incident or remind of one."""
        out = []
        for alert in alerts:
            decision = self._observe(
                keys=[self._incident_key(alert.incident_id), self._index],
                args=[
                    alert.incident_id,
                    alert.window_start,
                    alert.window_end,
                    self._settings.cooldown_s * 1000,
                    alert.count,
                    json.dumps(_summary(alert)),
                ],
            )
            if decision in ("open", "remind", "repeat"):
                out.append(alert)
        return out

    def resolved(self, window_end: int, still_firing: set[str]) -> list[Alert]:
        """RESOLVED alerts for incidents absent from every window up to ``window_end``."""
        horizon = window_end - self._settings.resolve_after_s * 1000
        # The client decodes responses (``decode_responses=True``): members are str.
        candidates = cast("list[str]", self._redis.zrangebyscore(self._index, "-inf", horizon))
        out = []
        for incident_id in candidates:
            if incident_id in still_firing:
                continue
            state = self._resolve(keys=[self._index, self._incident_key(incident_id)], args=[incident_id])
            if not state:
                continue
            fields = dict(zip(state[::2], state[1::2], strict=True))
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


def _summary(alert: Alert) -> dict[str, object]:
    keep = ("model", "kind", "feature", "slice", "expected", "detector")
    record = {k: v for k, v in dataclasses.asdict(alert).items() if k in keep}
    record["severity"] = alert.severity.value
    return record
