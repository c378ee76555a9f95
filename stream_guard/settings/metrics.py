"""``[models.metrics]`` and ``[models.labels]``: slice metrics, labels and the performance checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

from stream_guard.settings.detectors import DetectorSpec
from stream_guard.settings.drift import WEEK_S

__all__ = [
    "GAP_METRICS",
    "LabelSettings",
    "MetricsSettings",
    "performance_settings_problems",
    "repeated_alpha",
    "repeated_z",
]

#: Metrics a slice can be tested on (against its baseline or the rest of the traffic).
GAP_METRICS = ("recall", "precision", "specificity", "accuracy", "error_rate", "mae")


@dataclass
class MetricsSettings:
    """``[models.metrics]``: rolling slice metrics and the label-based performance counters."""

    enabled: bool = True
    #: Event-time bucket of the metrics; queries roll buckets up to any range.
    bucket_s: int = 60
    #: How long a bucket is kept after its last write.
    retention_s: int = 7 * 24 * 3600
    #: Crossings of slice fields, e.g. ``[["device_type", "country"]]``.
    crossings: list[list[str]] = field(default_factory=list)
    #: Also record one slice per value of every categorical feature (capped like slice fields).
    categorical_slices: bool = True
    #: Without a profile, distinct values per field a worker records before mapping to ``other``.
    max_values_per_field: int = 50
    score_bins: int = 10
    score_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    task: Literal["classification", "regression"] = "classification"
    #: Classification: predicted positive when score (else prediction) >= threshold.
    threshold: float = 0.5
    #: Classification: the label value meaning "positive" (compared as text: 1, "1", 1.0 and True match).
    positive_label: str | int = "1"
    #: How often the label-based performance checks run, in event time. They run when a
    #: window closes whose start is a multiple of it, so it must be a multiple of
    #: ``worker.window_s`` (else they run only every least common multiple) and of ``bucket_s``.
    performance_every_s: int = 3600
    #: Range the performance checks roll up: slice underperformance over all of it; concept
    #: drift feeds its error stream to the detector and compares the latest period with the rest.
    performance_lookback_s: int = 24 * 3600
    #: Least labelled events behind a performance test, in each group compared.
    performance_min_support: int = 100
    #: Significance level of the performance tests: of ``learn``'s known-bias test, and the
    #: most any one evaluation of a repeated check may use (see the next setting).
    performance_alpha: float = 0.01
    #: False alerts a week of clean traffic each repeated performance check may raise by
    #: chance (``slice_underperformance``, ``performance_degradation``, the estimate's slice
    #: drops, ``calibration_drift``): one evaluation tests at this divided by its evaluations a
    #: week and its metrics (:func:`repeated_alpha`; a union bound over time), at most
    #: ``performance_alpha``. Four checks at 0.1 spend 0.4 of the one-a-week budget.
    performance_false_alarms_per_week: float = 0.1
    #: Least drop of a slice's metric below its baseline (absolute: 0.05 = 5 points; MAE:
    #: relative, 0.05 = 5 % higher) for a ``slice_underperformance`` alert; also the least
    #: gap to the rest of the reference that makes a ``known_bias``. Never a p-value alone.
    performance_min_effect: float = 0.05
    #: Fairness tolerance: metric -> largest gap to the rest of the traffic a slice may show
    #: (e.g. ``{recall = 0.15}``), whatever its baseline; empty (default) turns the rule off.
    performance_max_gap: dict[str, float] = field(default_factory=dict)
    #: Concept drift compares the period that ended this long before the closing window,
    #: so that most of its delayed labels have arrived; a multiple of ``bucket_s``.
    performance_label_delay_s: int = 0
    #: Expected error rate of the model (e.g. from validation data); regression: expected mean
    #: absolute error. When set, the latest period is tested against it instead of against
    #: the rest of the lookback.
    baseline_error_rate: float | None = None
    #: River detector run on the rebuilt error stream (``DDM``, ``EDDM``, ``HDDM_A``, ``ADWIN``...).
    #: Regression models need a numeric one: a binary detector is replaced by ``ADWIN`` for them.
    concept_detector: str = "ADWIN"
    #: Keyword arguments of the detector, e.g. ``{"drift_threshold": 3.5}`` for DDM.
    concept_detector_params: dict[str, Any] = field(default_factory=dict)
    #: Calibration of the score that ``learn`` fits for the label-free estimate (CBPE):
    #: ``isotonic`` or ``binning`` on the histogram's bins; ``off`` learns none (no estimate).
    estimate_calibration: Literal["isotonic", "binning", "off"] = "isotonic"
    #: How often the estimate is checked, in event time: 0 (default) when every window
    #: closes, else a multiple of ``worker.window_s``. It needs no labels, so its windows
    #: do not wait for them.
    estimate_every_s: int = 0
    #: Range each estimate check rolls up (a multiple of ``bucket_s``).
    estimate_window_s: int = 3600
    #: Estimated metrics an ``estimated_performance_drop`` may name.
    estimate_metrics: list[str] = field(default_factory=lambda: ["accuracy", "recall"])
    #: Alert when the estimate of all traffic (``*``) is below the reference by more than
    #: this many of the reference's chunk standard deviations (scaled to the range's events)
    #: and by at least ``performance_min_effect`` (other slices: Benjamini-Hochberg at
    #: ``performance_alpha``); also the band of the calibration check.
    estimate_z: float = 3.0
    #: Half-width of the displayed uncertainty band, in standard deviations of the estimate.
    estimate_band_z: float = 1.96


@dataclass
class LabelSettings:
    """``[models.labels]``: where a model's delayed labels arrive and how to read them."""

    #: Labels topic; empty disables labels (and the storing of predictions).
    topic: str = ""
    #: Reader schema of a label record (``.avsc``); optional for JSON labels.
    schema: str = ""
    encoding: Literal["confluent", "avro", "json"] = "json"
    writer_schema: str = ""
    event_id_field: str = "event_id"
    label_field: str = "label"
    #: Label time field; without it a label that matches no prediction counts in the bucket of its arrival.
    timestamp_field: str = ""
    #: How long predictions wait for their label.
    lookback_s: int = 7 * 24 * 3600
    #: How long a label that arrives before its prediction waits for it, in event time: it
    #: expires once the events' watermark passed its time plus this; 0 counts it unmatched at once.
    hold_s: int = 3600


