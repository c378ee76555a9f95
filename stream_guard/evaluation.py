"""``stream-guard evaluate``: replay a clean stream with faults injected, measure detection and false alarms.

Users calibrate their ``[checks]`` and ``[drift]`` settings with it, on their own data:
for every fault class, feature and rate it says whether an alert fired, which one, and
how long after the fault began; and for every check, how often it fires on the clean
stream.

Method
------
1. Clean events of one model come from a file (Parquet, CSV, JSON lines) or, for the
   sample model, from :class:`~stream_guard.simulator.Simulator`. The first part
   (``learn_fraction``) learns the baseline profile, unless a profile is given; the
   rest is the replayed stream. Event times are the model's timestamp field when the
   events carry it, else synthetic at ``events_per_second``.
2. Each record passes the decoder's field checks (as a JSON payload would: a null in a
   non-nullable field becomes a ``type_mismatch``), then the stream is cut into batches
   of ``batch_size``, spread round-robin over ``partitions`` pseudo-partitions with
   consecutive offsets.
3. :class:`Replay` runs the worker's stages on each batch, in the worker's order
   (:meth:`stream_guard.worker.Worker.process`): schema findings, the checkers'
   findings, window counters (:func:`~stream_guard.aggregation.build_updates` with the
   checkers' contributors), applied to a :class:`~stream_guard.state.memory.MemoryState`.
   After each batch it closes the windows the watermark has passed
   (:meth:`~stream_guard.worker.Worker.close_due_windows`): ``finding_alerts``, then the
   evaluators, with the configured severities. The checkers and evaluators are those
   :func:`~stream_guard.assembly.build_plugins` builds from the config.
4. A clean run gives the false alarms. Faults start at ``onset`` (a batch boundary);
   every scenario resumes from a copy of the clean run's state at the onset and stops
   at its first matching alert, or at the end of the stream.

Not replayed: slice metrics and label-based performance (no labels), dead letters (the
events are records, not bytes), and the incident lifecycle: counts are per-window
alerts, before cooldowns merge repeats into one page.

Detection
---------
A scenario is detected by the first alert, in window order, on the injected feature
whose kind is one of the fault's ``expects`` (the first listed wins within a window),
in a window that ends after the onset. Its delay runs from the onset's event time to
that window's end, in seconds of event time and in events; the alert is raised once the
watermark passes the window's end plus ``allowed_lateness_s``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from stream_guard.aggregation import build_updates
from stream_guard.alerts.evaluate import DEFAULT_SEVERITY, finding_alerts
from stream_guard.alerts.model import Alert, Severity
from stream_guard.assembly import build_plugins
from stream_guard.batch import EventBatch, to_epoch_ms
from stream_guard.config import Config
from stream_guard.decoding import Decoded, RecordChecker
from stream_guard.errors import StreamGuardError
from stream_guard.findings import dead_letter_findings, schema_findings
from stream_guard.learning import learn_from_frame, profiled_fields
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile, CategoricalProfile, NumericProfile, read_reference
from stream_guard.schemas import FieldType
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState

#: 2023-11-14T22:00:00Z, a whole hour: synthetic event times start here.
SYNTHETIC_START_MS = 1_699_999_200_000
DEFAULT_RATES = (0.01, 0.1, 1.0)
UNSEEN_VALUE = "sg-unseen-category"
#: Share the most frequent category reaches under ``mix_shift``.
MIX_SHARE = 0.8


class EvaluationError(StreamGuardError):
    """The evaluation cannot run as asked (bad input data, unknown feature or fault...)."""


# ----------------------------------------------------------------------------- faults


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
    """The model's features, and its score field (else a numeric prediction field), as targets."""
    out = {
        name: Target(name, model.fields[name], profile.features.get(name))
        for name in [*model.numeric_features, *model.categorical_features]
    }
    cfg = model.config
    score = cfg.score_field or (cfg.prediction_field if cfg.prediction_field and model.fields[cfg.prediction_field].is_numeric else "")
    if score and model.fields[score].is_numeric:
        recompute = cfg.prediction_field if cfg.score_field and cfg.prediction_field else ""
        if recompute and not (model.fields[recompute].is_numeric and cfg.metrics.task == "classification"):
            recompute = ""
        out[score] = Target(
            score,
            model.fields[score],
            profile.features.get(score),
            score=True,
            prediction=recompute,
            prediction_field=model.fields[recompute] if recompute else None,
            threshold=cfg.metrics.threshold,
        )
    return out


def applies(fault: Fault, target: Target) -> bool:
    """Whether ``fault`` can be injected into ``target`` (and means something there)."""
    base, baseline = target.field.base, target.baseline
    if fault.applies_to == "score":
        return target.score
    if target.score and target.name not in ():
        return False
    numeric = target.field.is_numeric and base != "boolean"
    if fault.applies_to == "numeric":
        if fault.name.startswith("shift_mean"):
            return numeric and isinstance(baseline, NumericProfile) and baseline.mean is not None
        return numeric
    if fault.applies_to == "float":
        return base in ("float", "double")
    if fault.applies_to == "categorical":
        if target.field.is_numeric:
            return False
        if fault.name == "mix_shift":
            return isinstance(baseline, CategoricalProfile) and 0 < len(baseline.frequencies) and max(
                baseline.frequencies.values()
            ) < MIX_SHARE
        return True
    return fault.applies_to == "any"


def _typed(target: FieldType, value: float) -> int | float:
    return int(round(value)) if target.base in ("int", "long") else float(value)


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
        # Moving q of the rest to the top category gives it share + q * (1 - share) = MIX_SHARE.
        moved = rng.random(n) < (MIX_SHARE - share) / (1 - share)
        return [top if m else v for v, m in zip(values, moved.tolist(), strict=True)]
    if fault == "score_shift_+0.2":
        baseline = target.baseline
        probability = isinstance(baseline, NumericProfile) and baseline.max is not None and baseline.max <= 1.0
        return [None if v is None else _typed(spec, min(1.0, v + 0.2) if probability else v + 0.2) for v in values]
    raise EvaluationError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")


def inject(fault: str, target: Target, records: Sequence[dict[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Copies of ``records`` with ``fault`` applied to ``target`` (and the prediction of a shifted score)."""
    new = faulty_values(fault, target, [r.get(target.name) for r in records], rng)
    out = []
    for record, value in zip(records, new, strict=True):
        record = dict(record)
        record[target.name] = value
        if fault == "score_shift_+0.2" and target.prediction and value is not None:
            predicted = value >= target.threshold
            kind = target.prediction_field.base if target.prediction_field else "int"
            record[target.prediction] = predicted if kind == "boolean" else _typed(target.prediction_field, predicted)  # type: ignore[arg-type]
        out.append(record)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b
