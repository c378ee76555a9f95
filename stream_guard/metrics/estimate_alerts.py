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
    standard deviations, NannyML's threshold on the reference's chunk std, or more when
    the weekly budget needs it (:func:`drop_level`: 4.57 at 60 s windows and two metrics);
  - the other slices are many tests at once: their one-sided normal p-values are
    Benjamini-Hochberg adjusted across the slices of the metric (``*`` left out, as it is
    decided on its own) and a slice is significant when its adjusted p is at most
    the evaluation's level: ``performance_false_alarms_per_week`` spread over the
    evaluations of a week and the metrics (:func:`~stream_guard.settings.metrics.repeated_alpha`,
    at most ``performance_alpha``). A fixed ``z`` would let the false alerts grow with the
    number of slices;

  both flagged only when also lower by at least ``performance_min_effect``. Flagged slices
  are attributed as the label-based slice alerts are, one alert per cause. When labels
  already cover the range, the alert names the realised metric (confirmed, or not, by it).
* **Outcome of a drop** (needs labels; on the label-gated ``performance_every_s`` windows):
  the range of ``estimate_window_s`` that ended ``performance_label_delay_s`` before the
  window's end is decided again as above; each alerting slice whose labels cover
  :data:`MIN_LABEL_COVERAGE` of its scored events is settled (:func:`labels_confirm`):
  ``CONFIRMED`` when its realised metric fails the same test (below the floor the estimate
  was held to, and by at least ``performance_min_effect`` below the reference), else
  ``REFUTED``. The alert (same incident as the drop, ``outcome`` set) is for the incident
  lifecycle, which publishes a confirmation once per incident and closes a refuted one.
* **Calibration drift** (needs labels: it runs on the label-gated ``performance_every_s``
  windows, over the ``performance_lookback_s`` that ended ``performance_label_delay_s``
  before the window's end, as the other label-based checks): in each slice with enough labels, covering at least
  :data:`MIN_LABEL_COVERAGE` of its scored events, each of :data:`CALIBRATION_METRICS`
  (accuracy, precision, recall) is compared with its estimate: beyond the band when it
  differs by more than ``estimate_z`` of the estimate's std (widened for the unlabelled
  share; the slices' gaps one Benjamini-Hochberg family at the level its cadence leaves of
  ``performance_false_alarms_per_week``) and by at least ``performance_min_effect``. The estimate of that slice is then
  unreliable: CBPE sees covariate shift only, and this is how concept drift shows. One
  broken calibration moves several metrics, so the findings are one per cause
  (:func:`calibration_causes`): the slices are attributed per metric, then a slice's
  metrics beyond the band make one finding, named by the worst (largest gap in standard
  deviations), the others in its text; a slice that one metric attributes to another
  slice is that slice's evidence. Its ``feature`` is empty: the finding is about the
  score's calibration, whichever metric shows it worst, so its incident stays one.

The decisions (:func:`drop_tests`, :func:`labels_confirm`, :func:`calibration_causes`...)
are pure functions of :mod:`stream_guard.metrics.estimate_rules`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog

from stream_guard.alerts.model import CONFIRMED, REFUTED, Alert, Severity
from stream_guard.errors import RollupWarmingError
from stream_guard.metrics.attribution import Attributed, attribute
from stream_guard.metrics.baseline import SliceTest
from stream_guard.metrics.estimate import PerformanceEstimate, estimate_rollup
from stream_guard.metrics.estimate_rules import (
    CALIBRATION_METRICS,
    MIN_LABEL_COVERAGE,
    CalibrationCause,
    Deviation,
    DropTest,
    calibration_causes,
    calibration_decisions,
    calibration_tests,
    drop_tests,
    labels_confirm,
)
from stream_guard.metrics.query import MetricsReader, Rollup
from stream_guard.metrics.rollups import Rollups, stored_rollups
from stream_guard.profile_estimate import ReferenceEstimation
from stream_guard.settings.kinds import CALIBRATION_DRIFT, ESTIMATED_PERFORMANCE_DROP
from stream_guard.settings.metrics import MetricsSettings, repeated_alpha, repeated_z

if TYPE_CHECKING:
    from stream_guard.model import ModelRuntime
    from stream_guard.state.window_store import WindowSnapshot


