"""Unit tests for stream_guard.settings.detectors: a DetectorSpec is checked by building it."""

from __future__ import annotations

import pytest
from river import drift

from stream_guard.settings import DetectorSpec


@pytest.mark.parametrize(
    ("kind", "params", "cls"),
    [
        ("ADWIN", {"delta": 0.001, "clock": 1}, drift.ADWIN),
        ("PageHinkley", {"threshold": 30.0, "min_instances": 50, "mode": "up"}, drift.PageHinkley),
        ("KSWIN", {"alpha": 0.001, "window_size": 200, "stat_size": 50, "seed": 3}, drift.KSWIN),
        ("DDM", {"warm_start": 100}, drift.binary.DDM),
        ("EDDM", {}, drift.binary.EDDM),
        ("HDDM_A", {"drift_confidence": 0.0001}, drift.binary.HDDMA),
        ("HDDM_W", {}, drift.binary.HDDMW),
    ],
)
def test_spec_builds_with_params(kind: str, params: dict, cls: type) -> None:
    detector = DetectorSpec(kind, params).build()
    assert type(detector) is cls
    for name, value in params.items():
        assert getattr(detector, name) == value


def test_spec_default_is_adwin_and_builds_fresh_instances() -> None:
    spec = DetectorSpec()
    assert isinstance(spec.build(), drift.ADWIN)
    assert spec.build() is not spec.build()


def test_unknown_kind_lists_valid_kinds() -> None:
    with pytest.raises(ValueError, match="unknown drift detector kind 'ADWYN'.*ADWIN.*KSWIN.*PageHinkley"):
        DetectorSpec("ADWYN").build()


def test_unknown_param_is_named_with_valid_ones() -> None:
    with pytest.raises(ValueError, match="'threshold'.*valid parameters: delta, clock"):
        DetectorSpec("ADWIN", {"threshold": 3}).build()


@pytest.mark.parametrize(
    ("kind", "params", "bad"),
    [
        ("KSWIN", {"alpha": 2.0}, "alpha=2.0"),
        ("PageHinkley", {"mode": "sideways"}, "mode='sideways'"),
        ("PageHinkley", {"threshold": "high"}, "threshold='high'"),
        ("ADWIN", {"delta": "small"}, "delta='small'"),
        ("KSWIN", {"window_size": 20, "stat_size": 10, "alpha": -1}, "alpha=-1"),
    ],
)
def test_param_rejected_by_river_is_named(kind: str, params: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        DetectorSpec(kind, params).build()
