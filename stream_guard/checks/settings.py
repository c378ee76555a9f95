"""Per-check, per-feature settings of the data-validity checks.

A check's settings resolve from the most specific level that sets them: the feature's
table, then the check's table, then the built-in default below.

===================  ========  =========================================================
check                severity  ``tolerance``
===================  ========  =========================================================
``out_of_range``     CRITICAL  margin as a share of the learned range (default 0.1)
``nan``              CRITICAL  none (any NaN where the reference had none)
``infinite``         CRITICAL  none (any +-inf where the reference had none)
``null_rate``        WARNING   ``z``: rate threshold = baseline mean + z * chunk std (3)
``unseen_category``  WARNING   none (any value outside a complete reference value set)
``sentinel_spike``   WARNING   ``z``, as for ``null_rate`` (3)
``cardinality``      WARNING   ``z``: distinct-count threshold = mean + z * std (3)
``type_mismatch``    CRITICAL  none (any value of the wrong Python type)
===================  ========  =========================================================

``out_of_range`` also widens the range to a heavy tail's own spread; see
:func:`stream_guard.checks.row_checks.range_bounds`.

In TOML::

    [checks]
    false_alarm_rate = 1e-3
    min_support = 200
    [checks.out_of_range]
    tolerance = 0.5
    [checks.features.age.null_rate]
    tolerance = 4
    severity = "CRITICAL"
    [checks.features.amount.out_of_range]
    enabled = false
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from stream_guard.alerts.evaluate import DEFAULT_SEVERITY
from stream_guard.alerts.model import Severity

CHECKS = (
    "out_of_range",
    "nan",
    "infinite",
    "null_rate",
    "unseen_category",
    "sentinel_spike",
    "cardinality",
    "type_mismatch",
)
#: Checks that flag single rows; their counters become alerts in ``finding_alerts``.
ROW_CHECKS = ("out_of_range", "nan", "infinite", "unseen_category", "type_mismatch")
#: Checks evaluated on a closed window's counters (:mod:`stream_guard.checks.window_checks`).
WINDOW_CHECKS = ("null_rate", "sentinel_spike", "cardinality")

DEFAULT_SEVERITIES: dict[str, Severity] = {
    "out_of_range": Severity.CRITICAL,
    "nan": Severity.CRITICAL,
    "infinite": Severity.CRITICAL,
    "null_rate": Severity.WARNING,
    "unseen_category": Severity.WARNING,
    "sentinel_spike": Severity.WARNING,
    "cardinality": Severity.WARNING,
    "type_mismatch": Severity.CRITICAL,
}
#: Default tolerance of the checks that have one.
DEFAULT_TOLERANCES: dict[str, float] = {
    "out_of_range": 0.1,
    "null_rate": 3.0,
    "sentinel_spike": 3.0,
    "cardinality": 3.0,
}

_SETTING_KEYS = ("enabled", "tolerance", "severity")
_TOP_KEYS = ("false_alarm_rate", "min_support", "features")


@dataclass(frozen=True)
class CheckSettings:
    """One check's settings; ``None`` means "inherit" (finally the check's default)."""

    enabled: bool = True
    tolerance: float | None = None
    severity: Severity | None = None


@dataclass
class ChecksConfig:
    """Settings of every check, with per-feature overrides.

    Attributes
    ----------
    defaults
        Settings per check name, for every feature.
    per_feature
        ``feature -> check -> settings``. A per-feature entry's ``None`` fields inherit
        from ``defaults`` (``from_dict`` also makes an unset ``enabled`` inherit).
    false_alarm_rate
        Target probability that a clean window raises any window-check alert
        (Benjamini-Hochberg level, see :mod:`stream_guard.checks.window_checks`).
    min_support
        Events of a feature a window needs before a rate check may fire.
    """

    defaults: dict[str, CheckSettings] = field(default_factory=dict)
    per_feature: dict[str, dict[str, CheckSettings]] = field(default_factory=dict)
    false_alarm_rate: float = 1e-3
    min_support: int = 200

    def __post_init__(self) -> None:
        for where, checks in [("checks", self.defaults)] + [
            (f"checks.features.{f}", c) for f, c in self.per_feature.items()
        ]:
            for name, settings in checks.items():
                _validate(f"{where}.{name}", name, settings)
        if not 0.0 < self.false_alarm_rate < 1.0:
            raise ValueError(f"checks.false_alarm_rate: expected a number in (0, 1), got {self.false_alarm_rate!r}")
        if self.min_support < 0:
            raise ValueError(f"checks.min_support: expected an integer >= 0, got {self.min_support!r}")

    def settings(self, check: str, feature: str) -> CheckSettings:
        """Resolved settings of ``check`` on ``feature`` (tolerance/severity filled in).

        ``tolerance`` stays ``None`` for checks without one.
        """
        if check not in DEFAULT_SEVERITIES:
            raise ValueError(f"unknown check {check!r}; known: {', '.join(CHECKS)}")
        base = self.defaults.get(check, CheckSettings())
        own = self.per_feature.get(feature, {}).get(check)
        if own is not None:
            base = CheckSettings(
                own.enabled,
                base.tolerance if own.tolerance is None else own.tolerance,
                base.severity if own.severity is None else own.severity,
            )
        return CheckSettings(
            base.enabled,
            DEFAULT_TOLERANCES.get(check) if base.tolerance is None else base.tolerance,
            DEFAULT_SEVERITIES[check] if base.severity is None else base.severity,
        )

    def enabled(self, check: str, feature: str) -> bool:
        return self.settings(check, feature).enabled

    def severity(self, check: str, feature: str) -> Severity:
        severity = self.settings(check, feature).severity
        assert severity is not None  # settings() fills in the default
        return severity

    def finding_severities(self) -> dict[str, Severity]:
        """The ``severities`` mapping for :func:`stream_guard.alerts.evaluate.finding_alerts`.

        Keys are finding kinds (the schema findings' defaults plus the row checks'), and
        ``"<kind>|<feature>"`` for features whose severity differs from their kind's.
        The per-feature keys take effect once ``finding_alerts`` looks them up first.
        """
        out = dict(DEFAULT_SEVERITY)
        for check in ROW_CHECKS:
            out[check] = self.severity(check, "")
        for feature in self.per_feature:
            for check in ROW_CHECKS:
                severity = self.severity(check, feature)
                if severity != out[check]:
                    out[f"{check}|{feature}"] = severity
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "checks") -> ChecksConfig:
        """Build from a TOML-like table; raise ValueError (one line) on unknown or bad keys."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a table")
        for key in raw:
            if key not in _TOP_KEYS and key not in CHECKS:
                raise ValueError(f"{where}.{key}: unknown key (expected one of {', '.join(_TOP_KEYS + CHECKS)})")
        defaults = {name: _parse_settings(raw[name], f"{where}.{name}", name) for name in CHECKS if name in raw}
        features = raw.get("features", {})
        if not isinstance(features, Mapping):
            raise ValueError(f"{where}.features: expected a table of feature names")
        per_feature: dict[str, dict[str, CheckSettings]] = {}
        for feature, checks in features.items():
            path = f"{where}.features.{feature}"
            if not isinstance(checks, Mapping):
                raise ValueError(f"{path}: expected a table of checks")
            per_feature[feature] = {}
            for name, table in checks.items():
                if name not in CHECKS:
                    raise ValueError(f"{path}.{name}: unknown check (expected one of {', '.join(CHECKS)})")
                parent = defaults.get(name, CheckSettings())
                settings = _parse_settings(table, f"{path}.{name}", name)
                if "enabled" not in table:
                    settings = replace(settings, enabled=parent.enabled)
                per_feature[feature][name] = settings
        rate = raw.get("false_alarm_rate", 1e-3)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate < 1.0:
            raise ValueError(f"{where}.false_alarm_rate: expected a number in (0, 1), got {rate!r}")
        support = raw.get("min_support", 200)
        if isinstance(support, bool) or not isinstance(support, int) or support < 0:
            raise ValueError(f"{where}.min_support: expected an integer >= 0, got {support!r}")
        return cls(defaults, per_feature, float(rate), support)


