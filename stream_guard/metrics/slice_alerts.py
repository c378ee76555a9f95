"""The slice performance alerts of a model, raised when a window on the check's grid closes.

Per tested metric (``recall`` and ``accuracy``; ``mae`` for regression), over the lookback:

1. every slice is tested against its own baseline (:func:`~stream_guard.metrics.baseline.slice_tests`):
   its counts on the labelled reference when the profile has them, else its counts in the
   previous lookback of the same length; a slice without a baseline of enough support is
   compared with the rest of the traffic. Flagged: significant after Benjamini-Hochberg
   (at the evaluation's level: ``alpha``, which :meth:`PerformanceEvaluator.for_settings`
   derives from the weekly budget) **and** worse by at least ``performance_min_effect``;
2. the flagged slices are attributed (:func:`~stream_guard.metrics.attribution.attribute`):
   one ``slice_underperformance`` alert per cause, the slices it explains as evidence;
3. with ``performance_max_gap`` set for the metric, a slice whose gap to the rest of the
   traffic exceeds it (significantly) alerts too, known bias or not;
4. each known bias of the reference is raised as one ``known_bias`` finding (severity
   ``INFO``) whose window is the moment the reference was learned, so its ``alert_id``
   depends on the profile only; an evaluator raises it at its first evaluation (and at
   retries of that window's closing), and the incident lifecycle deduplicates across workers.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from stream_guard.alerts.model import Alert, Severity
from stream_guard.errors import RollupWarmingError
from stream_guard.metrics.attribution import Attributed, attribute
from stream_guard.metrics.baseline import (
    EARLIER,
    REFERENCE,
    REST,
    SliceTest,
    fairness_tests,
    reference_rollup,
    slice_tests,
)
from stream_guard.metrics.query import MetricsReader, Rollup
from stream_guard.metrics.rollups import Rollups, stored_rollups
from stream_guard.profile_performance import KnownBias, ReferencePerformance
from stream_guard.settings.kinds import KNOWN_BIAS, SLICE_UNDERPERFORMANCE
from stream_guard.settings.metrics import MetricsSettings, repeated_alpha

if TYPE_CHECKING:
    from stream_guard.model import ModelRuntime
    from stream_guard.state.window_store import WindowSnapshot

#: Evidence slices named in an alert's text; the rest are counted.
MAX_EVIDENCE_NAMED = 5
_BASELINE_TEXT = {REFERENCE: "its labelled reference", EARLIER: "its previous lookback", REST: "the rest of traffic"}

_log = structlog.get_logger("stream_guard.metrics.slice_alerts")


class PerformanceEvaluator:
    """An :data:`~stream_guard.worker.Evaluator`: slice performance alerts over a lookback.

    Runs when a window closes whose start is a multiple of ``every_ms`` (so the check runs
    once per ``every_ms`` however many workers share the model) and rolls up the metrics
    of ``[window end - lookback_ms, window end)``. Regression models are tested on MAE.

    Parameters
    ----------
    readers
        Model name -> its rollups (a :class:`~stream_guard.metrics.rollups.RollupCache` as
        :meth:`for_settings` makes, or a :class:`~stream_guard.metrics.query.MetricsReader`);
        other models are skipped.
    metrics
        Classification metrics tested (each with its own Benjamini-Hochberg correction).
    min_effect
        Least effect of a flagged slice (``performance_min_effect``).
    max_gap
        Metric -> fairness tolerance (``performance_max_gap``); empty: no fairness rule.
    """

    def __init__(
        self,
        readers: Mapping[str, Rollups],
        *,
        metrics: Sequence[str] = ("recall", "accuracy"),
        lookback_ms: int = 24 * 3600 * 1000,
        every_ms: int = 3600 * 1000,
        min_support: int = 100,
        alpha: float = 0.01,
        min_effect: float = 0.05,
        max_gap: Mapping[str, float] | None = None,
        severity: Severity = Severity.WARNING,
    ) -> None:
        self.readers = dict(readers)
        self.metrics = list(metrics)
        self.lookback_ms = lookback_ms
        self.every_ms = every_ms
        self.min_support = min_support
        self.alpha = alpha
        self.min_effect = min_effect
        self.max_gap = dict(max_gap or {})
        self.severity = severity
        #: alert_id of each known_bias finding raised -> end of the window that raised it.
        self._known_raised: dict[str, int] = {}

    @classmethod
    def for_settings(
        cls,
        model_name: str,
        reader: MetricsReader,
        settings: MetricsSettings,
        *,
        metrics: Sequence[str] = ("recall", "accuracy"),
        severity: Severity = Severity.WARNING,
    ) -> PerformanceEvaluator:
        """The evaluator of one model, with its ``[models.metrics]`` ``performance_*`` settings.

        Each evaluation tests at the level that keeps its chance alerts within
        ``performance_false_alarms_per_week`` (:func:`~stream_guard.settings.metrics.repeated_alpha`
        over its evaluations a week and its families: one per metric, one per fairness metric).
        Its rollups are cached on tiles of the evaluation grid (``performance_every_s``): an
        evaluation sums again only the tiles that changed since the last one, so its cost
        does not grow with the lookback (:mod:`~stream_guard.metrics.rollups`). The sums of
        whole hours are stored beside the buckets for the metrics retention, so the first
        evaluation of a worker that just started reads an hour as one hash, not its buckets.
        An evaluation that finds most of its hours neither held nor stored (the first one
        ever, or after a long stop) does not sum them in the worker's loop: a background
        thread does, the evaluation is skipped (logged ``evaluation_deferred``, no alerts),
        and the evaluations once it is done test the same floats a warm worker would.
        """
        every_ms, lookback_ms = settings.performance_every_s * 1000, settings.performance_lookback_s * 1000
        tested = ["mae"] if settings.task == "regression" else list(metrics)
        families = len(tested) + sum(m in settings.performance_max_gap for m in tested)
        return cls(
            {model_name: stored_rollups(reader, math.gcd(every_ms, lookback_ms), settings.retention_s)},
            metrics=metrics,
            lookback_ms=lookback_ms,
            every_ms=every_ms,
            min_support=settings.performance_min_support,
            alpha=repeated_alpha(settings, settings.performance_every_s, families),
            min_effect=settings.performance_min_effect,
            max_gap=settings.performance_max_gap,
            severity=severity,
        )

    def __call__(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]:
        reader = self.readers.get(model.name)
        if reader is None or window.start_ms % self.every_ms != 0:
            return []
        end = window.end_ms
        reference = model.profile.performance if model.profile is not None else None
        earlier = (end - 2 * self.lookback_ms, end - self.lookback_ms)
        try:
            rollup = reader.rollup(end - self.lookback_ms, end)
        except RollupWarmingError as exc:
            if reference is None:  # queue the baseline's hours too, for the same warm-up
                with contextlib.suppress(RollupWarmingError):
                    reader.rollup(*earlier)
            return _deferred(model.name, end, exc)
        if reference is not None and (reference.task == "regression") != (rollup.task == "regression"):
            reference = None  # a reference of the other task says nothing about these counters
        if reference is not None:
            baselines, source = dict(reference_rollup(reference)), REFERENCE
        else:
            try:
                baselines, source = dict(reader.rollup(*earlier)), EARLIER
            except RollupWarmingError as exc:
                return _deferred(model.name, end, exc)
        metrics = ["mae"] if rollup.task == "regression" else self.metrics
        alerts = []
        for metric in metrics:
            tests = slice_tests(
                rollup,
                baselines,
                metric,
                source=source,
                min_support=self.min_support,
                alpha=self.alpha,
                min_effect=self.min_effect,
            )
            found = attribute(tests)
            alerts += slice_alerts(model.name, rollup, found, reference, severity=self.severity)
            if metric in self.max_gap:
                covered = {t.slice for a in found for t in (a.test, *a.evidence)}
                unfair = fairness_tests(
                    rollup, metric, self.max_gap[metric], min_support=self.min_support, alpha=self.alpha
                )
                extra = [a for a in attribute(unfair) if a.test.slice not in covered]
                alerts += slice_alerts(
                    model.name, rollup, extra, reference, severity=self.severity, max_gap=self.max_gap[metric]
                )
        if reference is not None:
            learned_ms = _epoch_ms(model.profile.created_at) if model.profile is not None else 0
            biases = [b for b in reference.known_biases if b.metric in metrics]
            alerts += self._first_sight(known_bias_alerts(model.name, reference, biases, learned_ms), end)
        return alerts

    def _first_sight(self, alerts: list[Alert], window_end: int) -> list[Alert]:
        """The known_bias findings this evaluator has not raised before, or raised for this same window.

        Raised again for the window that first raised them (its closing is retried until the
        broker acknowledged its alerts), never for a later one: a later evaluation would open
        the resolved incident's tombstone window again, or republish it as a repeat. Across
        workers and restarts the lifecycle deduplicates: same window, same ``alert_id``.
        """
        fresh = []
        for alert in alerts:
            first = self._known_raised.setdefault(alert.alert_id, window_end)
            if first == window_end:
                fresh.append(alert)
        return fresh


def _deferred(model_name: str, window_end: int, warming: RollupWarmingError) -> list[Alert]:
    """No alerts from an evaluation whose rollups are still warming: logged, the next evaluation runs."""
    _log.info(
        "evaluation_deferred", model=model_name, evaluator="performance", window_end=window_end, reason=str(warming)
    )
    return []


def _epoch_ms(iso: str) -> int:
    """Epoch ms of an ISO-8601 time (``Z`` allowed); 0 when it is not one (a hand-edited profile)."""
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def _evidence_text(evidence: Sequence[SliceTest]) -> str:
    named = ", ".join(f"{t.slice} {t.value:.3f} vs {t.baseline:.3f}" for t in evidence[:MAX_EVIDENCE_NAMED])
    more = len(evidence) - MAX_EVIDENCE_NAMED
    return named + (f" and {more} more" if more > 0 else "")


def slice_alerts(
    model: str,
    rollup: Rollup,
    found: Sequence[Attributed],
    reference: ReferencePerformance | None = None,
    *,
    severity: Severity = Severity.WARNING,
    max_gap: float | None = None,
) -> list[Alert]:
    """One ``slice_underperformance`` alert per attributed slice, its evidence in ``observed`` and ``message``.

    ``max_gap`` marks alerts of the fairness rule (the gap to the rest exceeded it).
    """
    alerts = []
    for a in found:
        t = a.test
        metric = t.metric
        against = _BASELINE_TEXT[t.source]
        observed = f"{metric} {t.value:.3f} on {t.support} events"
        message = (
            f"{metric} of {t.slice} is {t.value:.3f} vs {t.baseline:.3f} for {against} "
            f"(BH-adjusted p={t.p:.2g}, {t.support} events)"
        )
        if max_gap is not None:
            message += f"; the gap exceeds performance_max_gap {max_gap:g}"
        bias = reference.known_bias(metric, t.slice) if reference is not None else None
        if bias is not None:
            message += f"; known bias: {bias.value:.3f} vs {bias.rest_value:.3f} for the rest of the reference"
        if a.evidence:
            observed += f"; explains {len(a.evidence)} related slices: {_evidence_text(a.evidence)}"
            message += f"; also low, explained by it: {_evidence_text(a.evidence)}"
        if max_gap is not None:
            detector = "performance.fairness_gap"
        elif t.source == REST:
            detector = "performance.two_proportion_bh" if metric != "mae" else "performance.welch_bh"
        else:
            detector = "performance.own_baseline"
        alerts.append(
            Alert(
                model=model,
                kind=SLICE_UNDERPERFORMANCE,
                feature=metric,
                slice=t.slice,
                severity=severity,
                window_start=rollup.start_ms,
                window_end=rollup.end_ms,
                count=t.support,
                total=rollup.overall.support(metric),
                rate=t.value,
                observed=observed,
                expected=f"{metric} near {t.baseline:.3f} ({against}, {t.baseline_support} events)",
                detector=detector,
                message=message,
                value=t.value,
                threshold=t.baseline,
            )
        )
    return alerts


def known_bias_alerts(
    model: str, reference: ReferencePerformance, biases: Sequence[KnownBias], learned_ms: int
) -> list[Alert]:
    """One informational ``known_bias`` finding per bias, on the window ``[learned_ms, learned_ms]``.

    The window (hence the ``alert_id``) depends on the profile only: every evaluation
    raises the same alert, which the incident lifecycle publishes once.
    """
    total = reference.slices["*"].labelled if "*" in reference.slices else 0
    return [
        Alert(
            model=model,
            kind=KNOWN_BIAS,
            feature=b.metric,
            slice=b.slice,
            severity=Severity.INFO,
            window_start=learned_ms,
            window_end=learned_ms,
            count=b.support,
            total=total,
            rate=b.value,
            observed=f"{b.metric} {b.value:.3f} on {b.support} reference events",
            expected=f"{b.metric} near {b.rest_value:.3f} (rest of the reference)",
            detector="performance.reference_gap",
            message=(
                f"known bias in the reference: {b.metric} of {b.slice} is {b.value:.3f} vs {b.rest_value:.3f} "
                f"for the rest (gap {b.gap:.3f}, BH-adjusted p={b.p:.2g}); it alerts again only if it widens "
                "beyond its reference value or exceeds performance_max_gap"
            ),
            value=b.value,
            threshold=b.rest_value,
        )
        for b in biases
    ]
