"""Slices against their own baseline: the statistics, the minimum effect, known biases and the evaluator."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from labelled_frames import FixedReader, fraud_model, labelled_frame, rollup_of
from scipy import stats as sps

from stream_guard.alerts.lifecycle import IncidentTracker, LifecycleSettings
from stream_guard.learning import learn_from_frame
from stream_guard.metrics.baseline import REFERENCE, REST, effect, slice_tests
from stream_guard.metrics.query import Rollup, SliceMetrics
from stream_guard.metrics.slice_alerts import PerformanceEvaluator
from stream_guard.model import ModelRuntime
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState
from stream_guard.state.update import WindowSnapshot

HOUR_MS = 3_600_000
LOOKBACK_MS = 24 * HOUR_MS
T0 = 1_700_006_400_000  # a multiple of the hour
WINDOW_MS = 600_000


def recall_slice(name: str, tp: int, fn: int) -> SliceMetrics:
    return SliceMetrics(name, {"lm": tp + fn, "tp": tp, "fn": fn})


def seeded_recalls(seed: int, recalls: dict[str, float], positives: int) -> Rollup:
    rng = np.random.default_rng(seed)
    items = {}
    for name, recall in recalls.items():
        tp = int(rng.binomial(positives, recall))
        items[name] = recall_slice(name, tp, positives - tp)
    return Rollup(items, 0, 1, 1)


def test_own_baseline_p_values_match_a_direct_computation() -> None:
    """Each slice's one-sided pooled z-test against its own baseline counts, BH-adjusted, as computed by hand."""
    recalls_now = {"*": 0.60, "a=1": 0.50, "a=2": 0.61, "a=3": 0.58, "b=x": 0.45}
    recalls_then = {"*": 0.61, "a=1": 0.62, "a=2": 0.60, "a=3": 0.60, "b=x": 0.44}
    now, then = seeded_recalls(1, recalls_now, 800), seeded_recalls(2, recalls_then, 1500)
    tests = slice_tests(now, dict(then), "recall", min_support=100, alpha=0.05, min_effect=0.05)
    assert [t.slice for t in tests] == sorted(recalls_now)
    names = [t.slice for t in tests]
    x1 = np.array([now[n].get("tp") for n in names])
    x2 = np.array([then[n].get("tp") for n in names])
    n1, n2 = 800.0, 1500.0
    pooled = (x1 + x2) / (n1 + n2)
    z = (x1 / n1 - x2 / n2) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p = sps.norm.cdf(z)
    adjusted = sps.false_discovery_control(p, method="bh")
    assert [t.p_raw for t in tests] == pytest.approx(list(p), rel=1e-9)
    assert [t.p for t in tests] == pytest.approx(list(np.minimum(adjusted, 1.0)), rel=1e-9)
    assert all(t.source == REFERENCE for t in tests)
    effects = x2 / n2 - x1 / n1
    assert [t.effect for t in tests] == pytest.approx(list(effects))
    expected = [bool(q <= 0.05 and e >= 0.05) for q, e in zip(adjusted, effects, strict=True)]
    assert [t.flagged for t in tests] == expected
    assert dict(zip(names, expected, strict=True))["a=1"]  # the only real drop (0.62 -> 0.50)


def test_a_significant_drop_smaller_than_the_min_effect_is_not_flagged() -> None:
    """With 50,000 positives a 3-point drop is significant, yet below the 5-point minimum it never alerts."""
    now = Rollup({"a=1": recall_slice("a=1", 28_500, 21_500)}, 0, 1, 1)  # 0.57
    then = {"a=1": recall_slice("a=1", 30_000, 20_000)}  # 0.60
    (test,) = slice_tests(now, then, "recall", min_effect=0.05)
    assert test.significant and test.p < 1e-10 and not test.flagged
    assert test.effect == pytest.approx(0.03)
    (lower_bar,) = slice_tests(now, then, "recall", min_effect=0.02)
    assert lower_bar.flagged


def test_the_effect_is_absolute_for_proportions_and_relative_for_mae() -> None:
    """Recall 0.60 -> 0.50 is 0.10 worse; an error rate going up is worse; MAE 2.0 -> 2.2 is 10 % worse."""
    assert effect("recall", 0.50, 0.60) == pytest.approx(0.10)
    assert effect("error_rate", 0.25, 0.20) == pytest.approx(0.05)
    assert effect("mae", 2.2, 2.0) == pytest.approx(0.10)
    assert effect("mae", 1.0, 0.0) == math.inf


