"""What a closed window tells an incident, encoded once for both stores.

:meth:`~stream_guard.state.protocol.IncidentState.observe_incident` takes an
:class:`Observation` and a :class:`ReminderPolicy`; :func:`observe_args` turns them into
the argument list of the Lua script, which :class:`~stream_guard.state.memory.MemoryState`
reads too, so both stores see the very same strings (floats as Python's ``repr``, which
Lua's ``tonumber`` reads back exactly).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Fixed arguments of the observe script before the members: id, start, end, count,
#: summary, cooldown, remind, factor, rank, magnitude, rate, member count, refresh.
OBSERVE_FIXED = 13
#: ``magnitude`` and ``rate`` when the window has none.
ABSENT = "-1"


@dataclass(frozen=True)
class ReminderPolicy:
    """When an open incident is published again (event time, milliseconds).

    A window publishes when it *escalates* the incident (a higher rank, the lifecycle's
    level, than any published window, or a magnitude or rate at least ``factor`` times the
    largest published), or when no published window lies within ``remind_ms`` of it; never
    within ``cooldown_ms`` of a published window. Rank 0 (informational) is
    published once: neither reminded nor escalated by magnitude or rate.
    """

    cooldown_ms: int
    remind_ms: int
    factor: float


@dataclass(frozen=True)
class Observation:
    """One window's findings of one incident."""

    window_start: int
    window_end: int
    #: Events of the window's primary finding.
    count: int
    #: JSON summary of the finding the incident is named after (its RESOLVED alert's).
    summary: str
    #: The window's level of the incident (:func:`~stream_guard.alerts.grouping.level`: 2 x the severity rank
    #: of its most severe finding, + 1 with a performance finding; 0 is informational).
    rank: int
    #: Distance of the opening finding's value from its threshold in this window, if it has one.
    magnitude: float | None = None
    #: Rate of the opening finding in this window, if it is there.
    rate: float | None = None
    #: The findings of the window in this incident: member id -> ``kind|feature|slice``.
    members: Mapping[str, str] = field(default_factory=dict)
    #: The summary is that finding's own in this window: a publication makes it the incident's.
    #: (False: the finding is absent, ``summary`` stands in for it only if the incident opens.)
    refresh: bool = True


def _number(value: float | None) -> str:
    return ABSENT if value is None or value < 0 else repr(float(value))


def observe_args(incident_id: str, seen: Observation, policy: ReminderPolicy) -> list[str]:
    """The observe script's ARGV (the memory store parses the same list)."""
    args = [
        incident_id,
        str(seen.window_start),
        str(seen.window_end),
        str(seen.count),
        seen.summary,
        str(policy.cooldown_ms),
        str(policy.remind_ms),
        repr(float(policy.factor)),
        str(seen.rank),
        _number(seen.magnitude),
        _number(seen.rate),
        str(len(seen.members)),
        "1" if seen.refresh else "0",
    ]
    for member, descriptor in sorted(seen.members.items()):
        args += [member, descriptor]
    return args


def early_args(incident_id: str, seen: Observation, claim_ttl_s: int) -> list[str]:
    """The early script's ARGV (the memory store parses the same list)."""
    args = [
        incident_id,
        str(seen.window_start),
        str(seen.window_end),
        seen.summary,
        str(claim_ttl_s),
        str(len(seen.members)),
    ]
    for member, descriptor in sorted(seen.members.items()):
        args += [member, descriptor]
    return args
