"""Settings of drift monitoring: window statistics per feature, and the online detector.

A feature's settings resolve from its own table, then the top level, then the defaults
below. In TOML (a ``drift`` table)::

    psi_threshold = 0.2        # PSI above this is a material shift
    js_threshold = 0.1         # Jensen-Shannon distance above this too
    alpha = 0.01               # significance level of the KS / chi-square tests
    min_count = 200            # values of a feature a window needs to be judged
    severity = "WARNING"
    rule = "effect_and_test"   # or "any" (see DriftSettings.rule)
    correction = "bonferroni"  # or "none" (see DriftSettings.correction)
    online_features = ["amount", "score"]   # default: numeric features + score
    seed_size = 2000           # baseline values fed to each online detector first
    seed = 0
    [drift.detector]
    kind = "ADWIN"
    params = { delta = 0.002 }
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

from stream_guard.alerts.model import Severity
from stream_guard.drift.detectors import DetectorSpec

__all__ = ["DriftSettings", "FeatureDriftSettings"]

Rule = Literal["effect_and_test", "any"]
RULES: tuple[str, ...] = ("effect_and_test", "any")
Correction = Literal["bonferroni", "none"]
CORRECTIONS: tuple[str, ...] = ("bonferroni", "none")

_FEATURE_KEYS = ("enabled", "psi_threshold", "js_threshold", "alpha", "min_count", "severity")
_TOP_KEYS = (
    "psi_threshold",
    "js_threshold",
    "alpha",
    "min_count",
    "severity",
    "rule",
    "correction",
    "features",
    "detector",
    "online_features",
    "seed_size",
    "seed",
)
_DETECTOR_KEYS = ("kind", "params")


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
class DriftSettings:
    """Settings of :class:`~stream_guard.drift.window.WindowDrift` and :class:`~stream_guard.drift.online.OnlineDrift`.

    Attributes
    ----------
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
    features
        Per-feature overrides: feature name -> a table of :data:`_FEATURE_KEYS`.
    detector
        River detector of the online monitor (ADWIN with River's defaults unless set).
    online_features
        Numeric features fed to the online detector; ``None`` means the model's numeric
        features plus its score field.
    seed_size
        Values drawn from the baseline profile to seed each online detector (0: none).
    seed
        Seed of those draws (mixed with the model, feature and partition).
    """

    psi_threshold: float = 0.2
    js_threshold: float = 0.1
    alpha: float = 0.01
    min_count: int = 200
    severity: Severity = Severity.WARNING
    rule: Rule = "effect_and_test"
    correction: Correction = "bonferroni"
    features: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    detector: DetectorSpec = field(default_factory=DetectorSpec)
    online_features: tuple[str, ...] | None = None
    seed_size: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        _check_thresholds("drift", vars(self))
        # Accept the TOML spellings when built in code ("warning", a list of names).
        object.__setattr__(self, "severity", _severity(self.severity, "drift.severity"))
        if self.rule not in RULES:
            raise ValueError(f"drift.rule: expected one of {', '.join(RULES)}, got {self.rule!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"drift.correction: expected one of {', '.join(CORRECTIONS)}, got {self.correction!r}")
        for name, table in self.features.items():
            _check_feature_table(f"drift.features.{name}", table)
        if self.online_features is not None:
            object.__setattr__(self, "online_features", tuple(self.online_features))
            disabled = [f for f in self.online_features if not self.feature(f).enabled]
            if disabled:
                raise ValueError(f"drift.online_features: {', '.join(disabled)} disabled in drift.features")
        if not _is_int(self.seed_size) or self.seed_size < 0:
            raise ValueError(f"drift.seed_size: expected an integer >= 0, got {self.seed_size!r}")
        if not _is_int(self.seed):
            raise ValueError(f"drift.seed: expected an integer, got {self.seed!r}")
        _check_detector("drift.detector", self.detector)

    def feature(self, name: str) -> FeatureDriftSettings:
        """The resolved settings of feature ``name``."""
        own = self.features.get(name, {})
        severity = own.get("severity", self.severity)
        return FeatureDriftSettings(
            enabled=bool(own.get("enabled", True)),
            psi_threshold=float(own.get("psi_threshold", self.psi_threshold)),
            js_threshold=float(own.get("js_threshold", self.js_threshold)),
            alpha=float(own.get("alpha", self.alpha)),
            min_count=int(own.get("min_count", self.min_count)),
            severity=_severity(severity, "severity"),
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "drift") -> DriftSettings:
        """Build from a TOML-like table.

        Raises
        ------
        ValueError
            On an unknown key or a bad value; the one-line message names the key,
            e.g. ``drift.features.amount.psi: unknown key (expected one of ...)``.
        """
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a table")
        _no_unknown(where, raw, _TOP_KEYS)
        _check_thresholds(where, raw)
        values: dict[str, Any] = {
            k: raw[k] for k in ("psi_threshold", "js_threshold", "alpha", "min_count") if k in raw
        }
        if "severity" in raw:
            values["severity"] = _severity(raw["severity"], f"{where}.severity")
        for key, choices in (("rule", RULES), ("correction", CORRECTIONS)):
            if key in raw:
                if raw[key] not in choices:
                    raise ValueError(f"{where}.{key}: expected one of {', '.join(choices)}, got {raw[key]!r}")
                values[key] = raw[key]
        features = raw.get("features", {})
        if not isinstance(features, Mapping):
            raise ValueError(f"{where}.features: expected a table of feature names")
        parsed: dict[str, dict[str, Any]] = {}
        for name, table in features.items():
            path = f"{where}.features.{name}"
            _check_feature_table(path, table)
            parsed[name] = dict(table)
            if "severity" in table:
                parsed[name]["severity"] = _severity(table["severity"], f"{path}.severity")
        values["features"] = parsed
        if "detector" in raw:
            values["detector"] = _parse_detector(f"{where}.detector", raw["detector"])
        if "online_features" in raw:
            online = raw["online_features"]
            if not isinstance(online, list) or not all(isinstance(f, str) and f for f in online):
                raise ValueError(f"{where}.online_features: expected a list of feature names, got {online!r}")
            if len(set(online)) != len(online):
                raise ValueError(f"{where}.online_features: lists a feature more than once")
            disabled = [f for f in online if parsed.get(f, {}).get("enabled") is False]
            if disabled:
                raise ValueError(f"{where}.online_features: {', '.join(disabled)} disabled in {where}.features")
            values["online_features"] = tuple(online)
        for key in ("seed_size", "seed"):
            if key in raw:
                if not _is_int(raw[key]) or (key == "seed_size" and raw[key] < 0):
                    expected = "an integer >= 0" if key == "seed_size" else "an integer"
                    raise ValueError(f"{where}.{key}: expected {expected}, got {raw[key]!r}")
                values[key] = raw[key]
        return cls(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _no_unknown(where: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in table:
        if key not in known:
            raise ValueError(f"{where}.{key}: unknown key (expected one of {', '.join(known)})")


def _check_thresholds(where: str, table: Mapping[str, Any]) -> None:
    """Validate whichever of the threshold keys ``table`` has."""
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "psi_threshold": (lambda v: _is_number(v) and v > 0, "a number > 0"),
        "js_threshold": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
        "alpha": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
        "min_count": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    }
    for key, (ok, expected) in checks.items():
        if key in table and not ok(table[key]):
            raise ValueError(f"{where}.{key}: expected {expected}, got {table[key]!r}")


def _check_feature_table(where: str, table: Any) -> None:
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: expected a table with keys {', '.join(_FEATURE_KEYS)}")
    _no_unknown(where, table, _FEATURE_KEYS)
    if "enabled" in table and not isinstance(table["enabled"], bool):
        raise ValueError(f"{where}.enabled: expected true or false, got {table['enabled']!r}")
    _check_thresholds(where, table)
    if "severity" in table:
        _severity(table["severity"], f"{where}.severity")


def _severity(value: Any, where: str) -> Severity:
    try:
        return value if isinstance(value, Severity) else Severity(str(value).upper())
    except ValueError:
        raise ValueError(f"{where}: expected one of {', '.join(s.value for s in Severity)}, got {value!r}") from None


def _parse_detector(where: str, table: Any) -> DetectorSpec:
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: expected a table with keys {', '.join(_DETECTOR_KEYS)}")
    _no_unknown(where, table, _DETECTOR_KEYS)
    kind = table.get("kind", "ADWIN")
    params = table.get("params", {})
    if not isinstance(kind, str):
        raise ValueError(f"{where}.kind: expected a detector class name, got {kind!r}")
    if not isinstance(params, Mapping):
        raise ValueError(f"{where}.params: expected a table of the detector's arguments, got {params!r}")
    spec = DetectorSpec(kind, dict(params))
    _check_detector(where, spec)
    return spec


def _check_detector(where: str, spec: DetectorSpec) -> None:
    try:
        detector = spec.build()
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if isinstance(detector, river_base.BinaryDriftDetector):
        raise ValueError(
            f"{where}: {type(detector).__name__} is a binary detector (it takes 0/1 error indicators, "
            "not feature values); use ADWIN, PageHinkley or KSWIN"
        )
