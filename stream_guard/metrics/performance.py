"""Performance bias and degradation tests on the rolled-up label-based counters.

* :func:`slice_underperformance`: slices whose recall / accuracy / error rate (or MAE)
  is significantly worse than the rest of the traffic (all traffic minus the slice),
  one-sided tests with a Benjamini-Hochberg correction across the slices tested (the
  fairness rule and the known-bias detection; the default alert compares each slice with
  its own baseline, :mod:`~stream_guard.metrics.baseline`);
* :func:`performance_degradation`: the error rate of a window against a baseline error
  rate, with an exact binomial test; :class:`DegradationMonitor` applies it to the
  sliding window of the per-label correctness stream of
  :class:`~stream_guard.metrics.labels.LabelJoiner`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps
from scipy.special import ndtr  # the standard normal CDF that scipy.stats.norm.cdf and .sf evaluate

from stream_guard.alerts.model import Alert, Severity
from stream_guard.checks.stats import bh_adjusted
from stream_guard.errors import MetricUnknownError
from stream_guard.metrics import store as s
from stream_guard.metrics.query import Rollup, SliceMetrics
from stream_guard.settings.kinds import SLICE_UNDERPERFORMANCE

#: Metric -> (its (successes, trials) in a slice, whether higher is better).
PROPORTIONS: dict[str, tuple[Callable[[SliceMetrics], tuple[float, float]], bool]] = {
    "recall": (lambda m: (m.get(s.TP), m.get(s.TP) + m.get(s.FN)), True),
    "precision": (lambda m: (m.get(s.TP), m.get(s.TP) + m.get(s.FP)), True),
    "specificity": (lambda m: (m.get(s.TN), m.get(s.TN) + m.get(s.FP)), True),
    "accuracy": (lambda m: (m.get(s.TP) + m.get(s.TN), sum(m.confusion)), True),
    "error_rate": (lambda m: (m.get(s.FP) + m.get(s.FN), sum(m.confusion)), False),
}


def two_proportion_test(
    x1: float, n1: float, x2: float, n2: float, alternative: str = "two-sided"
) -> tuple[float, float]:
    """Pooled two-proportion z-test of ``x1/n1`` against ``x2/n2``.

    Parameters
    ----------
    x1, n1, x2, n2
        Successes and trials of each group.
    alternative
        ``"two-sided"``, ``"less"`` (p1 < p2) or ``"greater"`` (p1 > p2).

    Returns
    -------
    (z, p)
        ``z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2))`` with the pooled ``p``; ``(0.0, 1.0)``
        when a group is empty or the pooled proportion is 0 or 1 (nothing to tell apart).
    """
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 0.0, 1.0
    z = (x1 / n1 - x2 / n2) / se
    if alternative == "two-sided":
        p = 2.0 * ndtr(-abs(z))
    elif alternative == "less":
        p = ndtr(z)
    elif alternative == "greater":
        p = ndtr(-z)
    else:
        raise ValueError(f"alternative must be two-sided, less or greater, got {alternative!r}")
    return float(z), float(min(1.0, p))


def welch_mean_test(m1: float, q1: float, n1: float, m2: float, q2: float, n2: float) -> tuple[float, float]:
    """One-sided Welch z-test that mean 1 > mean 2, from means and means of squares."""
    var = max(q1 - m1 * m1, 0.0) / n1 + max(q2 - m2 * m2, 0.0) / n2
    if var <= 0.0:
        return 0.0, 1.0
    z = (m1 - m2) / math.sqrt(var)
    return float(z), float(ndtr(-z))


def benjamini_hochberg(pvalues: ArrayLike, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg step-up procedure.

    Returns
    -------
    (rejected, adjusted)
        Boolean mask of the rejected hypotheses at FDR ``alpha`` and the adjusted p-values
        (``min_{j >= i} m p_(j) / j``, capped at 1), both in the input order.
    """
    adjusted = bh_adjusted(np.asarray(pvalues, dtype=np.float64))
    return adjusted <= alpha, adjusted


