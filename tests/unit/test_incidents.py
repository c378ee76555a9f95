"""Unit tests for stream_guard.alerts.grouping and the rules of IncidentTracker (on the in-memory store, no servers)."""

from __future__ import annotations

import dataclasses

from stream_guard.alerts.grouping import cluster_window, level, magnitude, primary_order
from stream_guard.alerts.lifecycle import IncidentTracker, LifecycleSettings
from stream_guard.alerts.model import Alert, Severity
from stream_guard.alerts.render import render_alert
from stream_guard.settings.kinds import OVERFLOW
from stream_guard.state import MemoryState, ModelKeys

MINUTE = 60_000
START = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE


def finding(
    kind: str,
    feature: str | None = "amount",
    *,
    minute: int = 0,
    severity: Severity = Severity.WARNING,
    count: int = 10,
    total: int = 1000,
    value: float | None = None,
    threshold: float | None = None,
) -> Alert:
    start = START + minute * MINUTE
    return Alert(
        model="fraud",
        kind=kind,
        feature=feature,
        slice="",
        severity=severity,
        window_start=start,
        window_end=start + MINUTE,
        count=count,
        total=total,
        rate=count / total,
        observed="o",
        expected="e",
        detector=kind,
        message="m",
        value=value,
        threshold=threshold,
    )


def names(cluster: list[Alert]) -> list[tuple[str, str | None]]:
    return [(a.kind, a.feature) for a in cluster]


# --------------------------------------------------------------------------- grouping within a window


def test_kinds_on_one_feature_are_one_cluster_led_by_the_range_check() -> None:
    """A unit change on amount: range, sentinel and both drifts are one cluster; another feature is another."""
    clusters = cluster_window(
        [
            finding("data_drift", value=0.5, threshold=0.1),
            finding("online_drift"),
            finding("sentinel_spike", count=5),
            finding("out_of_range", count=30),
            finding("null_rate", "age"),
        ]
    )
    assert [names(c) for c in clusters] == [
        [
            ("out_of_range", "amount"),
            ("sentinel_spike", "amount"),
            ("data_drift", "amount"),
            ("online_drift", "amount"),
        ],
        [("null_rate", "age")],
    ]


def test_the_primary_is_chosen_by_tier_then_severity_then_magnitude() -> None:
    """schema > type/range/sentinel > null/unseen > drift > prediction drift; ties by severity, then magnitude."""
    warning_schema = finding("schema_change", severity=Severity.WARNING)
    critical_range = finding("out_of_range", severity=Severity.CRITICAL)
    assert cluster_window([critical_range, warning_schema])[0][0] == warning_schema
    critical_null = finding("null_rate", severity=Severity.CRITICAL)
    warning_sentinel = finding("sentinel_spike", severity=Severity.WARNING)
    assert cluster_window([critical_null, warning_sentinel])[0][0] == warning_sentinel
    small = finding("data_drift", value=0.2, threshold=0.1)
    large = finding("online_drift", value=0.9, threshold=0.1)
    assert cluster_window([small, large])[0] == [large, small]
    worse = dataclasses.replace(small, severity=Severity.CRITICAL)
    assert cluster_window([large, worse])[0][0] == worse


def test_magnitude_is_the_distance_of_the_value_from_the_threshold() -> None:
    """|value - threshold|; None without either (row findings) or when not finite."""
    assert magnitude(finding("data_drift", value=0.01, threshold=0.05)) == 0.04
    assert magnitude(finding("out_of_range")) is None
    assert magnitude(finding("data_drift", value=float("inf"), threshold=0.1)) is None
    assert primary_order(finding("data_drift", value=1.0, threshold=0.1)) < primary_order(finding("data_drift"))


def test_every_undecodable_error_class_of_a_window_is_one_burst() -> None:
    """Bad bytes of several error classes are one cause, apart from a type change in the same window."""
    clusters = cluster_window(
        [
            finding("undecodable", "WireFormatError", count=3),
            finding("undecodable", "UndecodablePayloadError", count=9),
            finding("type_mismatch", "amount"),
        ]
    )
    assert [names(c) for c in clusters] == [
        [("undecodable", "UndecodablePayloadError"), ("undecodable", "WireFormatError")],
        [("type_mismatch", "amount")],
    ]


