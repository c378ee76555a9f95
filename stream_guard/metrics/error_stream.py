"""The model's error stream, rebuilt from per-bucket label counters, and the detector run over it.

Concept drift (:mod:`stream_guard.metrics.concept`) feeds a fresh River detector the
stream of 0/1 errors (classification) or absolute errors (regression) that the buckets'
counters imply, in bucket order, subsampled beyond ``max_values``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from stream_guard.drift.detectors import OnlineDriftMonitor
from stream_guard.metrics import store as s
from stream_guard.settings.detectors import DetectorSpec

Task = Literal["classification", "regression"]
Series = Sequence[tuple[int, dict[str, float]]]

#: Counters the checks read from each bucket.
LABEL_METRICS = (s.MATCHED, s.TP, s.FP, s.TN, s.FN, s.ABS_ERR, s.SQ_ERR)
#: Default cap on the values fed to the detector per evaluation.
MAX_STREAM_VALUES = 200_000


def infer_task(series: Series) -> Task:
    """``regression`` when any bucket has absolute errors, else ``classification``."""
    return "regression" if any(s.ABS_ERR in counters for _, counters in series) else "classification"


# -- the error stream ----------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorStream:
    """The model's error stream rebuilt from per-bucket counters.

    Attributes
    ----------
    values
        Values in stream order: 0/1 errors (classification) or absolute errors (regression).
    buckets
        Bucket start (ms) of each value.
    labels
        Labelled events behind the stream (before any subsampling).
    scale
        Values fed per labelled event: 1.0, or less when the stream was subsampled.
    task
        ``classification`` or ``regression``.
    """

    values: np.ndarray
    buckets: np.ndarray
    labels: int
    scale: float
    task: Task

    def __len__(self) -> int:
        return len(self.values)


def bucket_arrays(series: Series, task: Task) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bucket starts, labelled events, error count (or abs error sum) and squared error sum per bucket."""
    starts = np.array([b for b, _ in series], dtype=np.int64)

    def column(*metrics: str) -> np.ndarray:
        return np.array([sum(c.get(m, 0.0) for m in metrics) for _, c in series], dtype=np.float64)

    if task == "regression":
        return starts, column(s.MATCHED), column(s.ABS_ERR), column(s.SQ_ERR)
    # The confusion counts, not ``lm``: they are written by the same increment, and a
    # regression-style bucket without them must not count as all-correct labels.
    return starts, column(s.TP, s.FP, s.TN, s.FN), column(s.FP, s.FN), np.zeros(len(series))


def _proportional(counts: np.ndarray, scale: float) -> np.ndarray:
    """Integer counts of about ``counts * scale`` each, rounded on the running sum.

    Rounding the running sum keeps the total at ``round(sum * scale)`` and makes each count
    depend only on the buckets up to it, so two streams with the same first buckets and
    scale agree on them.
    """
    cumulative = np.rint(np.cumsum(counts) * scale).astype(np.int64)
    return np.diff(cumulative, prepend=0)


def _ceil_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = -np.floor_divide(-a, b)
    return out


def error_stream(
    series: Series, task: Task | None = None, max_values: int = MAX_STREAM_VALUES, *, scale: float | None = None
) -> ErrorStream:
    """Rebuild the model's error stream from per-bucket counters (:meth:`MetricsReader.series`).

    Buckets are taken in order, each expanded to one value per labelled event:

    * classification: ``tp + fp + tn + fn`` values of which ``e = fp + fn`` are 1, spread
      evenly over the bucket: the ``k``-th of ``n`` values is an error when ``ceil(k e / n)``
      steps up. The order is deterministic, and the errors lead their spacing interval so
      the running error rate inside a bucket never dips below the bucket's rate: such a
      dip early in the stream would set DDM's reference minimum ``p_min + s_min`` on an
      artefact of the reconstruction and blunt it for the rest of the stream;
    * regression: values whose mean and variance are the bucket's mean absolute error
      ``mae = ae / lm`` and ``se / lm - mae**2``: alternately ``mae + d`` and ``mae - d`` (one
      value at ``mae`` when the count is odd). Repeating the bucket mean instead would hide
      the spread of the errors, and a numeric detector such as ADWIN, whose bound scales
      with the observed variance, would then flag ordinary fluctuations between buckets.

    Parameters
    ----------
    series
        ``[(bucket start, counters)]`` in bucket order.
    task
        Default: inferred from the counters (:func:`infer_task`).
    max_values
        When the buckets hold more labelled events than this (and ``scale`` is not given),
        the stream is subsampled proportionally with ``scale = max_values / labels``.
    scale
        Values per labelled event (``<= 1``): each bucket gets about ``scale`` times its labels,
        with its error rate (regression: its mean and variance) kept. Every bucket keeps its
        relative weight and position, so detections still map to buckets; the detector has
        less data, hence somewhat less power, which the windowed test (on the full counts)
        makes up for.
    """
    task = task or infer_task(series)
    starts, n, err, sq = bucket_arrays(series, task)
    keep = n > 0
    starts, n, err, sq = starts[keep], n[keep], err[keep], sq[keep]
    labels = round(n.sum())
    if labels == 0:
        return ErrorStream(np.zeros(0), np.zeros(0, dtype=np.int64), 0, 1.0, task)
    if scale is None:
        scale = min(1.0, max_values / labels)
    counts = np.rint(n).astype(np.int64) if scale >= 1.0 else _proportional(n, scale)
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(counts)), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    k = np.arange(total, dtype=np.int64) - first[owner] + 1  # 1-based position within the bucket
    m = counts[owner]
    if task == "classification":
        errors = np.minimum(np.rint(err * counts / n).astype(np.int64), counts)
        e = errors[owner]
        values = (_ceil_div(k * e, m) - _ceil_div((k - 1) * e, m)).astype(np.float64)
    else:
        mean = err / n
        var = np.maximum(sq / n - mean * mean, 0.0)
        odd = counts % 2 == 1
        pairs = np.where(odd, counts - 1, counts)
        spread = np.sqrt(var * np.where(pairs > 0, counts / np.maximum(pairs, 1), 0.0))
        sign = np.where(k % 2 == 1, 1.0, -1.0)
        sign = np.where(odd[owner] & (k == m), 0.0, sign)
        values = mean[owner] + sign * spread[owner]
    return ErrorStream(values, starts[owner], labels, min(scale, 1.0), task)


def detect_changes(stream: ErrorStream, spec: DetectorSpec) -> list[int]:
    """Positions in ``stream`` where a fresh detector of ``spec`` signals a change."""
    if len(stream) == 0:
        return []
    return OnlineDriftMonitor(spec).update_batch("errors", stream.values)
