"""The false-alarm budget by design (stream_guard.tools.evaluate.budget) and the levels it rests on."""

from __future__ import annotations

import dataclasses

import pytest

from stream_guard.settings import Config, MetricsSettings
from stream_guard.settings.metrics import repeated_alpha, repeated_z
from stream_guard.tools.evaluate.budget import false_alarm_budget


def test_each_performance_check_spends_its_weekly_share_whatever_its_cadence() -> None:
    """Hourly or every 5 minutes, each repeated check's level times its evaluations and families is its share."""
    for every_s in (300, 3600):
        metrics = MetricsSettings(performance_every_s=every_s, performance_lookback_s=2 * every_s)
        budget = false_alarm_budget(Config(), metrics, fields=24)
        assert budget["window checks"] == pytest.approx(10_080 * 2.5e-5)
        assert budget["window drift"] == pytest.approx(10_080 * 24 * (0.01 / 24) ** 2)
        for family in ("slice_underperformance", "performance_degradation", "estimated_performance_drop"):
            assert budget[family] == pytest.approx(0.1), family
        assert budget["calibration_drift"] == pytest.approx(0.1)
        assert sum(budget.values()) < 1.0  # the one-a-week budget leaves room for the row checks and ADWIN


def test_performance_alpha_caps_the_level_and_a_cheaper_budget_lowers_it() -> None:
    """A check rare enough tests at performance_alpha (and spends less than its share); z never drops below 3."""
    weekly = MetricsSettings(performance_every_s=7 * 24 * 3600)
    assert repeated_alpha(weekly, weekly.performance_every_s) == weekly.performance_alpha
    assert repeated_z(weekly, weekly.performance_every_s) == weekly.estimate_z
    budget = false_alarm_budget(Config(), weekly, fields=0)
    assert budget["performance_degradation"] == pytest.approx(0.01) and "window drift" not in budget
    cheaper = dataclasses.replace(MetricsSettings(), performance_false_alarms_per_week=0.01)
    assert repeated_alpha(cheaper, 3600, 2) == pytest.approx(repeated_alpha(MetricsSettings(), 3600, 2) / 10)
    assert repeated_z(cheaper, 60, 4) > repeated_z(MetricsSettings(), 60, 4) > 4.5


def test_without_the_estimate_its_checks_spend_nothing() -> None:
    budget = false_alarm_budget(Config(), MetricsSettings(estimate_calibration="off"), fields=24)
    assert "estimated_performance_drop" not in budget and "calibration_drift" not in budget
    assert "slice_underperformance" in budget
