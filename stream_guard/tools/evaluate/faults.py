"""The fault catalogue and its injectors: what each fault class does to a field's values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_guard.errors import EvaluationInputError
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile, CategoricalProfile, NumericProfile
from stream_guard.schemas import FieldType

#: Injection rates of an evaluation unless ``--rates`` says otherwise.
DEFAULT_RATES = (0.01, 0.1, 1.0)

UNSEEN_VALUE = "sg-unseen-category"
#: Share the most frequent category reaches under ``mix_shift``.
MIX_SHARE = 0.8


@dataclass(frozen=True)
class Fault:
    """A fault class: which fields it applies to and which alerts count as detecting it.

    ``applies_to`` is ``numeric`` (int/float features, not booleans), ``float`` (float
    and double features), ``categorical``, ``any`` (every feature) or ``score`` (the
    score field, else a numeric prediction field).
    """

    name: str
    applies_to: str
    expects: tuple[str, ...]
    description: str


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("scale_x150", "numeric", ("out_of_range", "data_drift", "online_drift"), "unit change: value x 150"),
        Fault("scale_x12", "numeric", ("out_of_range", "data_drift", "online_drift"), "unit change: value x 12"),
        Fault("nan", "float", ("nan",), "NaN instead of the value"),
        Fault("inf", "float", ("infinite",), "+inf instead of the value"),
        Fault("null", "any", ("null_rate", "type_mismatch"), "null instead of the value"),
        Fault("sentinel_-1", "numeric", ("sentinel_spike", "out_of_range"), "-1 default instead of the value"),
        Fault(
            "shift_mean_1.5x",
            "numeric",
            ("data_drift", "online_drift"),
            "drift: value + half the baseline mean (mean x 1.5)",
        ),
        Fault("unseen_category", "categorical", ("unseen_category", "data_drift", "type_mismatch"), "a new category"),
        Fault(
            "cardinality_explosion",
            "categorical",
            ("cardinality", "unseen_category", "data_drift", "type_mismatch"),
            "a unique id per event",
        ),
        Fault("mix_shift", "categorical", ("data_drift",), f"the top category takes {MIX_SHARE:.0%} of events"),
        Fault(
            "score_shift_+0.2",
            "score",
            ("prediction_drift", "online_drift"),
            "score + 0.2 (prediction recomputed)",
        ),
    )
}


@dataclass(frozen=True)
class Target:
    """A field faults are injected into: its schema type, its baseline, its role."""

    name: str
    field: FieldType
    baseline: NumericProfile | CategoricalProfile | None
    score: bool = False
    #: Prediction field recomputed from a shifted score ("" for none), at ``threshold``.
    prediction: str = ""
    prediction_field: FieldType | None = None
    threshold: float = 0.5


def targets(model: ModelRuntime, profile: BaselineProfile) -> dict[str, Target]:
    """The model's features, and its score field (else a numeric prediction field), by name."""
    out = {
        name: Target(name, model.fields[name], profile.features.get(name))
        for name in [*model.numeric_features, *model.categorical_features]
    }
    cfg, fields = model.config, model.fields
    score = cfg.score_field or cfg.prediction_field
    if not score or not fields[score].is_numeric or fields[score].base == "boolean":
        return out
    recompute = ""
    if cfg.score_field and cfg.prediction_field and cfg.metrics.task == "classification":
        recompute = cfg.prediction_field if fields[cfg.prediction_field].is_numeric else ""
    out[score] = Target(
        score,
        fields[score],
        profile.features.get(score),
        score=True,
        prediction=recompute,
        prediction_field=fields[recompute] if recompute else None,
        threshold=cfg.metrics.threshold,
    )
    return out


