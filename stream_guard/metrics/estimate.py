"""Label-free performance estimate (CBPE): the expected confusion matrix of a score histogram.

With a calibrated probability ``p_b`` of the positive label per score bin, and the
threshold on the lower edge of bin ``k``, a histogram with ``n_b`` events per bin expects

* ``TP = sum_{b>=k} n_b p_b``, ``FP = sum_{b>=k} n_b (1 - p_b)``,
* ``FN = sum_{b<k} n_b p_b``, ``TN = sum_{b<k} n_b (1 - p_b)``,

and accuracy, precision, recall and F1 follow from those. The histograms are summed
counters, so the estimate of any range and slice is computed at read time from the
rollup (:func:`estimate_rollup`): nothing more is written per event.

The standard deviation of each estimate is that of the *realised* metric given the
scores, if the calibration holds: the labels are independent Bernoulli(``p_b``) draws
(a Poisson-binomial count, variance ``sum n_b p_b (1 - p_b)`` per side of the
threshold), plus the reference's sampling error of ``p_b`` (variance
``n_b^2 p_b (1 - p_b) / m_b`` with ``m_b`` reference events in the bin); the ratios use
the delta method. The predicted-positive count is known, so precision's only noise is TP's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stream_guard.metrics.query import Rollup, SliceMetrics
from stream_guard.profile_estimate import ESTIMATED_METRICS, ScoreCalibration

#: Columns :func:`with_estimate_columns` adds to the ``metrics`` table.
ESTIMATE_COLUMNS = ("est_accuracy", "est_acc_band", "est_recall", "est_rec_band", "acc_minus_est")


@dataclass(frozen=True)
class PerformanceEstimate:
    """Expected confusion counts of ``events`` scored events, the metrics and their standard deviations."""

    events: int
    tp: float
    fp: float
    tn: float
    fn: float
    values: dict[str, float | None] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    def value(self, metric: str) -> float | None:
        return self.values.get(metric)

    def band(self, metric: str, z: float) -> tuple[float, float] | None:
        """``value -/+ z * std``, clipped to [0, 1]; ``None`` when the metric is undefined."""
        v = self.values.get(metric)
        if v is None:
            return None
        half = z * self.std.get(metric, 0.0)
        return max(0.0, v - half), min(1.0, v + half)


def _ratio(x: float, n: float) -> float | None:
    return x / n if n > 0 else None


def estimate_counts(
    counts: Sequence[float] | np.ndarray,
    probability: Sequence[float] | np.ndarray,
    threshold_bin: int,
    reference_counts: Sequence[float] | np.ndarray = (),
) -> PerformanceEstimate:
    """The estimate of one histogram (``counts`` per bin, bin 0 first) with ``probability`` per bin.

    Bins past the end of ``counts`` are empty. ``reference_counts`` (events per bin on the
    reference) add the calibration's own sampling error to the standard deviations.
    """
    bins = len(probability)
    n = np.zeros(bins)
    n[: min(bins, len(counts))] = np.asarray(counts[:bins], dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    var = n * p * (1 - p)
    if len(reference_counts):
        m = np.asarray(reference_counts, dtype=np.float64)
        var = var + np.where(m > 0, n * n * p * (1 - p) / np.maximum(m, 1.0), 0.0)
    above = np.arange(bins) >= threshold_bin
    tp, fn = float((n * p)[above].sum()), float((n * p)[~above].sum())
    pos_pred, neg_pred = float(n[above].sum()), float(n[~above].sum())
    fp, tn = pos_pred - tp, neg_pred - fn
    var_a, var_b = float(var[above].sum()), float(var[~above].sum())
    total = pos_pred + neg_pred
    values = {
        "accuracy": _ratio(tp + tn, total),
        "precision": _ratio(tp, pos_pred),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    std = {}
    if total > 0:
        std["accuracy"] = math.sqrt(var_a + var_b) / total
    if pos_pred > 0:
        std["precision"] = math.sqrt(var_a) / pos_pred
    if tp + fn > 0:
        std["recall"] = math.sqrt(fn * fn * var_a + tp * tp * var_b) / (tp + fn) ** 2
    d = pos_pred + tp + fn  # 2TP + FP + FN, with FP = pos_pred - TP
    if d > 0:
        std["f1"] = 2 * math.sqrt((pos_pred + fn) ** 2 * var_a + tp * tp * var_b) / d**2
    return PerformanceEstimate(round(total), tp, fp, tn, fn, values, std)


def estimate_slice(m: SliceMetrics, calibration: ScoreCalibration) -> PerformanceEstimate:
    """The estimate of one slice of a rollup, from its score histogram."""
    return estimate_counts(m.histogram, calibration.probability, calibration.threshold_bin, calibration.counts)


def estimate_rollup(rollup: Rollup, calibration: ScoreCalibration) -> dict[str, PerformanceEstimate]:
    """Slice -> estimate, for the slices of ``rollup`` with scored events."""
    out = {}
    for name, m in rollup.items():
        est = estimate_slice(m, calibration)
        if est.events > 0:
            out[name] = est
    return out


def realised_values(m: SliceMetrics) -> dict[str, float | None]:
    """The label-based metrics of a slice (``None`` where no label defines them)."""
    return {metric: m.value(metric) for metric in ESTIMATED_METRICS}


def confusion_metrics(tp: Any, fp: Any, tn: Any, fn: Any) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall and F1 of arrays of confusion counts (NaN where undefined)."""
    tp, fp, tn, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, tn, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "accuracy": (tp + tn) / (tp + fp + tn + fn),
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }


