"""Learning the score calibration and the chunk spread of the label-free estimate.

:func:`learn_estimation` bins the labelled reference's scores as the live recorder does
(``score_bins`` over ``score_range``, out-of-range scores in the edge bins), and fits the
probability of the positive label per bin:

* ``isotonic`` (default): the per-bin positive rates made non-decreasing by weighted
  pool-adjacent-violators, i.e. isotonic regression at the histogram's resolution;
* ``binning``: the per-bin positive rates as they are (histogram binning).

Both are shrunk by one pseudo-event towards the bin's midpoint, so a bin with few
reference events is not calibrated to exactly 0 or 1. Its reliability is recorded: the
raw score's expected calibration error, and the mean error of the estimated accuracy on
each reference chunk with the calibration fitted on the other chunks (cross-fitted, so it
is an honest out-of-sample figure). Per slice, the realised accuracy, precision, recall
and F1 on the reference and their standard deviation over consecutive chunks
(:class:`~stream_guard.profile_estimate.MetricSpread`) give the alert its tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from stream_guard.metrics.estimate import confusion_metrics, estimate_counts
from stream_guard.profile_estimate import (
    ESTIMATED_METRICS,
    MIN_CHUNKS,
    MetricSpread,
    ReferenceEstimation,
    ScoreCalibration,
)

#: Pseudo-events shrinking each bin's rate towards its midpoint.
PRIOR_EVENTS = 1.0


def threshold_bin(threshold: float, bins: int, score_range: tuple[float, float]) -> int | None:
    """The bin whose lower edge is ``threshold``; ``None`` when the threshold lies inside a bin."""
    lo, hi = score_range
    k = (threshold - lo) / (hi - lo) * bins
    if abs(k - round(k)) > 1e-9 or not 0 <= round(k) <= bins:
        return None
    return round(k)


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


def fit_probability(
    counts: np.ndarray, positives: np.ndarray, bins: int, score_range: tuple[float, float], method: str
) -> np.ndarray:
    """Calibrated P(positive) per bin from the reference's events and positives per bin."""
    lo, hi = score_range
    mid = lo + (np.arange(bins) + 0.5) * (hi - lo) / bins
    mid = np.clip(mid, 0.0, 1.0)
    rates = (positives + PRIOR_EVENTS * mid) / (counts + PRIOR_EVENTS)
    if method == "isotonic":
        rates = isotonic(rates, counts + PRIOR_EVENTS)
    return np.clip(rates, 0.0, 1.0)


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
        The model's threshold and live histogram; ``None`` is returned when the threshold
        is not on a bin edge (the histogram cannot tell the two sides of it apart).
    chunk_size
        Rows per chunk of the spread; default ``max(1000, rows // 50)`` (as the profile's chunks).
    """
    k = threshold_bin(threshold, bins, score_range)
    ok = np.isfinite(scores)
    if k is None or not ok.any():
        return None
    scores, positive = scores[ok], positive[ok].astype(bool)
    labels = {name: np.asarray(v, dtype=object)[ok] for name, v in slices.items()}
    n = len(scores)
    chunk_size = chunk_size or max(1000, n // 50)
    chunk = _chunks(n, chunk_size)
    n_chunks = int(chunk.max()) + 1
    index = bin_index(scores, bins, score_range)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    hits = np.bincount(index, weights=positive.astype(np.float64), minlength=bins)
    score_sum = np.bincount(index, weights=scores, minlength=bins)
    probability = fit_probability(counts, hits, bins, score_range, method)
    mean_score = np.where(counts > 0, score_sum / np.maximum(counts, 1), 0.0)
    raw_ece = float(np.abs(mean_score - hits / np.maximum(counts, 1)) @ counts / n)
    errors = []
    for c in range(n_chunks):
        inside = chunk == c
        c_counts = np.bincount(index[inside], minlength=bins).astype(np.float64)
        c_hits = np.bincount(index[inside], weights=positive[inside].astype(np.float64), minlength=bins)
        if n_chunks > 1:
            held_out = fit_probability(counts - c_counts, hits - c_hits, bins, score_range, method)
        else:
            held_out = probability
        estimated = estimate_counts(c_counts, held_out, k).value("accuracy")
        pred = index[inside] >= k
        realised = float(np.mean(pred == positive[inside]))
        if estimated is not None:
            errors.append(abs(estimated - realised))
    calibration = ScoreCalibration(
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
    )
    pred = index >= k
    frame = pd.DataFrame(
        {"chunk": chunk, "tp": pred & positive, "fp": pred & ~positive, "tn": ~pred & ~positive, "fn": ~pred & positive}
    ).astype(np.int64)
    spreads = {"*": _spread(frame, n_chunks)}
    for values in labels.values():
        for name, rows in frame.groupby(values, sort=True):
            spreads[str(name)] = _spread(rows, n_chunks)
    return ReferenceEstimation(calibration, chunk_size, n_chunks, spreads)


def _spread(rows: pd.DataFrame, n_chunks: int) -> dict[str, MetricSpread]:
    """A slice's realised metrics over all its rows, and their std over the chunks where they are defined."""
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
        out[metric] = MetricSpread(
            value=round(value, 6),
            std=None if std is None else round(std, 6),
            chunk_support=round(len(rows) / n_chunks, 3),
            n_chunks=len(defined),
        )
    return out
