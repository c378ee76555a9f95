"""Two-proportion test, Benjamini-Hochberg, slice underperformance, degradation, rollup views."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from stream_guard.metrics.performance import (
    DegradationMonitor,
    benjamini_hochberg,
    performance_degradation,
    slice_underperformance,
    two_proportion_test,
    underperformance_alerts,
)
from stream_guard.metrics.query import Rollup, SliceMetrics
from stream_guard.settings.metrics import MetricsSettings, repeated_alpha

DEVICES = (("android", 0.45), ("ios", 0.40), ("web", 0.15))
COUNTRIES = (("US", 0.5), ("GB", 0.2), ("DE", 0.15), ("BR", 0.15))


def seeded_rollup(seed: int, recall: dict[str, float], n: int = 20_000, base_rate: float = 0.1) -> Rollup:
    """A rollup of ``n`` labelled events whose recall depends on the device only, as the writers would sum it."""
    rng = np.random.default_rng(seed)
    device = rng.choice([d for d, _ in DEVICES], size=n, p=[p for _, p in DEVICES])
    country = rng.choice([c for c, _ in COUNTRIES], size=n, p=[p for _, p in COUNTRIES])
    label = rng.random(n) < base_rate
    hit = rng.random(n) < pd.Series(device).map(recall).to_numpy()
    false_alarm = rng.random(n) < 0.02
    pred = np.where(label, hit, false_alarm)
    df = pd.DataFrame(
        {
            "tp": label & pred,
            "fp": ~label & pred,
            "tn": ~label & ~pred,
            "fn": label & ~pred,
            "n": 1,
            "lm": 1,
        }
    ).astype(int)
    names = {
        "*": pd.Series("*", index=df.index),
        "device": "device_type=" + pd.Series(device),
        "country": "country=" + pd.Series(country),
        "cross": "country=" + pd.Series(country) + ",device_type=" + pd.Series(device),
    }
    sums = pd.concat([df.assign(slice=v) for v in names.values()]).groupby("slice").sum()
    items = {s: SliceMetrics(s, {k: float(v) for k, v in row.items()}) for s, row in sums.iterrows()}
    return Rollup(items, 0, 3_600_000, 60)


def test_two_proportion_test_matches_hand_computation() -> None:
    # 30/100 vs 50/100: pooled 0.4, se = sqrt(0.4 * 0.6 * (1/100 + 1/100)) = 0.0692820
    z, p = two_proportion_test(30, 100, 50, 100)
    assert z == pytest.approx(-0.2 / math.sqrt(0.4 * 0.6 * 0.02), rel=1e-12)
    assert z == pytest.approx(-2.886751, abs=1e-6)
    assert p == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert p == pytest.approx(0.0038924, abs=1e-6)
    z_less, p_less = two_proportion_test(30, 100, 50, 100, alternative="less")
    assert (z_less, p_less) == pytest.approx((z, p / 2))
    assert two_proportion_test(30, 100, 50, 100, alternative="greater")[1] == pytest.approx(1 - p / 2)


def test_two_proportion_test_degenerate_inputs() -> None:
    assert two_proportion_test(0, 0, 5, 10) == (0.0, 1.0)
    assert two_proportion_test(0, 10, 0, 10) == (0.0, 1.0)
    assert two_proportion_test(10, 10, 10, 10) == (0.0, 1.0)
    with pytest.raises(ValueError):
        two_proportion_test(1, 2, 1, 2, alternative="sideways")


def test_benjamini_hochberg_by_hand_and_against_scipy() -> None:
    # Sorted: 0.01, 0.02, 0.03, 0.2 -> m p / rank = 0.04, 0.04, 0.04, 0.2
    rejected, adjusted = benjamini_hochberg([0.2, 0.01, 0.03, 0.02], alpha=0.05)
    assert rejected.tolist() == [False, True, True, True]
    assert adjusted.tolist() == pytest.approx([0.2, 0.04, 0.04, 0.04])
    # Step-up: 0.04 at rank 4 of 4 rescues the smaller ones above their own m p / rank.
    rejected, _ = benjamini_hochberg([0.011, 0.02, 0.03, 0.04], alpha=0.04)
    assert rejected.all()
    p = np.random.default_rng(0).random(40) ** 3
    assert benjamini_hochberg(p)[1] == pytest.approx(sps.false_discovery_control(p, method="bh"))
    assert benjamini_hochberg([])[0].size == 0


def test_underperforming_slice_is_found_while_overall_looks_fine() -> None:
    rollup = seeded_rollup(1, {"android": 0.3, "ios": 0.8, "web": 0.8})
    found = slice_underperformance(rollup, "recall", min_support=100, alpha=0.01)
    assert found, "android's recall was not flagged"
    slice_, value, rest, p = found[0]
    assert slice_ == "device_type=android"
    assert value == pytest.approx(0.3, abs=0.05) and rest == pytest.approx(0.8, abs=0.05)
    assert p < 1e-10
    # Every flagged slice is android or one of its crossings: the other devices' slices are fine.
    assert all("device_type=android" in u.slice for u in found)
    assert {u.slice for u in found} >= {"device_type=android", "country=US,device_type=android"}
    # The rest is all traffic minus the slice.
    tp, _, _, fn = rollup["*"].confusion
    a_tp, _, _, a_fn = rollup["device_type=android"].confusion
    assert found[0].rest_value == pytest.approx((tp - a_tp) / (tp - a_tp + fn - a_fn))
    alerts = underperformance_alerts("fraud", rollup, found[:1], "recall")
    assert alerts[0].slice == "device_type=android" and alerts[0].kind == "slice_underperformance"


def test_min_support_hides_small_slices() -> None:
    rollup = seeded_rollup(2, {"android": 0.3, "ios": 0.8, "web": 0.8}, n=2_000)
    positives = rollup["device_type=android"].support("recall")
    hidden = slice_underperformance(rollup, "recall", min_support=positives + 1, alpha=0.01)
    assert "device_type=android" not in {u.slice for u in hidden}
    assert all(u.support > positives for u in hidden)
    assert slice_underperformance(rollup, "recall", min_support=positives, alpha=0.01)[0].slice == "device_type=android"


def test_stationary_slices_raise_at_most_one_false_hit_in_50_trials() -> None:
    false_hits = 0
    for seed in range(50):
        rollup = seeded_rollup(100 + seed, {"android": 0.7, "ios": 0.7, "web": 0.7}, n=10_000)
        for metric in ("recall", "accuracy"):
            false_hits += len(slice_underperformance(rollup, metric, min_support=50, alpha=0.01))
    assert false_hits <= 1


def test_accuracy_and_error_rate_directions() -> None:
    rollup = seeded_rollup(3, {"android": 0.2, "ios": 0.9, "web": 0.9})
    by_accuracy = slice_underperformance(rollup, "accuracy", min_support=100, alpha=0.01)
    by_error = slice_underperformance(rollup, "error_rate", min_support=100, alpha=0.01)
    assert by_accuracy[0].slice == by_error[0].slice == "device_type=android"
    assert by_error[0].value > by_error[0].rest_value


def test_mae_underperformance() -> None:
    rng = np.random.default_rng(4)
    items = {}
    totals = {"ae": 0.0, "se": 0.0, "lm": 0.0, "n": 0.0}
    for name, scale, n in (("region=north", 1.0, 800), ("region=south", 1.0, 900), ("region=east", 1.6, 700)):
        err = np.abs(rng.normal(0, scale, n))
        counters = {"ae": float(err.sum()), "se": float((err**2).sum()), "lm": float(n), "n": float(n)}
        items[name] = SliceMetrics(name, counters)
        for k in totals:
            totals[k] += counters[k]
    items["*"] = SliceMetrics("*", totals)
    found = slice_underperformance(Rollup(items, 0, 1, 1), "mae", min_support=100, alpha=0.01)
    assert [u.slice for u in found] == ["region=east"]


def test_performance_degradation_binomial() -> None:
    rng = np.random.default_rng(5)
    steady = (rng.random(2000) < 0.10).astype(int)
    worse = (rng.random(2000) < 0.16).astype(int)
    assert not performance_degradation(steady, 0.10).degraded
    result = performance_degradation(worse, 0.10)
    assert result.degraded and result.p < 1e-6
    assert result.p == pytest.approx(sps.binomtest(int(worse.sum()), 2000, 0.10, alternative="greater").pvalue)
    assert not performance_degradation((10, 20), 0.10, min_support=30).degraded  # 50 % but too few labels
    assert not performance_degradation(worse, 0.10, margin=0.08).degraded
    m = SliceMetrics("*", {"tp": 50, "fp": 30, "tn": 870, "fn": 50})
    assert performance_degradation(m, 0.05).error_rate == pytest.approx(0.08)


def test_degradation_monitor_learns_baseline_then_detects() -> None:
    rng = np.random.default_rng(6)
    monitor = DegradationMonitor(window=1000, alpha=0.01)
    assert monitor.update((rng.random(1000) < 0.1).astype(int)) is None
    assert monitor.baseline == pytest.approx(0.1, abs=0.02)
    assert not monitor.update((rng.random(1000) < 0.1).astype(int)).degraded
    verdicts = [monitor.update((rng.random(250) < 0.25).astype(int)) for _ in range(4)]
    assert verdicts[-1] is not None and verdicts[-1].degraded


def test_rollup_views() -> None:
    rollup = seeded_rollup(7, {"android": 0.3, "ios": 0.8, "web": 0.8})
    worst = rollup.worst_slices("recall", min_support=100, dimensions=[["device_type"]])
    assert [w.slice for w in worst] == [
        "device_type=android",
        *sorted(["device_type=ios", "device_type=web"], key=lambda s: rollup[s].recall),
    ]
    assert worst[0].overall == pytest.approx(rollup["*"].recall)
    assert rollup.worst_slices("error_rate", min_support=100)[0].slice.endswith("device_type=android")
    table = rollup.to_table()
    assert table.splitlines()[2].split()[0] == "*"
    assert "recall" in table and "mae" not in table
    data = json.loads(rollup.to_json())
    assert data["slices"]["*"]["recall"] == pytest.approx(rollup["*"].recall)
    with pytest.raises(ValueError):
        rollup["*"].value("recal")


def test_slice_metrics_derivations() -> None:
    m = SliceMetrics(
        "x",
        {
            "tp": 8,
            "fp": 2,
            "tn": 85,
            "fn": 5,
            "lm": 100,
            "st": 130,
            "n": 200,
            "pn": 4,
            "pv": 6.0,
            "pq": 10.0,
            "null:age": 10,
            "v:out_of_range": 4,
            "h:0": 3,
            "h:9": 1,
            "sv": 1.2,
        },
    )
    assert (m.accuracy, m.precision, m.recall) == pytest.approx((0.93, 0.8, 8 / 13))
    assert m.f1 == pytest.approx(2 * 0.8 * (8 / 13) / (0.8 + 8 / 13))
    assert m.prediction_mean == 1.5 and m.prediction_std == pytest.approx(math.sqrt(10 / 4 - 2.25))
    assert m.labels_pending == 30
    assert m.null_rates == {"age": 0.05} and m.violation_rates == {"out_of_range": 0.02}
    assert m.histogram == [3, 0, 0, 0, 0, 0, 0, 0, 0, 1] and m.score_mean == pytest.approx(0.3)
    r = SliceMetrics("y", {"ae": 20.0, "se": 50.0, "lm": 10})
    assert (r.mae, r.rmse, r.error_rate) == (2.0, math.sqrt(5.0), None)


def test_a_week_of_clean_slice_evaluations_raises_chance_alerts_within_the_weekly_budget() -> None:
    """Seeded: 20 simulated weeks of hourly evaluations, 40 clean slices each, two metric families.

    Each family tests at :func:`repeated_alpha`'s level; the evaluations whose Benjamini-Hochberg rejects anything
    are the chance alerts. The budget here is 3.36 a week (level 0.01, the former fixed performance_alpha, high
    enough to count them); the default 0.1 scales the level, and the count, by 1/33.6.
    """
    budget = 3.36
    level = repeated_alpha(MetricsSettings(performance_false_alarms_per_week=budget), 3600, metrics=2)
    assert level == pytest.approx(0.01)
    assert repeated_alpha(MetricsSettings(), 3600, metrics=2) == pytest.approx(level * 0.1 / budget)
    rng = np.random.default_rng(8)
    weeks, slices, n, p = 20, 40, 300, 0.7
    reference = rng.binomial(3000, p, slices)  # each slice's own labelled baseline
    alerts = 0
    for _ in range(weeks * 168 * 2):
        current = rng.binomial(n, p, slices)
        pvalues = [two_proportion_test(x, n, r, 3000, alternative="less")[1] for x, r in zip(current, reference)]
        alerts += bool(benjamini_hochberg(pvalues, level)[0].any())
    per_week = alerts / weeks
    assert budget * 0.3 < per_week <= budget * 1.2, per_week  # spent, within the budget and the simulation's spread
