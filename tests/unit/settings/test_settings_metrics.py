"""Unit tests for stream_guard.settings.metrics: the performance and concept drift settings."""

from __future__ import annotations

from stream_guard.settings import MetricsSettings, performance_settings_problems


def test_settings_problems() -> None:
    assert performance_settings_problems(MetricsSettings(), window_s=10) == []
    bad = MetricsSettings(
        performance_every_s=3605,
        performance_lookback_s=3605,
        performance_alpha=1.5,
        baseline_error_rate=1.2,
        concept_detector="DDM",
        concept_detector_params={"nope": 1},
    )
    problems = "\n".join(performance_settings_problems(bad, window_s=10, where="m"))
    for text in (
        "m.performance_every_s: must be a multiple of worker.window_s",
        "m.performance_every_s: must be a multiple of bucket_s",
        "m.performance_lookback_s: must exceed",
        "m.performance_alpha",
        "m.baseline_error_rate",
        "m.concept_detector: DDM does not accept parameter(s) 'nope'",
    ):
        assert text in problems