@dataclass(frozen=True)
class Underperformance:
    """A slice significantly worse than the rest; unpacks as ``(slice, value, rest_value, p)``.

    ``p`` is the Benjamini-Hochberg adjusted p-value; ``p_raw`` the test's own.
    """

    slice: str
    value: float
    rest_value: float
    p: float
    p_raw: float
    support: int
    rest_support: int

    def __iter__(self) -> Any:
        return iter((self.slice, self.value, self.rest_value, self.p))


def slice_underperformance(
    rollup: Rollup,
    metric: str = "recall",
    min_support: int = 100,
    alpha: float = 0.05,
    dimensions: Iterable[Iterable[str]] | None = None,
) -> list[Underperformance]:
    """Slices whose ``metric`` is significantly worse than the rest of the traffic.

    Parameters
    ----------
    rollup
        Metrics of a range (:meth:`MetricsReader.rollup`); ``*`` must be present.
    metric
        ``recall``, ``precision``, ``specificity``, ``accuracy``, ``error_rate`` (two-proportion
        z-test) or ``mae`` (Welch z-test on the absolute errors).
    min_support
        Least events behind the metric (e.g. actual positives for recall), in the slice and in the rest.
    alpha
        False discovery rate over all slices tested (Benjamini-Hochberg).
    dimensions
        Only slices of these dimensions; default every recorded one.

    Returns
    -------
    list of Underperformance
        Worst (smallest adjusted p) first.
    """
    overall = rollup.overall
    tested: list[tuple[SliceMetrics, float, float, float, int, int]] = []
    for m in rollup.select(dimensions):
        test = _test_against_rest(m, overall, metric)
        if test is None:
            continue
        value, rest_value, p, n, n_rest = test
        if n >= min_support and n_rest >= min_support:
            tested.append((m, value, rest_value, p, n, n_rest))
    if not tested:
        return []
    rejected, adjusted = benjamini_hochberg([t[3] for t in tested], alpha)
    found = [
        Underperformance(m.slice, value, rest, float(q), p, n, n_rest)
        for (m, value, rest, p, n, n_rest), hit, q in zip(tested, rejected, adjusted, strict=True)
        if hit
    ]
    return sorted(found, key=lambda u: (u.p, u.slice))


def _test_against_rest(
    m: SliceMetrics, overall: SliceMetrics, metric: str
) -> tuple[float, float, float, int, int] | None:
    if metric == "mae":
        return _mae_against_rest(m, overall)
    if metric not in PROPORTIONS:
        raise MetricUnknownError(
            f"metric {metric!r} has no test of a slice against the rest; use one of {', '.join([*PROPORTIONS, 'mae'])}"
        )
    counts, higher_is_better = PROPORTIONS[metric]
    x, n = counts(m)
    x_all, n_all = counts(overall)
    x_rest, n_rest = x_all - x, n_all - n
    if n <= 0 or n_rest <= 0:
        return None
    _, p = two_proportion_test(x, n, x_rest, n_rest, alternative="less" if higher_is_better else "greater")
    return x / n, x_rest / n_rest, p, int(n), int(n_rest)


def _mae_against_rest(m: SliceMetrics, overall: SliceMetrics) -> tuple[float, float, float, int, int] | None:
    n, n_rest = m.labelled, overall.labelled - m.labelled
    if n <= 0 or n_rest <= 0:
        return None
    ae, se = m.get(s.ABS_ERR), m.get(s.SQ_ERR)
    ae_rest, se_rest = overall.get(s.ABS_ERR) - ae, overall.get(s.SQ_ERR) - se
    _, p = welch_mean_test(ae / n, se / n, n, ae_rest / n_rest, se_rest / n_rest, n_rest)
    return ae / n, ae_rest / n_rest, p, n, n_rest


# -- concept drift: error rate against a baseline ---------------------------------------


@dataclass(frozen=True)
class Degradation:
    errors: int
    n: int
    error_rate: float | None
    baseline: float
    p: float
    degraded: bool


