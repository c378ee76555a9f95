"""Unit tests for stream_guard.settings.metrics: the performance and concept drift settings."""

from __future__ import annotations

from pathlib import Path

from stream_guard.resources import schema_dir
from stream_guard.settings import MetricsSettings, load_config, performance_settings_problems


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


def test_min_effect_and_fairness_tolerance_are_validated() -> None:
    """performance_min_effect in [0, 1); performance_max_gap only on tested metrics, with positive numbers."""
    assert MetricsSettings().performance_min_effect == 0.05 and MetricsSettings().performance_max_gap == {}
    fine = MetricsSettings(performance_min_effect=0.0, performance_max_gap={"recall": 0.1, "mae": 0.5})
    assert performance_settings_problems(fine, window_s=10) == []
    bad = MetricsSettings(performance_min_effect=1.0, performance_max_gap={"f1": 0.1, "recall": 0.0})
    assert performance_settings_problems(bad, window_s=10, where="m") == [
        "m.performance_min_effect: must be in [0, 1), got 1.0",
        "m.performance_max_gap.f1: not a tested metric (use recall, precision, specificity, accuracy, error_rate, mae)",
        "m.performance_max_gap.recall: must be a positive number, got 0.0",
    ]


def test_the_keys_load_from_toml(tmp_path: Path) -> None:
    """[models.metrics] performance_min_effect and performance_max_gap are typed settings of the file."""
    path = tmp_path / "c.toml"
    path.write_text(
        f'[[models]]\nname = "m"\ntopics = ["t"]\nencoding = "json"\nschema = "{schema_dir() / "fraud_inference.avsc"}"\n'
        "[models.metrics]\nperformance_min_effect = 0.1\nperformance_max_gap = { recall = 0.15 }\n"
    )
    metrics = load_config(path, environ={}).models[0].metrics
    assert (metrics.performance_min_effect, metrics.performance_max_gap) == (0.1, {"recall": 0.15})


def test_the_weekly_budget_of_the_performance_checks_is_a_positive_number() -> None:
    assert MetricsSettings().performance_false_alarms_per_week == 0.1
    for bad in (0.0, -1.0, True):
        settings = MetricsSettings(performance_false_alarms_per_week=bad)
        assert performance_settings_problems(settings, window_s=10, where="m") == [
            f"m.performance_false_alarms_per_week: must be a positive number, got {bad!r}"
        ]
