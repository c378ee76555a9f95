"""One incident per cause: which findings of a window move together, and which of them leads.

Pure functions over alerts; :class:`~stream_guard.alerts.lifecycle.IncidentTracker` applies
them to each closed window and to the incidents already open.

Within one window, findings join one *cluster* when

* (a) they name the same feature (the kinds of :data:`TIERS`; not the ``*overflow*`` feature);
* (b) they belong to one burst: every ``undecodable`` finding of the window (its error
  classes) is one cluster, and every ``schema_change`` and ``unexpected_field`` finding of
  the window is one cluster (a writer schema changed), which by (a) takes in the findings
  of the fields the schema change names;
* (c) a cluster holding a ``prediction_drift``, or a drift (``data_drift``, ``online_drift``)
  of one of the model's ``outputs`` (its score and prediction fields), joins the strongest
  cluster of the window with a feature's shift (a finding of tier 1-3 on an input feature);
  without one, the window's prediction drifts are one cluster (the score and the
  prediction moving together);
* (d) the :data:`PERFORMANCE` findings (slice performance, degradation, concept drift,
  calibration drift, the estimated drop) on one slice are one cluster (all traffic: slice
  ``*`` or ``""``), whatever their metric: a concept drift shows as all of them at once.
  Different slices stay apart: the slice attribution already decided they are different
  causes (:mod:`~stream_guard.metrics.attribution`);
* (e) a cluster holding a finding made from the scores alone (:data:`ON_SCORE`: an
  ``estimated_performance_drop``) joins the window's prediction drift, when it has one
  (before rule c, so both follow an input shift together). The estimate is a function of
  the score histogram (CBPE): its drop beside a drift of the scores is one observation of
  one cause, the score shift, told twice. The findings that carry the labels' evidence
  (slice performance, degradation, concept and calibration drift) do not join a prediction
  drift, unless rule (d) ties them to such a drop on their slice: a concept drift
  (P(label | score) changed) is a cause of its own, even while the scores move.

The primary of a cluster is its first finding in :func:`primary_order`: tier (schema >
type/range/sentinel > null/unseen > drift > prediction drift > performance), then
severity, then magnitude (``|value - threshold|``), then count, then names. Other kinds
(``event_time_skew``, ``known_bias``...) are never grouped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from stream_guard.alerts.model import Alert, Related, Severity
from stream_guard.settings.kinds import (
    CALIBRATION_DRIFT,
    CONCEPT_DRIFT,
    ESTIMATED_PERFORMANCE_DROP,
    OVERFLOW,
    PERFORMANCE_DEGRADATION,
    PREDICTION_DRIFT,
    SLICE_UNDERPERFORMANCE,
)

__all__ = [
    "BURSTS",
    "ON_SCORE",
    "PERFORMANCE",
    "TIERS",
    "cluster_keys",
    "cluster_window",
    "early_order",
    "groups_by_feature",
    "has_impact",
    "is_performance",
    "is_prediction_drift",
    "is_shift",
    "level",
    "magnitude",
    "primary_order",
    "rank",
    "related",
    "slice_parts",
]

#: Tier of each groupable kind: the lower, the more likely the cause.
TIERS: dict[str, int] = {
    "undecodable": 0,
    "schema_change": 0,
    "missing_field": 0,
    "unexpected_field": 0,
    "type_mismatch": 1,
    "out_of_range": 1,
    "nan": 1,
    "infinite": 1,
    "sentinel_spike": 1,
    "null_rate": 2,
    "unseen_category": 2,
    "cardinality": 2,
    "data_drift": 3,
    "online_drift": 3,
    PREDICTION_DRIFT: 4,
}
#: The model's performance, label-based or estimated: grouped by slice (rule d).
PERFORMANCE = frozenset(
    {SLICE_UNDERPERFORMANCE, PERFORMANCE_DEGRADATION, CONCEPT_DRIFT, CALIBRATION_DRIFT, ESTIMATED_PERFORMANCE_DROP}
)
#: Performance findings made from the scores alone, which follow a prediction drift (rule e).
ON_SCORE = frozenset({ESTIMATED_PERFORMANCE_DROP})
#: Kinds that make up the bursts of rule (b): each set is one cluster per window.
BURSTS: tuple[frozenset[str], ...] = (frozenset({"undecodable"}), frozenset({"schema_change", "unexpected_field"}))
#: Tiers of a feature's shift, which a prediction drift follows (rule c).
SHIFT_TIERS = frozenset({1, 2, 3})

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def rank(alert: Alert) -> int:
    """0 INFO, 1 WARNING, 2 CRITICAL."""
    return _RANK[alert.severity]


def magnitude(alert: Alert) -> float | None:
    """How far the alert's value is from its threshold; None without both (or if either is not finite)."""
    if alert.value is None or alert.threshold is None:
        return None
    distance = abs(alert.value - alert.threshold)
    return distance if math.isfinite(distance) else None


def primary_order(alert: Alert) -> tuple[int, int, float, int, str, str, str]:
    """Sort key: the primary of a cluster sorts first."""
    size = magnitude(alert)
    tier = TIERS.get(alert.kind, len(TIERS) + (0 if alert.kind in PERFORMANCE else 1))
    return (
        tier,
        -rank(alert),
        -(size if size is not None else -1.0),
        -alert.count,
        alert.kind,
        alert.feature or "",
        alert.slice,
    )


def groups_by_feature(kind: str, feature: str | None) -> bool:
    """Whether rule (a) applies: a groupable kind on a real feature (an error class is none)."""
    return kind in TIERS and kind != "undecodable" and feature not in (None, "", OVERFLOW)


