"""Window-level feature checks, evaluated when an event-time window closes.

Each check compares a window's counters (written by
:meth:`stream_guard.checks.row_checks.FeatureChecks.contribute`) with the baseline:

``null_rate``
    Null share of the feature's rows against ``p0 = mean + z * std`` of the reference's
    per-chunk null rate (``std`` floored at 0.1 point, ``z`` = tolerance, default 3):
    a one-sided binomial test of ``H0: rate <= p0``. A feature whose null rate was noisy
    in the reference gets a wider margin, as in NannyML.
``sentinel_spike``
    The same test for the share of each counted numeric value (every baseline top
    value, and any value that reached 1 % of a batch). The reference share of a value
    that is not a top value is 0 outside the learned ``[min, max]`` (a new ``-1``
    default), else at most the smallest top share; see
    :func:`stream_guard.checks.stats.value_share_variability`. A feature's values make
    one hypothesis, "no value spikes", with the Bonferroni-adjusted smallest p-value
    (``k * min p`` over its ``k`` values); its alert names the most significant value.
``cardinality``
    Distinct values of a categorical (HyperLogLog) against an upper bound scaled to the
    window size (:func:`stream_guard.checks.stats.distinct_threshold`). Its p-value
    covers only the HyperLogLog estimation error, so it acts as a threshold. The count
    is read from ``card|<feature>``, which the snapshot reader fills with the
    ``PFCOUNT`` of the key named by ``hll|card|<feature>``; without it the check is
    skipped.

Rate checks need ``min_support`` rows of the feature in the window.

Multiple testing
----------------
Every closed window tests one hypothesis per (check, feature): dozens for a model of
dozens of features, every minute. Tested one by one at a fixed level, some would fire
by chance in most windows. So all p-values of a window form one family, and the
Benjamini-Hochberg procedure rejects at level ``false_alarm_rate`` (default 2.5e-5: a
quarter of one false alert a week at 60 s windows).
When nothing is wrong (every hypothesis true), Benjamini-Hochberg bounds the
probability of *any* window-check alert in the window by ``false_alarm_rate``, exactly
like Bonferroni; when a feature does break, it keeps more power than Bonferroni for
the others, and bounds the expected share of false alerts among those raised by the
same level (for independent or positively dependent tests). The tests are run against
thresholds that already include the reference's chunk-to-chunk variability
(``mean + z * std``), so clean windows stay far below the nominal rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stream_guard.alerts.model import Alert
from stream_guard.checks.stats import (
    benjamini_hochberg,
    binomial_p_values,
    distinct_p_value,
    distinct_threshold,
    value_share_variability,
)
from stream_guard.model import ModelRuntime
from stream_guard.profile import MIN_RATE_STD, BaselineProfile, CategoricalProfile, NumericProfile, RateVariability
from stream_guard.settings.checks import ChecksConfig
from stream_guard.state.window_store import WindowSnapshot


@dataclass
class _Test:
    """One hypothesis of a window: the numbers an alert needs if it is rejected."""

    check: str
    feature: str
    subject: str  # "null rate", "value -1"...
    count: int
    rows: int  # trials of a binomial test; events of a cardinality test
    threshold: float
    value: float
    observed: str
    expected: str
    message: str
    p_value: float
    detector: str


class WindowChecks:
    """Evaluates ``null_rate``, ``sentinel_spike`` and ``cardinality`` on closed windows.

    Parameters
    ----------
    profiles
        Baseline profiles by model name; a model without one gets no window checks.
    config
        The same configuration as the :class:`~stream_guard.checks.row_checks.FeatureChecks`.
    """

    def __init__(self, profiles: Mapping[str, BaselineProfile], config: ChecksConfig) -> None:
        # Not a copy: the worker replaces a model's entry when its profile file changes.
        self._profiles = profiles
        self._config = config

    def __call__(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]:
        """Alerts of the window's rejected hypotheses (Benjamini-Hochberg over all of them)."""
        profile = self._profiles.get(model.name)
        if profile is None:
            return []
        tests: list[_Test] = []
        for name in [*model.numeric_features, *model.categorical_features]:
            feature = profile.features.get(name)
            if feature is not None:
                tests += self._tests(name, feature, window, profile)
        reject = benjamini_hochberg(np.array([t.p_value for t in tests]), self._config.false_alarm_rate)
        return [self._alert(model.name, window, t) for t, r in zip(tests, reject.tolist(), strict=True) if r]

    # -- hypotheses --------------------------------------------------------------------

    def _tests(
        self, name: str, feature: NumericProfile | CategoricalProfile, window: WindowSnapshot, profile: BaselineProfile
    ) -> list[_Test]:
        config = self._config
        nulls = window.count(f"null|{name}")
        rows = nulls + window.count(f"nv|{name}")
        supported = rows >= max(config.min_support, 1)
        out = []
        if supported and config.is_enabled("null_rate", name):
            z = config.settings("null_rate", name).tolerance or 0.0
            out.append(_rate_test("null_rate", name, "null rate", nulls, rows, feature.null_rate_variability, z))
        if supported and isinstance(feature, NumericProfile) and config.is_enabled("sentinel_spike", name):
            z = config.settings("sentinel_spike", name).tolerance or 0.0
            values = []
            for key, count in window.with_prefix(f"top|{name}|").items():
                share = value_share_variability(feature, float(key), profile.chunk_size)
                values.append(
                    _rate_test("sentinel_spike", name, f"value {_value(float(key))}", int(count), rows, share, z)
                )
            if values:
                out.append(_most_significant(values, config.false_alarm_rate))
        distinct = window.fields.get(f"card|{name}")
        if isinstance(feature, CategoricalProfile) and distinct is not None and config.is_enabled("cardinality", name):
            z = config.settings("cardinality", name).tolerance or 0.0
            out.append(_cardinality_test(name, feature, int(float(distinct)), window.events, z))
        return out

    def _alert(self, model: str, window: WindowSnapshot, test: _Test) -> Alert:
        total = window.events
        return Alert(
            model=model,
            kind=test.check,
            feature=test.feature,
            slice="",
            severity=self._config.severity(test.check, test.feature),
            window_start=window.start_ms,
            window_end=window.end_ms,
            count=test.count,
            total=total,
            rate=test.count / total if total else 0.0,
            observed=test.observed,
            expected=test.expected,
            value=test.value,
            threshold=test.threshold,
            detector=test.detector,
            message=test.message,
        )


