"""``[checks]``: per-check, per-feature settings of the data-validity checks.

A check's settings resolve from the most specific level that sets them: the feature's
table, then the check's table, then the built-in default below.

===================  ========  =========================================================
check                severity  ``tolerance``
===================  ========  =========================================================
``out_of_range``     CRITICAL  margin as a share of the learned range (default 0.25)
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
    false_alarm_rate = 2.5e-5
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

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stream_guard.settings.kinds import CHECKS, ROW_CHECKS, SCHEMA_FINDING_SEVERITIES, WINDOW_CHECKS, Severity
from stream_guard.settings.loading import Problems, build_section, is_building

__all__ = [
    "CHECKS",
    "DEFAULT_SEVERITIES",
    "DEFAULT_TOLERANCES",
    "ROW_CHECKS",
    "WINDOW_CHECKS",
    "CheckSettings",
    "CheckTable",
    "CheckTables",
    "ChecksConfig",
    "check_checks",
]

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
    "out_of_range": 0.25,
    "null_rate": 3.0,
    "sentinel_spike": 3.0,
    "cardinality": 3.0,
}


@dataclass(frozen=True)
class CheckSettings:
    """One check's resolved settings on one feature; ``tolerance`` is None for checks without one."""

    enabled: bool = True
    tolerance: float | None = None
    severity: Severity | None = None


@dataclass(frozen=True)
class CheckTable:
    """The table of one check, ``[checks.<check>]`` or ``[checks.features.<feature>.<check>]``.

    ``None`` means "inherit": a feature's table from the check's, the check's from the default.
    """

    enabled: bool | None = None
    tolerance: float | None = None
    severity: Severity | None = None


@dataclass(frozen=True)
class CheckTables:
    """One optional table per check: ``[checks.features.<feature>]`` (and part of ``[checks]``)."""

    TABLE_OF: ClassVar[str] = "checks"
    KEY_NOUN: ClassVar[str] = "check"

    out_of_range: CheckTable | None = None
    nan: CheckTable | None = None
    infinite: CheckTable | None = None
    null_rate: CheckTable | None = None
    unseen_category: CheckTable | None = None
    sentinel_spike: CheckTable | None = None
    cardinality: CheckTable | None = None
    type_mismatch: CheckTable | None = None

    def table(self, check: str) -> CheckTable | None:
        return getattr(self, check, None) if check in CHECKS else None

    def tables(self) -> dict[str, CheckTable]:
        """The checks that have a table here."""
        return {name: table for name in CHECKS if (table := self.table(name)) is not None}


@dataclass(frozen=True)
class ChecksConfig(CheckTables):
    """``[checks]``: settings of every check, with per-feature overrides.

    Attributes
    ----------
    enabled
        ``false`` turns the value checks off altogether.
    false_alarm_rate
        Target probability that a clean window raises any window-check alert
        (Benjamini-Hochberg level, see :mod:`stream_guard.checks.window_checks`).
        The default spends a quarter of the false-alarm budget (one false alert a week
        per model at 60 s windows, :func:`~stream_guard.settings.drift.per_window_rate`):
        0.25 a week over 10,080 windows.
    min_support
        Events of a feature a window needs before a rate check may fire.
    features
        Per-feature tables: ``feature -> check -> table``.
    """

    TABLE_OF: ClassVar[str] = ""
    KEY_NOUN: ClassVar[str] = "setting"

    enabled: bool = True
    false_alarm_rate: float = 2.5e-5
    min_support: int = 200
    features: Mapping[str, CheckTables] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_building():
            problems = Problems()
            check_checks(self, "checks", problems)
            if problems.lines:
                raise ValueError("; ".join(problems.lines))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "checks") -> ChecksConfig:
        """Build from a TOML-like table; raise ValueError listing every problem (``; ``-joined)."""
        config, problems = build_section(cls, raw, where)
        if config is not None:
            check_checks(config, where, problems)
        if config is None or problems.lines:
            raise ValueError("; ".join(problems.lines))
        return config

    def settings(self, check: str, feature: str) -> CheckSettings:
        """Resolved settings of ``check`` on ``feature`` (tolerance/severity filled in).

        ``tolerance`` stays ``None`` for checks without one.
        """
        if check not in DEFAULT_SEVERITIES:
            raise ValueError(f"unknown check {check!r}; known: {', '.join(CHECKS)}")
        base = self.table(check) or CheckTable()
        features = self.features.get(feature)
        own = features.table(check) if features is not None else None
        enabled = base.enabled is not False
        tolerance, severity = base.tolerance, base.severity
        if own is not None:
            enabled = enabled if own.enabled is None else own.enabled
            tolerance = tolerance if own.tolerance is None else own.tolerance
            severity = severity if own.severity is None else own.severity
        return CheckSettings(
            enabled,
            DEFAULT_TOLERANCES.get(check) if tolerance is None else tolerance,
            DEFAULT_SEVERITIES[check] if severity is None else severity,
        )

    def is_enabled(self, check: str, feature: str) -> bool:
        return self.settings(check, feature).enabled

    def severity(self, check: str, feature: str) -> Severity:
        severity = self.settings(check, feature).severity
        assert severity is not None  # settings() fills in the default
        return severity

    def finding_severities(self) -> dict[str, Severity]:
        """The ``severities`` mapping for :func:`stream_guard.alerts.evaluate.finding_alerts`.

        Keys are finding kinds (the schema findings' defaults plus the row checks'), and
        ``"<kind>|<feature>"`` for features whose severity differs from their kind's.
        """
        out = dict(SCHEMA_FINDING_SEVERITIES)
        for check in ROW_CHECKS:
            out[check] = self.severity(check, "")
        for feature in self.features:
            for check in ROW_CHECKS:
                severity = self.severity(check, feature)
                if severity != out[check]:
                    out[f"{check}|{feature}"] = severity
        return out


def check_checks(config: ChecksConfig, where: str, problems: Problems) -> None:
    """The semantic problems of a ``[checks]`` section (its types were checked by the loader)."""
    levels = [(where, config)] + [(f"{where}.features.{f}", tables) for f, tables in config.features.items()]
    for path, tables in levels:
        for name, table in tables.tables().items():
            _check_tolerance(f"{path}.{name}", name, table.tolerance, problems)
    rate = config.false_alarm_rate
    if problems.typed(f"{where}.false_alarm_rate") and not 0.0 < rate < 1.0:
        problems.add(f"{where}.false_alarm_rate", f"expected a number in (0, 1), got {rate!r}")
    if problems.typed(f"{where}.min_support") and config.min_support < 0:
        problems.add(f"{where}.min_support", f"expected an integer >= 0, got {config.min_support!r}")


def _check_tolerance(where: str, check: str, tolerance: float | None, problems: Problems) -> None:
    if tolerance is None:
        return
    if check not in DEFAULT_TOLERANCES:
        problems.add(f"{where}.tolerance", f"the {check} check has no tolerance")
    elif not math.isfinite(tolerance) or tolerance < 0:
        problems.add(f"{where}.tolerance", f"expected a finite number >= 0, got {tolerance!r}")


assert tuple(f.name for f in dataclasses.fields(CheckTables)) == CHECKS, "one CheckTables field per check"
