"""Learning the score calibration and the chunk spread of the label-free estimate.

:func:`learn_estimation` bins the labelled reference's scores as the live recorder does
(``score_bins`` over ``score_range``, out-of-range scores in the edge bins), and fits the
probability of the positive label per bin:

* ``isotonic`` (default): the per-bin positive rates made non-decreasing by weighted
  pool-adjacent-violators, i.e. isotonic regression at the histogram's resolution;
* ``binning``: the per-bin positive rates as they are (histogram binning).

Both are shrunk by one pseudo-event towards the bin's midpoint, so a bin with few
reference events is not calibrated to exactly 0 or 1. A threshold inside a bin cuts that
bin into two cells (below, at or above the threshold), fitted as two bins of their own
(:class:`~stream_guard.profile_estimate.ThresholdSplit`): the live recorder then counts the
events at or above the threshold (``pp``), so the estimate knows how the bin's events
divide between the two sides. Its reliability is recorded: the
raw score's expected calibration error, and the mean error of the estimated accuracy on
each reference chunk with the calibration fitted on the other chunks (cross-fitted, so it
is an honest out-of-sample figure). Per slice, the realised accuracy, precision, recall
and F1 on the reference and their standard deviation over consecutive chunks
(:class:`~stream_guard.profile_estimate.MetricSpread`) give the alert its tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stream_guard.metrics.estimate import PerformanceEstimate, confusion_metrics, estimate_counts
from stream_guard.profile_estimate import (
    ESTIMATED_METRICS,
    MIN_CHUNKS,
    MetricSpread,
    ReferenceEstimation,
    ScoreCalibration,
    ThresholdSplit,
    split_bin,
    threshold_edge,
)

#: Pseudo-events shrinking each bin's rate towards its midpoint.
PRIOR_EVENTS = 1.0


def threshold_bin(threshold: float, bins: int, score_range: tuple[float, float]) -> int | None:
    """The bin of the threshold: the one whose lower edge it is, or the one it lies inside (to be split).

    ``None`` when the threshold is outside the score range (the edge bins hold the
    out-of-range scores, so no bin can be cut there).
    """
    edge = threshold_edge(threshold, bins, score_range)
    return edge if edge is not None else split_bin(threshold, bins, score_range)


def bin_index(scores: np.ndarray, bins: int, score_range: tuple[float, float]) -> np.ndarray:
    """Bin of each finite score, as the live recorder computes it (out-of-range scores in the edge bins)."""
    lo, hi = score_range
    out: np.ndarray = np.clip(np.floor((scores - lo) / (hi - lo) * bins), 0, bins - 1).astype(int)
    return out


def isotonic(rates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted pool-adjacent-violators: the non-decreasing sequence closest to ``rates`` (weighted squares)."""
    blocks: list[list[float]] = []  # [value, weight, length]
    for r, w in zip(rates.tolist(), weights.tolist(), strict=True):
        blocks.append([r, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            total = w1 + w2
            blocks.append([(v1 * w1 + v2 * w2) / total if total > 0 else (v1 + v2) / 2, total, n1 + n2])
    return np.repeat([b[0] for b in blocks], [int(b[2]) for b in blocks])


def cell_midpoints(bins: int, score_range: tuple[float, float], threshold: float, split: int | None) -> np.ndarray:
    """Midpoint of each calibration cell: the bins, with bin ``split`` cut at ``threshold`` into two cells."""
    lo, hi = score_range
    width = (hi - lo) / bins
    mid = lo + (np.arange(bins) + 0.5) * width
    if split is not None:
        left, right = lo + split * width, lo + (split + 1) * width
        mid = np.concatenate([mid[:split], [(left + threshold) / 2, (threshold + right) / 2], mid[split + 1 :]])
    return np.asarray(np.clip(mid, 0.0, 1.0))


def cell_index(scores: np.ndarray, index: np.ndarray, threshold: float, split: int | None) -> np.ndarray:
    """Calibration cell of each score given its bin ``index``: bin ``split`` is two cells, later bins shift by one."""
    if split is None:
        return index
    return np.asarray(index + (index > split) + ((index == split) & (scores >= threshold)))


def fit_probability(counts: np.ndarray, positives: np.ndarray, midpoints: np.ndarray, method: str) -> np.ndarray:
    """Calibrated P(positive) per cell from the reference's events and positives per cell."""
    rates = (positives + PRIOR_EVENTS * midpoints) / (counts + PRIOR_EVENTS)
    if method == "isotonic":
        rates = isotonic(rates, counts + PRIOR_EVENTS)
    return np.clip(rates, 0.0, 1.0)


@dataclass(frozen=True)
class CellFit:
    """The reference's events, positives and calibrated probability per cell; ``split`` the cut bin, if any."""

    counts: np.ndarray
    hits: np.ndarray
    probability: np.ndarray
    split: int | None


def _chunks(n: int, chunk_size: int) -> np.ndarray:
    """Chunk of each row: consecutive ``chunk_size`` rows, a trailing partial chunk merged into the previous."""
    n_chunks = max(1, n // chunk_size)
    return np.minimum(np.arange(n) // chunk_size, n_chunks - 1)


def learn_estimation(
    scores: np.ndarray,
    positive: np.ndarray,
    slices: Mapping[str, np.ndarray],
    *,
    threshold: float,
    bins: int,
    score_range: tuple[float, float],
    method: str = "isotonic",
    chunk_size: int | None = None,
) -> ReferenceEstimation | None:
    """The calibration and per-slice spread of labelled reference rows, in their order.

    Parameters
    ----------
    scores, positive
        Per row: the model's score (NaN when missing: the row is left out) and whether its label is positive.
    slices
        Per row, its slice in each dimension (``device_type=ios``...); ``*`` is added.
    threshold, bins, score_range
        The model's threshold and live histogram; a threshold inside a bin cuts it in two
        cells. ``None`` is returned when the threshold is outside the score range.
    chunk_size
        Rows per chunk of the spread; default ``max(1000, rows // 50)`` (as the profile's chunks).
    """
    k = threshold_bin(threshold, bins, score_range)
    ok = np.isfinite(scores)
    if k is None or not ok.any():
        return None
    split = split_bin(threshold, bins, score_range)
    scores, positive = scores[ok], positive[ok].astype(bool)
    labels = {name: np.asarray(v, dtype=object)[ok] for name, v in slices.items()}
    n = len(scores)
    chunk_size = chunk_size or max(1000, n // 50)
    chunk = _chunks(n, chunk_size)
    n_chunks = int(chunk.max()) + 1
    index = bin_index(scores, bins, score_range)
    cell = cell_index(scores, index, threshold, split)
    cells = bins + (split is not None)
    midpoints = cell_midpoints(bins, score_range, threshold, split)
    first_positive_cell = k + 1 if split is not None else k
    counts = np.bincount(cell, minlength=cells).astype(np.float64)
    hits = np.bincount(cell, weights=positive.astype(np.float64), minlength=cells)
    probability = fit_probability(counts, hits, midpoints, method)
    pred = scores >= threshold
    errors = _chunk_errors(cell, positive, pred, chunk, counts, hits, midpoints, method, first_positive_cell)
    fit = CellFit(counts, hits, probability, split)
    calibration = _calibration(scores, positive, index, fit, method, bins, score_range, k, errors)
    frame = pd.DataFrame(
        {
            "chunk": chunk,
            "cell": cell,
            "tp": pred & positive,
            "fp": pred & ~positive,
            "tn": ~pred & ~positive,
            "fn": ~pred & positive,
        }
    ).astype(np.int64)
    estimate = _SliceEstimate(probability, cells, first_positive_cell)
    spreads = {"*": _spread(frame, n_chunks, estimate)}
    for values in labels.values():
        for name, rows in frame.groupby(values, sort=True):
            spreads[str(name)] = _spread(rows, n_chunks, estimate)
    return ReferenceEstimation(calibration, chunk_size, n_chunks, spreads)


def _chunk_errors(
    cell: np.ndarray,
    positive: np.ndarray,
    pred: np.ndarray,
    chunk: np.ndarray,
    counts: np.ndarray,
    hits: np.ndarray,
    midpoints: np.ndarray,
    method: str,
    first_positive_cell: int,
) -> list[float]:
    """|estimated - realised| accuracy of each chunk, the calibration fitted on the other chunks (cross-fitted)."""
    n_chunks, cells = int(chunk.max()) + 1, len(counts)
    errors = []
    for c in range(n_chunks):
        inside = chunk == c
        c_counts = np.bincount(cell[inside], minlength=cells).astype(np.float64)
        c_hits = np.bincount(cell[inside], weights=positive[inside].astype(np.float64), minlength=cells)
        rest_counts, rest_hits = (counts - c_counts, hits - c_hits) if n_chunks > 1 else (counts, hits)
        held_out = fit_probability(rest_counts, rest_hits, midpoints, method)
        estimated = estimate_counts(c_counts, held_out, first_positive_cell).value("accuracy")
        realised = float(np.mean(pred[inside] == positive[inside]))
        if estimated is not None:
            errors.append(abs(estimated - realised))
    return errors


def _calibration(
    scores: np.ndarray,
    positive: np.ndarray,
    index: np.ndarray,
    fit: CellFit,
    method: str,
    bins: int,
    score_range: tuple[float, float],
    k: int,
    errors: list[float],
) -> ScoreCalibration:
    """The profile's record of the fit: per bin (a split bin's probability is its two cells' mix), and the split."""
    n = len(scores)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    hits = np.bincount(index, weights=positive.astype(np.float64), minlength=bins)
    score_sum = np.bincount(index, weights=scores, minlength=bins)
    mean_score = np.where(counts > 0, score_sum / np.maximum(counts, 1), 0.0)
    raw_ece = float(np.abs(mean_score - hits / np.maximum(counts, 1)) @ counts / n)
    probability, threshold_split, split = fit.probability, None, fit.split
    if split is not None:
        pair = fit.probability[split : split + 2]
        weight = fit.counts[split : split + 2] + PRIOR_EVENTS
        mixed = float(pair @ weight / weight.sum())
        probability = np.concatenate([fit.probability[:split], [mixed], fit.probability[split + 2 :]])
        threshold_split = ThresholdSplit(
            counts=(int(fit.counts[split]), int(fit.counts[split + 1])),
            positives=(int(fit.hits[split]), int(fit.hits[split + 1])),
            probability=(round(float(pair[0]), 6), round(float(pair[1]), 6)),
        )
    return ScoreCalibration(
        method="binning" if method == "binning" else "isotonic",
        score_range=(float(score_range[0]), float(score_range[1])),
        bins=bins,
        threshold_bin=k,
        probability=[round(float(p), 6) for p in probability],
        counts=[int(c) for c in counts],
        positives=[int(h) for h in hits],
        mean_score=[round(float(x), 6) for x in mean_score],
        raw_ece=round(raw_ece, 6),
        chunk_accuracy_error=round(float(np.mean(errors)), 6) if errors else 0.0,
        split=threshold_split,
    )


@dataclass(frozen=True)
class _SliceEstimate:
    """The fitted calibration, to estimate a slice's metrics from its rows' cells."""

    probability: np.ndarray
    cells: int
    first_positive_cell: int

    def of(self, rows: pd.DataFrame) -> PerformanceEstimate:
        counts = np.bincount(rows["cell"].to_numpy(), minlength=self.cells).astype(np.float64)
        return estimate_counts(counts, self.probability, self.first_positive_cell)


def _spread(rows: pd.DataFrame, n_chunks: int, estimate: _SliceEstimate) -> dict[str, MetricSpread]:
    """A slice's realised metrics over all its rows, their std over the chunks where they are defined,
    and what the calibration estimates for the slice's rows."""
    estimated = estimate.of(rows)
    per_chunk = rows.groupby("chunk")[["tp", "fp", "tn", "fn"]].sum()
    total = per_chunk.sum()
    overall = confusion_metrics(total["tp"], total["fp"], total["tn"], total["fn"])
    chunked = confusion_metrics(per_chunk["tp"], per_chunk["fp"], per_chunk["tn"], per_chunk["fn"])
    out = {}
    for metric in ESTIMATED_METRICS:
        value = float(overall[metric])
        if not math.isfinite(value):
            continue
        defined = chunked[metric][np.isfinite(chunked[metric])]
        std = float(np.std(defined, ddof=1)) if len(defined) >= MIN_CHUNKS else None
        guess = estimated.value(metric)
        out[metric] = MetricSpread(
            value=round(value, 6),
            std=None if std is None else round(std, 6),
            chunk_support=round(len(rows) / n_chunks, 3),
            n_chunks=len(defined),
            estimated=None if guess is None else round(float(guess), 6),
        )
    return out