def _outcome_alert(
    drop: Alert, decided: DropTest, realised: float, support: int, labelled: int, min_effect: float
) -> Alert:
    """The drop alert settled by its realised metric: ``CONFIRMED`` or ``REFUTED`` (:func:`labels_confirm`)."""
    t, floor = decided.test, decided.floor
    confirmed = labels_confirm(decided, realised, min_effect)
    seen = f"realised {t.metric} {realised:.3f} on {labelled} labels ({support} behind it)"
    if confirmed:
        verdict = f"confirmed by the labels: {seen}, below its tolerance {floor:.3f} and {min_effect:g} or more"
    else:
        verdict = f"refuted by the labels: {seen}, within its tolerance {floor:.3f} or less than {min_effect:g}"
    return replace(
        drop,
        outcome=CONFIRMED if confirmed else REFUTED,
        detector="estimate.cbpe_outcome",
        observed=f"{seen}; estimated {t.value:.3f} before them",
        message=(
            f"estimated drop of {t.metric} in {t.slice} {verdict} under the reference {t.baseline:.3f} "
            f"(the estimate was {t.value:.3f})"
        ),
        value=realised,
    )


def drop_level(settings: MetricsSettings, every_s: float) -> MetricsSettings:
    """``settings`` with the drop check's level and z when it runs every ``every_s``, within the weekly budget.

    Per estimated metric two families of tests: ``*`` at a fixed z, the slices together
    (Benjamini-Hochberg); :func:`~stream_guard.settings.metrics.repeated_alpha` spreads
    ``performance_false_alarms_per_week`` over them and the evaluations of a week.
    """
    families = 2 * len(settings.estimate_metrics)
    return replace(
        settings,
        performance_alpha=repeated_alpha(settings, every_s, families),
        estimate_z=repeated_z(settings, every_s, families),
    )


def calibration_level(settings: MetricsSettings) -> MetricsSettings:
    """``settings`` with the calibration check's level and z (every ``performance_every_s``), within the budget.

    One Benjamini-Hochberg family of every slice and metric, and ``*`` at a fixed z on each of
    :data:`CALIBRATION_METRICS`.
    """
    families = 1 + len(CALIBRATION_METRICS)
    every_s = settings.performance_every_s
    return replace(
        settings,
        performance_alpha=repeated_alpha(settings, every_s, families),
        estimate_z=repeated_z(settings, every_s, families),
    )


_log = structlog.get_logger("stream_guard.metrics.estimate_alerts")


