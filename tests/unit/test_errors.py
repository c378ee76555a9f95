"""Unit tests for stream_guard.errors: one root, one home, typed errors that stay ValueErrors."""

from __future__ import annotations

import ast
import importlib
import inspect
import pickle
from pathlib import Path

import pandas as pd
import pytest

import stream_guard
from stream_guard import errors
from stream_guard.drift.detectors import DetectorSpec, OnlineDriftMonitor, reference_sample
from stream_guard.errors import (
    BaselineSampleUnavailableError,
    ConfigError,
    DetectorSpecInvalidError,
    DriftCheckpointUnusableError,
    MetricUnknownError,
    ReferenceDataUnusableError,
    SimulatorFaultUnknownError,
    StreamGuardError,
)
from stream_guard.learning import learn_profile, read_reference
from stream_guard.metrics.label_messages import make_label_decoder
from stream_guard.metrics.performance import slice_underperformance
from stream_guard.metrics.query import Rollup, SliceMetrics
from stream_guard.settings import Config
from stream_guard.settings.metrics import LabelSettings
from stream_guard.tools.simulator import Simulator

PACKAGE = Path(stream_guard.__file__).parent


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("stream_guard", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        out.append((name, ast.parse(path.read_text(encoding="utf-8"))))
    return out


def test_error_classes_are_defined_only_in_errors_or_exceptions_modules() -> None:
    """A class named *Error lives in stream_guard.errors or a package's exceptions module."""
    stray = [
        f"{module}.{node.name}"
        for module, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and node.name.endswith("Error")
        and module != "stream_guard.errors"
        and not module.endswith(".exceptions")
    ]
    assert stray == []


def test_every_error_class_derives_from_the_root() -> None:
    """Every exception class of the errors modules is a StreamGuardError named <Subject><Failure>Error."""
    homes = [errors] + [
        importlib.import_module(module) for module, _tree in _modules() if module.endswith(".exceptions")
    ]
    classes = [
        cls
        for home in homes
        for _name, cls in inspect.getmembers(home, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == home.__name__
    ]
    assert StreamGuardError in classes and len(classes) > 10
    for cls in classes:
        assert issubclass(cls, StreamGuardError), cls
        assert cls.__name__.endswith("Error"), cls


def test_reference_data_errors_are_typed_value_errors(tmp_path: Path) -> None:
    """Unusable reference data raises ReferenceDataUnusableError, which callers may still catch as ValueError."""
    assert issubclass(ReferenceDataUnusableError, ValueError)
    with pytest.raises(ReferenceDataUnusableError, match="ghost"):
        learn_profile(pd.DataFrame({"x": [1.0]}), model="m", numeric=["x"], categorical=["ghost"])
    with pytest.raises(ReferenceDataUnusableError, match="not found"):
        read_reference(tmp_path / "absent.csv")


def test_detector_spec_errors_are_typed_value_errors() -> None:
    """A bad detector kind or parameter raises DetectorSpecInvalidError (a ValueError) naming it."""
    assert issubclass(DetectorSpecInvalidError, ValueError)
    with pytest.raises(DetectorSpecInvalidError, match="ADWYN"):
        DetectorSpec("ADWYN").build()
    with pytest.raises(DetectorSpecInvalidError, match="'threshold'"):
        DetectorSpec("ADWIN", {"threshold": 1}).build()


def test_foreign_checkpoints_raise_drift_checkpoint_unusable() -> None:
    """Data that is no detector checkpoint raises DriftCheckpointUnusableError (a ValueError)."""
    assert issubclass(DriftCheckpointUnusableError, ValueError)
    with pytest.raises(DriftCheckpointUnusableError, match="checkpoint"):
        OnlineDriftMonitor.from_bytes(b"not a pickle")
    with pytest.raises(DriftCheckpointUnusableError, match="unknown format"):
        OnlineDriftMonitor.from_bytes(pickle.dumps({"detectors": {}}))


def test_unsampleable_baseline_raises_baseline_sample_unavailable() -> None:
    """A profile with neither quantiles nor a histogram cannot seed a detector: a typed ValueError."""
    import numpy as np

    assert issubclass(BaselineSampleUnavailableError, ValueError)
    with pytest.raises(BaselineSampleUnavailableError, match="neither two quantiles"):
        reference_sample([], [], {}, 5, np.random.default_rng(0))
    with pytest.raises(BaselineSampleUnavailableError, match="not a probability"):
        reference_sample([0.0, 1.0], [1.0], {"median": 0.5}, 5, np.random.default_rng(0))


def test_unknown_metric_and_fault_names_raise_typed_errors() -> None:
    """Unknown metric and simulator fault names raise typed ValueErrors that list the known names."""
    with pytest.raises(MetricUnknownError, match="unknown metric 'bogus'; known: .*recall"):
        SliceMetrics("overall").value("bogus")
    rollup = Rollup({"*": SliceMetrics("*"), "country=FR": SliceMetrics("country=FR")}, 0, 1, 1)
    with pytest.raises(MetricUnknownError, match="'null_rate:age' has no test of a slice.*recall.*mae"):
        slice_underperformance(rollup, "null_rate:age")
    with pytest.raises(SimulatorFaultUnknownError, match="unknown faults"):
        Simulator(faults={"bitflip": 0.1})
    assert issubclass(MetricUnknownError, ValueError) and issubclass(SimulatorFaultUnknownError, ValueError)


def test_avro_labels_without_schema_are_a_config_error() -> None:
    """Avro labels need a reader schema: a ConfigError naming labels.schema, not a bare ValueError."""
    with pytest.raises(ConfigError, match=r"^labels\.schema: required for avro labels") as info:
        make_label_decoder(Config(), LabelSettings(topic="labels", encoding="avro"))
    assert len(info.value.problems) == 1
