"""The labelled reference: the model's performance per slice, and the gaps it already had.

:func:`learn_reference_performance` computes, from reference rows that carry a label,
the counters the live metrics keep per slice (confusion counts at the model's threshold,
or absolute/squared error sums for regression) over the same slices: ``*``, one per value
of the slice fields and (when enabled) of the categorical features, and the configured
crossings, with values mapped as the live recorder maps them (known categories, ``other``,
``null``). The gaps already present (:func:`~stream_guard.metrics.baseline.reference_known_biases`)
become the profile's known biases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from stream_guard.errors import ReferenceDataUnusableError
from stream_guard.learning.calibration import learn_estimation
from stream_guard.metrics import store as s
from stream_guard.metrics.baseline import reference_known_biases, reference_rollup
from stream_guard.metrics.slices import SliceRecorder
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile, category_key
from stream_guard.profile_estimate import ReferenceEstimation
from stream_guard.profile_performance import ReferencePerformance, SlicePerformance
from stream_guard.settings.metrics import MetricsSettings

#: Metrics the live slice checks test (and whose known biases ``learn`` records), per task.
TESTED_METRICS = {"classification": ("recall", "accuracy"), "regression": ("mae",)}


def label_column_of(model: ModelRuntime, frame: pd.DataFrame, column: str | None) -> str | None:
    """The reference's label column: ``column`` if given (it must exist), else the model's
    configured ``labels.label_field`` when the frame has it with at least one value, else ``None``.
    """
    if column is not None:
        if column not in frame.columns:
            raise ReferenceDataUnusableError(f"label column {column!r} is not in the reference data")
        return column
    default = model.config.labels.label_field
    if not default or default not in frame.columns or not frame[default].notna().any():
        return None  # an empty default column is no labelled reference, not an error
    return default


def _objects(series: pd.Series) -> list[Any]:
    """Python values of a column, missing cells as ``None`` (as a decoded event has them)."""
    values = series.astype(object)
    out: list[Any] = values.where(series.notna(), None).tolist()
    return out


def _label_key(value: Any) -> str:
    return category_key(int(value) if isinstance(value, (bool, np.bool_)) else value)


def _numbers(series: pd.Series) -> np.ndarray:
    out: np.ndarray = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _positives(labels: pd.Series, settings: MetricsSettings) -> np.ndarray:
    positive = _label_key(settings.positive_label)
    return np.array([_label_key(v) == positive for v in _objects(labels)], dtype=bool)


def _row_counters(model: ModelRuntime, frame: pd.DataFrame, label: str, settings: MetricsSettings) -> pd.DataFrame:
    """Per labelled row, the live label counters (``lm`` and ``tp``... or ``ae``/``se``)."""
    config = model.config
    out = pd.DataFrame({s.MATCHED: np.ones(len(frame), dtype=np.int64)}, index=frame.index)
    if settings.task == "regression":
        if not config.prediction_field or config.prediction_field not in frame.columns:
            raise ReferenceDataUnusableError(
                f"regression reference data needs the prediction column {config.prediction_field!r}"
            )
        err = np.abs(_numbers(frame[config.prediction_field]) - _numbers(frame[label]))
        err = np.where(np.isfinite(err), err, 0.0)
        out[s.ABS_ERR], out[s.SQ_ERR] = err, err * err
        return out
    value = np.full(len(frame), np.nan)
    for name in (config.prediction_field, config.score_field):  # the score wins where it is a number
        if name and name in frame.columns:
            numbers = _numbers(frame[name])
            value = np.where(np.isfinite(numbers), numbers, value)
    if not np.isfinite(value).any():
        raise ReferenceDataUnusableError(
            f"reference data has no numeric score or prediction ({config.score_field or config.prediction_field!r})"
        )
    pos_pred = np.nan_to_num(value, nan=-np.inf) >= settings.threshold
    pos_true = _positives(frame[label], settings)
    out[s.TP], out[s.FP] = pos_pred & pos_true, pos_pred & ~pos_true
    out[s.TN], out[s.FN] = ~pos_pred & ~pos_true, ~pos_pred & pos_true
    return out.astype(np.float64)


def slice_labels(
    model: ModelRuntime, frame: pd.DataFrame, settings: MetricsSettings, profile: BaselineProfile | None
) -> dict[tuple[str, ...], np.ndarray]:
    """Each row's slice in every live dimension, named and capped as the live recorder does."""
    recorder = SliceRecorder.for_model(model, settings, profile)
    fields = sorted({f for dim in recorder.dimensions for f in dim})
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise ReferenceDataUnusableError(f"reference data lacks the slice fields {missing}")
    capped = {}
    for f in fields:
        codes, names = recorder.capper.codes(f, _objects(frame[f]))
        capped[f] = (
            np.array([f"{f}={v}" for v in names.tolist()], dtype=object)[codes]
            if len(codes)
            else np.array([], dtype=object)
        )
    out = {}
    for dim in recorder.dimensions:
        labels = capped[dim[0]]
        for f in dim[1:]:
            labels = labels + "," + capped[f]
        out[dim] = labels
    return out


