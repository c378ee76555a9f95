"""Concept drift: a change in how often (or how badly) the model is wrong, from the label counters.

:class:`ConceptDriftEvaluator` runs when an event-time window closes whose start is a
multiple of ``performance_every_s`` (the cadence of
:class:`~stream_guard.metrics.slice_alerts.PerformanceEvaluator`) and looks at the period
``[P - every, P)`` with ``P = window start - performance_label_delay_s``. Successive
evaluations therefore look at adjacent, non-overlapping periods. Two checks run:

* ``concept_drift``: the model's error stream is rebuilt from the per-bucket label counters
  (:func:`error_stream`) and fed to a fresh River detector (``DDM`` by default). A change
  is reported when the detector signals at a position that falls in the period, so each
  change is reported by one evaluation only: the one whose period holds the signal;
* ``performance_degradation``: the error rate (regression: MAE) of the period is tested
  against ``baseline_error_rate`` when configured, else against the rest of the lookback
  ``[P - lookback, P - every)`` (:func:`period_test`).

Both read the all-traffic (``*``) counters from Redis, where every worker's labels are
summed, so the checks are global for the model and keep no state between evaluations:
any worker may run them and a restart loses nothing.

Where the detector's stream starts. A detector's signals depend on everything it was fed
since it started (DDM's reference minimum is set early), so streams that each started one
lookback before their own period would place the same change at different positions, and
a change near the end of a period could be reported twice or never. The stream therefore
starts at a multiple of the lookback (:meth:`ConceptDriftEvaluator.stream_start`): it
covers at least the lookback, and every evaluation until the next multiple replays the
same first buckets and so sees exactly the signals of the previous one plus those of its
own period. Only a change whose signal straddles the move of the start (once per lookback)
can still be missed or reported twice. Subsampling (beyond about ``max_values`` labels)
uses a scale taken from the stream's first lookback so it too is replayed alike.

Limits: labels are joined into the bucket of their *prediction*, so labels that arrive
after an evaluation change periods it has already looked at. A change whose labels come
later than ``performance_label_delay_s`` may be signalled in a period no evaluation looks at
again and go unreported by the detector; the windowed test of later periods, whose
reference then holds a mix of both regimes, may still see it. Detection delay grows with
the stream's length for DDM, whose statistic is the running error rate since its start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from river import base as river_base
from scipy import stats as sps

from stream_guard.alerts.model import Alert, Severity
from stream_guard.metrics import store as s
from stream_guard.metrics.error_stream import (
    LABEL_METRICS,
    MAX_STREAM_VALUES,
    ErrorStream,
    Series,
    Task,
    bucket_arrays,
    detect_changes,
    error_stream,
    infer_task,
)
from stream_guard.metrics.performance import performance_degradation, two_proportion_test, welch_mean_test
from stream_guard.metrics.query import MetricsReader
from stream_guard.settings.detectors import DetectorSpec
from stream_guard.settings.kinds import CONCEPT_DRIFT, PERFORMANCE_DEGRADATION
from stream_guard.settings.metrics import MetricsSettings, repeated_alpha

if TYPE_CHECKING:
    from stream_guard.model import ModelRuntime
    from stream_guard.state.window_store import WindowSnapshot

__all__ = [
    "ConceptDriftEvaluator",
    "ErrorStream",
    "PeriodTest",
    "error_stream",
    "period_test",
]


# -- the windowed test ---------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodTest:
    """The error rate (or MAE) of a period against its reference.

    Attributes
    ----------
    metric
        ``error_rate`` or ``mae``.
    value, n, errors
        The period's metric, labelled events and errors (regression: sum of absolute errors).
    reference, reference_n
        The baseline (``reference_n == 0``) or the rest of the lookback's metric and labels.
    p
        One-sided p-value of "the period is worse".
    test
        ``binomial_test``, ``two_proportion_test``, ``z_test`` or ``welch_test``.
    degraded
        Enough support and ``p < alpha``.
    """

    metric: str
    value: float | None
    n: int
    errors: float
    reference: float | None
    reference_n: int
    p: float
    test: str
    degraded: bool


def period_test(
    series: Series,
    period_start: int,
    period_end: int,
    *,
    task: Task | None = None,
    baseline_error_rate: float | None = None,
    alpha: float = 0.01,
    min_support: int = 100,
) -> PeriodTest:
    """Is the period ``[period_start, period_end)`` worse than its reference?

    Classification: the period's error rate against ``baseline_error_rate`` (exact one-sided
    binomial test, :func:`~stream_guard.metrics.performance.performance_degradation`), else
    against the buckets of ``series`` before the period (pooled two-proportion z-test, one-sided).
    Regression: the period's MAE against ``baseline_error_rate`` read as the expected MAE
    (one-sided z-test with the period's own variance), else against the earlier buckets
    (one-sided Welch z-test). Each group needs ``min_support`` labelled events.
    """
    task = task or infer_task(series)
    starts, n, err, sq = bucket_arrays(series, task)
    recent = (starts >= period_start) & (starts < period_end)
    rest = starts < period_start
    n_r, e_r, q_r = float(n[recent].sum()), float(err[recent].sum()), float(sq[recent].sum())
    n_o, e_o, q_o = float(n[rest].sum()), float(err[rest].sum()), float(sq[rest].sum())
    value = e_r / n_r if n_r > 0 else None
    if task == "classification":
        if baseline_error_rate is not None:
            d = performance_degradation((int(e_r), int(n_r)), baseline_error_rate, alpha=alpha, min_support=min_support)
            return PeriodTest(
                "error_rate", value, int(n_r), e_r, baseline_error_rate, 0, d.p, "binomial_test", d.degraded
            )
        _, p = two_proportion_test(e_r, n_r, e_o, n_o, alternative="greater")
        ok = n_r >= min_support and n_o >= min_support
        reference = e_o / n_o if n_o > 0 else None
        return PeriodTest(
            "error_rate", value, int(n_r), e_r, reference, int(n_o), p, "two_proportion_test", ok and p < alpha
        )
    if baseline_error_rate is not None:
        p = 1.0
        if n_r > 0:
            mean = e_r / n_r
            var = max(q_r / n_r - mean * mean, 0.0)
            if var > 0:
                p = float(sps.norm.sf((mean - baseline_error_rate) / math.sqrt(var / n_r)))
            elif mean > baseline_error_rate:
                p = 0.0
        return PeriodTest(
            "mae", value, int(n_r), e_r, baseline_error_rate, 0, p, "z_test", n_r >= min_support and p < alpha
        )
    p = 1.0
    if n_r > 0 and n_o > 0:
        _, p = welch_mean_test(e_r / n_r, q_r / n_r, n_r, e_o / n_o, q_o / n_o, n_o)
    ok = n_r >= min_support and n_o >= min_support
    reference = e_o / n_o if n_o > 0 else None
    return PeriodTest("mae", value, int(n_r), e_r, reference, int(n_o), p, "welch_test", ok and p < alpha)


# -- the evaluator -------------------------------------------------------------------------


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def _span(ms: int) -> str:
    seconds = ms // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class ConceptDriftEvaluator:
    """An :data:`~stream_guard.worker.Evaluator`: concept drift and performance degradation of one model.

    See the module docstring for what runs when. Alerts are for all traffic (slice ``""``)
    and span the period compared (``window_start``/``window_end``).

    Parameters
    ----------
    model
        The model's name; other models are skipped.
    reader
        The model's metrics reader (``None``: only :meth:`evaluate` can be used).
    every_ms
        Period length and cadence: runs on windows whose start is a multiple of it.
    lookback_ms
        The windowed test compares the period with the rest of ``[end - lookback, end)``;
        the detector's stream covers at least that range (see :meth:`stream_start`).
    min_support, alpha
        Of the windowed test.
    baseline_error_rate
        Expected error rate (regression: MAE); ``None`` compares with the rest of the lookback.
    detector
        The River detector (``DDM`` by default). Regression streams are numeric, so a binary
        detector is replaced by ``ADWIN`` (default parameters) for regression models.
    task
        ``classification`` / ``regression``; default inferred from the counters.
    label_delay_ms
        The period ends this long before the closing window starts.
    max_values
        Cap on the values fed to the detector (see :func:`error_stream`).
    severity
        Of the alerts.
    """

    def __init__(
        self,
        model: str,
        reader: MetricsReader | None,
        *,
        every_ms: int = 3600 * 1000,
        lookback_ms: int = 24 * 3600 * 1000,
        min_support: int = 100,
        alpha: float = 0.01,
        baseline_error_rate: float | None = None,
        detector: DetectorSpec | None = None,
        task: Task | None = None,
        label_delay_ms: int = 0,
        max_values: int = MAX_STREAM_VALUES,
        severity: Severity = Severity.WARNING,
    ) -> None:
        if every_ms <= 0 or lookback_ms <= every_ms:
            raise ValueError(f"need 0 < every_ms < lookback_ms, got every_ms={every_ms}, lookback_ms={lookback_ms}")
        self.model = model
        self.reader = reader
        self.every_ms = every_ms
        self.lookback_ms = lookback_ms
        self.min_support = min_support
        self.alpha = alpha
        self.baseline_error_rate = baseline_error_rate
        self.detector = detector or DetectorSpec("DDM")
        # Built here so that a bad detector spec fails when the worker is assembled.
        self._binary = isinstance(self.detector.build(), river_base.BinaryDriftDetector)
        self.task = task
        self.label_delay_ms = label_delay_ms
        self.max_values = max_values
        self.severity = severity

    @classmethod
    def for_settings(
        cls, model_name: str, reader: MetricsReader | None, settings: MetricsSettings
    ) -> ConceptDriftEvaluator:
        """The evaluator of a model's ``[models.metrics]`` (``performance_*``, ``baseline_error_rate``,
        ``concept_detector[_params]``, ``task``); the degradation test at the level its cadence
        leaves of ``performance_false_alarms_per_week`` (:func:`~stream_guard.settings.metrics.repeated_alpha`).

        Raises
        ------
        ValueError
            On a bad detector or ``performance_lookback_s <= performance_every_s``.
        """
        return cls(
            model_name,
            reader,
            every_ms=settings.performance_every_s * 1000,
            lookback_ms=settings.performance_lookback_s * 1000,
            min_support=settings.performance_min_support,
            alpha=repeated_alpha(settings, settings.performance_every_s),
            baseline_error_rate=settings.baseline_error_rate,
            detector=DetectorSpec(settings.concept_detector, dict(settings.concept_detector_params)),
            task=settings.task,
            label_delay_ms=settings.performance_label_delay_s * 1000,
        )

    def period(self, window: WindowSnapshot) -> tuple[int, int] | None:
        """The period ``[start, end)`` the closing ``window`` evaluates, or ``None`` off the cadence."""
        if window.start_ms % self.every_ms != 0:
            return None
        end = window.start_ms - self.label_delay_ms
        return end - self.every_ms, end

    def stream_start(self, period_end: int) -> int:
        """Where the detector's stream of the period ending at ``period_end`` starts.

        The multiple of the lookback at or before ``period_end - lookback``: every evaluation
        until the next multiple replays the same first buckets (the stream holds between one
        lookback and two lookbacks less one period).
        """
        return ((period_end - self.lookback_ms) // self.lookback_ms) * self.lookback_ms

    def __call__(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]:
        if model.name != self.model or self.reader is None:
            return []
        period = self.period(window)
        if period is None:
            return []
        start, end = period
        series = self.reader.series(self.stream_start(end), end, s.ALL, LABEL_METRICS)
        return self.evaluate(series, start, end)

    def evaluate(self, series: Series, period_start: int, period_end: int) -> list[Alert]:
        """The alerts for the period ``[period_start, period_end)``.

        Parameters
        ----------
        series
            The model's all-traffic counters per bucket (:meth:`MetricsReader.series`) covering
            at least ``[stream_start(period_end), period_end)``; other buckets are ignored.
        period_start, period_end
            The period compared (see :meth:`period`).
        """
        task = self.task or infer_task(series)
        anchor = self.stream_start(period_end)
        alerts = []
        stream_series = [x for x in series if anchor <= x[0] < period_end]
        drift = self._concept_drift(stream_series, task, anchor, period_start, period_end)
        if drift is not None:
            alerts.append(drift)
        test = period_test(
            [x for x in series if period_end - self.lookback_ms <= x[0] < period_end],
            period_start,
            period_end,
            task=task,
            baseline_error_rate=self.baseline_error_rate,
            alpha=self.alpha,
            min_support=self.min_support,
        )
        if test.degraded:
            alerts.append(self._degradation_alert(test, period_start, period_end))
        return alerts

    # -- internals -----------------------------------------------------------------------

    def _spec(self, task: Task) -> DetectorSpec:
        if task == "regression" and self._binary:
            return DetectorSpec("ADWIN")
        return self.detector

    def _scale(self, series: Series, task: Task, anchor: int) -> float:
        """Values fed per label: a power of two from the stream's first lookback.

        Every evaluation sharing the stream's start sees that first lookback whole, so they
        subsample alike and replay identical first values. It is sized for a stream of two
        lookbacks at the first lookback's rate; only when traffic grew more than that is
        the scale taken from the whole stream instead.
        """
        if not series:
            return 1.0
        starts, n, _, _ = bucket_arrays(series, task)
        first = float(n[starts < anchor + self.lookback_ms].sum())
        total = float(n.sum())
        basis = 2.0 * first
        if total > 2.0 * basis:
            basis = total
        if basis <= self.max_values:
            return 1.0
        return float(2.0 ** math.floor(math.log2(self.max_values / basis)))

    def _concept_drift(
        self, series: Series, task: Task, anchor: int, period_start: int, period_end: int
    ) -> Alert | None:
        stream = error_stream(series, task, scale=self._scale(series, task, anchor))
        spec = self._spec(task)
        hits = detect_changes(stream, spec)
        in_period = [i for i, pos in enumerate(hits) if period_start <= stream.buckets[pos] < period_end]
        for i in in_period:
            pos = hits[i]
            # The detector's reference is what it saw since its previous signal (it resets then).
            seg_start = hits[i - 1] + 1 if i > 0 else 0
            seg_end = hits[i + 1] + 1 if i + 1 < len(hits) else len(stream)
            change = int(stream.buckets[pos])
            split = max(int(np.searchsorted(stream.buckets, change, side="left")), seg_start)
            before, after = stream.values[seg_start:split], stream.values[split:seg_end]
            # Two-sided detectors (ADWIN) also signal improvements, which are no cause for alarm.
            if len(before) and float(after.mean()) <= float(before.mean()):
                continue
            return self._drift_alert(spec, stream, before, after, change, len(in_period), period_start, period_end)
        return None

    def _drift_alert(
        self,
        spec: DetectorSpec,
        stream: ErrorStream,
        before: np.ndarray,
        after: np.ndarray,
        change: int,
        signals: int,
        period_start: int,
        period_end: int,
    ) -> Alert:
        metric = "error_rate" if stream.task == "classification" else "mae"
        label = "error rate" if metric == "error_rate" else "MAE"
        after_value = float(after.mean())
        before_value = float(before.mean()) if len(before) else None
        n_after = round(len(after) / stream.scale)
        n_before = round(len(before) / stream.scale)
        count = round(float(after.sum()) / stream.scale) if metric == "error_rate" else n_after
        before_text = "-" if before_value is None else f"{before_value:.3f}"
        more = f"; {signals} signals in the period" if signals > 1 else ""
        return Alert(
            model=self.model,
            kind=CONCEPT_DRIFT,
            feature=metric,
            slice="",
            severity=self.severity,
            window_start=period_start,
            window_end=period_end,
            count=count,
            total=n_after,
            rate=after_value if metric == "error_rate" else 0.0,
            observed=f"{label} {after_value:.3f} on {n_after} labels from {_when(change)}",
            expected=f"{label} near {before_text} ({n_before} labels before)",
            detector=f"river.{spec.kind}",
            message=(
                f"{spec.kind} detected a change in the {label} of {self.model} in the bucket of "
                f"{_when(change)}: {before_text} -> {after_value:.3f}{more}"
            ),
            value=after_value,
            threshold=before_value,
        )

    def _degradation_alert(self, test: PeriodTest, period_start: int, period_end: int) -> Alert:
        label = "error rate" if test.metric == "error_rate" else "MAE"
        value = test.value if test.value is not None else 0.0
        if test.reference_n == 0:
            expected = f"{label} <= {test.reference:.3f} (baseline)"
            versus = f"the baseline {test.reference:.3f}"
        else:
            rest = _span(self.lookback_ms - self.every_ms)
            expected = f"{label} near {test.reference:.3f} (previous {rest}, {test.reference_n} labels)"
            versus = f"{test.reference:.3f} over the previous {rest}"
        return Alert(
            model=self.model,
            kind=PERFORMANCE_DEGRADATION,
            feature=test.metric,
            slice="",
            severity=self.severity,
            window_start=period_start,
            window_end=period_end,
            count=round(test.errors) if test.metric == "error_rate" else test.n,
            total=test.n,
            rate=value if test.metric == "error_rate" else 0.0,
            observed=f"{label} {value:.3f} on {test.n} labels",
            expected=expected,
            detector=test.test,
            message=(
                f"{label} of {self.model} over {_when(period_start)}..{_when(period_end)} is {value:.3f} "
                f"vs {versus} (one-sided p={test.p:.2g}, {test.n} labels)"
            ),
            value=value,
            threshold=test.reference,
        )