def test_a_schema_change_takes_in_its_fields_findings() -> None:
    """A writer schema change: its fields' findings and the new fields are one cluster led by the change."""
    clusters = cluster_window(
        [
            finding("null_rate", "num_tx_24h"),
            finding("schema_change", "num_tx_24h"),
            finding("unexpected_field", "num_tx", severity=Severity.INFO),
            finding("schema_change", "amount"),
            finding("type_mismatch", "amount"),
            finding("data_drift", "age"),
        ]
    )
    assert [sorted(names(c)) for c in clusters] == [
        sorted(
            [
                ("schema_change", "num_tx_24h"),
                ("schema_change", "amount"),
                ("unexpected_field", "num_tx"),
                ("type_mismatch", "amount"),
                ("null_rate", "num_tx_24h"),
            ]
        ),
        [("data_drift", "age")],
    ]


def test_a_prediction_drift_joins_the_strongest_shift_of_its_window() -> None:
    """The score's drift follows the feature that shifted; the strongest shift when several did."""
    clusters = cluster_window(
        [
            finding("prediction_drift", "score"),
            finding("data_drift", "age", value=0.2, threshold=0.1),
            finding("out_of_range", "amount"),
        ]
    )
    assert [names(c) for c in clusters] == [
        [("out_of_range", "amount"), ("prediction_drift", "score")],
        [("data_drift", "age")],
    ]
    alone = cluster_window([finding("prediction_drift", "score"), finding("undecodable", "WireFormatError")])
    assert [names(c) for c in alone] == [[("undecodable", "WireFormatError")], [("prediction_drift", "score")]]


def test_overflow_findings_and_other_kinds_are_never_grouped() -> None:
    """*overflow* findings stay alone even on a shared name, and so do kinds outside the tiers and performance."""
    clusters = cluster_window(
        [
            finding("out_of_range", OVERFLOW),
            finding("null_rate", OVERFLOW),
            finding("event_time_skew", "ts"),
            finding("known_bias", "recall"),
        ]
    )
    assert len(clusters) == 4


def on_slice(alert: Alert, slice_: str) -> Alert:
    return dataclasses.replace(alert, slice=slice_)


def test_performance_findings_on_one_slice_are_one_cluster() -> None:
    """A concept drift shows as degradation, concept drift and the slice check on *: one cluster, whatever the
    metric; another slice (a cause of its own after attribution) is another cluster.

    Deliberately changed: label-based findings used to be never grouped (four incidents for one concept drift).
    """
    clusters = cluster_window(
        [
            finding("concept_drift", "error_rate"),
            finding("performance_degradation", "error_rate"),
            on_slice(finding("slice_underperformance", "recall"), "*"),
            on_slice(finding("calibration_drift", "accuracy"), "*"),
            on_slice(finding("slice_underperformance", "recall"), "channel=app"),
        ]
    )
    assert sorted(len(c) for c in clusters) == [1, 4]
    assert [a.slice for c in clusters if len(c) == 1 for a in c] == ["channel=app"]


def test_the_score_the_prediction_drift_and_the_estimated_drop_they_imply_are_one_cluster() -> None:
    """No input shift: the score's drift, the prediction's and the estimated drop (a function of the scores alone)
    are one cluster, led by the score; without a prediction drift the drop is a cluster of its own.

    Deliberately changed: the drop used to be a cluster (and an incident) of its own beside the score's drift.
    """
    outputs = frozenset({"score", "prediction"})
    estimate = on_slice(finding("estimated_performance_drop", "accuracy"), "*")
    clusters = cluster_window(
        [
            finding("online_drift", "score"),
            finding("prediction_drift", "prediction"),
            estimate,
            finding("event_time_skew", "ts"),
        ],
        outputs,
    )
    assert [names(c) for c in clusters] == [
        [("online_drift", "score"), ("prediction_drift", "prediction"), ("estimated_performance_drop", "accuracy")],
        [("event_time_skew", "ts")],
    ]
    after_shift = cluster_window(
        [finding("out_of_range", "amount"), finding("online_drift", "score"), estimate], outputs
    )
    assert [names(c) for c in after_shift] == [
        [("out_of_range", "amount"), ("online_drift", "score"), ("estimated_performance_drop", "accuracy")]
    ]
    labelled = on_slice(finding("slice_underperformance", "recall"), "channel=app")
    alone = cluster_window([estimate, labelled, finding("null_rate", "age")], outputs)
    assert [names(c) for c in alone] == [
        [("null_rate", "age")],
        [("estimated_performance_drop", "accuracy")],
        [("slice_underperformance", "recall")],
    ]


