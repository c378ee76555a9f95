"""Unit tests for stream_guard.settings.drift: the [drift] section, per-feature tables and problems."""

from __future__ import annotations

from typing import Any

import pytest

from stream_guard.settings import DetectorSpec, DriftSettings, FeatureDriftTable, Severity


def test_settings_from_dict_resolves_per_feature() -> None:
    settings = DriftSettings.from_dict(
        {
            "psi_threshold": 0.25,
            "js_threshold": 0.15,
            "alpha": 0.001,
            "min_count": 500,
            "severity": "info",
            "rule": "any",
            "correction": "none",
            "features": {"amount": {"enabled": False}, "country": {"alpha": 0.05, "severity": "CRITICAL"}},
            "detector": {"kind": "PageHinkley", "params": {"threshold": 20.0, "min_instances": 50}},
            "online_features": ["score"],
            "seed_size": 500,
            "seed": 3,
        }
    )
    assert settings.feature("amount").enabled is False
    country = settings.feature("country")
    assert (country.alpha, country.psi_threshold, country.js_threshold, country.min_count) == (0.05, 0.25, 0.15, 500)
    assert country.severity is Severity.CRITICAL and settings.feature("age").severity is Severity.INFO
    assert settings.detector == DetectorSpec("PageHinkley", {"threshold": 20.0, "min_instances": 50})
    assert (settings.online_features, settings.seed_size, settings.seed) == (("score",), 500, 3)
    assert (settings.rule, settings.correction) == ("any", "none")
    defaults = DriftSettings.from_dict({})
    assert defaults.feature("x") == DriftSettings().feature("x")
    assert (defaults.psi_threshold, defaults.js_threshold, defaults.alpha, defaults.min_count) == (0.2, 0.1, 0.01, 200)
    assert defaults.detector.kind == "ADWIN" and defaults.online_features is None
    assert (defaults.rule, defaults.correction, defaults.seed_size) == ("effect_and_test", "bonferroni", 2000)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"psi": 0.2}, r"^drift\.psi: unknown setting \(known: alpha, .*seed_size, severity\)$"),
        ({"features": {"amount": {"threshold": 1}}}, r"^drift\.features\.amount\.threshold: unknown setting"),
        ({"features": {"amount": True}}, r"^drift\.features\.amount: expected a table"),
        ({"detector": {"kind": "ADWIN", "delta": 0.1}}, r"^drift\.detector\.delta: unknown setting"),
        ({"detector": {"kind": "ADWYN"}}, r"^drift\.detector: unknown drift detector kind 'ADWYN'"),
        ({"detector": {"params": {"threshold": 3}}}, r"^drift\.detector: ADWIN does not accept parameter"),
        ({"detector": {"kind": "DDM"}}, r"^drift\.detector: DDM is a binary detector"),
        ({"alpha": 1.5}, r"^drift\.alpha: expected a number in \(0, 1\), got 1\.5$"),
        ({"min_count": 0}, r"^drift\.min_count: expected an integer >= 1"),
        ({"features": {"age": {"js_threshold": "high"}}}, r"^drift\.features\.age\.js_threshold: expected"),
        ({"severity": "loud"}, r"^drift\.severity: expected one of INFO, WARNING, CRITICAL"),
        ({"rule": "all"}, r"^drift\.rule: expected one of effect_and_test, any"),
        ({"correction": "holm"}, r"^drift\.correction: expected one of bonferroni, none, got 'holm'$"),
        ({"online_features": "amount"}, r"^drift\.online_features: expected a list"),
        (
            {"online_features": ["amount"], "features": {"amount": {"enabled": False}}},
            r"^drift\.online_features: amount disabled",
        ),
        ({"seed_size": -1}, r"^drift\.seed_size: expected an integer >= 0"),
    ],
)
def test_settings_errors_are_one_clear_line(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        DriftSettings.from_dict(raw)
    assert "\n" not in str(info.value)


def test_code_built_settings_are_validated() -> None:
    """Built in code (plain tables accepted), a disabled online feature raises ValueError naming the key."""
    with pytest.raises(ValueError, match=r"^drift\.online_features: amount disabled in drift\.features$"):
        DriftSettings(online_features=("amount",), features={"amount": {"enabled": False}})  # type: ignore[dict-item]
    settings = DriftSettings(features={"amount": {"alpha": 0.05}}, severity="critical")  # type: ignore[dict-item, arg-type]
    assert settings.features["amount"] == FeatureDriftTable(alpha=0.05)
    assert settings.severity is Severity.CRITICAL


def test_every_problem_of_a_table_is_reported() -> None:
    """Type and semantic mistakes of one table all arrive in one ValueError."""
    with pytest.raises(ValueError) as info:
        DriftSettings.from_dict({"alpha": 1.5, "min_count": "many", "detector": {"kind": "ADWYN"}, "seed_size": -1})
    message = str(info.value)
    for start in ("drift.alpha: expected a number in (0, 1)", "drift.min_count: expected int, got 'many'"):
        assert start in message
    assert "drift.detector: unknown drift detector kind 'ADWYN'" in message
    assert "drift.seed_size: expected an integer >= 0, got -1" in message
