"""``[drift]``: window statistics per feature, and the online detector.

A feature's settings resolve from its own table, then the top level, then the defaults
below. In TOML (a ``drift`` table)::

    psi_threshold = 0.2        # PSI above this is a material shift
    js_threshold = 0.1         # Jensen-Shannon distance above this too
    alpha = 0.01               # significance level of the KS / chi-square tests
    min_count = 200            # values of a feature a window needs to be judged
    severity = "WARNING"
    rule = "effect_and_test"   # or "any" (see DriftSettings.rule)
    correction = "bonferroni"  # or "none" (see DriftSettings.correction)
    persistence = 2            # consecutive drifted windows before a drift alert
    online_features = ["amount", "score"]   # default: numeric features + score
    seed_size = 2000           # baseline values fed to each online detector first
    seed = 0
    [drift.detector]
    kind = "ADWIN"
    params = { delta = 1e-5 }
    [drift.features.amount]
    enabled = false
    [drift.features.device_type]
    alpha = 0.001
    severity = "CRITICAL"
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from river import base as river_base

from stream_guard.settings.detectors import DetectorSpec
from stream_guard.settings.kinds import Severity
from stream_guard.settings.loading import Problems, build_section, coerce_value, is_building

__all__ = [
    "WEEK_S",
    "DriftSettings",
    "FeatureDriftSettings",
    "FeatureDriftTable",
    "check_drift",
    "false_alarms_per_week",
    "per_window_rate",
    "windows_per_week",
]

Rule = Literal["effect_and_test", "any"]
RULES: tuple[str, ...] = ("effect_and_test", "any")
Correction = Literal["bonferroni", "none"]
CORRECTIONS: tuple[str, ...] = ("bonferroni", "none")
#: ADWIN's confidence of the online detectors unless ``[drift.detector]`` says otherwise.
#: River's default (0.002) raised about one false change per 5M clean wide-model values
#: (one of nine features); at 1e-5, none, and a score shift of +0.15 still takes about
#: 220 values of a partition instead of 160.
DEFAULT_ADWIN_DELTA = 1e-5
#: Seconds in a week: false-alarm budgets are stated per week of clean traffic.
WEEK_S = 7 * 24 * 3600


@dataclass(frozen=True)
class FeatureDriftSettings:
    """Resolved window-drift settings of one feature.

    Attributes
    ----------
    enabled
        Whether the feature is monitored at all (window statistics and online detector).
    psi_threshold, js_threshold
        PSI / Jensen-Shannon distance above which the shift is material.
    alpha
        Significance level of the binned KS test (numeric) or chi-square test (categorical).
    min_count
        Values of the feature a window needs before it is judged.
    severity
        Severity of the feature's drift alerts.
    """

    enabled: bool = True
    psi_threshold: float = 0.2
    js_threshold: float = 0.1
    alpha: float = 0.01
    min_count: int = 200
    severity: Severity = Severity.WARNING


@dataclass(frozen=True)
class FeatureDriftTable:
    """``[drift.features.<feature>]``: one feature's overrides; ``None`` inherits the top level."""

    enabled: bool = True
    psi_threshold: float | None = None
    js_threshold: float | None = None
    alpha: float | None = None
    min_count: int | None = None
    severity: Severity | None = None


@dataclass(frozen=True)
class DriftSettings:
    """Settings of :class:`~stream_guard.drift.window.WindowDrift` and :class:`~stream_guard.drift.online.OnlineDrift`.

    Attributes
    ----------
    enabled
        ``false`` turns drift monitoring off altogether.
    psi_threshold, js_threshold, alpha, min_count, severity
        Defaults of every feature (see :class:`FeatureDriftSettings`).
    rule
        When a feature's window counts as drifted. ``"effect_and_test"`` (default): an
        effect size (PSI or JS) is above its threshold *and* the test is significant.
        The test alone flags negligible shifts in large windows (and ``alpha`` of all
        stable windows), an effect size alone is noisy in small ones; together they
        stay quiet on a stable stream. ``"any"``: any statistic suffices.
    correction
        ``"bonferroni"`` (default): each test of a window runs at ``alpha`` divided by
        the number of fields judged in that window, so a stable window fails some test
        with probability at most ``alpha``, however many features the model has.
        ``"none"``: every test at its own ``alpha``.
    persistence
        Consecutive windows a field's window statistics must find drifted before a
        ``data_drift`` / ``prediction_drift`` alert is raised (1: in the first one).
        A drift lasts; a chance exceedance rarely repeats in the next window, so with
        ``k`` windows a clean field alerts with probability about ``p ** k`` per window
        instead of ``p`` (see :func:`false_alarms_per_week`), for a delay of ``k - 1``
        windows.
    features
        Per-feature overrides: feature name -> :class:`FeatureDriftTable`.
    detector
        River detector of the online monitor: ADWIN with ``delta`` 1e-5 unless set
        (:data:`DEFAULT_ADWIN_DELTA`; River's default 0.002 is over the false-alarm budget).
    online_features
        Numeric features fed to the online detector; ``None`` means the model's numeric
        features plus its score field.
    seed_size
        Values drawn from the baseline profile to seed each online detector (0: none).
    seed
        Seed of those draws (mixed with the model, feature and partition).

    Built in code, the TOML spellings are accepted too (``severity="warning"``, plain
    tables in ``features``, a list of ``online_features``) and every problem raises
    ValueError; built by the loader, problems are collected instead.
    """

    enabled: bool = True
    psi_threshold: float = 0.2
    js_threshold: float = 0.1
    alpha: float = 0.01
    min_count: int = 200
    severity: Severity = Severity.WARNING
    rule: Rule = "effect_and_test"
    correction: Correction = "bonferroni"
    persistence: int = 2
    features: Mapping[str, FeatureDriftTable] = field(default_factory=dict)
    detector: DetectorSpec = field(default_factory=lambda: DetectorSpec("ADWIN", {"delta": DEFAULT_ADWIN_DELTA}))
    online_features: tuple[str, ...] | None = None
    seed_size: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if is_building():
            return
        # Accept the TOML spellings when built in code.
        object.__setattr__(self, "severity", coerce_value(Severity, self.severity, "drift.severity"))
        features = {
            name: table if isinstance(table, FeatureDriftTable) else coerce_value(FeatureDriftTable, table, where)
            for name, table in self.features.items()
            for where in [f"drift.features.{name}"]
        }
        object.__setattr__(self, "features", features)
        if self.online_features is not None:
            object.__setattr__(self, "online_features", tuple(self.online_features))
        problems = Problems()
        check_drift(self, "drift", problems)
        if problems.lines:
            raise ValueError("; ".join(problems.lines))

    def feature(self, name: str) -> FeatureDriftSettings:
        """The resolved settings of feature ``name``."""
        own = self.features.get(name, FeatureDriftTable())
        return FeatureDriftSettings(
            enabled=own.enabled,
            psi_threshold=self.psi_threshold if own.psi_threshold is None else own.psi_threshold,
            js_threshold=self.js_threshold if own.js_threshold is None else own.js_threshold,
            alpha=self.alpha if own.alpha is None else own.alpha,
            min_count=self.min_count if own.min_count is None else own.min_count,
            severity=self.severity if own.severity is None else own.severity,
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "drift") -> DriftSettings:
        """Build from a TOML-like table.

        Raises
        ------
        ValueError
            Listing every problem, one line each joined by ``; ``; each line names the
            key, e.g. ``drift.features.amount.psi: unknown setting (known: ...)``.
        """
        settings, problems = build_section(cls, raw, where)
        if settings is not None:
            check_drift(settings, where, problems)
        if settings is None or problems.lines:
            raise ValueError("; ".join(problems.lines))
        return settings