def _parse_settings(table: Any, where: str, check: str) -> CheckSettings:
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: expected a table with keys {', '.join(_SETTING_KEYS)}")
    for key in table:
        if key not in _SETTING_KEYS:
            raise ValueError(f"{where}.{key}: unknown key (expected one of {', '.join(_SETTING_KEYS)})")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError(f"{where}.enabled: expected true or false, got {enabled!r}")
    tolerance = table.get("tolerance")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))):
        raise ValueError(f"{where}.tolerance: expected a number, got {tolerance!r}")
    severity = table.get("severity")
    if severity is not None:
        try:
            severity = Severity(str(severity).upper())
        except ValueError:
            raise ValueError(
                f"{where}.severity: expected one of {', '.join(s.value for s in Severity)}, got {severity!r}"
            ) from None
    settings = CheckSettings(enabled, None if tolerance is None else float(tolerance), severity)
    _validate(where, check, settings)
    return settings


def _validate(where: str, check: str, settings: CheckSettings) -> None:
    if check not in DEFAULT_SEVERITIES:
        raise ValueError(f"{where}: unknown check (expected one of {', '.join(CHECKS)})")
    tolerance = settings.tolerance
    if tolerance is None:
        return
    if check not in DEFAULT_TOLERANCES:
        raise ValueError(f"{where}.tolerance: the {check} check has no tolerance")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"{where}.tolerance: expected a finite number >= 0, got {tolerance!r}")