def repeated_alpha(settings: MetricsSettings, every_s: float, metrics: int = 1) -> float:
    """The level of one evaluation of a check that runs every ``every_s`` on ``metrics`` families of tests.

    Each family (one metric's slices, Benjamini-Hochberg adjusted) raises a chance alert in
    an evaluation of clean traffic with probability at most its level, so a week of
    ``WEEK_S / every_s`` evaluations raises at most ``level * evaluations * metrics`` of
    them on average, whatever the overlap of their ranges (a union bound):
    ``performance_false_alarms_per_week`` divided by evaluations and metrics, and never
    more than ``performance_alpha``.

    >>> round(repeated_alpha(MetricsSettings(), 3600, metrics=2), 6)   # hourly, recall and accuracy
    0.000298
    >>> repeated_alpha(MetricsSettings(), 7 * 24 * 3600)              # once a week: performance_alpha
    0.01
    """
    evaluations = WEEK_S / every_s if every_s > 0 else 1.0
    budget = settings.performance_false_alarms_per_week / (evaluations * max(metrics, 1))
    return min(settings.performance_alpha, budget)


def repeated_z(settings: MetricsSettings, every_s: float, metrics: int = 1) -> float:
    """The ``estimate_z`` of a fixed-z test repeated every ``every_s`` on ``metrics`` metrics, within the budget.

    The one-sided normal quantile of :func:`repeated_alpha`'s level, and never below
    ``estimate_z`` (NannyML's 3 standard deviations).

    >>> round(repeated_z(MetricsSettings(), 60, metrics=4), 2)   # every 60 s window, 4 tests
    4.57
    >>> repeated_z(MetricsSettings(), 3600 * 24 * 7)               # once a week: estimate_z
    3.0
    """
    return max(settings.estimate_z, NormalDist().inv_cdf(1.0 - repeated_alpha(settings, every_s, metrics)))


def _all_typed(*keys: str) -> bool:
    return True