def test_later_performance_findings_join_the_incident_of_their_cause() -> None:
    """A score shift opens one incident, the prediction drift of the next window joins it, and so does the estimated
    drop of the window after (its impact: it escalates the incident at once, whatever the cooldown, leading the alert;
    once: the next drop is within the cooldown again);
    the label-based findings on * that follow join it, and so does a slice of the * drop in a later
    evaluation whose range reaches back to it. A performance finding no recent finding of the incident covers
    opens its own, and so do one on a slice unrelated to the open one and one on its parent (a broader drop is
    no consequence of one slice).

    Deliberately changed: the estimated drop used to open an incident of its own beside the score's drift.
    """
    store = MemoryState(ModelKeys("sg", "fraud"), window_ms=MINUTE, lateness_ms=0)
    settings = LifecycleSettings(cooldown_s=120, resolve_after_s=900)
    t = IncidentTracker(store, settings=settings, outputs=("score", "prediction"))
    assert close(t, 0, finding("online_drift", "score", minute=0)) == [("FIRING", "online_drift", "score", 0)]
    assert close(t, 1, finding("prediction_drift", "prediction", minute=1)) == []  # the cooldown
    estimate = on_slice(finding("estimated_performance_drop", "accuracy", minute=2), "*")
    impact = t.publishable([estimate])
    t.resolved(START + 3 * MINUTE, {estimate.incident_id})
    t.delivered(START + 3 * MINUTE)
    score = finding("online_drift", "score").incident_id
    assert [(a.kind, a.slice, a.window_start, a.cause_id) for a in impact] == [
        ("estimated_performance_drop", "*", START + 2 * MINUTE, score)
    ]
    assert close(t, 4, on_slice(finding("estimated_performance_drop", "accuracy", minute=4), "*")) == []
    all_traffic = on_slice(finding("slice_underperformance", "recall", minute=2), "*")
    assert close(t, 9, finding("concept_drift", "error_rate", minute=2), all_traffic) == []
    assert close(t, 10, on_slice(finding("slice_underperformance", "recall", minute=3), "channel=web")) == []
    late = on_slice(finding("slice_underperformance", "recall", minute=11), "region=r3")
    assert close(t, 11, late) == [("FIRING", "slice_underperformance", "recall", 11)]  # nothing recent covers it
    fresh = IncidentTracker(MemoryState(ModelKeys("sg", "other"), window_ms=MINUTE, lateness_ms=0))
    close(fresh, 0, on_slice(finding("slice_underperformance", "recall", minute=0), "channel=app"))
    later = on_slice(finding("slice_underperformance", "recall", minute=1), "region=r3")
    assert close(fresh, 1, later) == [("FIRING", "slice_underperformance", "recall", 1)]
    broader = on_slice(finding("slice_underperformance", "recall", minute=1), "*")  # not one slice's consequence
    assert close(fresh, 2, broader) == [("FIRING", "slice_underperformance", "recall", 1)]


# --------------------------------------------------------------------------- the tracker's rules


def tracker(**settings: float) -> IncidentTracker:
    store = MemoryState(ModelKeys("sg", "fraud"), window_ms=MINUTE, lateness_ms=0)
    return IncidentTracker(store, settings=LifecycleSettings(**settings))  # type: ignore[arg-type]