def test_a_slice_without_baseline_support_is_compared_with_the_rest() -> None:
    """A slice absent (or below min_support) in the baseline falls back to the slice-vs-rest test; * then is skipped."""
    now = Rollup(
        {
            "*": recall_slice("*", 1200, 800),
            "a=1": recall_slice("a=1", 200, 300),
            "a=2": recall_slice("a=2", 1000, 500),
        },
        0,
        1,
        1,
    )
    then = {"*": recall_slice("*", 1300, 700), "a=1": recall_slice("a=1", 30, 20)}
    tests = {t.slice: t for t in slice_tests(now, then, "recall", min_support=100)}
    assert tests["*"].source == REFERENCE and tests["a=1"].source == REST and tests["a=2"].source == REST
    assert tests["a=1"].baseline == pytest.approx(1000 / 1500)
    assert "*" not in {t.slice for t in slice_tests(now, None, "recall")}


# -- the evaluator -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def biased_reference() -> ModelRuntime:
    """The fraud model with a labelled reference in which android recall is already low (a known bias)."""
    model = fraud_model()
    model.profile = learn_from_frame(
        model, labelled_frame(11, 30_000, android_misses=0.25), "test", label_column="label"
    )
    model.profile.created_at = "2023-11-01T00:00:00Z"  # learned before the live traffic of T0
    return model


def evaluate(model: ModelRuntime, live: pd.DataFrame, earlier: pd.DataFrame | None = None, **kwargs: object) -> list:
    end = T0 + WINDOW_MS
    rollups = {(end - LOOKBACK_MS, end): rollup_of(model, live, end - LOOKBACK_MS, end)}
    if earlier is not None:
        rollups[(end - 2 * LOOKBACK_MS, end - LOOKBACK_MS)] = rollup_of(model, earlier)
    evaluator = PerformanceEvaluator({"fraud": FixedReader(rollups)}, metrics=["recall"], **kwargs)  # type: ignore[arg-type]
    return evaluator(model, WindowSnapshot(T0, end, {}))


def test_learn_lists_the_reference_gap_as_a_known_bias(biased_reference: ModelRuntime) -> None:
    """The android gap of the reference is a known bias of recall; the other devices are not."""
    assert biased_reference.profile is not None and biased_reference.profile.performance is not None
    biases = {(b.metric, b.slice) for b in biased_reference.profile.performance.known_biases}
    assert ("recall", "device_type=android") in biases
    assert not biases & {("recall", "device_type=ios"), ("recall", "device_type=web")}


def test_a_known_bias_at_its_reference_gap_is_one_info_finding_not_an_alert(biased_reference: ModelRuntime) -> None:
    """Live traffic as biased as the reference: no slice_underperformance, one known_bias INFO on the reference's time."""
    alerts = evaluate(biased_reference, labelled_frame(12, 20_000, android_misses=0.25))
    assert [a for a in alerts if a.kind == "slice_underperformance"] == []
    (bias,) = [a for a in alerts if a.kind == "known_bias" and a.slice == "device_type=android"]
    assert bias.severity == "INFO" and bias.feature == "recall"
    assert bias.window_start == bias.window_end
    assert bias.alert_id == evaluate(biased_reference, labelled_frame(13, 5_000))[0].alert_id


def test_a_known_bias_that_widens_alerts_again(biased_reference: ModelRuntime) -> None:
    """Android recall falling well below its own (already low) reference value raises slice_underperformance."""
    alerts = evaluate(biased_reference, labelled_frame(14, 20_000, android_misses=0.6))
    low = [a for a in alerts if a.kind == "slice_underperformance"]
    assert [a.slice for a in low] == ["device_type=android"]
    assert low[0].detector == "performance.own_baseline" and "known bias" in low[0].message
    assert "device_type=android,is_new_user=False" in low[0].observed  # evidence: its crossings


def test_the_fairness_tolerance_alerts_on_a_known_bias_beyond_it(biased_reference: ModelRuntime) -> None:
    """performance_max_gap: a gap to the rest larger than the tolerance alerts even at its reference value."""
    live = labelled_frame(12, 20_000, android_misses=0.25)
    alerts = evaluate(biased_reference, live, max_gap={"recall": 0.05})
    (unfair,) = [a for a in alerts if a.kind == "slice_underperformance"]
    assert unfair.detector == "performance.fairness_gap" and "performance_max_gap 0.05" in unfair.message
    assert unfair.slice.startswith("device_type=android")  # android, or the crossing that carries its gap
    assert [a for a in evaluate(biased_reference, live, max_gap={"recall": 0.9}) if a.kind != "known_bias"] == []


