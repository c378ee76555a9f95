"""The decisions of the label-free estimate's alerts: pure functions over slice tests, no I/O.

* :func:`drop_tests`: the ``estimated_performance_drop`` decision of one metric's slices
  (``*`` by NannyML's ``z`` sigma; the other slices by Benjamini-Hochberg across them);
* :func:`labels_confirm`: whether a drop's realised metric fails the test its estimate failed;
* :func:`calibration_tests` and :func:`calibration_causes`: the ``calibration_drift``
  tests of one metric, and the findings of every metric folded into one per cause.

:mod:`stream_guard.metrics.estimate_alerts` turns them into alerts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from stream_guard.checks.stats import bh_adjusted
from stream_guard.metrics.attribution import Attributed
from stream_guard.metrics.baseline import REFERENCE, SliceTest
from stream_guard.metrics.estimate import PerformanceEstimate
from stream_guard.metrics.query import Rollup
from stream_guard.metrics.store import ALL
from stream_guard.profile_estimate import ReferenceEstimation
from stream_guard.settings.metrics import MetricsSettings

#: Least share of a slice's scored events with a label before its calibration is checked.
MIN_LABEL_COVERAGE = 0.8
#: Metrics the calibration check compares with their estimates (F1 adds nothing precision and recall do not show).
CALIBRATION_METRICS = ("accuracy", "precision", "recall")


def _test(
    metric: str,
    slice_: str,
    value: float,
    baseline: float,
    support: int,
    effect: float,
    sd: float,
    z: float,
    min_effect: float,
) -> SliceTest:
    """One slice's deviation as a :class:`SliceTest` decided by a fixed ``z``, for the attribution.

    ``effect`` (positive = worse) over ``sd`` is significant beyond ``z``, flagged when it
    is also at least ``min_effect``. ``p`` is the one-sided normal tail, uncorrected.
    """
    p = one_sided_p(effect, sd)
    score = effect / sd if sd > 0 else (math.inf if effect > 0 else 0.0)
    significant = score > z
    flagged = significant and effect >= min_effect
    return SliceTest(
        metric, slice_, value, baseline, REFERENCE, support, support, p, p, effect, flagged, significant, sd
    )


def one_sided_p(effect: float, sd: float) -> float:
    """``P(Z >= effect / sd)`` for a standard normal ``Z``: the chance of an effect this large under no drop."""
    if sd <= 0:
        return 0.0 if effect > 0 else 1.0
    return NormalDist().cdf(-effect / sd)


@dataclass(frozen=True)
class Deviation:
    """A slice's estimated metric against its reference value, before the drop decision.

    ``effect`` is how much lower the estimate is (positive = worse); ``sd`` its standard
    deviation under no change.
    """

    metric: str
    slice: str
    value: float
    baseline: float
    support: int
    effect: float
    sd: float


@dataclass(frozen=True)
class DropTest:
    """A decided :class:`Deviation`: its :class:`SliceTest` and the tolerance it was held to.

    ``critical_z``: the standardised drop the slice had to exceed (``estimate_z`` for
    ``*``; the normal quantile of the Benjamini-Hochberg cut-off on the raw p-values of the
    evaluation for the other slices); ``rule`` names the decision for the alert's text.
    """

    test: SliceTest
    critical_z: float
    rule: str

    @property
    def floor(self) -> float:
        """The lowest estimate the slice could have without being significant."""
        return self.test.baseline - self.critical_z * self.test.effect_se


def bh_cutoff(p_values: Sequence[float], alpha: float) -> float:
    """The raw p-value at or below which Benjamini-Hochberg rejects at level ``alpha``.

    ``alpha * k / m`` for ``k`` rejections of ``m`` tests; with none, ``alpha / m``, the bar
    the most significant test missed.
    """
    m = len(p_values)
    if m == 0:
        return alpha
    rejected = int((bh_adjusted(np.asarray(p_values, dtype=np.float64)) <= alpha).sum())
    return alpha * max(rejected, 1) / m


def drop_tests(deviations: Sequence[Deviation], *, z: float, alpha: float, min_effect: float) -> list[DropTest]:
    """The drop decision of one metric's slices, in the order of ``deviations``.

    ``*`` is significant beyond ``z`` standard deviations (the NannyML-style threshold; it
    is one test). The other slices are tested together: their one-sided p-values are
    Benjamini-Hochberg adjusted (:func:`~stream_guard.checks.stats.bh_adjusted`) and a slice
    is significant when its adjusted p is at most ``alpha``. Either is flagged only when
    the drop is also at least ``min_effect``.

    Parameters
    ----------
    deviations
        Every slice with enough support for one metric, ``*`` included when it has one.
    z, alpha, min_effect
        ``estimate_z``, ``performance_alpha`` (false discovery rate across the slices) and
        ``performance_min_effect``.
    """
    slices = [d for d in deviations if d.slice != ALL]
    raw = [one_sided_p(d.effect, d.sd) for d in slices]
    adjusted = dict(
        zip((d.slice for d in slices), bh_adjusted(np.asarray(raw, dtype=np.float64)).tolist(), strict=True)
    )
    cutoff_z = NormalDist().inv_cdf(1.0 - bh_cutoff(raw, alpha)) if slices else z
    out = []
    for d in deviations:
        if d.slice == ALL:
            t = _test(d.metric, d.slice, d.value, d.baseline, d.support, d.effect, d.sd, z, min_effect)
            out.append(DropTest(t, z, f"{z:g} x {d.sd:.3f}"))
            continue
        p_raw, q = one_sided_p(d.effect, d.sd), adjusted[d.slice]
        significant = q <= alpha
        t = SliceTest(
            d.metric,
            d.slice,
            d.value,
            d.baseline,
            REFERENCE,
            d.support,
            d.support,
            p_raw,
            q,
            d.effect,
            significant and d.effect >= min_effect,
            significant,
            d.sd,
        )
        out.append(DropTest(t, cutoff_z, f"BH-adjusted p={q:.2g} over {len(slices)} slices"))
    return out


def labels_confirm(decided: DropTest, realised: float, min_effect: float) -> bool:
    """Whether the realised metric fails the test the estimate failed: below its floor, by ``min_effect`` or more."""
    return realised < decided.floor and decided.test.baseline - realised >= min_effect


def calibration_tests(
    metric: str,
    rollup: Rollup,
    estimates: Mapping[str, PerformanceEstimate],
    settings: MetricsSettings,
    reference: ReferenceEstimation | None = None,
) -> list[SliceTest]:
    """Each labelled slice's realised ``metric`` against its estimate (``effect``: the absolute gap).

    A slice needs ``performance_min_support`` labels covering :data:`MIN_LABEL_COVERAGE` of
    its scored events. The realised metric averages the labelled share only, so the
    estimate's std is widened by ``sqrt(events / labelled)``. With ``reference``, a slice's
    own calibration gap on the reference (realised minus estimated there: one calibration
    fitted on all traffic under- or over-estimates some groups from the start) is expected:
    the estimate compared is the live one plus that gap, so only a change alerts.
    """
    tests = []
    for name, est in sorted(estimates.items()):
        m = rollup[name]
        value, realised = est.value(metric), m.value(metric)
        if value is None or realised is None or m.labelled < settings.performance_min_support:
            continue
        spread = reference.spread(name, metric) if reference is not None else None
        value = value + (spread.reference_gap if spread is not None else 0.0)
        if m.labelled < MIN_LABEL_COVERAGE * est.events:
            continue
        sd = est.std.get(metric, 0.0) * math.sqrt(est.events / m.labelled)
        gap, support = abs(realised - value), m.support(metric)
        tests.append(
            _test(metric, name, realised, value, support, gap, sd, settings.estimate_z, settings.performance_min_effect)
        )
    return tests


def calibration_decisions(tests: Sequence[SliceTest], *, z: float, alpha: float, min_effect: float) -> list[SliceTest]:
    """Decide the calibration tests of one rollup together, every compared metric at once.

    A calibration holds or not for all metrics alike, so the gaps of every slice and metric
    are one family: ``*`` per metric is significant beyond ``z`` standard deviations (as
    the drop's overall rule); the other slices' two-sided p-values (``effect`` is the
    absolute gap) are Benjamini-Hochberg adjusted together and significant at ``alpha``
    (``performance_alpha``). Either is flagged only with a gap of at least ``min_effect``.
    Without the correction, ~190 slices x 3 metrics at a fixed z raised a chance finding
    every few evaluations of clean traffic on the wide model's long replay.
    """
    slices = [t for t in tests if t.slice != ALL]
    raw = [min(1.0, 2.0 * t.p_raw) for t in slices]
    adjusted = bh_adjusted(np.asarray(raw, dtype=np.float64)).tolist() if slices else []
    decided = dict(zip((id(t) for t in slices), zip(raw, adjusted, strict=True), strict=True))
    out = []
    for t in tests:
        if t.slice == ALL:
            significant = t.effect / t.effect_se > z if t.effect_se > 0 else t.effect > 0
            out.append(replace(t, significant=significant, flagged=significant and t.effect >= min_effect))
            continue
        p_raw, q = decided[id(t)]
        significant = q <= alpha
        out.append(
            replace(t, p_raw=p_raw, p=q, significant=significant, flagged=significant and t.effect >= min_effect)
        )
    return out


@dataclass(frozen=True)
class CalibrationCause:
    """One ``calibration_drift`` finding: a slice's worst metric beyond the band, its others, the slices it explains."""

    worst: SliceTest
    others: tuple[SliceTest, ...] = ()
    evidence: tuple[SliceTest, ...] = ()


def _standardised(t: SliceTest) -> float:
    return t.effect / t.effect_se if t.effect_se > 0 else math.inf


def calibration_causes(found: Sequence[Attributed]) -> list[CalibrationCause]:
    """The attributed findings of every compared metric as one finding per cause, in slice order.

    A slice alerting on several metrics is one cause, named by its metric with the largest
    gap in standard deviations (ties: :data:`CALIBRATION_METRICS` order), the others beside
    it. A slice alerting on one metric but attributed, on another metric, to a slice that
    alerts is that slice's evidence (followed along chains; a cycle ends on its first slice by name).
    """
    by_slice: dict[str, list[Attributed]] = {}
    for a in found:
        by_slice.setdefault(a.test.slice, []).append(a)
    owner: dict[str, str] = {}
    for name in sorted(by_slice):
        for a in by_slice[name]:
            for e in a.evidence:
                if e.slice in by_slice and e.slice != name:
                    owner.setdefault(e.slice, name)
    roots = {name: _owner_root(name, owner) for name in by_slice}
    causes = []
    for name in sorted(n for n in by_slice if roots[n] == n):
        tests = sorted(
            (a.test for a in by_slice[name]), key=lambda t: (-_standardised(t), CALIBRATION_METRICS.index(t.metric))
        )
        folded = [a.test for other, root in roots.items() if root == name and other != name for a in by_slice[other]]
        evidence = [e for a in by_slice[name] for e in a.evidence] + folded
        unique = {(e.slice, e.metric): e for e in evidence if e.slice != name}
        causes.append(CalibrationCause(tests[0], tuple(tests[1:]), tuple(unique[k] for k in sorted(unique))))
    return causes


def _owner_root(name: str, owner: Mapping[str, str]) -> str:
    """Where the chain of owners from ``name`` ends: a slice nobody owns, or the first by name of a cycle."""
    path = [name]
    while path[-1] in owner:
        nxt = owner[path[-1]]
        if nxt in path:
            return min(path[path.index(nxt) :])
        path.append(nxt)
    return path[-1]