class EstimatePerformanceEvaluator:
    """An :data:`~stream_guard.worker.Evaluator` of the label-free estimate (see the module's rules)."""

    def __init__(
        self,
        readers: Mapping[str, Rollups],
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
        """The evaluator of one model; its rollups cached on a grid all its ranges' ends lie on
        (:mod:`~stream_guard.metrics.rollups`), so an evaluation sums what changed; whole hours
        stored for the metrics retention, so a worker that just started reads them as sums."""
        grid = math.gcd(
            *(
                seconds * 1000
                for seconds in (
                    settings.estimate_window_s,
                    settings.estimate_every_s,
                    settings.performance_every_s,
                    settings.performance_lookback_s,
                    settings.performance_label_delay_s,
                )
            )
        )
        cache = stored_rollups(reader, grid, settings.retention_s)
        return cls({model_name: cache}, {model_name: settings}, labels={model_name: labels})

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
        at_drop_level = drop_level(settings, (every or window.end_ms - window.start_ms) / 1000)
        try:
            if every == 0 or window.start_ms % every == 0:
                rollup = reader.rollup(window.end_ms - span, window.end_ms)
                alerts += self.drops(model.name, rollup, estimation, at_drop_level)
            labelled_every = settings.performance_every_s * 1000  # the label-gated windows
            if self.labels.get(model.name) and labelled_every > 0 and window.start_ms % labelled_every == 0:
                lookback = settings.performance_lookback_s * 1000
                end = window.end_ms - settings.performance_label_delay_s * 1000
                alerts += self.calibration(
                    model.name, reader.rollup(end - lookback, end), estimation, calibration_level(settings)
                )
                alerts += self.outcomes(model.name, reader.rollup(end - span, end), estimation, at_drop_level)
        except RollupWarmingError as exc:  # the checks that ran keep their alerts; the others wait for the warm-up
            _log.info(
                "evaluation_deferred", model=model.name, evaluator="estimate", window_end=window.end_ms, reason=str(exc)
            )
        return alerts

    def drops(
        self, model: str, rollup: Rollup, estimation: ReferenceEstimation, settings: MetricsSettings
    ) -> list[Alert]:
        """``estimated_performance_drop`` alerts of one rollup."""
        estimates = estimate_rollup(rollup, estimation.calibration)
        return [
            self._drop_alert(model, rollup, estimates, decided, evidence, settings.performance_min_effect)
            for decided, evidence in self._drop_causes(estimates, estimation, settings)
        ]

    def _drop_causes(
        self, estimates: Mapping[str, PerformanceEstimate], estimation: ReferenceEstimation, settings: MetricsSettings
    ) -> list[tuple[DropTest, tuple[SliceTest, ...]]]:
        """Each alerting slice's decided test and the flagged slices it explains, metric by metric."""
        out = []
        for metric in settings.estimate_metrics:
            decided = drop_tests(
                self._deviations(metric, estimates, estimation, settings),
                z=settings.estimate_z,
                alpha=settings.performance_alpha,
                min_effect=settings.performance_min_effect,
            )
            by_slice = {d.test.slice: d for d in decided}
            out += [(by_slice[a.test.slice], a.evidence) for a in attribute([d.test for d in decided])]
        return out

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
        min_effect: float,
    ) -> Alert:
        t, floor = decided.test, decided.floor
        m = rollup[t.slice]
        realised, labelled = m.value(t.metric), m.support(t.metric)
        if realised is None or m.labelled < MIN_LABEL_COVERAGE * estimates[t.slice].events:
            labels = "labels not in yet"
        else:
            verdict = "confirmed" if labels_confirm(decided, realised, min_effect) else "not confirmed"
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

    def outcomes(
        self, model: str, rollup: Rollup, estimation: ReferenceEstimation, settings: MetricsSettings
    ) -> list[Alert]:
        """The outcome of each ``estimated_performance_drop`` of a range whose labels have arrived.

        The range is decided as :meth:`drops` decides it; each alert whose slice has labels
        for :data:`MIN_LABEL_COVERAGE` of its events becomes a ``CONFIRMED`` or ``REFUTED``
        alert of the same incident (see :func:`labels_confirm`).
        """
        estimates = estimate_rollup(rollup, estimation.calibration)
        min_effect = settings.performance_min_effect
        out = []
        for decided, evidence in self._drop_causes(estimates, estimation, settings):
            t = decided.test
            m = rollup[t.slice]
            realised = m.value(t.metric)
            if realised is None or m.labelled < MIN_LABEL_COVERAGE * estimates[t.slice].events:
                continue
            drop = self._drop_alert(model, rollup, estimates, decided, evidence, min_effect)
            out.append(_outcome_alert(drop, decided, realised, m.support(t.metric), m.labelled, min_effect))
        return out

    def calibration(
        self, model: str, rollup: Rollup, estimation: ReferenceEstimation, settings: MetricsSettings
    ) -> list[Alert]:
        """``calibration_drift`` findings of one rollup whose labels have arrived, one per cause."""
        estimates = estimate_rollup(rollup, estimation.calibration)
        tests = [
            t
            for metric in CALIBRATION_METRICS
            for t in calibration_tests(metric, rollup, estimates, settings, estimation)
        ]
        decided = calibration_decisions(
            tests, z=settings.estimate_z, alpha=settings.performance_alpha, min_effect=settings.performance_min_effect
        )
        found: list[Attributed] = []
        for metric in CALIBRATION_METRICS:
            found += attribute([t for t in decided if t.metric == metric])
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
            expected=(
                f"{t.metric} within {z:g} x {t.effect_se:.3f} of the estimate {t.baseline:.3f}"
                if t.slice == "*"
                else f"{t.metric} near the estimate {t.baseline:.3f} (BH-adjusted p={t.p:.2g} over slices, metrics)"
            ),
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
