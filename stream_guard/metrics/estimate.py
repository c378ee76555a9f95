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

A threshold inside a bin ``k`` (:class:`~stream_guard.profile_estimate.ThresholdSplit`)
cuts that bin in two cells, each with its own calibrated probability learned on the
reference. How many of the range's ``n_k`` events lie at or above the threshold is read
from the ``pp`` counter (scored events at or above the threshold, written by the recorder
for such a threshold): ``pp - sum_{b>k} n_b``, exact. Only a slice whose range has no
``pp`` at all (buckets written before the recorder knew the threshold) takes the
reference's share of bin ``k`` above the threshold instead: an assumption that a shift
inside the bin breaks, and whose error the band does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stream_guard.metrics import store as s
from stream_guard.metrics.query import Rollup, SliceMetrics
from stream_guard.profile_estimate import ESTIMATED_METRICS, ScoreCalibration, ThresholdSplit

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
    *,
    split: ThresholdSplit | None = None,
    predicted_positive: float | None = None,
) -> PerformanceEstimate:
    """The estimate of one histogram (``counts`` per bin, bin 0 first) with ``probability`` per bin.

    Parameters
    ----------
    counts, probability
        Events and calibrated P(positive) per bin; bins past the end of ``counts`` are empty.
    threshold_bin
        The first bin predicted positive; with ``split``, the bin the threshold lies inside.
    reference_counts
        Events per bin on the reference: they add the calibration's own sampling error to
        the standard deviations.
    split, predicted_positive
        The threshold's bin cut at it, and the events at or above the threshold (``pp``);
        without ``predicted_positive`` the bin's reference share above the threshold is used.
    """
    bins = len(probability)
    n = np.zeros(bins)
    n[: min(bins, len(counts))] = np.asarray(counts[:bins], dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    m = np.asarray(reference_counts, dtype=np.float64) if len(reference_counts) else None
    above = np.arange(bins) >= threshold_bin
    if split is not None:
        n, p, m, above = _split_cells(n, p, m, threshold_bin, split, predicted_positive)
    return _estimate_cells(n, p, m, above)


def _split_cells(
    n: np.ndarray,
    p: np.ndarray,
    m: np.ndarray | None,
    k: int,
    split: ThresholdSplit,
    predicted_positive: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Bin ``k`` replaced by its two cells (below, at or above the threshold): counts, probabilities, side."""
    if predicted_positive is None:
        upper = n[k] * split.share_above
    else:
        upper = min(max(predicted_positive - float(n[k + 1 :].sum()), 0.0), float(n[k]))
    cells_n = np.concatenate([n[:k], [n[k] - upper, upper], n[k + 1 :]])
    cells_p = np.concatenate([p[:k], split.probability, p[k + 1 :]])
    cells_m = None if m is None else np.concatenate([m[:k], split.counts, m[k + 1 :]])
    return cells_n, cells_p, cells_m, np.arange(len(cells_n)) > k


def _estimate_cells(n: np.ndarray, p: np.ndarray, m: np.ndarray | None, above: np.ndarray) -> PerformanceEstimate:
    """The expected confusion of cells of ``n`` events with P(positive) ``p``, predicted positive where ``above``."""
    var = n * p * (1 - p)
    if m is not None:
        var = var + np.where(m > 0, n * n * p * (1 - p) / np.maximum(m, 1.0), 0.0)
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
    """The estimate of one slice of a rollup, from its score histogram (and ``pp`` for a split threshold bin)."""
    predicted = m.get(s.SCORE_POSITIVE) if s.SCORE_POSITIVE in m.counters else None
    return estimate_counts(
        m.histogram,
        calibration.probability,
        calibration.threshold_bin,
        calibration.counts,
        split=calibration.split,
        predicted_positive=predicted,
    )


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
