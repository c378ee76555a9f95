"""The false-alarm budget by design: the chance alerts a week each family of checks may raise under a config.

The README's budget (`The false-alarm budget`) is at most one false alert per model per
week of clean traffic, over all kinds. :func:`false_alarm_budget` states, for one model's
settings, the bound each family of tests spends, from its level and how often it runs:

* window checks: Benjamini-Hochberg at ``checks.false_alarm_rate`` per window;
* window drift: ``m`` fields at ``alpha / m`` each (Bonferroni), ``persistence`` windows in
  a row (:func:`~stream_guard.settings.drift.false_alarms_per_week`), before the effect size;
* each repeated performance check at its level times its evaluations a week and its
  families (:func:`~stream_guard.settings.metrics.repeated_alpha`): the slice checks, the
  degradation test, the estimate's drops (``*`` and the slices, per metric), the
  calibration check (its slices, and ``*`` per metric).

Not bounded here, measured instead: the row checks (``out_of_range``, whose rate follows the
event rate and the reference's tails) and the online detector (ADWIN's ``delta``); the long
replay counts them on clean traffic.

    >>> from stream_guard.settings import Config, MetricsSettings
    >>> budget = false_alarm_budget(Config(), MetricsSettings(), fields=24)
    >>> {k: round(v, 3) for k, v in budget.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'window checks': 0.252, 'window drift': 0.042, 'slice_underperformance': 0.1, 'performance_degradation': 0.1,
     'estimated_performance_drop': 0.1, 'calibration_drift': 0.1}
"""

from __future__ import annotations

from stream_guard.metrics.estimate_rules import CALIBRATION_METRICS
from stream_guard.settings import Config, MetricsSettings
from stream_guard.settings.drift import WEEK_S, false_alarms_per_week, windows_per_week
from stream_guard.settings.metrics import repeated_alpha

__all__ = ["false_alarm_budget"]


def _spent(settings: MetricsSettings, every_s: float, families: int) -> float:
    """Chance alerts a week of a check run every ``every_s`` on ``families`` families, each at its level."""
    return repeated_alpha(settings, every_s, families) * WEEK_S / every_s * families


def false_alarm_budget(config: Config, metrics: MetricsSettings, *, fields: int) -> dict[str, float]:
    """Family -> the most chance alerts a week it raises on clean traffic (a bound), under ``config``.

    ``metrics`` are the model's ``[models.metrics]``; ``fields`` the fields its window drift judges.
    """
    window_s = config.worker.window_s
    out: dict[str, float] = {}
    if config.checks.enabled:
        out["window checks"] = windows_per_week(window_s) * config.checks.false_alarm_rate
    drift = config.drift
    if drift.enabled and fields > 0:
        per_field = drift.alpha / fields if drift.correction == "bonferroni" else drift.alpha
        out["window drift"] = fields * false_alarms_per_week(per_field, window_s, drift.persistence)
    if metrics.enabled:
        every = metrics.performance_every_s
        tested = ["mae"] if metrics.task == "regression" else ["recall", "accuracy"]
        fairness = sum(m in metrics.performance_max_gap for m in tested)
        out["slice_underperformance"] = _spent(metrics, every, len(tested) + fairness)
        out["performance_degradation"] = _spent(metrics, every, 1)
        if metrics.task == "classification" and metrics.estimate_calibration != "off":
            estimate_every = metrics.estimate_every_s or window_s
            out["estimated_performance_drop"] = _spent(metrics, estimate_every, 2 * len(metrics.estimate_metrics))
            out["calibration_drift"] = _spent(metrics, every, 1 + len(CALIBRATION_METRICS))
    return out