def with_estimate_columns(frame: pd.DataFrame, rollup: Rollup, calibration: ScoreCalibration, z: float) -> pd.DataFrame:
    """The ``metrics`` table with the estimate beside the realised metrics, after ``accuracy``.

    ``est_accuracy`` / ``est_recall`` and their band half-widths (``z`` std), and
    ``acc_minus_est``: realised minus estimated accuracy where labels exist.
    """
    if frame.empty:
        return frame
    estimates = estimate_rollup(rollup, calibration)
    columns: dict[str, list[float | None]] = {c: [] for c in ESTIMATE_COLUMNS}
    for name in frame["slice"]:
        est = estimates.get(name)
        acc, rec = (None, None) if est is None else (est.value("accuracy"), est.value("recall"))
        columns["est_accuracy"].append(acc)
        columns["est_acc_band"].append(None if acc is None or est is None else z * est.std["accuracy"])
        columns["est_recall"].append(rec)
        columns["est_rec_band"].append(None if rec is None or est is None else z * est.std["recall"])
        realised = rollup[name].accuracy if name in rollup else None
        columns["acc_minus_est"].append(None if acc is None or realised is None else realised - acc)
    out = frame.copy()
    at = list(out.columns).index("f1") + 1 if "f1" in out.columns else len(out.columns)
    for offset, (column, values) in enumerate(columns.items()):
        out.insert(at + offset, column, values)
    return out


def estimate_json(rollup: Rollup, calibration: ScoreCalibration, z: float) -> dict[str, dict[str, Any]]:
    """Slice -> estimated metrics, their bands, the realised metrics and realised - estimated (``metrics --json``)."""
    out = {}
    for name, est in estimate_rollup(rollup, calibration).items():
        realised = realised_values(rollup[name])
        out[name] = {
            "events": est.events,
            "expected_tp_fp_tn_fn": [est.tp, est.fp, est.tn, est.fn],
            "metrics": {
                metric: {
                    "estimate": est.value(metric),
                    "band": est.band(metric, z),
                    "realised": realised[metric],
                    "difference": None
                    if realised[metric] is None or est.value(metric) is None
                    else realised[metric] - est.value(metric),  # type: ignore[operator]
                }
                for metric in ESTIMATED_METRICS
            },
        }
    return out
