"""Which open incident a window's cluster of findings joins: the rules across windows.

:func:`~stream_guard.alerts.grouping.cluster_window` groups one window's findings;
:class:`~stream_guard.alerts.lifecycle.IncidentTracker` then asks :func:`joins_incident`
of each open incident whether a cluster belongs to it (see the lifecycle's docstring for
the rules), reading the incident records' members (:func:`incident_members`).
"""

from __future__ import annotations

from collections.abc import Iterable

from stream_guard.alerts.grouping import (
    BURSTS,
    ON_SCORE,
    groups_by_feature,
    is_performance,
    is_prediction_drift,
    is_shift,
    slice_parts,
)
from stream_guard.alerts.model import Alert

__all__ = ["incident_holding", "incident_members", "joins_incident"]


def incident_members(record: dict[str, str]) -> dict[str, tuple[str, int]]:
    """An incident record's findings: id -> (``kind|feature|slice``, end of its last window)."""
    return {
        name[2:]: (descriptor, int(record.get(f"s|{name[2:]}", "-1")))
        for name, descriptor in record.items()
        if name.startswith("m|")
    }


def incident_holding(finding_id: str, open_: dict[str, dict[str, str]]) -> str | None:
    """The open incident a finding belongs to: its own, else the earliest opened that holds it as evidence."""
    if finding_id in open_:
        return finding_id
    holders = [c for c, record in open_.items() if f"m|{finding_id}" in record]
    return min(holders, key=lambda c: (int(open_[c].get("opened_start", "0")), c)) if holders else None


def joins_incident(
    cluster: list[Alert], members: dict[str, tuple[str, int]], start: int, outputs: frozenset[str]
) -> bool:
    """Whether a window's cluster joins an open incident with these members (rules: the lifecycle's docstring)."""
    if any(a.incident_id in members for a in cluster):
        return True
    recent = [descriptor.split("|", 2)[:2] for descriptor, last in members.values() if last >= start]
    for alert in cluster:
        for kind, feature in recent:
            same_feature = feature == alert.feature and groups_by_feature(kind, feature)
            if same_feature and groups_by_feature(alert.kind, alert.feature):
                return True
            if any(alert.kind in burst and kind in burst for burst in BURSTS):
                return True
            predicted = is_prediction_drift(alert.kind, alert.feature, outputs)
            if predicted and is_shift(kind, feature or None, outputs) and feature != alert.feature:
                return True
            if predicted and is_prediction_drift(kind, feature or None, outputs):
                return True
            if predicted and kind in ON_SCORE:
                return True
            if alert.kind in ON_SCORE and is_prediction_drift(kind, feature or None, outputs):
                return True
    return any(_same_performance(alert, members.values(), start) for alert in cluster)


def _same_performance(alert: Alert, members: Iterable[tuple[str, int]], start: int) -> bool:
    """A performance finding on a slice an open incident's recent performance finding is about, or covers.

    The same slice (any performance kind, as rule (d) groups them in one window), or a
    parent of it with the same kind and metric (``*`` is every slice's): a slice alert of a
    later evaluation joins the incident of the broader drop it is part of, as attribution
    would have made it evidence in one evaluation. Never the other way round: a broader
    drop does not join the incident of one slice.
    """
    if not is_performance(alert.kind):
        return False
    mine = slice_parts(alert.slice)
    for descriptor, last in members:
        kind, feature, slice_ = descriptor.split("|", 2)
        if last < start or not is_performance(kind):
            continue
        theirs = slice_parts(slice_)
        if theirs == mine or (theirs < mine and kind == alert.kind and feature == (alert.feature or "")):
            return True
    return False
