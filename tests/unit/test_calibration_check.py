"""Unit tests of the calibration check's rules: one family over slices and metrics, each slice's own reference gap."""

from __future__ import annotations

from dataclasses import replace
from statistics import NormalDist

import numpy as np

from stream_guard.learning.calibration import learn_estimation
from stream_guard.metrics.baseline import REFERENCE, SliceTest
from stream_guard.metrics.estimate_rules import calibration_decisions
from stream_guard.profile_estimate import MetricSpread, ReferenceEstimation


def gap(slice_: str, metric: str, sds: float, sd: float = 0.02) -> SliceTest:
    """A calibration test whose realised metric is ``sds`` standard deviations from its estimate."""
    return SliceTest(metric, slice_, 0.8 + sds * sd, 0.8, REFERENCE, 500, 500, 0.0, 0.0, sds * sd, False, False, sd)


def with_raw_p(t: SliceTest) -> SliceTest:
    """The test with its one-sided normal p-value, as :func:`calibration_tests` records it."""
    p = 1.0 - NormalDist().cdf(t.effect / t.effect_se)
    return replace(t, p_raw=p, p=p)


def test_one_chance_gap_among_hundreds_of_slices_is_no_finding_a_broken_calibration_is() -> None:
    """200 slices x 3 metrics near their estimate and one 3.5 std off (a fixed z = 3 flagged it): nothing;
    thirty slices 6 std off: all flagged."""
    quiet = [with_raw_p(gap(f"f=v{i}", m, 1.0)) for i in range(200) for m in ("accuracy", "precision", "recall")]
    chance = with_raw_p(gap("f=odd", "accuracy", 3.5))
    decided = calibration_decisions([*quiet, chance], z=3.0, alpha=0.01, min_effect=0.05)
    assert not any(t.flagged for t in decided)
    broken = [with_raw_p(gap(f"g=v{i}", "recall", 6.0)) for i in range(30)]
    decided = calibration_decisions([*quiet, *broken], z=3.0, alpha=0.01, min_effect=0.05)
    assert sorted(t.slice for t in decided if t.flagged) == sorted(t.slice for t in broken)


def test_all_traffic_keeps_its_fixed_z_and_every_finding_needs_the_minimum_gap() -> None:
    decided = calibration_decisions(
        [with_raw_p(gap("*", "accuracy", 3.2)), with_raw_p(gap("*", "recall", 2.5))], z=3.0, alpha=0.01, min_effect=0.05
    )
    assert [t.flagged for t in decided] == [True, False]
    small = calibration_decisions([with_raw_p(gap("*", "accuracy", 3.2, sd=0.01))], z=3.0, alpha=0.01, min_effect=0.05)
    assert small[0].significant and not small[0].flagged  # 0.032 < 0.05


def test_learning_records_what_the_calibration_estimates_for_each_slice() -> None:
    """One calibration fits all traffic: a group whose labels are more often positive than its scores say has a
    gap on the reference already, recorded so the check expects it; all traffic has none."""
    rng = np.random.default_rng(3)
    n = 40_000
    scores = rng.random(n)
    group = np.where(rng.random(n) < 0.3, "g=b", "g=a")
    p = np.clip(scores + np.where(group == "g=b", 0.15, -0.15 * 0.3 / 0.7), 0, 1)
    positive = rng.random(n) < p
    learned = learn_estimation(scores, positive, {"g": group}, threshold=0.5, bins=10, score_range=(0.0, 1.0))
    assert learned is not None
    b, everyone = learned.slices["g=b"]["precision"], learned.slices["*"]["precision"]
    assert b.estimated is not None and abs(b.reference_gap) > 0.03
    assert everyone.estimated is not None and abs(everyone.reference_gap) < 0.01
    back = ReferenceEstimation.from_dict(learned.to_dict())
    assert back.slices["g=b"]["precision"].estimated == b.estimated


def test_profiles_learned_before_the_slice_estimate_load_with_no_gap() -> None:
    assert MetricSpread(0.9, 0.01, 100.0, 10).reference_gap == 0.0