def _rate_test(
    check: str, name: str, what: str, count: int, rows: int, variability: RateVariability, z: float
) -> _Test:
    p0 = variability.upper_threshold(z)
    rate = count / rows
    baseline = f"baseline {variability.mean:.2%} +- {max(variability.std, MIN_RATE_STD):.2%}"
    return _Test(
        check=check,
        feature=name,
        subject=what,
        count=count,
        rows=rows,
        threshold=p0,
        value=rate,
        observed=f"{what} {rate:.2%} ({count} of {rows})",
        expected=f"<= {p0:.2%} ({baseline})",
        message=f"{what} of {name!r} is {rate:.1%} of {rows} events, above the {p0:.1%} tolerated ({baseline})",
        p_value=float(binomial_p_values(np.array([count]), np.array([rows]), np.array([p0]))[0]),
        detector="binomial_test+bh",
    )


def _most_significant(values: list[_Test], q: float) -> _Test:
    """One test per feature from its values' tests: the smallest p-value, Bonferroni-adjusted.

    ``min(1, k * min p)`` over the ``k`` counted values is a valid p-value of "no value
    of this feature spikes", so the feature enters Benjamini-Hochberg as one hypothesis.
    """
    k = len(values)
    values = sorted(values, key=lambda t: t.p_value)
    best = values[0]
    others = [t.subject.removeprefix("value ") for t in values[1:4] if t.p_value * k <= q]
    if others:
        best.observed += f"; also {', '.join(others)}"
    best.p_value = min(1.0, k * best.p_value)
    best.detector = "binomial_test+bonferroni+bh"
    best.message += ": a new default or sentinel value?"
    return best


def _cardinality_test(name: str, feature: CategoricalProfile, distinct: int, events: int, z: float) -> _Test:
    chunks = feature.chunk_cardinality
    threshold = distinct_threshold(chunks, feature.cardinality, feature.count, events, z)
    baseline = (
        f"baseline {chunks.mean:.1f} +- {chunks.std:.1f} per {chunks.chunk_size} rows, {feature.cardinality} in all"
    )
    return _Test(
        check="cardinality",
        feature=name,
        subject="distinct values",
        count=distinct,
        rows=events,
        threshold=threshold,
        value=float(distinct),
        observed=f"{distinct} distinct values in {events} events",
        expected=f"<= {threshold:.0f} ({baseline})",
        message=(
            f"{name!r} has {distinct} distinct values in {events} events, "
            f"above the {threshold:.0f} expected ({baseline})"
        ),
        p_value=distinct_p_value(distinct, threshold),
        detector="hll_threshold+bh",
    )


def _value(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
