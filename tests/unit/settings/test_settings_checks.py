"""Unit tests for stream_guard.settings.checks: the [checks] section, its layers and its problems."""

from __future__ import annotations

from typing import Any

import pytest

from stream_guard.alerts.evaluate import DEFAULT_SEVERITY
from stream_guard.settings import CHECKS, ChecksConfig, CheckSettings, CheckTable, CheckTables, Severity


def test_default_settings() -> None:
    config = ChecksConfig()
    assert config.settings("out_of_range", "x") == CheckSettings(True, 0.25, Severity.CRITICAL)
    assert config.settings("null_rate", "x") == CheckSettings(True, 3.0, Severity.WARNING)
    assert config.settings("nan", "x") == CheckSettings(True, None, Severity.CRITICAL)
    assert {c: config.settings(c, "x").severity for c in CHECKS} == {
        "out_of_range": Severity.CRITICAL,
        "nan": Severity.CRITICAL,
        "infinite": Severity.CRITICAL,
        "null_rate": Severity.WARNING,
        "unseen_category": Severity.WARNING,
        "sentinel_spike": Severity.WARNING,
        "cardinality": Severity.WARNING,
        "type_mismatch": Severity.CRITICAL,
    }
    assert config.false_alarm_rate == 2.5e-5 and config.min_support == 200


def test_from_dict_layers_feature_over_check_over_default() -> None:
    config = ChecksConfig.from_dict(
        {
            "false_alarm_rate": 1e-4,
            "min_support": 50,
            "out_of_range": {"tolerance": 0.5},
            "null_rate": {"enabled": False, "severity": "critical"},
            "features": {
                "amount": {"out_of_range": {"enabled": False}},
                "age": {"null_rate": {"tolerance": 4}, "out_of_range": {"severity": "INFO"}},
            },
        }
    )
    assert (config.false_alarm_rate, config.min_support) == (1e-4, 50)
    assert config.settings("out_of_range", "x") == CheckSettings(True, 0.5, Severity.CRITICAL)
    assert config.settings("out_of_range", "amount").enabled is False
    assert config.settings("out_of_range", "age") == CheckSettings(True, 0.5, Severity.INFO)
    # An unset ``enabled`` inherits the check's: age's null_rate stays off.
    assert config.settings("null_rate", "age") == CheckSettings(False, 4.0, Severity.CRITICAL)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"out_of_rnage": {}}, "checks.out_of_rnage: unknown setting"),
        ({"nan": {"tolerence": 1}}, "checks.nan.tolerence: unknown setting"),
        ({"features": {"age": {"null_rates": {}}}}, "checks.features.age.null_rates: unknown check"),
        ({"nan": {"tolerance": 1}}, "checks.nan.tolerance: the nan check has no tolerance"),
        ({"null_rate": {"tolerance": -1}}, "checks.null_rate.tolerance: expected a finite number >= 0"),
        ({"null_rate": {"tolerance": "3"}}, "checks.null_rate.tolerance: expected a number"),
        ({"null_rate": {"severity": "LOUD"}}, "checks.null_rate.severity: expected one of INFO, WARNING, CRITICAL"),
        ({"null_rate": {"enabled": "no"}}, "checks.null_rate.enabled: expected true or false"),
        ({"null_rate": True}, "checks.null_rate: expected a table"),
        ({"false_alarm_rate": 0}, "checks.false_alarm_rate: expected a number in (0, 1)"),
        ({"min_support": -1}, "checks.min_support: expected an integer >= 0"),
        ({"features": {"age": 3}}, "checks.features.age: expected a table of checks"),
    ],
)
def test_from_dict_rejects_bad_tables_with_one_line(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        ChecksConfig.from_dict(raw)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_unknown_check_name_in_code() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        ChecksConfig().settings("range", "x")
    with pytest.raises(ValueError, match=r"checks\.features\.x\.ranges: unknown check"):
        ChecksConfig.from_dict({"features": {"x": {"ranges": {}}}})


def test_finding_severities() -> None:
    config = ChecksConfig.from_dict(
        {"unseen_category": {"severity": "CRITICAL"}, "features": {"x": {"out_of_range": {"severity": "INFO"}}}}
    )
    severities = config.finding_severities()
    assert severities["undecodable"] == DEFAULT_SEVERITY["undecodable"]
    assert severities["out_of_range"] == Severity.CRITICAL
    assert severities["unseen_category"] == Severity.CRITICAL
    assert severities["out_of_range|x"] == Severity.INFO
    assert "nan|x" not in severities


def test_code_built_settings_are_validated() -> None:
    """Built in code, a section with a bad value raises ValueError naming the key."""
    with pytest.raises(ValueError, match=r"^checks\.nan\.tolerance: the nan check has no tolerance$"):
        ChecksConfig(nan=CheckTable(tolerance=1.0))
    with pytest.raises(ValueError, match=r"^checks\.features\.x\.null_rate\.tolerance: expected a finite number"):
        ChecksConfig(features={"x": CheckTables(null_rate=CheckTable(tolerance=-1.0))})


def test_every_problem_of_a_table_is_reported() -> None:
    """from_dict reports every mistake of the table, not just the first."""
    with pytest.raises(ValueError) as info:
        ChecksConfig.from_dict(
            {"nan": {"tolerance": 1}, "null_rate": {"severity": "LOUD"}, "min_support": -1, "features": {"a": 3}}
        )
    problems = str(info.value).split("; ")
    assert sorted(problems) == [
        "checks.features.a: expected a table of checks, got int",
        "checks.min_support: expected an integer >= 0, got -1",
        "checks.nan.tolerance: the nan check has no tolerance",
        "checks.null_rate.severity: expected one of INFO, WARNING, CRITICAL, got 'LOUD'",
    ]


def test_one_table_field_per_check() -> None:
    """Each check has its own typed table in [checks] and in [checks.features.<feature>]."""
    assert [name for name in CHECKS if CheckTables().table(name) is None] == list(CHECKS)
    assert ChecksConfig.from_dict({"nan": {"enabled": False}}).table("nan") == CheckTable(enabled=False)