def is_shift(kind: str, feature: str | None, outputs: frozenset[str] = frozenset()) -> bool:
    """An input feature's shift, which a prediction drift may follow (rule c)."""
    return TIERS.get(kind) in SHIFT_TIERS and groups_by_feature(kind, feature) and feature not in outputs


def is_performance(kind: str) -> bool:
    """A finding on the model's performance (rule d)."""
    return kind in PERFORMANCE


def performance_slice(slice_: str) -> str:
    """The slice a performance finding is about, all traffic as ``*`` (concept drift and degradation name ``""``)."""
    return slice_ or "*"


def slice_parts(slice_: str) -> frozenset[str]:
    """The ``field=value`` parts of a slice name (none for all traffic); a parent's are a subset of its crossings'."""
    name = performance_slice(slice_)
    return frozenset() if name == "*" else frozenset(name.split(","))


def is_prediction_drift(kind: str, feature: str | None, outputs: frozenset[str] = frozenset()) -> bool:
    """A drift of the model's output: ``prediction_drift``, or a drift finding on a score or prediction field."""
    return kind == PREDICTION_DRIFT or (TIERS.get(kind) == TIERS["data_drift"] and feature in outputs)


def cluster_keys(alert: Alert, outputs: frozenset[str] = frozenset()) -> list[str]:
    """What joins findings into one cluster: ``feature:<name>``, ``burst:<n>`` (rules a and b),
    ``performance:<slice>`` (performance findings of one slice) and ``prediction:`` (drifts of
    the model's outputs, ``outputs`` naming its score and prediction fields)."""
    keys = [f"feature:{alert.feature or ''}"] if groups_by_feature(alert.kind, alert.feature) else []
    keys += [f"burst:{n}" for n, kinds in enumerate(BURSTS) if alert.kind in kinds]
    keys += [f"performance:{performance_slice(alert.slice)}"] if is_performance(alert.kind) else []
    return keys + (["prediction:"] if is_prediction_drift(alert.kind, alert.feature, outputs) else [])


def early_order(alert: Alert) -> tuple[int, int, str, str, str]:
    """Sort key of an early alert's findings: :func:`primary_order` without magnitude and count.

    A batch's counts depend on where the batch boundaries fall; tier, severity and names do not.
    """
    return (TIERS.get(alert.kind, len(TIERS)), -rank(alert), alert.kind, alert.feature or "", alert.slice)


def cluster_window(alerts: Iterable[Alert], outputs: frozenset[str] = frozenset()) -> list[list[Alert]]:
    """One window's alerts in clusters (rules a-e), each sorted primary first; strongest cluster first.

    ``outputs`` names the model's score and prediction fields: drifts on them count as prediction drift.
    """
    items = sorted(alerts, key=primary_order)
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first: dict[str, int] = {}
    for i, alert in enumerate(items):
        for key in cluster_keys(alert, outputs):
            join(first.setdefault(key, i), i)
    clusters = _collect(items, root)
    predicted = [c for c in clusters if any(is_prediction_drift(a.kind, a.feature, outputs) for a in c)]
    shifted = [c for c in clusters if c not in predicted and any(is_shift(a.kind, a.feature, outputs) for a in c)]
    on_score = [c for c in clusters if c not in predicted and any(a.kind in ON_SCORE for a in c)]
    if predicted and on_score:
        clusters = _merge(clusters, on_score, predicted[0])
    if predicted and shifted:
        clusters = _merge(clusters, predicted, min(shifted, key=lambda c: primary_order(c[0])))
    return sorted((sorted(c, key=primary_order) for c in clusters), key=lambda c: primary_order(c[0]))


def _merge(clusters: list[list[Alert]], moving: list[list[Alert]], target: list[Alert]) -> list[list[Alert]]:
    """``clusters`` with every cluster of ``moving`` folded into ``target``."""
    for cluster in moving:
        if cluster is not target:
            target.extend(cluster)
    return [c for c in clusters if c is target or all(c is not m for m in moving)]


def _collect(items: list[Alert], root: Callable[[int], int]) -> list[list[Alert]]:
    by_root: dict[int, list[Alert]] = {}
    for i, alert in enumerate(items):
        by_root.setdefault(root(i), []).append(alert)
    return list(by_root.values())


def related(evidence: Iterable[Alert]) -> tuple[Related, ...]:
    """The small records a primary's alert carries for its evidence, in primary order."""
    return tuple(
        Related(a.kind, a.feature, a.slice, a.count, a.value, a.threshold, a.severity)
        for a in sorted(evidence, key=primary_order)
    )


def level(findings: Iterable[Alert]) -> int:
    """How serious a window's findings of one incident are, the rank its escalation compares.

    ``2 * severity rank`` (INFO 0, WARNING 2, CRITICAL 4), plus 1 when one of the findings is
    on the model's performance (:data:`~stream_guard.alerts.grouping.PERFORMANCE`) and the
    incident is not informational: at one severity, a cause whose impact on the model is
    known outranks one whose impact is not. 0 stays "informational" (published once).
    """
    items = list(findings)
    top = max((rank(a) for a in items), default=0)
    impact = top > 0 and any(is_performance(a.kind) for a in items)
    return 2 * top + int(impact)


def has_impact(rank_: int) -> bool:
    """Whether a :func:`level` says the performance impact is known (-1, nothing published yet: no)."""
    return rank_ > 0 and rank_ % 2 == 1