def windows_per_week(window_s: float) -> float:
    """Windows of ``window_s`` seconds in a week: 10,080 at 60 s."""
    return WEEK_S / window_s


def per_window_rate(per_week: float, window_s: float) -> float:
    """The chance of a false alert per clean window that spends ``per_week`` false alerts a week.

    >>> round(per_window_rate(1.0, 60), 7)   # one a week at 60 s windows
    9.92e-05
    """
    return per_week / windows_per_week(window_s)


def false_alarms_per_week(per_window: float, window_s: float, persistence: int = 1) -> float:
    """Expected false alerts a week of a check that fires in a clean window with chance ``per_window``.

    With ``persistence`` k the alert needs k consecutive firing windows; for windows
    that are independent under no drift that is ``per_window ** k`` per window. An
    upper bound for alerts published: the incident lifecycle merges a run into one.

    >>> round(false_alarms_per_week(0.01, 60), 1)                # alpha 0.01 alone: every 100th window
    100.8
    >>> round(false_alarms_per_week(0.01, 60, persistence=2), 2)  # two windows in a row
    1.01
    """
    return windows_per_week(window_s) * per_window**persistence


_THRESHOLDS: dict[str, tuple[Callable[[float], bool], str]] = {
    "psi_threshold": (lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    "js_threshold": (lambda v: math.isfinite(v) and 0 < v <= 1, "a number in (0, 1]"),
    "alpha": (lambda v: math.isfinite(v) and 0 < v < 1, "a number in (0, 1)"),
    "min_count": (lambda v: v >= 1, "an integer >= 1"),
}


def check_drift(settings: DriftSettings, where: str, problems: Problems) -> None:
    """The semantic problems of a ``[drift]`` section (its types were checked by the loader)."""
    levels: list[tuple[str, Any]] = [(where, settings)]
    levels += [(f"{where}.features.{name}", table) for name, table in settings.features.items()]
    for path, table in levels:
        for key, (ok, expected) in _THRESHOLDS.items():
            value = getattr(table, key)
            if value is not None and problems.typed(f"{path}.{key}") and not ok(value):
                problems.add(f"{path}.{key}", f"expected {expected}, got {value!r}")
    online = settings.online_features
    if online is not None and problems.typed(f"{where}.online_features"):
        if not all(online):
            problems.add(f"{where}.online_features", f"expected a list of feature names, got {list(online)!r}")
        elif len(set(online)) != len(online):
            problems.add(f"{where}.online_features", "lists a feature more than once")
        disabled = [f for f in online if not settings.feature(f).enabled]
        if disabled:
            problems.add(f"{where}.online_features", f"{', '.join(disabled)} disabled in {where}.features")
    if problems.typed(f"{where}.persistence") and settings.persistence < 1:
        problems.add(f"{where}.persistence", f"expected an integer >= 1, got {settings.persistence!r}")
    if problems.typed(f"{where}.seed_size") and settings.seed_size < 0:
        problems.add(f"{where}.seed_size", f"expected an integer >= 0, got {settings.seed_size!r}")
    if problems.typed(f"{where}.detector"):
        _check_detector(f"{where}.detector", settings.detector, problems)


def _check_detector(where: str, spec: DetectorSpec, problems: Problems) -> None:
    try:
        detector = spec.build()
    except ValueError as exc:
        problems.add(where, str(exc))
        return
    if isinstance(detector, river_base.BinaryDriftDetector):
        problems.add(
            where,
            f"{type(detector).__name__} is a binary detector (it takes 0/1 error indicators, "
            "not feature values); use ADWIN, PageHinkley or KSWIN",
        )