def applies(fault: Fault, target: Target) -> bool:
    """Whether ``fault`` can be injected into ``target`` and means something there."""
    if target.score or fault.applies_to == "score":
        return target.score and fault.applies_to == "score"
    spec, baseline = target.field, target.baseline
    if fault.applies_to == "any":
        return True
    if fault.applies_to == "float":
        return spec.base in ("float", "double")
    if fault.applies_to == "numeric":
        numeric = spec.is_numeric and spec.base != "boolean"
        if fault.name == "shift_mean_1.5x":
            return numeric and isinstance(baseline, NumericProfile) and baseline.mean is not None
        return numeric
    if spec.is_numeric:
        return False
    if fault.name == "mix_shift":
        # The top category must exist and have room to grow to MIX_SHARE.
        return (
            isinstance(baseline, CategoricalProfile)
            and bool(baseline.frequencies)
            and max(baseline.frequencies.values()) < MIX_SHARE
        )
    return True


def _typed(spec: FieldType | None, value: float) -> Any:
    """``value`` in the Python type a field of ``spec`` carries (int fields stay ints)."""
    base = spec.base if spec is not None else "double"
    if base == "boolean":
        return bool(value)
    return round(value) if base in ("int", "long") else float(value)


def faulty_values(fault: str, target: Target, values: Sequence[Any], rng: np.random.Generator) -> list[Any]:
    """``values`` of ``target`` as ``fault`` turns them (nulls stay null under scaling and shifts)."""
    n, spec = len(values), target.field
    if fault in ("scale_x150", "scale_x12"):
        factor = 150 if fault == "scale_x150" else 12
        return [None if v is None else _typed(spec, v * factor) for v in values]
    if fault == "nan":
        return [math.nan] * n
    if fault == "inf":
        return [math.inf] * n
    if fault == "null":
        return [None] * n
    if fault == "sentinel_-1":
        return [_typed(spec, -1)] * n
    if fault == "shift_mean_1.5x":
        baseline = target.baseline
        assert isinstance(baseline, NumericProfile) and baseline.mean is not None
        delta = 0.5 * abs(baseline.mean) or 0.5 * (baseline.std or 0.0) or 1.0
        return [None if v is None else _typed(spec, v + delta) for v in values]
    if fault == "unseen_category":
        return [UNSEEN_VALUE] * n
    if fault == "cardinality_explosion":
        return [f"sg-id-{int(x):012x}" for x in rng.integers(0, 1 << 48, n)]
    if fault == "mix_shift":
        baseline = target.baseline
        assert isinstance(baseline, CategoricalProfile)
        top, share = max(baseline.frequencies.items(), key=lambda item: item[1])
        # Moving a share q of the other rows to the top one gives it share + q * (1 - share).
        moved = rng.random(n) < (MIX_SHARE - share) / (1 - share)
        return [top if m else v for v, m in zip(values, moved.tolist(), strict=True)]
    if fault == "score_shift_+0.2":
        baseline = target.baseline
        capped = isinstance(baseline, NumericProfile) and baseline.max is not None and baseline.max <= 1.0
        return [None if v is None else _typed(spec, min(1.0, v + 0.2) if capped else v + 0.2) for v in values]
    raise EvaluationInputError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")


def inject(
    fault: str, target: Target, records: Sequence[dict[str, Any]], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Copies of ``records`` with ``fault`` applied to ``target``; a shifted score moves its prediction."""
    new = faulty_values(fault, target, [r.get(target.name) for r in records], rng)
    return [with_value(fault, target, record, value) for record, value in zip(records, new, strict=True)]


def with_value(fault: str, target: Target, record: dict[str, Any], value: Any) -> dict[str, Any]:
    """A copy of ``record`` with ``target`` set to ``value``; a shifted score moves its prediction."""
    record = dict(record)
    record[target.name] = value
    if target.prediction and value is not None and fault == "score_shift_+0.2":
        record[target.prediction] = _typed(target.prediction_field, float(value >= target.threshold))
    return record


def same_value(a: Any, b: Any) -> bool:
    """Whether a fault left a value as it was: equal and of one type, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b