def performance_degradation(
    current: SliceMetrics | tuple[int, int] | ArrayLike,
    baseline_error_rate: float,
    *,
    alpha: float = 0.01,
    min_support: int = 30,
    margin: float = 0.0,
) -> Degradation:
    """Is the current error rate significantly above the baseline? (exact one-sided binomial test)

    Parameters
    ----------
    current
        A window's metrics (its ``error_rate`` counts), an ``(errors, n)`` pair, or the 0/1
        error stream of the window.
    baseline_error_rate
        The expected error rate (e.g. from validation data or a reference window).
    alpha
        Significance level.
    min_support
        Fewer labelled events than this never count as degraded.
    margin
        Tolerated absolute increase: tests ``H0: rate <= baseline + margin``.
    """
    if isinstance(current, SliceMetrics):
        tp, fp, tn, fn = current.confusion
        errors, n = fp + fn, tp + fp + tn + fn
    elif isinstance(current, tuple) and len(current) == 2:
        errors, n = int(current[0]), int(current[1])
    else:
        stream = np.asarray(current, dtype=np.float64)
        errors, n = int(np.count_nonzero(stream)), len(stream)
    null_rate = min(max(baseline_error_rate + margin, 0.0), 1.0)
    if n == 0:
        return Degradation(0, 0, None, baseline_error_rate, 1.0, False)
    p = float(sps.binomtest(errors, n, null_rate, alternative="greater").pvalue) if null_rate < 1.0 else 1.0
    return Degradation(errors, n, errors / n, baseline_error_rate, p, n >= min_support and p < alpha)


class DegradationMonitor:
    """Sliding window over the correctness stream, tested against a baseline error rate.

    Parameters
    ----------
    window
        Labels per tested window.
    baseline_error_rate
        Expected error rate; ``None`` learns it from the first full window.
    alpha, margin
        See :func:`performance_degradation`.
    """

    def __init__(
        self, window: int = 500, baseline_error_rate: float | None = None, *, alpha: float = 0.01, margin: float = 0.0
    ) -> None:
        self.window = window
        self.baseline = baseline_error_rate
        self.alpha = alpha
        self.margin = margin
        self._recent = np.zeros(0, dtype=np.int8)

    def update(self, errors: Sequence[int] | np.ndarray) -> Degradation | None:
        """Add a batch of 0/1 errors; the test of the latest full window, or ``None`` before the first."""
        self._recent = np.concatenate([self._recent, np.asarray(errors, dtype=np.int8)])[-self.window :]
        if len(self._recent) < self.window:
            return None
        if self.baseline is None:
            self.baseline = float(self._recent.mean())
            self._recent = self._recent[:0]
            return None
        return performance_degradation(
            self._recent, self.baseline, alpha=self.alpha, min_support=self.window, margin=self.margin
        )


# -- alerts ------------------------------------------------------------------------------


def underperformance_alerts(
    model: str, rollup: Rollup, found: Sequence[Underperformance], metric: str, *, severity: Severity = Severity.WARNING
) -> list[Alert]:
    """One ``slice_underperformance`` alert per slice found, over the rollup's range."""
    alerts = []
    for u in found:
        alerts.append(
            Alert(
                model=model,
                kind=SLICE_UNDERPERFORMANCE,
                feature=metric,
                slice=u.slice,
                severity=severity,
                window_start=rollup.start_ms,
                window_end=rollup.end_ms,
                count=u.support,
                total=u.support + u.rest_support,
                rate=u.value,
                observed=f"{metric} {u.value:.3f} on {u.support} events",
                expected=f"{metric} near {u.rest_value:.3f} (rest of traffic, {u.rest_support} events)",
                detector="performance.two_proportion_bh" if metric != "mae" else "performance.welch_bh",
                message=(
                    f"{metric} of {u.slice} is {u.value:.3f} vs {u.rest_value:.3f} for the rest of traffic "
                    f"(BH-adjusted p={u.p:.2g}, {u.support} events)"
                ),
                value=u.value,
                threshold=u.rest_value,
            )
        )
    return alerts
