"""The label-free estimate (CBPE): estimator against a direct computation, the calibration, the profile, the alerts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from labelled_frames import fraud_model, labelled_frame

from stream_guard.errors import ProfileFormatError
from stream_guard.learning.calibration import bin_index, cell_index, isotonic, learn_estimation, threshold_bin
from stream_guard.learning.performance import learn_reference_performance
from stream_guard.learning.summary import estimation_summary
from stream_guard.metrics import store as s
from stream_guard.metrics.attribution import Attributed
from stream_guard.metrics.baseline import SliceTest
from stream_guard.metrics.estimate import estimate_counts, estimate_rollup, with_estimate_columns
from stream_guard.metrics.estimate_alerts import EstimatePerformanceEvaluator
from stream_guard.metrics.estimate_rules import (
    CalibrationCause,
    Deviation,
    calibration_causes,
    calibration_tests,
    drop_tests,
)
from stream_guard.metrics.query import Rollup, SliceMetrics
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile
from stream_guard.profile_estimate import (
    MetricSpread,
    ReferenceEstimation,
    ScoreCalibration,
    ThresholdSplit,
    split_bin,
)
from stream_guard.profile_performance import ReferencePerformance
from stream_guard.settings.metrics import MetricsSettings, performance_settings_problems
from stream_guard.state.window_store import WindowSnapshot

BINS = 10


def test_the_expected_confusion_is_the_sum_over_events_of_their_calibrated_probability() -> None:
    """Seeded events: the histogram estimate equals the per-event expectation, and its std the Poisson-binomial one."""
    rng = np.random.default_rng(3)
    scores = rng.beta(1.2, 3.0, 5000)
    probability = np.sort(rng.uniform(0, 1, BINS))
    index = bin_index(scores, BINS, (0.0, 1.0))
    p_event, predicted = probability[index], scores >= 0.5
    est = estimate_counts(np.bincount(index, minlength=BINS), probability, 5)
    tp, fn = p_event[predicted].sum(), p_event[~predicted].sum()
    fp, tn = (1 - p_event[predicted]).sum(), (1 - p_event[~predicted]).sum()
    assert (est.tp, est.fp, est.tn, est.fn) == pytest.approx((tp, fp, tn, fn))
    assert est.value("accuracy") == pytest.approx((tp + tn) / 5000)
    assert est.value("precision") == pytest.approx(tp / predicted.sum())
    assert est.value("recall") == pytest.approx(tp / (tp + fn))
    assert est.value("f1") == pytest.approx(2 * tp / (2 * tp + fp + fn))
    var = p_event * (1 - p_event)
    assert est.std["accuracy"] == pytest.approx(np.sqrt(var.sum()) / 5000)
    assert est.std["precision"] == pytest.approx(np.sqrt(var[predicted].sum()) / predicted.sum())


def test_the_std_is_the_spread_of_the_realised_metric_when_the_calibration_holds() -> None:
    """Labels drawn Bernoulli(p_b) 4000 times: the realised metrics' mean and std match the estimate's."""
    rng = np.random.default_rng(8)
    counts = np.array([900, 700, 500, 300, 200, 150, 120, 80, 40, 10])
    probability = np.linspace(0.03, 0.95, BINS)
    est = estimate_counts(counts, probability, 5)
    above = np.arange(BINS) >= 5
    draws = rng.binomial(counts[None, :], probability[None, :], size=(4000, BINS))
    tp, fn = draws[:, above].sum(1), draws[:, ~above].sum(1)
    fp, tn = counts[above].sum() - tp, counts[~above].sum() - fn
    realised = {
        "accuracy": (tp + tn) / counts.sum(),
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "f1": 2 * tp / (2 * tp + fp + fn),
    }
    for metric, values in realised.items():
        assert est.value(metric) == pytest.approx(values.mean(), abs=0.004), metric
        assert est.std[metric] == pytest.approx(values.std(), rel=0.08), metric


def test_isotonic_pools_adjacent_violators_and_keeps_a_monotone_sequence() -> None:
    assert isotonic(np.array([0.1, 0.3, 0.2, 0.4]), np.array([1.0, 1.0, 1.0, 1.0])).tolist() == pytest.approx(
        [0.1, 0.25, 0.25, 0.4]
    )
    assert isotonic(np.array([0.5, 0.1]), np.array([3.0, 1.0])).tolist() == pytest.approx([0.4, 0.4])


def test_the_threshold_bin_is_the_one_it_opens_or_the_one_it_lies_inside() -> None:
    assert threshold_bin(0.5, 10, (0.0, 1.0)) == 5
    assert threshold_bin(0.3, 20, (0.0, 1.0)) == 6
    assert threshold_bin(0.55, 10, (0.0, 1.0)) == 5  # inside bin 5: split at the threshold
    assert threshold_bin(1.5, 10, (0.0, 1.0)) is None  # outside the range: the edge bins hold such scores


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return labelled_frame(61, 20_000)


def test_learn_records_a_calibration_close_to_the_simulators_calibrated_score(reference: pd.DataFrame) -> None:
    """The simulator's label is Bernoulli(score): per-bin probability ~ the bin's mean score; little raw ECE."""
    perf = learn_reference_performance(fraud_model(), reference, "label")
    assert perf.estimation is not None
    c = perf.estimation.calibration
    assert (c.method, c.bins, c.threshold_bin, sum(c.counts)) == ("isotonic", BINS, 5, len(reference))
    assert c.probability == sorted(c.probability)
    for p, mean, n in zip(c.probability, c.mean_score, c.counts, strict=True):
        if n >= 300:
            assert abs(p - mean) < 0.05
    assert c.raw_ece < 0.02 and c.chunk_accuracy_error < 0.02
    spread = perf.estimation.spread("*", "accuracy")
    assert spread is not None and spread.std is not None and 0 < spread.std < 0.05
    assert spread.value == pytest.approx(perf.slices["*"].intervals["accuracy"].value, abs=1e-6)
    assert perf.estimation.spread("device_type=android", "recall") is not None
    assert "isotonic calibration on 10 score bins" in estimation_summary(perf)


def test_the_estimation_survives_the_profile_file_and_old_profiles_still_load(reference: pd.DataFrame) -> None:
    perf = learn_reference_performance(fraud_model(), reference, "label")
    d = json.loads(json.dumps(perf.to_dict()))
    again = ReferencePerformance.from_dict(d)
    assert again.estimation == perf.estimation
    del d["estimation"]
    assert ReferencePerformance.from_dict(d).estimation is None
    d = perf.to_dict()
    d["estimation"]["calibration"]["probability"][2] = 1.5
    with pytest.raises(ProfileFormatError, match=r"performance\.estimation\.calibration\.probability"):
        ReferencePerformance.from_dict(d)


def test_no_estimation_when_the_threshold_is_outside_the_score_range_or_it_is_turned_off(
    reference: pd.DataFrame,
) -> None:
    assert learn_reference_performance(fraud_model(threshold=1.5), reference, "label").estimation is None
    off = fraud_model(estimate_calibration="off")
    assert learn_reference_performance(off, reference, "label").estimation is None
    scores, positive = reference["score"].to_numpy(float), (reference["label"] == 1).to_numpy()
    learned = learn_estimation(scores, positive, {}, threshold=0.5, bins=BINS, score_range=(0.0, 1.0))
    assert learned is not None and set(learned.slices) == {"*"}


def _rollup(frames: dict[str, pd.DataFrame], labels: bool, threshold: float = 0.5) -> Rollup:
    """A rollup of the live counters the recorder and the label join would write for ``frames``.

    A threshold inside a bin adds ``pp`` (scores at or above it), as the recorder does.
    """
    items = {}
    for name, part in frames.items():
        counters: dict[str, float] = {s.EVENTS: len(part)}
        index = bin_index(part["score"].to_numpy(float), BINS, (0.0, 1.0))
        for b, n in enumerate(np.bincount(index, minlength=BINS)):
            if n:
                counters[f"{s.HIST}{b}"] = float(n)
        if split_bin(threshold, BINS, (0.0, 1.0)) is not None:
            counters[s.SCORE_POSITIVE] = float((part["score"] >= threshold).sum())
        if labels:
            pred, true = part["score"] >= threshold, part["label"] == 1
            counters[s.MATCHED] = len(part)
            counters.update(tp=(pred & true).sum(), fp=(pred & ~true).sum(), tn=(~pred & ~true).sum())
            counters[s.FN] = (~pred & true).sum()
        items[name] = SliceMetrics(name, counters)
    return Rollup(items, 0, 3_600_000, 60)


def _slices(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    out = {"*": frame}
    for value, part in frame.groupby("device_type"):
        out[f"device_type={value}"] = part
    return out


@pytest.fixture(scope="module")
def profiled(reference: pd.DataFrame) -> ModelRuntime:
    model = fraud_model(performance_min_support=200)
    profile = BaselineProfile(
        format_version=2,
        model="fraud",
        created_at="2026-01-01T00:00:00Z",
        source="t",
        row_count=1,
        chunk_size=1,
        features={},
    )
    profile.performance = learn_reference_performance(model, reference, "label")
    model.profile = profile
    return model


def test_a_window_like_the_reference_raises_nothing_and_is_estimated_within_its_band(profiled: ModelRuntime) -> None:
    live = labelled_frame(62, 6000)
    rollup = _rollup(_slices(live), labels=True)
    assert profiled.profile is not None and profiled.profile.performance is not None
    estimation = profiled.profile.performance.estimation
    assert estimation is not None
    est = estimate_rollup(rollup, estimation.calibration)["*"]
    band = est.band("accuracy", 1.96)
    assert band is not None and band[0] <= rollup.overall.accuracy <= band[1]  # type: ignore[operator]
    settings = {"fraud": profiled.config.metrics}
    evaluate = EstimatePerformanceEvaluator({"fraud": _Reader(rollup)}, settings, labels={"fraud": True})  # type: ignore[dict-item]
    assert evaluate(profiled, WindowSnapshot(3_600_000, 3_610_000, {})) == []
    table = with_estimate_columns(rollup.to_frame(), rollup, estimation.calibration, 1.96)
    row = table[table["slice"] == "*"].iloc[0]
    assert row["est_accuracy"] == pytest.approx(est.value("accuracy"))
    assert row["acc_minus_est"] == pytest.approx(rollup.overall.accuracy - est.value("accuracy"))  # type: ignore[operator]


class _Reader:
    """A metrics reader returning one rollup (the evaluator's only call on it)."""

    def __init__(self, rollup: Rollup) -> None:
        self.ranges: list[tuple[int, int]] = []
        self._rollup = rollup

    def rollup(self, start_ms: int, end_ms: int) -> Rollup:
        self.ranges.append((start_ms, end_ms))
        return Rollup(dict(self._rollup), start_ms, end_ms, 60)


def test_uncertain_traffic_lowers_the_estimate_and_raises_one_drop_before_any_label(profiled: ModelRuntime) -> None:
    """Covariate shift: android traffic moves near the threshold; no labels yet; one alert names android."""
    live = labelled_frame(63, 12_000)
    android = live["device_type"] == "android"
    near = (live["score"] - 0.5).abs() < 0.15
    shifted = pd.concat([live[~android], live[android & near], live[android & near], live[android & near]])
    reader = _Reader(_rollup(_slices(shifted), labels=False))
    evaluate = EstimatePerformanceEvaluator({"fraud": reader}, {"fraud": profiled.config.metrics})  # type: ignore[dict-item]
    alerts = evaluate(profiled, WindowSnapshot(3_300_000, 3_310_000, {}))
    assert reader.ranges == [(3_310_000 - 3_600_000, 3_310_000)]
    by_metric = {(a.kind, a.feature, a.slice) for a in alerts}
    assert ("estimated_performance_drop", "accuracy", "device_type=android") in by_metric
    assert all(a.slice == "device_type=android" for a in alerts), by_metric
    alert = next(a for a in alerts if a.feature == "accuracy")
    assert alert.value is not None and alert.threshold is not None and alert.value < alert.threshold
    assert "labels not in yet" in alert.message


def test_concept_drift_is_invisible_to_the_estimate_and_found_by_the_calibration_check(
    profiled: ModelRuntime,
) -> None:
    """Labels turn bad on android, scores unchanged: no drop is estimated, calibration_drift names android."""
    live = labelled_frame(64, 12_000, android_misses=0.4)
    reader = _Reader(_rollup(_slices(live), labels=True))
    settings = {"fraud": profiled.config.metrics}
    evaluate = EstimatePerformanceEvaluator({"fraud": reader}, settings, labels={"fraud": True})  # type: ignore[dict-item]
    alerts = evaluate(profiled, WindowSnapshot(3_600_000, 3_610_000, {}))
    kinds = {(a.kind, a.slice) for a in alerts}
    assert kinds == {("calibration_drift", "device_type=android")}
    (finding,) = alerts
    assert finding.value is not None and finding.threshold is not None and finding.value < finding.threshold - 0.05


def test_the_estimate_settings_are_validated() -> None:
    bad = MetricsSettings(estimate_every_s=45, estimate_window_s=90, estimate_metrics=["mae"], estimate_z=0)
    problems = "\n".join(performance_settings_problems(bad, 10))
    assert "estimate_every_s: must be a multiple of worker.window_s (10)" in problems
    assert "estimate_window_s: must be a positive multiple of bucket_s (60)" in problems
    assert "estimate_metrics: 'mae' is not estimated" in problems
    assert "estimate_z: must be a positive number" in problems
    assert performance_settings_problems(MetricsSettings(), 10) == []


# -- the drop decision across slices (multiplicity) ------------------------------------------

#: A calibration on BINS bins, threshold on the edge of bin 5, with a large reference behind each bin.
FLAT_CALIBRATION = ScoreCalibration(
    method="binning",
    score_range=(0.0, 1.0),
    bins=BINS,
    threshold_bin=5,
    probability=np.linspace(0.05, 0.95, BINS).round(6).tolist(),
    counts=[100_000] * BINS,
    positives=[0] * BINS,
    mean_score=[0.0] * BINS,
    raw_ece=0.0,
    chunk_accuracy_error=0.0,
)
HISTOGRAM = [120, 100, 90, 80, 70, 70, 80, 90, 100, 120]


def _region_rollup(regions: int) -> Rollup:
    """``regions`` slices ``region=rNN`` with the same score histogram, and ``*`` their sum."""
    per = {f"{s.HIST}{b}": float(n) for b, n in enumerate(HISTOGRAM)}
    items = {
        f"region=r{i:02d}": SliceMetrics(f"region=r{i:02d}", {s.EVENTS: sum(HISTOGRAM), **per}) for i in range(regions)
    }
    overall = {k: v * regions for k, v in per.items()}
    items["*"] = SliceMetrics("*", {s.EVENTS: sum(HISTOGRAM) * regions, **overall})
    return Rollup(items, 0, 3_600_000, 60)


def _estimation_with_drops(rollup: Rollup, drops_in_sd: dict[str, float]) -> ReferenceEstimation:
    """A reference whose accuracy per slice lies ``drops_in_sd[slice]`` estimate stds above the estimate.

    The reference has no chunk std, so each slice's std is the estimate's own.
    """
    slices = {}
    for name, est in estimate_rollup(rollup, FLAT_CALIBRATION).items():
        value, sd = est.value("accuracy"), est.std["accuracy"]
        assert value is not None
        baseline = value + drops_in_sd.get(name, 0.0) * sd
        slices[name] = {"accuracy": MetricSpread(baseline, None, 1.0, 0)}
    return ReferenceEstimation(FLAT_CALIBRATION, 1000, 20, slices)


DECISION = MetricsSettings(estimate_metrics=["accuracy"], performance_min_support=50, performance_min_effect=0.0)


def test_a_lone_slice_beyond_3_sigma_among_20_is_not_a_discovery_after_bh() -> None:
    """One of 20 slices 3.2 std low: one-sided p = 0.0007, BH-adjusted 0.014 > alpha 0.01: no alert.

    A fixed z = 3 per slice flagged it: with 20 slices, one such slice is expected every ~70 evaluations by chance.
    """
    rollup = _region_rollup(20)
    estimation = _estimation_with_drops(rollup, {"region=r07": 3.2})
    evaluate = EstimatePerformanceEvaluator({}, {})
    assert evaluate.drops("m", rollup, estimation, DECISION) == []
    # Alone (one slice tested), the same drop is a discovery: the correction is what spared it above.
    alone = _region_rollup(1)
    one = evaluate.drops("m", alone, _estimation_with_drops(alone, {"region=r00": 3.2}), DECISION)
    assert [(a.kind, a.slice) for a in one] == [("estimated_performance_drop", "region=r00")]


def test_many_slices_moderately_low_are_discoveries_together_and_the_alert_names_the_bh_rule() -> None:
    """Six of 20 slices 2.8 std low (p = 0.0026 each, BH-adjusted 0.0085 <= 0.01): each alerts; below 3 sigma."""
    rollup = _region_rollup(20)
    low = {f"region=r{i:02d}": 2.8 for i in (1, 4, 6, 9, 13, 17)}
    alerts = EstimatePerformanceEvaluator({}, {}).drops("m", rollup, _estimation_with_drops(rollup, low), DECISION)
    assert sorted(a.slice for a in alerts) == sorted(low)
    alert = alerts[0]
    assert "BH-adjusted p=0.0085 over 20 slices" in alert.message
    assert alert.value is not None and alert.threshold is not None and alert.value < alert.threshold


def test_the_overall_traffic_keeps_the_nannyml_3_sigma_rule_and_every_decision_keeps_the_minimum_effect() -> None:
    deviations = [
        Deviation("accuracy", "*", 0.70, 0.75, 5000, 0.05, 0.0160),  # 3.1 sigma: flagged
        Deviation("accuracy", "region=a", 0.60, 0.75, 800, 0.15, 0.02),  # 7.5 sigma: flagged
        Deviation("accuracy", "region=b", 0.745, 0.75, 800, 0.005, 0.001),  # 5 sigma, below the minimum effect
    ]
    decided = {d.test.slice: d for d in drop_tests(deviations, z=3.0, alpha=0.01, min_effect=0.01)}
    assert decided["*"].test.flagged and decided["*"].critical_z == 3.0
    assert decided["*"].test.p == decided["*"].test.p_raw  # one test: nothing to adjust
    assert decided["region=a"].test.flagged
    assert decided["region=b"].test.significant and not decided["region=b"].test.flagged
    # BH over the two slices rejects both: the raw cut-off is alpha * 2 / 2, z 2.326.
    assert decided["region=a"].critical_z == pytest.approx(2.3263, abs=1e-4)
    barely = drop_tests([Deviation("accuracy", "*", 0.70, 0.75, 5000, 0.05, 0.0170)], z=3.0, alpha=0.01, min_effect=0.0)
    assert not barely[0].test.significant  # 2.94 sigma


# -- a threshold inside a score bin -----------------------------------------------------------


def test_a_threshold_inside_a_bin_splits_it_and_the_estimate_is_the_per_event_expectation() -> None:
    """Threshold 0.55 in bin 5 of 10: the bin is two cells; pp tells how many of its events are at or above 0.55."""
    rng = np.random.default_rng(5)
    scores = rng.beta(1.5, 2.5, 6000)
    cell_probability = np.sort(rng.uniform(0, 1, BINS + 1))
    index = bin_index(scores, BINS, (0.0, 1.0))
    cell = cell_index(scores, index, 0.55, 5)
    p_event, predicted = cell_probability[cell], scores >= 0.55
    split = ThresholdSplit((400, 300), (150, 140), (float(cell_probability[5]), float(cell_probability[6])))
    bin_probability = np.delete(cell_probability, 6)  # bin 5's own probability is never used when split
    est = estimate_counts(
        np.bincount(index, minlength=BINS), bin_probability, 5, split=split, predicted_positive=predicted.sum()
    )
    tp, fn = p_event[predicted].sum(), p_event[~predicted].sum()
    fp, tn = (1 - p_event[predicted]).sum(), (1 - p_event[~predicted]).sum()
    assert (est.tp, est.fp, est.tn, est.fn) == pytest.approx((tp, fp, tn, fn))
    var = p_event * (1 - p_event)
    assert est.std["accuracy"] == pytest.approx(np.sqrt(var.sum()) / len(scores))
    assert est.std["precision"] == pytest.approx(np.sqrt(var[predicted].sum()) / predicted.sum())
    # Without pp (buckets written before the recorder knew the threshold): the reference's share above, 3/7.
    fallback = estimate_counts(np.bincount(index, minlength=BINS), bin_probability, 5, split=split)
    n5 = (index == 5).sum()
    expected_tp = (p_event[index > 5]).sum() + n5 * 3 / 7 * cell_probability[6]
    assert fallback.tp == pytest.approx(expected_tp)


def test_learn_splits_the_threshold_bin_and_the_estimate_tracks_a_live_window(reference: pd.DataFrame) -> None:
    """Threshold 0.55 (inside bin 5): learned, each cell calibrated; a live window's estimate holds within its band."""
    model = fraud_model(threshold=0.55, performance_min_support=200)
    perf = learn_reference_performance(model, reference, "label")
    assert perf.estimation is not None
    c = perf.estimation.calibration
    assert (c.threshold_bin, c.first_positive_bin) == (5, 6) and c.split is not None
    score = reference["score"].to_numpy(float)
    in_bin = (score >= 0.5) & (score < 0.6)
    assert c.split.counts == (int((in_bin & (score < 0.55)).sum()), int((in_bin & (score >= 0.55)).sum()))
    below, above = c.split.probability
    assert below <= above and abs(below - 0.525) < 0.06 and abs(above - 0.575) < 0.06
    spread = perf.estimation.spread("*", "accuracy")
    assert spread is not None and spread.value == pytest.approx(perf.slices["*"].intervals["accuracy"].value, abs=1e-6)
    again = ReferencePerformance.from_dict(json.loads(json.dumps(perf.to_dict())))
    assert again.estimation == perf.estimation

    live = labelled_frame(65, 8000)
    frames = _slices(live)
    rollup = _rollup(frames, labels=True, threshold=0.55)
    assert rollup.overall.get(s.SCORE_POSITIVE) == (live["score"] >= 0.55).sum()
    estimates = estimate_rollup(rollup, c)
    for metric in ("accuracy", "precision", "recall"):
        band = estimates["*"].band(metric, 3.0)
        realised = rollup.overall.value(metric)
        assert band is not None and realised is not None and band[0] <= realised <= band[1], (metric, band, realised)
    model.profile = BaselineProfile(
        format_version=2,
        model="fraud",
        created_at="2026-01-01T00:00:00Z",
        source="t",
        row_count=1,
        chunk_size=1,
        features={},
    )
    model.profile.performance = perf
    evaluate = EstimatePerformanceEvaluator(
        {"fraud": _Reader(rollup)}, {"fraud": model.config.metrics}, labels={"fraud": True}
    )  # type: ignore[dict-item]
    assert evaluate.estimation(model) is not None
    assert evaluate(model, WindowSnapshot(3_600_000, 3_610_000, {})) == []


# -- calibration drift on every confusion-based metric -----------------------------------------


def _labelled_as(rollup: Rollup, name: str, tp: float, fp: float, tn: float, fn: float) -> None:
    """Give slice ``name`` of ``rollup`` these realised confusion counts, all its events labelled."""
    counters = rollup[name].counters
    counters.update({s.TP: tp, s.FP: fp, s.TN: tn, s.FN: fn, s.MATCHED: tp + fp + tn + fn})


def test_a_label_shift_that_leaves_accuracy_unchanged_is_found_by_precision_and_recall_as_one_finding() -> None:
    """Fewer positives than the scores say, on both sides of the threshold: accuracy as estimated, precision and recall off.

    ``d`` true positives became false positives and ``d`` false negatives true negatives: accuracy
    is exactly the estimate's, so an accuracy-only check cannot see it. One finding, named by the
    worse of precision and recall, the other in its text.
    """
    rollup = _region_rollup(1)
    name = "region=r00"
    est = estimate_rollup(rollup, FLAT_CALIBRATION)[name]
    d = 0.4 * est.tp
    _labelled_as(rollup, name, est.tp - d, est.fp + d, est.tn + d, est.fn - d)
    assert rollup[name].accuracy == pytest.approx(est.value("accuracy"), abs=2e-3)  # counts are rounded
    estimation = _estimation_with_drops(rollup, {})
    settings = MetricsSettings(performance_min_support=50, performance_min_effect=0.05)
    alerts = EstimatePerformanceEvaluator({}, {}).calibration("m", rollup, estimation, settings)
    assert [(a.kind, a.slice, a.feature) for a in alerts] == [("calibration_drift", name, None)]
    (alert,) = alerts
    precision = calibration_tests("precision", rollup, {name: est}, settings)[0]
    recall = calibration_tests("recall", rollup, {name: est}, settings)[0]
    assert precision.flagged and recall.flagged
    worst, other = sorted((precision, recall), key=lambda t: -t.effect / t.effect_se)
    assert f"realised {worst.metric} {worst.value:.3f}" in alert.message
    assert f"{other.metric} {other.value:.3f} vs {other.baseline:.3f} estimated" in alert.observed
    assert "the worst of 2 metrics beyond the band" in alert.message
    assert alert.value == pytest.approx(worst.value) and alert.threshold == pytest.approx(worst.baseline)


def _flagged(metric: str, slice_: str, gap: float, se: float = 0.01) -> SliceTest:
    return SliceTest(metric, slice_, 0.5, 0.5 + gap, "reference", 500, 500, 0.0, 0.0, gap, True, True, se)


def test_calibration_causes_fold_the_metrics_of_a_slice_and_the_slices_another_metric_attributes() -> None:
    android_acc, android_rec = _flagged("accuracy", "d=android", 0.10), _flagged("recall", "d=android", 0.30)
    us_rec = _flagged("recall", "c=US", 0.12)  # on recall, android explains US ...
    us_prec = _flagged("precision", "c=US", 0.08)  # ... which alerts on precision alone
    gb_prec = _flagged("precision", "c=GB", 0.09)
    found = [
        Attributed(android_acc),
        Attributed(android_rec, (us_rec,)),
        Attributed(us_prec),
        Attributed(gb_prec),
    ]
    causes = {c.worst.slice: c for c in calibration_causes(found)}
    assert sorted(causes) == ["c=GB", "d=android"]
    android = causes["d=android"]
    assert (android.worst, android.others) == (android_rec, (android_acc,))  # 30 std before 10 std
    assert android.evidence == (us_prec, us_rec)
    assert causes["c=GB"] == CalibrationCause(gb_prec)
    # Two slices naming each other on two metrics are one cause, named by the first of them.
    cycle = [Attributed(android_acc, (us_prec,)), Attributed(us_prec, (android_acc,))]
    assert [c.worst.slice for c in calibration_causes(cycle)] == ["c=US"]


# -- the outcome of a drop once its labels are in ------------------------------------------------


def _android_near_threshold(seed: int, *, model_right: bool) -> pd.DataFrame:
    """Covariate shift: android traffic moved near the threshold. Labels Bernoulli(score), or the model's own call."""
    live = labelled_frame(seed, 12_000)
    android = live["device_type"] == "android"
    near = (live["score"] - 0.5).abs() < 0.15
    shifted = pd.concat([live[~android], *[live[android & near]] * 3], ignore_index=True)
    if model_right:
        moved = shifted["device_type"] == "android"
        shifted.loc[moved, "label"] = (shifted.loc[moved, "score"] >= 0.5).astype(int)
    return shifted


def _outcomes(profiled: ModelRuntime, frame: pd.DataFrame) -> list[tuple[str | None, str, str | None]]:
    assert profiled.profile is not None and profiled.profile.performance is not None
    estimation = profiled.profile.performance.estimation
    assert estimation is not None
    evaluate = EstimatePerformanceEvaluator({}, {})
    alerts = evaluate.outcomes("fraud", _rollup(_slices(frame), labels=True), estimation, profiled.config.metrics)
    assert all(a.kind == "estimated_performance_drop" and a.status == "FIRING" for a in alerts)
    return sorted((a.feature, a.slice, a.outcome) for a in alerts)


def test_a_drop_the_labels_show_too_is_confirmed(profiled: ModelRuntime) -> None:
    """Calibrated labels: android's realised accuracy fell as estimated, so the drop's outcome is CONFIRMED."""
    frame = _android_near_threshold(63, model_right=False)
    outcomes = _outcomes(profiled, frame)
    assert ("accuracy", "device_type=android", "CONFIRMED") in outcomes
    assert {o for _, _, o in outcomes} == {"CONFIRMED"}
    # A label-gated window settles the estimate window that ended performance_label_delay_s (0) before its end.
    reader = _Reader(_rollup(_slices(frame), labels=True))
    settings = {"fraud": profiled.config.metrics}
    evaluate = EstimatePerformanceEvaluator({"fraud": reader}, settings, labels={"fraud": True})  # type: ignore[dict-item]
    alerts = evaluate(profiled, WindowSnapshot(3_600_000, 3_610_000, {}))
    assert (3_610_000 - 3_600_000, 3_610_000) in reader.ranges
    settled = {(a.feature, a.slice, a.outcome) for a in alerts if a.outcome is not None}
    assert settled == set(outcomes)


def test_a_drop_the_labels_do_not_show_is_refuted_and_says_why(profiled: ModelRuntime) -> None:
    """The same scores, but the model was right on every android event: realised accuracy 1, the drop is REFUTED."""
    frame = _android_near_threshold(63, model_right=True)
    outcomes = _outcomes(profiled, frame)
    assert ("accuracy", "device_type=android", "REFUTED") in outcomes
    assert {o for _, _, o in outcomes} == {"REFUTED"}
    assert profiled.profile is not None and profiled.profile.performance is not None
    estimation = profiled.profile.performance.estimation
    assert estimation is not None
    rollup = _rollup(_slices(frame), labels=True)
    (alert,) = [
        a
        for a in EstimatePerformanceEvaluator({}, {}).outcomes("fraud", rollup, estimation, profiled.config.metrics)
        if a.feature == "accuracy"
    ]
    assert alert.value == pytest.approx(1.0) and "refuted by the labels: realised accuracy 1.000" in alert.message
    # The outcome belongs to the drop's incident: same kind, metric and slice.
    (drop,) = [
        a
        for a in EstimatePerformanceEvaluator({}, {}).drops("fraud", rollup, estimation, profiled.config.metrics)
        if a.feature == "accuracy"
    ]
    assert drop.incident_id == alert.incident_id and drop.alert_id != alert.alert_id


def test_no_outcome_while_the_labels_do_not_cover_the_range(profiled: ModelRuntime) -> None:
    assert _outcomes_without_labels(profiled) == []


def _outcomes_without_labels(profiled: ModelRuntime) -> list[object]:
    assert profiled.profile is not None and profiled.profile.performance is not None
    estimation = profiled.profile.performance.estimation
    assert estimation is not None
    rollup = _rollup(_slices(_android_near_threshold(63, model_right=False)), labels=False)
    evaluate = EstimatePerformanceEvaluator({}, {})
    assert evaluate.drops("fraud", rollup, estimation, profiled.config.metrics)  # a drop, but no label yet
    return list(evaluate.outcomes("fraud", rollup, estimation, profiled.config.metrics))
