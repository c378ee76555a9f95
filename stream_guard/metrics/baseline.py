"""Slice performance against the slice's own baseline, the fairness gap, and known biases.

* :func:`slice_tests`: every slice's metric over a range against its own baseline (its
  counts on the labelled reference, or in the previous lookback); a slice without a
  baseline of enough support is compared with the rest of the traffic instead. One-sided
  two-proportion tests (MAE: Welch), Benjamini-Hochberg across the slices, and a slice is
  flagged only when the test rejects **and** its metric is worse by at least ``min_effect``;
* :func:`fairness_tests`: slices whose gap to the rest of the traffic exceeds a fixed
  tolerance (``performance_max_gap``), significantly;
* :func:`reference_known_biases`: gaps already present in the reference (slice against the
  rest of the reference, significant and at least ``min_effect``).

The effect is absolute for proportions (0.05 = 5 points of recall) and relative for MAE
(0.05 = 5 % higher).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from stream_guard.metrics import store as s
from stream_guard.metrics.performance import (
    PROPORTIONS,
    benjamini_hochberg,
    slice_underperformance,
    two_proportion_test,
    welch_mean_test,
)
from stream_guard.metrics.query import Rollup, SliceMetrics
from stream_guard.profile_performance import KnownBias, ReferencePerformance

#: Where a slice's baseline came from.
REFERENCE, EARLIER, REST = "reference", "earlier lookback", "rest of traffic"


@dataclass(frozen=True)
class SliceTest:
    """One slice's metric against its baseline, and whether it is flagged.

    ``effect`` is how much worse than the baseline the slice is (positive = worse; MAE:
    relative); ``p`` the Benjamini-Hochberg adjusted p-value over the slices tested
    together, ``p_raw`` the test's own. ``significant``: the test rejected; ``flagged``:
    it rejected and the effect reached the minimum.
    """

    metric: str
    slice: str
    value: float
    baseline: float
    source: str
    support: int
    baseline_support: int
    p_raw: float
    p: float
    effect: float
    flagged: bool
    significant: bool = False
    #: Standard error of ``effect`` (proportions; 0 for MAE, whose effect is relative).
    effect_se: float = 0.0


def effect(metric: str, value: float, baseline: float) -> float:
    """How much worse ``value`` is than ``baseline`` (positive = worse).

    Proportions: the absolute difference (``error_rate`` is worse when larger); ``mae``:
    the relative excess ``value / baseline - 1`` (``inf`` over a zero baseline).
    """
    if metric == "mae":
        if baseline <= 0:
            return math.inf if value > 0 else 0.0
        return value / baseline - 1.0
    higher_is_better = PROPORTIONS[metric][1]
    return baseline - value if higher_is_better else value - baseline


def compare_counts(
    current: SliceMetrics, baseline: SliceMetrics, metric: str
) -> tuple[float, float, float, int, int] | None:
    """One-sided test that ``current`` is worse than ``baseline`` on ``metric``.

    Returns ``(value, baseline value, p, support, baseline support)``, or ``None`` when
    either side has no event behind the metric.
    """
    if metric == "mae":
        n, n_base = current.labelled, baseline.labelled
        if n <= 0 or n_base <= 0:
            return None
        ae, se = current.get(s.ABS_ERR), current.get(s.SQ_ERR)
        ae_b, se_b = baseline.get(s.ABS_ERR), baseline.get(s.SQ_ERR)
        _, p = welch_mean_test(ae / n, se / n, n, ae_b / n_base, se_b / n_base, n_base)
        return ae / n, ae_b / n_base, p, n, n_base
    counts, higher_is_better = PROPORTIONS[metric]
    x, trials = counts(current)
    x_b, trials_b = counts(baseline)
    if trials <= 0 or trials_b <= 0:
        return None
    _, p = two_proportion_test(x, trials, x_b, trials_b, alternative="less" if higher_is_better else "greater")
    return x / trials, x_b / trials_b, p, int(trials), int(trials_b)


def rest_of(m: SliceMetrics, overall: SliceMetrics) -> SliceMetrics:
    """The counters of all traffic minus the slice ``m``."""
    keys = set(m.counters) | set(overall.counters)
    return SliceMetrics(f"not {m.slice}", {k: overall.get(k) - m.get(k) for k in keys})


def slice_tests(
    rollup: Rollup,
    baselines: Mapping[str, SliceMetrics] | None,
    metric: str,
    *,
    source: str = REFERENCE,
    min_support: int = 100,
    alpha: float = 0.01,
    min_effect: float = 0.05,
) -> list[SliceTest]:
    """Every slice of ``rollup`` (``*`` included) tested against its own baseline.

    Parameters
    ----------
    rollup
        The range tested.
    baselines
        Slice -> its counters in the baseline (labelled reference or previous lookback);
        ``None`` or a slice missing or below ``min_support`` there: the slice is compared
        with the rest of the traffic of ``rollup`` (``*`` then is not tested).
    metric
        ``recall``, ``precision``, ``specificity``, ``accuracy``, ``error_rate`` or ``mae``.
    source
        Name of the baseline, recorded on each test.
    min_support, alpha, min_effect
        Least events behind the metric on each side; false discovery rate across the
        slices; least effect (see :func:`effect`) of a flagged slice.

    Returns
    -------
    list of SliceTest
        Every slice tested, flagged or not, in slice order.
    """
    overall = rollup.overall
    pending: list[tuple[str, tuple[float, float, float, int, int], str]] = []
    candidates = [overall, *rollup.select()] if s.ALL in rollup else rollup.select()
    for m in candidates:
        base = (baselines or {}).get(m.slice)
        test = compare_counts(m, base, metric) if base is not None else None
        if test is not None and test[4] >= min_support:
            if test[3] >= min_support:
                pending.append((m.slice, test, source))
            continue
        if m.slice == s.ALL:
            continue
        test = compare_counts(m, rest_of(m, overall), metric)
        if test is not None and test[3] >= min_support and test[4] >= min_support:
            pending.append((m.slice, test, REST))
    if not pending:
        return []
    rejected, adjusted = benjamini_hochberg([t[2] for _, t, _ in pending], alpha)
    out = []
    for (name, (value, base_value, p, n, n_base), src), hit, q in zip(pending, rejected, adjusted, strict=True):
        size = effect(metric, value, base_value)
        flagged = bool(hit) and size >= min_effect
        se = 0.0 if metric == "mae" else math.sqrt(value * (1 - value) / n + base_value * (1 - base_value) / n_base)
        out.append(
            SliceTest(metric, name, value, base_value, src, n, n_base, p, float(q), size, flagged, bool(hit), se)
        )
    return out


def fairness_tests(
    rollup: Rollup, metric: str, max_gap: float, *, min_support: int = 100, alpha: float = 0.01
) -> list[SliceTest]:
    """Every slice against the rest of the traffic; flagged when significantly worse by ``max_gap`` or more.

    The slice-vs-rest test (Benjamini-Hochberg across the slices) with the fairness
    tolerance as the minimum effect, whatever the slice's own baseline.
    """
    return slice_tests(rollup, None, metric, source=REST, min_support=min_support, alpha=alpha, min_effect=max_gap)


def reference_rollup(reference: ReferencePerformance) -> Rollup:
    """The labelled reference as a rollup of its slices' counters (range ``[0, 0)``)."""
    items = {name: SliceMetrics(name, sp.counters(reference.task)) for name, sp in reference.slices.items()}
    return Rollup(items, 0, 0, 0)


def reference_known_biases(
    rollup: Rollup, metric: str, *, min_support: int = 100, alpha: float = 0.01, min_effect: float = 0.05
) -> list[KnownBias]:
    """Slices of the reference significantly worse than the rest of it, by at least ``min_effect``."""
    out = []
    for u in slice_underperformance(rollup, metric, min_support, alpha):
        size = effect(metric, u.value, u.rest_value)
        if size >= min_effect:
            out.append(KnownBias(metric, u.slice, u.value, u.rest_value, size, u.p, u.support))
    return out