def close(t: IncidentTracker, minute: int, *raised: Alert) -> list[tuple[str, str, str | None, int]]:
    """Close one window as the WindowCloser does; (status, kind, feature, minute) of what is published."""
    end = START + (minute + 1) * MINUTE
    out = t.publishable(list(raised)) + t.resolved(end, {a.incident_id for a in raised})
    t.delivered(end)
    return [(a.status, a.kind, a.feature, (a.window_start - START) // MINUTE) for a in out]


def test_a_steady_fault_is_published_once_per_remind_after() -> None:
    """Eight hours of the same fault at the same rate: the opening alert and one reminder after six hours."""
    t = tracker(cooldown_s=600, resolve_after_s=300, remind_after_s=6 * 3600)
    published = [p for m in range(8 * 60) for p in close(t, m, finding("out_of_range", minute=m))]
    assert published == [("FIRING", "out_of_range", "amount", 0), ("FIRING", "out_of_range", "amount", 360)]


def test_an_escalation_waits_for_the_cooldown_and_is_not_lost() -> None:
    """A doubling rate right after the opening is held back by the cooldown, and published once it passed."""
    t = tracker(cooldown_s=600, resolve_after_s=300, escalation_factor=2.0)
    seen = [close(t, m, finding("out_of_range", minute=m, count=10 if m == 0 else 25)) for m in range(12)]
    assert [m for m, published in enumerate(seen) if published] == [0, 10]


def test_a_cause_is_one_incident_across_adjacent_windows_and_resolves_once() -> None:
    """Range then drift on amount, then the score's drift: one incident; its RESOLVED comes once, for the primary."""
    t = tracker(cooldown_s=600, resolve_after_s=120)
    log = [
        close(t, 0, finding("out_of_range", minute=0)),
        close(t, 1, finding("data_drift", minute=1)),
        close(t, 2, finding("prediction_drift", "score", minute=2)),
        close(t, 3, finding("prediction_drift", "score", minute=3)),
        *(close(t, m) for m in range(4, 9)),
    ]
    resolved = [("RESOLVED", "out_of_range", "amount", 0)]
    assert log == [[("FIRING", "out_of_range", "amount", 0)], [], [], [], [], resolved, [], [], []]


def test_a_finding_two_windows_after_its_feature_s_incident_is_its_own() -> None:
    """Adjacency is one window: a drift on amount two windows after the range check opens its own incident."""
    t = tracker(cooldown_s=600, resolve_after_s=600)
    close(t, 0, finding("out_of_range", minute=0))
    close(t, 1)
    assert close(t, 2, finding("data_drift", minute=2)) == [("FIRING", "data_drift", "amount", 2)]
    assert close(t, 3, finding("prediction_drift", "score", minute=3)) == []
    assert close(t, 5, finding("prediction_drift", "score", minute=5)) == []  # a member now: stays in


def test_a_replay_publishes_the_same_alerts() -> None:
    """Decisions follow event time only: replaying the same windows on fresh state gives the same alert ids."""

    def replay() -> list[str]:
        t = tracker(cooldown_s=120, resolve_after_s=120, remind_after_s=600)
        ids = []
        for m in range(30):
            raised = [finding("out_of_range", minute=m, count=10 + m * m)] if m < 20 else []
            if m % 3 == 0 and m < 20:
                raised.append(finding("data_drift", minute=m, value=0.1 + m / 10, threshold=0.1))
            end = START + (m + 1) * MINUTE
            ids += [a.alert_id for a in t.publishable(raised) + t.resolved(end, {a.incident_id for a in raised})]
            t.delivered(end)
        return ids

    first = replay()
    assert first == replay() and len(first) > 2


def test_an_informational_finding_is_published_once_and_resolved_once() -> None:
    """An INFO finding is never reminded, however long it lasts; it resolves once."""
    t = tracker(cooldown_s=60, resolve_after_s=60, remind_after_s=60)
    field = [finding("unexpected_field", "promo", minute=m, severity=Severity.INFO) for m in range(30)]
    published = [p for m, b in enumerate(field) for p in close(t, m, b)]
    published += close(t, 31) + close(t, 32)
    assert published == [("FIRING", "unexpected_field", "promo", 0), ("RESOLVED", "unexpected_field", "promo", 0)]


def test_a_known_bias_is_published_once_and_never_resolved_aloud() -> None:
    """known_bias is a fact of the reference, raised once: FIRING once, then it closes without a RESOLVED."""
    t = tracker(cooldown_s=60, resolve_after_s=60, remind_after_s=60)
    bias = [finding("known_bias", "recall", minute=m, severity=Severity.INFO) for m in range(30)]
    published = [p for m, b in enumerate(bias) for p in close(t, m, b)]
    published += close(t, 31) + close(t, 32) + close(t, 33)
    assert published == [("FIRING", "known_bias", "recall", 0)]
    # A restarted worker raises it again, on the same (reference) window: the tombstone keeps it quiet.
    assert close(t, 34, finding("known_bias", "recall", minute=29, severity=Severity.INFO)) == []


def test_a_rendered_alert_lists_its_related_findings() -> None:
    """stream-guard alerts shows the evidence a cause's alert carries, one line after the examples."""
    t = tracker()
    (published,) = t.publishable([finding("out_of_range", count=30), finding("data_drift", value=0.3, threshold=0.1)])
    text = render_alert(published.to_record())
    assert text.splitlines()[-1] == "        related: data_drift amount (10)"
    assert "related" not in render_alert(finding("null_rate", "age").to_record())


def test_a_drift_of_the_score_field_is_prediction_drift() -> None:
    """With the model's outputs named, online_drift on the score follows the shift, in its window or the next."""
    same = cluster_window([finding("online_drift", "score"), finding("out_of_range", "amount")], frozenset({"score"}))
    assert [names(c) for c in same] == [[("out_of_range", "amount"), ("online_drift", "score")]]
    store = MemoryState(ModelKeys("sg", "fraud"), window_ms=MINUTE, lateness_ms=0)
    t = IncidentTracker(store, settings=LifecycleSettings(resolve_after_s=600), outputs=("score", ""))
    assert close(t, 0, finding("out_of_range", minute=0)) == [("FIRING", "out_of_range", "amount", 0)]
    assert close(t, 1, finding("online_drift", "score", minute=1)) == []
    alone = IncidentTracker(MemoryState(ModelKeys("sg", "other"), window_ms=MINUTE, lateness_ms=0))
    close(alone, 0, finding("out_of_range", minute=0))
    assert close(alone, 1, finding("online_drift", "score", minute=1)) == [("FIRING", "online_drift", "score", 1)]


def test_a_later_checks_finding_whose_range_ends_at_a_published_window_is_no_retry_of_it() -> None:
    """The label-delayed concept check's period may end where a published window did: it joins, publishes nothing.
    The published window closed again (a retry) still publishes the same alert."""
    t = tracker(cooldown_s=600, resolve_after_s=900)
    first = on_slice(finding("slice_underperformance", "recall", minute=0), "*")
    assert close(t, 0, first) == [("FIRING", "slice_underperformance", "recall", 0)]
    assert close(t, 5, finding("concept_drift", "error_rate", minute=0)) == []  # same window end, a later check
    again = t.publishable([first])
    assert [a.alert_id for a in again] == [first.alert_id]


# --------------------------------------------------------------------------- outcomes settled by labels


def drop(minute: int, outcome: str | None = None) -> Alert:
    """An estimated_performance_drop of android accuracy over the hour ending at ``minute`` (+1)."""
    alert = dataclasses.replace(
        finding("estimated_performance_drop", "accuracy", minute=minute, value=0.70, threshold=0.74),
        slice="device_type=android",
        window_start=START + (minute - 59) * MINUTE,
    )
    return dataclasses.replace(alert, outcome=outcome)


def settled(t: IncidentTracker, minute: int, *raised: Alert) -> list[tuple[str, str | None, int]]:
    """Close one window; (status, outcome, window start minute) of what is published."""
    end = START + (minute + 1) * MINUTE
    out = t.publishable(list(raised)) + t.resolved(end, {a.incident_id for a in raised})
    t.delivered(end)
    return [(a.status, a.outcome, (a.window_start - START) // MINUTE) for a in out]


def test_a_confirmed_drop_says_so_once_and_its_incident_goes_on() -> None:
    """Confirmed by the labels of one period, then of the next: one CONFIRMED alert; the drop then resolves as usual."""
    t = tracker(cooldown_s=600, resolve_after_s=300)
    assert settled(t, 0, drop(0)) == [("FIRING", None, -59)]
    assert settled(t, 60, drop(60), drop(50, "CONFIRMED")) == [("FIRING", "CONFIRMED", -9)]
    assert settled(t, 120, drop(120), drop(110, "CONFIRMED")) == []  # said once
    assert settled(t, 121) == []
    assert settled(t, 126) == [("RESOLVED", None, -59)]  # absent for resolve_after: resolved, no outcome


def test_a_confirmation_whose_delivery_failed_is_published_again_when_its_window_is_closed_again() -> None:
    t = tracker(cooldown_s=600, resolve_after_s=300)
    settled(t, 0, drop(0))
    end = START + 61 * MINUTE
    first = t.publishable([drop(60), drop(50, "CONFIRMED")]) + t.resolved(end, set())
    again = t.publishable([drop(60), drop(50, "CONFIRMED")]) + t.resolved(end, set())  # not delivered: closed again
    assert [a.alert_id for a in first] == [a.alert_id for a in again] and [a.outcome for a in again] == ["CONFIRMED"]
    assert first[0].cause_id == drop(0).incident_id


def test_a_refuted_drop_closes_its_incident_with_one_resolved_alert() -> None:
    """Refuted: RESOLVED at once (outcome REFUTED), nothing more for the incident; a later drop opens a new one."""
    t = tracker(cooldown_s=600, resolve_after_s=300)
    settled(t, 0, drop(0))
    refuted = drop(50, "REFUTED")
    end = START + 61 * MINUTE
    out = t.publishable([drop(60), refuted]) + t.resolved(end, {drop(60).incident_id, refuted.incident_id})
    t.delivered(end)
    assert [(a.status, a.outcome, a.cause_id) for a in out] == [("RESOLVED", "REFUTED", refuted.incident_id)]
    assert out[0].message.startswith("RESOLVED estimated_performance_drop accuracy: refuted by the labels: ")
    assert out[0].value == refuted.value and out[0].threshold == refuted.threshold
    assert settled(t, 62) == [] and settled(t, 70) == []  # closed: no second RESOLVED
    assert settled(t, 120, drop(120)) == [("FIRING", None, 61)]


def test_an_outcome_of_an_incident_that_is_not_open_publishes_nothing() -> None:
    t = tracker(cooldown_s=600, resolve_after_s=300)
    assert settled(t, 60, drop(50, "CONFIRMED")) == [] and settled(t, 61, drop(50, "REFUTED")) == []


def test_a_confirmed_incident_is_not_refuted_by_a_later_period() -> None:
    t = tracker(cooldown_s=600, resolve_after_s=3600)
    settled(t, 0, drop(0))
    assert settled(t, 60, drop(60), drop(50, "CONFIRMED")) == [("FIRING", "CONFIRMED", -9)]
    assert settled(t, 120, drop(120), drop(110, "REFUTED")) == []  # still estimated low, and not refuted


def test_an_outcome_of_a_drop_that_joined_a_score_shift_settles_the_score_shifts_incident() -> None:
    """The drop is evidence of the score's drift: its confirmation is published once under the score's incident;
    a refutation refutes the estimate, not the drift, and closes nothing."""
    store = MemoryState(ModelKeys("sg", "fraud"), window_ms=MINUTE, lateness_ms=0)
    t = IncidentTracker(store, settings=LifecycleSettings(cooldown_s=600, resolve_after_s=3600), outputs=("score",))
    score = finding("online_drift", "score", minute=0)
    assert settled(t, 0, score, drop(0)) == [("FIRING", None, 0)]  # one cluster, led by the score
    refuted = t.publishable([drop(30), drop(20, "REFUTED")]) + t.resolved(START + 31 * MINUTE, {drop(30).incident_id})
    assert refuted == [] and score.incident_id in store.open_incidents()
    confirmed = t.publishable([drop(60), drop(50, "CONFIRMED")]) + t.resolved(START + 61 * MINUTE, set())
    assert [(a.status, a.outcome, a.kind, a.cause_id) for a in confirmed] == [
        ("FIRING", "CONFIRMED", "estimated_performance_drop", score.incident_id)
    ]
    assert settled(t, 70, drop(70), drop(60, "CONFIRMED")) == []  # once per incident


def test_the_level_ranks_severity_then_a_known_impact_and_keeps_informational_at_zero() -> None:
    info, warning = finding("unexpected_field", severity=Severity.INFO), finding("online_drift", "score")
    impact = on_slice(finding("estimated_performance_drop", "accuracy"), "*")
    critical = finding("type_mismatch", severity=Severity.CRITICAL)
    assert [level([info]), level([warning]), level([warning, impact]), level([critical])] == [0, 2, 3, 4]
    assert level([critical, impact]) == 5 and level([info, info]) == 0


def test_outcomes_replay_to_the_same_alerts() -> None:
    """Same windows, same outcomes, on a fresh store: the same alert ids (the offline replay's guarantee)."""

    def run() -> list[tuple[str, str | None, str]]:
        t = tracker(cooldown_s=600, resolve_after_s=300)
        ids = []
        for minute, raised in [(0, [drop(0)]), (60, [drop(60), drop(50, "CONFIRMED")]), (120, [drop(110, "REFUTED")])]:
            end = START + (minute + 1) * MINUTE
            out = t.publishable(raised) + t.resolved(end, {a.incident_id for a in raised})
            t.delivered(end)
            ids += [(a.status, a.outcome, a.alert_id) for a in out]
        return ids

    first = run()
    assert first == run()
    # Opened; confirmed; the refutation of a confirmed incident is ignored, and it resolves as absent.
    assert [(status, outcome) for status, outcome, _ in first] == [
        ("FIRING", None),
        ("FIRING", "CONFIRMED"),
        ("RESOLVED", None),
    ]
