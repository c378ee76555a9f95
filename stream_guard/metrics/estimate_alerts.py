"""Alerts of the label-free performance estimate: ``estimated_performance_drop`` and ``calibration_drift``.

:class:`EstimatePerformanceEvaluator` needs the profile's
:class:`~stream_guard.profile_estimate.ReferenceEstimation` (``learn`` with a label column
and a score) and live histograms on the same bins; without them it raises nothing.

* **Estimated drop** (no labels needed, so its windows do not wait for them): when a
  window on the ``estimate_every_s`` grid (default: every window) closes, the estimate of each slice over the
  last ``estimate_window_s`` is compared with the slice's realised metric on the
  reference. Flagged when it is lower by more than ``estimate_z`` standard deviations
  (the larger of the reference's chunk-to-chunk std scaled to the range's events,
  ``std * sqrt(chunk_support / n)`` as NannyML does, and the estimate's own std) **and**
  by at least ``performance_min_effect``, with at least ``performance_min_support``
  scored events. Flagged slices are attributed as the label-based slice alerts are, one
  alert per cause. When labels already cover the range, the alert names the realised
  metric (confirmed, or not, by it).
* **Calibration drift** (needs labels: it runs on the label-gated ``performance_every_s``
  windows, over the ``performance_lookback_s`` that ended ``performance_label_delay_s``
  before the window's end, as the other label-based checks): in each slice with enough labels, covering at least
  :data:`MIN_LABEL_COVERAGE` of its scored events, the realised metric differs from the
  estimate by more than ``estimate_z`` of the estimate's std (widened for the unlabelled
  share) and by at least ``performance_min_effect``. The estimate of that slice is then
  unreliable: CBPE sees covariate shift only, and this is how concept drift shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING

from stream_guard.alerts.model import Alert, Severity
from stream_guard.metrics.attribution import attribute
from stream_guard.metrics.baseline import REFERENCE, SliceTest
from stream_guard.metrics.estimate import PerformanceEstimate, estimate_rollup
from stream_guard.metrics.query import MetricsReader, Rollup
from stream_guard.profile_estimate import ReferenceEstimation
from stream_guard.settings.kinds import CALIBRATION_DRIFT, ESTIMATED_PERFORMANCE_DROP
from stream_guard.settings.metrics import MetricsSettings

if TYPE_CHECKING:
    from stream_guard.model import ModelRuntime
    from stream_guard.state.window_store import WindowSnapshot

#: Least share of a slice's scored events with a label before its calibration is checked.
MIN_LABEL_COVERAGE = 0.8
#: Metric the calibration check compares (the one whose noise is the plainest: one Poisson-binomial count).
CALIBRATION_METRIC = "accuracy"


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
    """One slice's deviation as a :class:`SliceTest`, for the attribution.

    ``effect`` (positive = worse) over ``sd`` is significant beyond ``z``, flagged when it
    is also at least ``min_effect``. ``p`` is the one-sided normal tail, uncorrected: the
    rule is NannyML's fixed ``z``, and the minimum effect bounds what a noisy slice raises.
    """
    score = effect / sd if sd > 0 else (math.inf if effect > 0 else 0.0)
    p = 1.0 - NormalDist().cdf(score) if math.isfinite(score) else 0.0
    significant = score > z
    flagged = significant and effect >= min_effect
    return SliceTest(
        metric, slice_, value, baseline, REFERENCE, support, support, p, p, effect, flagged, significant, sd
    )


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
        z, alerts = settings.estimate_z, []
        for metric in settings.estimate_metrics:
            tests = []
            for name, est in sorted(estimates.items()):
                spread, value = estimation.spread(name, metric), est.value(metric)
                if spread is None or value is None or est.events < settings.performance_min_support:
                    continue
                sd = max(spread.scaled_std(est.events) or 0.0, est.std.get(metric, 0.0))
                drop = spread.value - value
                tests.append(
                    _test(metric, name, value, spread.value, est.events, drop, sd, z, settings.performance_min_effect)
                )
            for a in attribute(tests):
                alerts.append(self._drop_alert(model, rollup, estimates, a.test, a.evidence, z))
        return alerts

    def _drop_alert(
        self,
        model: str,
        rollup: Rollup,
        estimates: Mapping[str, PerformanceEstimate],
        t: SliceTest,
        evidence: Sequence[SliceTest],
        z: float,
    ) -> Alert:
        floor = t.baseline - z * t.effect_se
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
            f"({z:g} x {t.effect_se:.3f}); {labels}"
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
            expected=f"{t.metric} above {floor:.3f} (reference {t.baseline:.3f}, chunk spread scaled to the events)",
            detector="estimate.cbpe",
            message=message,
            value=t.value,
            threshold=floor,
        )

    def calibration(
        self, model: str, rollup: Rollup, estimation: ReferenceEstimation, settings: MetricsSettings
    ) -> list[Alert]:
        """``calibration_drift`` findings of one rollup whose labels have arrived."""
        estimates = estimate_rollup(rollup, estimation.calibration)
        z, tests = settings.estimate_z, []
        for name, est in sorted(estimates.items()):
            m = rollup[name]
            value, realised = est.value(CALIBRATION_METRIC), m.value(CALIBRATION_METRIC)
            if value is None or realised is None or m.labelled < settings.performance_min_support:
                continue
            if m.labelled < MIN_LABEL_COVERAGE * est.events:
                continue
            # The realised metric averages the labelled share only: its noise grows as 1/sqrt(labelled).
            sd = est.std.get(CALIBRATION_METRIC, 0.0) * math.sqrt(est.events / m.labelled)
            gap = abs(realised - value)
            min_effect = settings.performance_min_effect
            tests.append(_test(CALIBRATION_METRIC, name, realised, value, m.labelled, gap, sd, z, min_effect))
        alerts = []
        for a in attribute(tests):
            t = a.test
            alerts.append(
                Alert(
                    model=model,
                    kind=CALIBRATION_DRIFT,
                    feature=t.metric,
                    slice=t.slice,
                    severity=Severity.WARNING,
                    window_start=rollup.start_ms,
                    window_end=rollup.end_ms,
                    count=t.support,
                    total=rollup.overall.labelled,
                    rate=t.value,
                    observed=f"realised {t.metric} {t.value:.3f} on {t.support} labels",
                    expected=f"{t.metric} within {z:g} x {t.effect_se:.3f} of the estimate {t.baseline:.3f}",
                    detector="estimate.calibration",
                    message=(
                        f"the score's calibration no longer holds for {t.slice}: realised {t.metric} {t.value:.3f} "
                        f"vs {t.baseline:.3f} estimated from the scores ({t.support} labels); its label-free "
                        "estimate is unreliable until the model is recalibrated or the profile relearned"
                        + (f"; also in {', '.join(e.slice for e in a.evidence[:5])}" if a.evidence else "")
                    ),
                    value=t.value,
                    threshold=t.baseline,
                )
            )
        return alerts
