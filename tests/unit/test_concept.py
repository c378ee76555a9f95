"""Concept drift from per-bucket label counters: stream rebuild, detector cadence, windowed tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pytest

from stream_guard.alerts.model import Severity
from stream_guard.metrics.concept import (
    ConceptDriftEvaluator,
    error_stream,
    period_test,
)
from stream_guard.metrics.query import MetricsReader
from stream_guard.metrics.rollups import RollupCache
from stream_guard.metrics.slice_alerts import PerformanceEvaluator
from stream_guard.settings import DetectorSpec, MetricsSettings
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState
from stream_guard.state.window_store import WindowSnapshot

B = 60_000  # bucket
EVERY = 10 * B
LOOKBACK = 60 * B

Series = list[tuple[int, dict[str, float]]]


def classification_buckets(seed: int, rates: Sequence[float], labels: int = 200) -> Series:
    """Bucket counters as the labels path writes them: ``lm`` and the confusion counts of ``*``."""
    rng = np.random.default_rng(seed)
    out: Series = []
    for i, rate in enumerate(rates):
        n = int(rng.poisson(labels))
        errors = int(rng.binomial(n, rate))
        fp = int(rng.binomial(errors, 0.4))
        tp = int(rng.binomial(n - errors, 0.1))
        counters = {"lm": n, "tp": tp, "fp": fp, "tn": n - errors - tp, "fn": errors - fp}
        out.append((i * B, {k: float(v) for k, v in counters.items()}))
    return out


def regression_buckets(seed: int, maes: Sequence[float], labels: int = 200) -> Series:
    rng = np.random.default_rng(seed)
    out: Series = []
    for i, mae in enumerate(maes):
        n = int(rng.poisson(labels))
        err = rng.exponential(mae, n)
        out.append((i * B, {"lm": float(n), "ae": float(err.sum()), "se": float((err * err).sum())}))
    return out


def evaluator(**kwargs: object) -> ConceptDriftEvaluator:
    return ConceptDriftEvaluator("m", None, every_ms=EVERY, lookback_ms=LOOKBACK, **kwargs)  # type: ignore[arg-type]


def kinds_by_period(ev: ConceptDriftEvaluator, series: Series, ends: Sequence[int]) -> dict[int, list[str]]:
    """Alert kinds of the evaluation of each period ending at bucket ``end``."""
    return {end: sorted(a.kind for a in ev.evaluate(series, end * B - EVERY, end * B)) for end in ends}


# -- the error stream ----------------------------------------------------------------------


def test_error_stream_spreads_each_buckets_errors_evenly_leading() -> None:
    series: Series = [
        (0, {"lm": 10, "tp": 2, "fp": 1, "tn": 6, "fn": 1}),
        (B, {"lm": 0}),  # no labels: left out
        (2 * B, {"lm": 7, "tp": 0, "fp": 0, "tn": 7, "fn": 0}),
        (3 * B, {"lm": 20, "tp": 4, "fp": 3, "tn": 11, "fn": 2}),
    ]
    stream = error_stream(series)
    assert stream.task == "classification" and stream.labels == 37 and stream.scale == 1.0
    np.testing.assert_array_equal(stream.buckets, [0] * 10 + [2 * B] * 7 + [3 * B] * 20)
    first, second, third = stream.values[:10], stream.values[10:17], stream.values[17:]
    # ceil(k e / n) steps up: errors lead their interval of n / e values.
    np.testing.assert_array_equal(first, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(second, np.zeros(7))
    assert third.sum() == 5
    gaps = np.diff(np.flatnonzero(third))
    assert gaps.max() - gaps.min() <= 1
    # The running error rate inside a bucket never dips below the bucket's rate.
    running = np.cumsum(third) / np.arange(1, 21)
    assert (running >= 5 / 20 - 1e-12).all()


def test_error_stream_subsamples_proportionally_and_replays_prefixes() -> None:
    series = classification_buckets(1, [0.05] * 30 + [0.3] * 30, labels=1000)
    labels = sum(c["lm"] for _, c in series)
    stream = error_stream(series, max_values=6000)
    assert len(stream) == 6000 and stream.scale == pytest.approx(6000 / labels)
    for start, counters in series:
        fed = stream.values[stream.buckets == start]
        assert abs(len(fed) - counters["lm"] * stream.scale) <= 1
        assert fed.mean() == pytest.approx((counters["fp"] + counters["fn"]) / counters["lm"], abs=1.0 / len(fed))
    # With a fixed scale, a stream extended by more buckets starts with the same values.
    short, longer = error_stream(series[:40], scale=0.125), error_stream(series, scale=0.125)
    np.testing.assert_array_equal(longer.values[: len(short)], short.values)
    np.testing.assert_array_equal(longer.buckets[: len(short)], short.buckets)


def test_error_stream_regression_keeps_each_buckets_mean_and_variance() -> None:
    series = regression_buckets(3, [1.0, 2.0, 0.5], labels=51)
    series.append((3 * B, {"lm": 1.0, "ae": 0.7, "se": 0.49}))
    stream = error_stream(series)
    assert stream.task == "regression"
    for start, counters in series:
        fed = stream.values[stream.buckets == start]
        n = counters["lm"]
        assert len(fed) == n
        mean = counters["ae"] / n
        assert fed.mean() == pytest.approx(mean, rel=1e-9)
        assert fed.var() == pytest.approx(counters["se"] / n - mean * mean, rel=1e-9, abs=1e-12)


# -- concept_drift -------------------------------------------------------------------------


def test_concept_drift_fires_at_the_period_of_the_change_only() -> None:
    change = 72  # the error rate jumps from 5 % to 25 % in the 3rd bucket of the period [70, 80)
    series = classification_buckets(7, [0.05] * change + [0.25] * (100 - change))
    ev = evaluator()
    kinds = kinds_by_period(ev, series, [60, 70, 80, 90])
    assert kinds[60] == [] and kinds[70] == []
    assert kinds[80] == ["concept_drift", "performance_degradation"]
    assert "concept_drift" not in kinds[90]  # already reported; the window test still sees it
    (drift,) = [a for a in ev.evaluate(series, 70 * B, 80 * B) if a.kind == "concept_drift"]
    assert (drift.window_start, drift.window_end) == (70 * B, 80 * B)
    assert drift.slice == "" and drift.severity is Severity.WARNING and drift.feature == "error_rate"
    assert drift.detector == "river.DDM"
    assert drift.threshold == pytest.approx(0.05, abs=0.01) and drift.value is not None and drift.value > 0.15
    assert "labels from 1970-01-01T01:1" in drift.observed  # the signal's bucket, within [70, 80) min


def test_no_alert_on_stationary_buckets() -> None:
    ev = evaluator()
    alerts = []
    for seed in range(50):
        series = classification_buckets(100 + seed, [0.05] * 100)
        alerts += ev.evaluate(series, 90 * B, 100 * B)
    assert len(alerts) <= 1, [a.message for a in alerts]


def test_a_capped_stream_still_reports_the_change_once() -> None:
    change = 72
    series = classification_buckets(8, [0.05] * change + [0.25] * (100 - change), labels=1000)
    ev = evaluator(max_values=40_000)  # 60k labels in the first lookback: 1/4 of them are fed
    kinds = kinds_by_period(ev, series, [70, 80, 90, 100, 110])
    reported = [end for end, k in kinds.items() if "concept_drift" in k]
    # Once, and not before the change (DDM's delay grows with the length of the stream).
    assert len(reported) == 1 and reported[0] in (80, 90), kinds


def test_improvements_are_not_reported() -> None:
    series = classification_buckets(9, [0.25] * 72 + [0.05] * 28)
    ev = evaluator(detector=DetectorSpec("ADWIN"))
    for end in (70, 80, 90):
        assert ev.evaluate(series, end * B - EVERY, end * B) == []


def test_regression_runs_adwin_on_the_absolute_errors() -> None:
    series = regression_buckets(11, [1.0] * 72 + [1.6] * 28)
    ev = evaluator()  # DDM is binary: regression models get ADWIN
    kinds = kinds_by_period(ev, series, [70, 80, 90])
    assert kinds[70] == []
    assert kinds[80] == ["concept_drift", "performance_degradation"]
    assert "concept_drift" not in kinds[90]
    alerts = {a.kind: a for a in ev.evaluate(series, 70 * B, 80 * B)}
    assert alerts["concept_drift"].detector == "river.ADWIN" and alerts["concept_drift"].feature == "mae"
    assert alerts["performance_degradation"].detector == "welch_test"
    quiet = regression_buckets(12, [1.0] * 100)
    assert ev.evaluate(quiet, 90 * B, 100 * B) == []


# -- performance_degradation ---------------------------------------------------------------


def test_baseline_error_rate_replaces_the_rest_of_the_lookback() -> None:
    # Stable at 8 %: no worse than the rest of the lookback, but worse than a 5 % baseline.
    series = classification_buckets(13, [0.08] * 80)
    assert period_test(series, 70 * B, 80 * B, alpha=0.01, min_support=100).degraded is False
    ev = evaluator(baseline_error_rate=0.05)
    alerts = ev.evaluate(series, 70 * B, 80 * B)
    assert [a.kind for a in alerts] == ["performance_degradation"]
    (alert,) = alerts
    assert alert.detector == "binomial_test" and alert.feature == "error_rate" and alert.slice == ""
    assert alert.threshold == 0.05 and alert.value == pytest.approx(0.08, abs=0.01)
    assert alert.total == sum(c["lm"] for b, c in series if b >= 70 * B)
    assert "baseline" in alert.expected and (alert.window_start, alert.window_end) == (70 * B, 80 * B)
    # At the baseline rate: nothing.
    assert evaluator(baseline_error_rate=0.05).evaluate(classification_buckets(14, [0.05] * 80), 70 * B, 80 * B) == []


def test_window_test_against_the_rest_of_the_lookback() -> None:
    series = classification_buckets(15, [0.05] * 70 + [0.08] * 10)
    test = period_test(series, 70 * B, 80 * B, alpha=0.01, min_support=100)
    assert test.test == "two_proportion_test" and test.degraded
    assert test.reference == pytest.approx(0.05, abs=0.005) and test.reference_n > 10_000
    # Too little support in the period: never degraded.
    thin = [(b, {k: v / 100 for k, v in c.items()}) if b >= 70 * B else (b, c) for b, c in series]
    assert period_test(thin, 70 * B, 80 * B, alpha=0.01, min_support=100).degraded is False


# -- cadence and settings ------------------------------------------------------------------


def test_cadence_label_delay_and_other_models() -> None:
    ev = evaluator(label_delay_ms=2 * EVERY)
    assert ev.period(WindowSnapshot(80 * B, 80 * B + 10_000, {})) == (50 * B, 60 * B)
    assert ev.period(WindowSnapshot(81 * B, 81 * B + 10_000, {})) is None
    # Streams start at a multiple of the lookback, so evaluations of an epoch share their first buckets.
    assert [ev.stream_start(p * B) for p in (60, 70, 110, 119, 120)] == [0, 0, 0, 0, 60 * B]
    model = SimpleNamespace(name="m")
    assert ev(model, WindowSnapshot(80 * B, 80 * B + 10_000, {})) == []  # type: ignore[arg-type]  # no reader


def test_for_settings_reads_the_metrics_settings() -> None:
    settings = MetricsSettings(
        performance_every_s=1800,
        performance_lookback_s=7200,
        performance_min_support=50,
        performance_alpha=0.05,
        performance_label_delay_s=600,
        baseline_error_rate=0.1,
        concept_detector="HDDM_A",
        concept_detector_params={"drift_confidence": 0.0005},
    )
    ev = ConceptDriftEvaluator.for_settings("fraud", None, settings)
    assert (ev.model, ev.every_ms, ev.lookback_ms, ev.label_delay_ms) == ("fraud", 1_800_000, 7_200_000, 600_000)
    # The degradation test's level: the weekly budget over 336 half-hourly evaluations, below performance_alpha.
    assert (ev.min_support, ev.baseline_error_rate, ev.task) == (50, 0.1, "classification")
    assert ev.alpha == pytest.approx(0.1 / 336)
    assert ev.detector == DetectorSpec("HDDM_A", {"drift_confidence": 0.0005})
    keys = ModelKeys("sg", "fraud")
    reader = MetricsReader(MemoryState(keys, window_ms=60_000, lateness_ms=0), keys)
    perf = PerformanceEvaluator.for_settings("fraud", reader, settings)
    assert (perf.every_ms, perf.lookback_ms, perf.min_support) == (1_800_000, 7_200_000, 50)
    assert perf.alpha == pytest.approx(0.1 / 336 / 2)  # two metrics, recall and accuracy
    rare = dataclasses.replace(settings, performance_false_alarms_per_week=1e6)  # the budget allows more
    rare_perf = PerformanceEvaluator.for_settings("fraud", reader, rare)
    assert (ConceptDriftEvaluator.for_settings("fraud", None, rare).alpha, rare_perf.alpha) == (0.05, 0.05)
    assert list(perf.readers) == ["fraud"]
    rollups = perf.readers["fraud"]
    assert isinstance(rollups, RollupCache) and rollups.tile_ms == 1_800_000  # tiles of the evaluation grid
    with pytest.raises(ValueError, match="unknown drift detector"):
        ConceptDriftEvaluator.for_settings("fraud", None, MetricsSettings(concept_detector="NOPE"))
