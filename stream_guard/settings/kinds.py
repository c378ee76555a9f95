"""The names of alert kinds and severities: declared once, read by the settings and the stages.

``[alerts] severity`` keys are validated against :data:`ALERT_KINDS`; the stages that raise
alerts take their kind names from here.
"""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


#: Findings of the schema-level checks (decoding) and their default severities.
SCHEMA_FINDING_SEVERITIES: dict[str, Severity] = {
    "undecodable": Severity.CRITICAL,
    "type_mismatch": Severity.CRITICAL,
    "missing_field": Severity.CRITICAL,
    "schema_change": Severity.WARNING,
    "unexpected_field": Severity.INFO,
    "event_time_skew": Severity.WARNING,
}

#: The feature of a finding (and alert) standing for the distinct findings a cap dropped.
OVERFLOW = "*overflow*"

#: Kinds an early alert may fire for (``[alerts] early_kinds``): the row-level findings a batch
#: shows, decoding's and the row checks'.
EARLY_KIND_CHOICES: tuple[str, ...] = (
    *SCHEMA_FINDING_SEVERITIES,
    "out_of_range",
    "nan",
    "infinite",
    "unseen_category",
)
#: The default ``[alerts] early_kinds``: records that cannot be read or that break the schema
#: (a writer-schema change among them), each fault immediate, whatever the baseline says.
DEFAULT_EARLY_KINDS: tuple[str, ...] = ("undecodable", "missing_field", "type_mismatch", "schema_change")

#: The baseline value checks (:mod:`stream_guard.checks`), each an alert kind.
CHECKS = (
    "out_of_range",
    "nan",
    "infinite",
    "null_rate",
    "unseen_category",
    "sentinel_spike",
    "cardinality",
    "type_mismatch",
)
#: Checks that flag single rows; their counters become alerts in ``finding_alerts``.
ROW_CHECKS = ("out_of_range", "nan", "infinite", "unseen_category", "type_mismatch")
#: Checks evaluated on a closed window's counters (:mod:`stream_guard.checks.window_checks`).
WINDOW_CHECKS = ("null_rate", "sentinel_spike", "cardinality")

DATA_DRIFT = "data_drift"
PREDICTION_DRIFT = "prediction_drift"
ONLINE_DRIFT = "online_drift"
SLICE_UNDERPERFORMANCE = "slice_underperformance"
#: A slice already worse than the rest in the labelled reference: one informational finding.
KNOWN_BIAS = "known_bias"
PERFORMANCE_DEGRADATION = "performance_degradation"
CONCEPT_DRIFT = "concept_drift"
#: The label-free estimate (CBPE) of a metric fell below the reference's, beyond its chunk spread.
ESTIMATED_PERFORMANCE_DROP = "estimated_performance_drop"
#: Realised labels disagree with the label-free estimate: the score's calibration no longer holds.
CALIBRATION_DRIFT = "calibration_drift"

#: Every kind of alert stream_guard raises.
ALERT_KINDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        (
            *SCHEMA_FINDING_SEVERITIES,
            *CHECKS,
            DATA_DRIFT,
            PREDICTION_DRIFT,
            ONLINE_DRIFT,
            SLICE_UNDERPERFORMANCE,
            KNOWN_BIAS,
            PERFORMANCE_DEGRADATION,
            CONCEPT_DRIFT,
            ESTIMATED_PERFORMANCE_DROP,
            CALIBRATION_DRIFT,
        )
    )
)