def test_a_fault_after_the_reference_alerts_once_on_its_slice() -> None:
    """A clean reference, android misses injected live: one alert on device_type=android, the rest as its evidence."""
    model = fraud_model()
    model.profile = learn_from_frame(model, labelled_frame(21, 30_000), "test", label_column="label")
    assert model.profile.performance is not None and model.profile.performance.known_biases == []
    alerts = evaluate(model, labelled_frame(22, 20_000, android_misses=0.3))
    (alert,) = alerts
    assert (alert.kind, alert.slice, alert.detector) == (
        "slice_underperformance",
        "device_type=android",
        "performance.own_baseline",
    )
    assert "explains" in alert.observed and "device_type=android,is_new_user=True" in alert.observed
    assert alert.threshold == pytest.approx(
        model.profile.performance.slices["device_type=android"].intervals["recall"].value
    )


def test_without_a_labelled_reference_the_previous_lookback_is_the_baseline() -> None:
    """No reference: a bias as present in the previous lookback does not alert; with no earlier data, slice vs rest does."""
    model = fraud_model()
    live = labelled_frame(31, 20_000, android_misses=0.3)
    assert [a for a in evaluate(model, live, labelled_frame(32, 20_000, android_misses=0.3))] == []
    first = evaluate(model, live)
    assert "device_type=android" in {a.slice for a in first}
    assert {a.detector for a in first} == {"performance.two_proportion_bh"}
    worse = evaluate(model, live, labelled_frame(33, 20_000))
    assert [(a.slice, a.detector) for a in worse] == [("device_type=android", "performance.own_baseline")]
    assert "its previous lookback" in worse[0].expected


def test_a_known_bias_is_published_once_across_evaluations(biased_reference: ModelRuntime) -> None:
    """Hourly evaluations through the incident lifecycle (windows closing in between): one FIRING known_bias."""
    keys = ModelKeys("sg", "fraud")
    tracker = IncidentTracker(MemoryState(keys, window_ms=WINDOW_MS, lateness_ms=0), settings=LifecycleSettings())
    live = rollup_of(biased_reference, labelled_frame(12, 5_000, android_misses=0.25))
    published = []
    for start in range(T0, T0 + 5 * HOUR_MS, WINDOW_MS):
        end = start + WINDOW_MS
        rollups = {(end - LOOKBACK_MS, end): Rollup(dict(live), end - LOOKBACK_MS, end, 1)}
        evaluator = PerformanceEvaluator({"fraud": FixedReader(rollups)}, metrics=["recall"])
        raised = evaluator(biased_reference, WindowSnapshot(start, end, {}))
        out = tracker.publishable(raised)
        out += tracker.resolved(end, {a.incident_id for a in raised})
        tracker.delivered(end)
        published += out
    assert biased_reference.profile is not None and biased_reference.profile.performance is not None
    biases = {(b.metric, b.slice) for b in biased_reference.profile.performance.known_biases if b.metric == "recall"}
    firing = [(a.feature, a.slice) for a in published if a.kind == "known_bias" and a.status == "FIRING"]
    assert sorted(firing) == sorted(biases)  # each once, over 30 windows and 5 evaluations
    assert [a for a in published if a.kind == "slice_underperformance"] == []


def test_an_evaluator_raises_a_known_bias_at_its_first_evaluation_and_its_retries_only(
    biased_reference: ModelRuntime,
) -> None:
    """The window that first raised it raises it again when its closing is retried; later windows do not."""
    live = rollup_of(biased_reference, labelled_frame(12, 5_000, android_misses=0.25))
    reader = FixedReader({})
    evaluator = PerformanceEvaluator({"fraud": reader}, metrics=["recall"], every_ms=WINDOW_MS)

    def kinds(start: int) -> list[str]:
        end = start + WINDOW_MS
        reader.rollups[(end - LOOKBACK_MS, end)] = Rollup(dict(live), end - LOOKBACK_MS, end, 1)
        return [a.kind for a in evaluator(biased_reference, WindowSnapshot(start, end, {}))]

    assert "known_bias" in kinds(T0)
    assert kinds(T0) == kinds(T0) and "known_bias" in kinds(T0)  # a retried closing of the same window
    assert "known_bias" not in kinds(T0 + WINDOW_MS)