def learn_reference_performance(
    model: ModelRuntime,
    frame: pd.DataFrame,
    label: str,
    settings: MetricsSettings | None = None,
    profile: BaselineProfile | None = None,
    metrics: Sequence[str] | None = None,
) -> ReferencePerformance:
    """The per-slice performance of ``model`` on the labelled ``frame``, with its known biases.

    Parameters
    ----------
    model
        The model (its slice fields, categorical features, prediction/score fields).
    frame
        Reference rows; those whose ``label`` is missing are left out.
    label
        The label column.
    settings
        The model's ``[models.metrics]``: task, threshold, positive label, crossings, and
        ``performance_min_support`` / ``performance_alpha`` / ``performance_min_effect``
        for the known biases. Default: the model's own.
    profile
        The profile being learned: its known categories cap the slice values as on the live stream.
    metrics
        Metrics whose known biases are recorded; default :data:`TESTED_METRICS` of the task.
    """
    settings = settings or model.config.metrics
    labelled = frame[frame[label].notna().to_numpy(dtype=bool)]
    if labelled.empty:
        raise ReferenceDataUnusableError(f"label column {label!r} has no value in the reference data")
    counters = _row_counters(model, labelled, label, settings)
    sums = {s.ALL: counters.sum()}
    for labels in slice_labels(model, labelled, settings, profile).values():
        for name, group in counters.groupby(labels, sort=True):
            sums[str(name)] = group.sum()
    slices = {}
    for name, row in sorted(sums.items()):
        sp = SlicePerformance(int(row[s.MATCHED]))
        if settings.task == "regression":
            sp.abs_err, sp.sq_err = float(row[s.ABS_ERR]), float(row[s.SQ_ERR])
        else:
            sp.tp, sp.fp, sp.tn, sp.fn = (int(row[k]) for k in (s.TP, s.FP, s.TN, s.FN))
        sp.fill_intervals(settings.task)
        slices[name] = sp
    reference = ReferencePerformance(
        label_column=label,
        task=settings.task,
        threshold=settings.threshold,
        positive_label=str(settings.positive_label),
        min_support=settings.performance_min_support,
        min_effect=settings.performance_min_effect,
        alpha=settings.performance_alpha,
        slices=slices,
    )
    if settings.task == "classification" and settings.estimate_calibration != "off":
        reference.estimation = _learn_estimation(model, labelled, label, settings, profile)
    rollup = reference_rollup(reference)
    for metric in metrics or TESTED_METRICS[settings.task]:
        reference.known_biases += reference_known_biases(
            rollup,
            metric,
            min_support=settings.performance_min_support,
            alpha=settings.performance_alpha,
            min_effect=settings.performance_min_effect,
        )
    return reference


def _learn_estimation(
    model: ModelRuntime, labelled: pd.DataFrame, label: str, settings: MetricsSettings, profile: BaselineProfile | None
) -> ReferenceEstimation | None:
    """The calibration of the model's score on the labelled rows (``None`` without a score column)."""
    score_field = model.config.score_field
    if not score_field or score_field not in labelled.columns:
        return None
    lo, hi = settings.score_range
    return learn_estimation(
        _numbers(labelled[score_field]),
        _positives(labelled[label], settings),
        {",".join(dim): v for dim, v in slice_labels(model, labelled, settings, profile).items()},
        threshold=settings.threshold,
        bins=settings.score_bins,
        score_range=(float(lo), float(hi)),
        method=settings.estimate_calibration,
    )