def performance_settings_problems(
    settings: MetricsSettings, window_s: int, where: str = "metrics", typed: Callable[..., bool] = _all_typed
) -> list[str]:
    """What is wrong with the ``performance_*`` / concept settings of a model (empty when fine).

    Parameters
    ----------
    settings
        The model's metrics settings.
    window_s
        ``worker.window_s``: the checks run on windows whose start is a multiple of
        ``performance_every_s``, so it must be a multiple of the window.
    where
        Prefix of the messages, e.g. ``models[0] (fraud).metrics``.
    typed
        ``typed(*keys)`` is False when one of the keys (relative to ``where``, or
        ``worker.window_s``) had the wrong type: the checks reading it are skipped.
    """
    problems: list[str] = []
    every, lookback = settings.performance_every_s, settings.performance_lookback_s
    delay, bucket = settings.performance_label_delay_s, settings.bucket_s
    if typed("performance_every_s") and every <= 0:
        problems.append(f"{where}.performance_every_s: must be positive, got {every}")
    elif typed("performance_every_s"):
        if typed("worker.window_s") and window_s > 0 and every % window_s:
            problems.append(
                f"{where}.performance_every_s: must be a multiple of worker.window_s ({window_s}), got {every}"
            )
        if typed("bucket_s") and bucket > 0 and every % bucket:
            problems.append(f"{where}.performance_every_s: must be a multiple of bucket_s ({bucket}), got {every}")
        if typed("bucket_s", "performance_lookback_s") and bucket > 0 and lookback % bucket:
            problems.append(
                f"{where}.performance_lookback_s: must be a multiple of bucket_s ({bucket}), got {lookback}"
            )
        if typed("performance_lookback_s") and lookback <= every:
            problems.append(
                f"{where}.performance_lookback_s: must exceed performance_every_s ({every}), got {lookback}"
            )
    if typed("bucket_s", "performance_label_delay_s") and (delay < 0 or (bucket > 0 and delay % bucket)):
        problems.append(f"{where}.performance_label_delay_s: must be a non-negative multiple of bucket_s, got {delay}")
    if typed("performance_min_support") and settings.performance_min_support < 1:
        problems.append(f"{where}.performance_min_support: must be at least 1")
    if typed("performance_alpha") and not 0.0 < settings.performance_alpha < 1.0:
        problems.append(f"{where}.performance_alpha: must be in (0, 1), got {settings.performance_alpha}")
    budget = settings.performance_false_alarms_per_week
    if typed("performance_false_alarms_per_week") and (
        isinstance(budget, bool) or not isinstance(budget, int | float) or not budget > 0
    ):
        problems.append(f"{where}.performance_false_alarms_per_week: must be a positive number, got {budget!r}")
    if typed("performance_min_effect") and not 0.0 <= settings.performance_min_effect < 1.0:
        problems.append(f"{where}.performance_min_effect: must be in [0, 1), got {settings.performance_min_effect}")
    if typed("performance_max_gap"):
        for metric, gap in settings.performance_max_gap.items():
            if metric not in GAP_METRICS:
                known = ", ".join(GAP_METRICS)
                problems.append(f"{where}.performance_max_gap.{metric}: not a tested metric (use {known})")
            elif isinstance(gap, bool) or not isinstance(gap, int | float) or not gap > 0.0:
                problems.append(f"{where}.performance_max_gap.{metric}: must be a positive number, got {gap!r}")
    problems += _estimate_problems(settings, window_s, where, typed)
    baseline = settings.baseline_error_rate
    if baseline is not None and typed("baseline_error_rate"):
        if isinstance(baseline, bool) or not isinstance(baseline, int | float):
            problems.append(f"{where}.baseline_error_rate: expected a number, got {baseline!r}")
        elif baseline < 0 or (typed("task") and settings.task == "classification" and baseline >= 1):
            problems.append(f"{where}.baseline_error_rate: out of range, got {baseline}")
    if typed("concept_detector", "concept_detector_params"):
        try:
            DetectorSpec(settings.concept_detector, dict(settings.concept_detector_params)).build()
        except ValueError as exc:
            problems.append(f"{where}.concept_detector: {exc}")
    return problems


def _estimate_problems(settings: MetricsSettings, window_s: int, where: str, typed: Callable[..., bool]) -> list[str]:
    """What is wrong with the ``estimate_*`` settings (empty when fine)."""
    problems: list[str] = []
    every, span, bucket = settings.estimate_every_s, settings.estimate_window_s, settings.bucket_s
    if typed("estimate_calibration") and settings.estimate_calibration not in ("isotonic", "binning", "off"):
        problems.append(
            f"{where}.estimate_calibration: expected isotonic, binning or off, got {settings.estimate_calibration!r}"
        )
    if typed("estimate_every_s") and every < 0:
        problems.append(f"{where}.estimate_every_s: must be 0 (every window) or positive, got {every}")
    elif typed("estimate_every_s", "worker.window_s") and window_s > 0 and every % window_s:
        problems.append(f"{where}.estimate_every_s: must be a multiple of worker.window_s ({window_s}), got {every}")
    if typed("estimate_window_s", "bucket_s") and (span <= 0 or (bucket > 0 and span % bucket)):
        problems.append(f"{where}.estimate_window_s: must be a positive multiple of bucket_s ({bucket}), got {span}")
    if typed("estimate_metrics"):
        for metric in settings.estimate_metrics:
            if metric not in ("accuracy", "precision", "recall", "f1"):
                problems.append(
                    f"{where}.estimate_metrics: {metric!r} is not estimated (accuracy, precision, recall, f1)"
                )
    for key in ("estimate_z", "estimate_band_z"):
        value = getattr(settings, key)
        if typed(key) and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0):
            problems.append(f"{where}.{key}: must be a positive number, got {value!r}")
    return problems
