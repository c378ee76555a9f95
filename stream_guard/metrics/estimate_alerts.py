"""Alerts of the label-free performance estimate: ``estimated_performance_drop`` and ``calibration_drift``.

:class:`EstimatePerformanceEvaluator` needs the profile's
:class:`~stream_guard.profile_estimate.ReferenceEstimation` (``learn`` with a label column
and a score) and live histograms on the same bins; without them it raises nothing.

* **Estimated drop** (no labels needed, so its windows do not wait for them): when a
  window on the ``estimate_every_s`` grid (default: every window) closes, the estimate of each slice over the
  last ``estimate_window_s`` is compared with the slice's realised metric on the
  reference, with at least ``performance_min_support`` scored events. Its standard
  deviation is the larger of the reference's chunk-to-chunk std scaled to the range's
  events (``std * sqrt(chunk_support / n)``, as NannyML does) and the estimate's own.
  The decision (:func:`drop_tests`) differs between the overall traffic and the slices:

  - ``*`` is one test per metric: flagged when lower by more than ``estimate_z`` (3)
    standard deviations, NannyML's threshold on the reference's chunk std;
  - the other slices are many tests at once: their one-sided normal p-values are
    Benjamini-Hochberg adjusted across the slices of the metric (``*`` left out, as it is
    decided on its own) and a slice is significant when its adjusted p is at most
    ``performance_alpha``, the false discovery rate of the realised slice tests. A fixed
    ``z`` would let the false alerts grow with the number of slices;

  both flagged only when also lower by at least ``performance_min_effect``. Flagged slices
  are attributed as the label-based slice alerts are, one alert per cause. When labels
  already cover the range, the alert names the realised metric (confirmed, or not, by it).
* **Calibration drift** (needs labels: it runs on the label-gated ``performance_every_s``
  windows, over the ``performance_lookback_s`` that ended ``performance_label_delay_s``
  before the window's end, as the other label-based checks): in each slice with enough labels, covering at least
  :data:`MIN_LABEL_COVERAGE` of its scored events, each of :data:`CALIBRATION_METRICS`
  (accuracy, precision, recall) is compared with its estimate: beyond the band when it
  differs by more than ``estimate_z`` of the estimate's std (widened for the unlabelled
  share) and by at least ``performance_min_effect``. The estimate of that slice is then
  unreliable: CBPE sees covariate shift only, and this is how concept drift shows. One
  broken calibration moves several metrics, so the findings are one per cause
  (:func:`calibration_causes`): the slices are attributed per metric, then a slice's
  metrics beyond the band make one finding, named by the worst (largest gap in standard
  deviations), the others in its text; a slice that one metric attributes to another
  slice is that slice's evidence. Its ``feature`` is empty: the finding is about the
  score's calibration, whichever metric shows it worst, so its incident stays one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from stream_guard.alerts.model import Alert, Severity
from stream_guard.checks.stats import bh_adjusted
from stream_guard.metrics.attribution import Attributed, attribute
from stream_guard.metrics.baseline import REFERENCE, SliceTest
from stream_guard.metrics.estimate import PerformanceEstimate, estimate_rollup
from stream_guard.metrics.query import MetricsReader, Rollup
from stream_guard.metrics.store import ALL
from stream_guard.profile_estimate import ReferenceEstimation
from stream_guard.settings.kinds import CALIBRATION_DRIFT, ESTIMATED_PERFORMANCE_DROP
from stream_guard.settings.metrics import MetricsSettings

if TYPE_CHECKING:
    from stream_guard.model import ModelRuntime
    from stream_guard.state.window_store import WindowSnapshot

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


class EstimatePerformanceEvaluator:
    """An :data:`~stream_guard.worker.Evaluator` of the label-free estimate (see the module's rules)."""

    def __init__(
        self,
        readers: Mapping[str, MetricsReader],
        settings: Mapping[str, MetricsSettings],
        *,
        labels: Mapping[str, bool] | None = None,
        severity: Severity = Severity.WARNING,
    ) -> None:
        self.readers = dict(readers)
        self.settings = dict(settings)
        #: Model -> whether it has a labels topic (the calibration check needs one).
        self.labels = dict(labels or {})
        self.severity = severity

    @classmethod
    def for_settings(
        cls, model_name: str, reader: MetricsReader, settings: MetricsSettings, *, labels: bool
    ) -> EstimatePerformanceEvaluator:
        return cls({model_name: reader}, {model_name: settings}, labels={model_name: labels})

    def estimation(self, model: ModelRuntime) -> ReferenceEstimation | None:
        """The model's estimation if its profile has one on the live histogram's bins."""
        settings = self.settings.get(model.name)
        reference = model.profile.performance if model.profile is not None else None
        if settings is None or reference is None or reference.estimation is None:
            return None
        lo, hi = settings.score_range
        calibration = reference.estimation.calibration
        if not calibration.matches(settings.score_bins, (lo, hi)):
            return None
        if abs(reference.threshold - settings.threshold) > 1e-12:
            return None
        return reference.estimation

    def __call__(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]:
        reader, settings = self.readers.get(model.name), self.settings.get(model.name)
        estimation = self.estimation(model)
        if reader is None or settings is None or estimation is None:
            return []
        alerts = []
        span = settings.estimate_window_s * 1000
        every = settings.estimate_every_s * 1000
        if every == 0 or window.start_ms % every == 0:
            rollup = reader.rollup(window.end_ms - span, window.end_ms)
            alerts += self.drops(model.name, rollup, estimation, settings)
        labelled_every = settings.performance_every_s * 1000  # the label-gated windows
        if self.labels.get(model.name) and labelled_every > 0 and window.start_ms % labelled_every == 0:
            end = window.end_ms - settings.performance_label_delay_s * 1000
            lookback = settings.performance_lookback_s * 1000
            alerts += self.calibration(model.name, reader.rollup(end - lookback, end), estimation, settings)
        return alerts

    def drops(
        self, model: str, rollup: Rollup, estimation: ReferenceEstimation, settings: MetricsSettings
    ) -> list[Alert]:
        """``estimated_performance_drop`` alerts of one rollup."""
        estimates = estimate_rollup(rollup, estimation.calibration)
        alerts = []
        for metric in settings.estimate_metrics:
            decided = drop_tests(
                self._deviations(metric, estimates, estimation, settings),
                z=settings.estimate_z,
                alpha=settings.performance_alpha,
                min_effect=settings.performance_min_effect,
            )
            by_slice = {d.test.slice: d for d in decided}
            for a in attribute([d.test for d in decided]):
                alerts.append(self._drop_alert(model, rollup, estimates, by_slice[a.test.slice], a.evidence))
        return alerts

    @staticmethod
    def _deviations(
        metric: str,
        estimates: Mapping[str, PerformanceEstimate],
        estimation: ReferenceEstimation,
        settings: MetricsSettings,
    ) -> list[Deviation]:
        """Each slice's estimate of ``metric`` against the reference, where both exist with enough events."""
        out = []
        for name, est in sorted(estimates.items()):
            spread, value = estimation.spread(name, metric), est.value(metric)
            if spread is None or value is None or est.events < settings.performance_min_support:
                continue
            sd = max(spread.scaled_std(est.events) or 0.0, est.std.get(metric, 0.0))
            out.append(Deviation(metric, name, value, spread.value, est.events, spread.value - value, sd))
        return out

    def _drop_alert(
        self,
        model: str,
        rollup: Rollup,
        estimates: Mapping[str, PerformanceEstimate],
        decided: DropTest,
        evidence: Sequence[SliceTest],
    ) -> Alert:
        t, floor = decided.test, decided.floor
        m = rollup[t.slice]
        realised, labelled = m.value(t.metric), m.support(t.metric)
        if realised is None or m.labelled < MIN_LABEL_COVERAGE * estimates[t.slice].events:
            labels = "labels not in yet"
        else:
            verdict = "confirmed" if realised < floor else "not confirmed"
            labels = f"{verdict} by {m.labelled} labels: realised {t.metric} {realised:.3f} ({labelled} behind it)"
        message = (
            f"estimated {t.metric} of {t.slice} is {t.value:.3f} (from calibrated scores, {t.support} events) vs "
            f"{t.baseline:.3f} on the labelled reference, below its tolerance {floor:.3f} "
            f"({decided.rule}); {labels}"
        )
        if evidence:
            named = ", ".join(f"{e.slice} {e.value:.3f} vs {e.baseline:.3f}" for e in evidence[:5])
            message += f"; also low, explained by it: {named}" + (
                f" and {len(evidence) - 5} more" if len(evidence) > 5 else ""
            )
        return Alert(
            model=model,
            kind=ESTIMATED_PERFORMANCE_DROP,
            feature=t.metric,
            slice=t.slice,
            severity=self.severity,
            window_start=rollup.start_ms,
            window_end=rollup.end_ms,
            count=t.support,
            total=estimates["*"].events if "*" in estimates else t.support,
            rate=t.value,
            observed=f"estimated {t.metric} {t.value:.3f} on {t.support} scored events; {labels}",
            expected=(
                f"{t.metric} above {floor:.3f} (reference {t.baseline:.3f}, std {t.effect_se:.3f}: "
                "chunk spread scaled to the events)"
            ),
            detector="estimate.cbpe",
            message=message,
            value=t.value,
            threshold=floor,
        )

    def calibration(
        self, model: str, rollup: Rollup, estimation: ReferenceEstimation, settings: MetricsSettings
    ) -> list[Alert]:
        """``calibration_drift`` findings of one rollup whose labels have arrived, one per cause."""
        estimates = estimate_rollup(rollup, estimation.calibration)
        found: list[Attributed] = []
        for metric in CALIBRATION_METRICS:
            found += attribute(calibration_tests(metric, rollup, estimates, settings))
        z = settings.estimate_z
        return [self._calibration_alert(model, rollup, cause, z) for cause in calibration_causes(found)]

    @staticmethod
    def _calibration_alert(model: str, rollup: Rollup, cause: CalibrationCause, z: float) -> Alert:
        t = cause.worst
        others = "".join(
            f"; {o.metric} {o.value:.3f} vs {o.baseline:.3f} estimated ({o.effect / o.effect_se:.1f} std)"
            if o.effect_se > 0
            else f"; {o.metric} {o.value:.3f} vs {o.baseline:.3f} estimated"
            for o in cause.others
        )
        evidence = sorted({e.slice for e in cause.evidence})
        return Alert(
            model=model,
            kind=CALIBRATION_DRIFT,
            feature=None,
            slice=t.slice,
            severity=Severity.WARNING,
            window_start=rollup.start_ms,
            window_end=rollup.end_ms,
            count=t.support,
            total=rollup.overall.labelled,
            rate=t.value,
            observed=f"realised {t.metric} {t.value:.3f} on {t.support} labels{others}",
            expected=f"{t.metric} within {z:g} x {t.effect_se:.3f} of the estimate {t.baseline:.3f}",
            detector="estimate.calibration",
            message=(
                f"the score's calibration no longer holds for {t.slice}: realised {t.metric} {t.value:.3f} "
                f"vs {t.baseline:.3f} estimated from the scores ({t.support} labels), the worst of "
                f"{1 + len(cause.others)} metrics beyond the band{others}; its label-free estimate is unreliable "
                "until the model is recalibrated or the profile relearned"
                + (f"; also in {', '.join(evidence[:5])}" if evidence else "")
            ),
            value=t.value,
            threshold=t.baseline,
        )


def calibration_tests(
    metric: str, rollup: Rollup, estimates: Mapping[str, PerformanceEstimate], settings: MetricsSettings
) -> list[SliceTest]:
    """Each labelled slice's realised ``metric`` against its estimate (``effect``: the absolute gap).

    A slice needs ``performance_min_support`` labels covering :data:`MIN_LABEL_COVERAGE` of
    its scored events. The realised metric averages the labelled share only, so the
    estimate's std is widened by ``sqrt(events / labelled)``.
    """
    tests = []
    for name, est in sorted(estimates.items()):
        m = rollup[name]
        value, realised = est.value(metric), m.value(metric)
        if value is None or realised is None or m.labelled < settings.performance_min_support:
            continue
        if m.labelled < MIN_LABEL_COVERAGE * est.events:
            continue
        sd = est.std.get(metric, 0.0) * math.sqrt(est.events / m.labelled)
        gap, support = abs(realised - value), m.support(metric)
        tests.append(
            _test(metric, name, realised, value, support, gap, sd, settings.estimate_z, settings.performance_min_effect)
        )
    return tests


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
