"""The incident scripts of :mod:`stream_guard.state.redis_incidents` in Python, for the memory store.

Each method makes the decision of its Lua script on the same arguments
(:func:`~stream_guard.state.incident.observe_args`) and leaves the same fields behind;
``tests/state/test_conformance.py`` compares both stores' key spaces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from stream_guard.state.incident import Observation, ReminderPolicy, early_args, observe_args
from stream_guard.state.keys import ModelKeys
from stream_guard.state.keyspace import MemoryKeySpace, ZSet


class MemoryIncidents(MemoryKeySpace):
    """Implements :class:`~stream_guard.state.protocol.IncidentState` on the in-memory key space."""

    keys: ModelKeys
    _retention_s: int
    #: now_ms of the last update applied: tombstones' TTLs count from it.
    _clock: int

    def observe_incident(self, incident_id: str, seen: Observation, policy: ReminderPolicy) -> str:
        """Record a window's findings on their incident: ``open``, ``repeat``, ``onset``, ``escalate``,
        ``remind``, ``suppress`` or ``resolved`` (a window the resolved incident already covered)."""
        argv = observe_args(incident_id, seen, policy)
        key = self.keys.incident(incident_id)
        record = self._existing(key, dict)
        if record is not None and "resolved_through" in record:
            if seen.window_end <= int(record["resolved_through"]):
                return "resolved"
            self._delete(key)
            record = None
        if record is not None:
            record.pop("resolving", None)
        last_seen = int(record.get("last_seen_end", "-1")) if record is not None else -1
        if seen.window_end > last_seen:
            self._hincrby(key, "windows", 1)
            self._hincrby(key, "events", int(seen.count))
            self._create(key, dict)["last_seen_end"] = str(seen.window_end)
            self._create(self.keys.incidents, ZSet)[incident_id] = float(seen.window_end)
        record = self._create(key, dict)
        for member, descriptor in sorted(seen.members.items()):
            record[f"m|{member}"] = descriptor
            if seen.window_end > int(record.get(f"s|{member}", "-1")):
                record[f"s|{member}"] = str(seen.window_end)
        rank, magnitude, rate = argv[8], argv[9], argv[10]
        published = f"pub|{seen.window_end}"

        def publish() -> None:
            record[published] = "1"
            for name, value in (("peak_rank", rank), ("peak_magnitude", magnitude), ("peak_rate", rate)):
                if float(value) > float(record.get(name, "-1")):
                    record[name] = value

        last = record.get("last_published_end")
        if record.get("early") == str(seen.window_end):
            record.pop("early_pending", None)
            if last is None or seen.window_end > int(last):
                record["last_published_end"] = str(seen.window_end)
                if seen.refresh:
                    record["alert"] = seen.summary
            publish()
            return "update"
        if last is None:
            record.update(
                opened_start=str(seen.window_start), last_published_end=str(seen.window_end), alert=seen.summary
            )
            publish()
            return "open"
        if published in record:
            return "repeat"
        peak_rank = int(record.get("peak_rank", "-1"))
        informational = seen.rank == 0 and peak_rank <= 0
        if seen.window_start < int(record["opened_start"]):
            record["opened_start"] = str(seen.window_start)
            if informational:
                return "suppress"
            publish()
            return "onset"
        ends = [int(f[4:]) for f in record if f.startswith("pub|")]
        nearest = min((abs(end - seen.window_end) for end in ends), default=math.inf)
        if informational or nearest < policy.cooldown_ms:
            return "suppress"
        factor = float(argv[7])
        peak_magnitude = float(record.get("peak_magnitude", "-1"))
        peak_rate = float(record.get("peak_rate", "-1"))
        if (
            seen.rank > peak_rank
            or (peak_magnitude > 0 and float(magnitude) >= factor * peak_magnitude)
            or (peak_rate > 0 and float(rate) >= factor * peak_rate)
        ):
            decision = "escalate"
        elif nearest >= policy.remind_ms:
            decision = "remind"
        else:
            return "suppress"
        publish()
        if seen.window_end > int(last):
            record["last_published_end"] = str(seen.window_end)
            if seen.refresh:
                record["alert"] = seen.summary
        return decision

    def fire_early(self, incident_id: str, seen: Observation, claims: Sequence[str] = ()) -> str:
        """Open an incident at a batch (its early alert): ``fire``, ``open``, ``claimed`` or ``resolved``."""
        argv = early_args(incident_id, seen, self._retention_s)
        claim_keys = [self.keys.early_claim(seen.window_start, claim) for claim in sorted(set(claims))]
        for claim in claim_keys:
            owner = self.get(claim)
            if owner is not None and owner != incident_id:
                return "claimed"
        key = self.keys.incident(incident_id)
        record = self._existing(key, dict)
        if record is not None and "resolved_through" in record:
            if seen.window_end <= int(record["resolved_through"]):
                return "resolved"
            self._delete(key)
            record = None
        if record is not None:
            pending = record.get("early") == str(seen.window_end) and "early_pending" in record
            return "fire" if pending else "open"
        record = self._create(key, dict)
        record.update(opened_start=argv[1], alert=argv[3], early=argv[2], early_pending="1")
        for member, descriptor in sorted(seen.members.items()):
            record[f"m|{member}"] = descriptor
            record[f"s|{member}"] = argv[2]
        self._create(self.keys.incidents, ZSet)[incident_id] = float(seen.window_end)
        for claim in claim_keys:
            self._data[claim] = incident_id
            self._deadlines[claim] = self._clock + self._retention_s * 1000
        return "fire"

    def early_delivered(self, incident_id: str, window_end: int) -> None:
        """The early alert of the incident, for the window ending at ``window_end``, was acknowledged."""
        record = self._existing(self.keys.incident(incident_id), dict)
        if record is not None and record.get("early") == str(window_end):
            record.pop("early_pending", None)

    def open_incidents(self) -> dict[str, dict[str, str]]:
        """Every open incident's record, by id."""
        out = {}
        for member, _ in self.zrange(self.keys.incidents):
            record = self.hgetall(self.keys.incident(member))
            if record:
                out[member] = record
        return out

    def incidents_seen_until(self, end_ms: int) -> list[str]:
        """Open incidents whose last window ended at or before ``end_ms``, oldest first."""
        return [member for member, score in self.zrange(self.keys.incidents) if score <= end_ms]

    def resolve_incident(self, incident_id: str, window_end: int) -> dict[str, str] | None:
        """Mark an open incident resolved by the window ending at ``window_end``; its record, or None."""
        index = self._existing(self.keys.incidents, ZSet)
        if index is None or incident_id not in index:
            return None
        record = self._create(self.keys.incident(incident_id), dict)
        if "last_seen_end" not in record:
            return None  # opened by an early alert, its window not closed yet
        mark = record.get("resolving")
        if mark is not None and mark != str(window_end):
            return None
        record["resolving"] = str(window_end)
        return dict(record)

    def confirm_incident(self, incident_id: str, window_end: int) -> bool:
        """Mark an open incident confirmed by the window ending at ``window_end`` (once; again for that window)."""
        index = self._existing(self.keys.incidents, ZSet)
        if index is None or incident_id not in index:
            return False
        record = self._create(self.keys.incident(incident_id), dict)
        mark = record.get("confirmed")
        if mark is not None and mark != str(window_end):
            return False
        record["confirmed"] = str(window_end)
        return True

    def close_incident(self, incident_id: str, window_end: int, members: Sequence[str] = ()) -> bool:
        """Forget an incident once its RESOLVED alert was delivered, keeping tombstones (retention TTL)."""
        key = self.keys.incident(incident_id)
        record = self._existing(key, dict)
        if record is None or record.get("resolving") != str(window_end):
            return False
        index = self._existing(self.keys.incidents, ZSet)
        if index is not None:
            index.pop(incident_id, None)
            if not index:
                self._delete(self.keys.incidents)
        through = record.get("last_seen_end", "")
        self._delete(key)
        for tombstone in [key, *map(self.keys.incident, members)]:
            other = self._existing(tombstone, dict)
            if other is not None and "last_seen_end" in other:
                continue  # a finding open as an incident of its own
            self._create(tombstone, dict)["resolved_through"] = through
            self._deadlines[tombstone] = self._clock + self._retention_s * 1000
        return True
