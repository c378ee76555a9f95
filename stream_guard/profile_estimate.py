"""The part of a labelled profile that lets the stream estimate performance before its labels arrive.

``stream-guard learn`` with a label column fits a calibration of the score on the live
score histogram's bins (:class:`ScoreCalibration`): the probability of the positive label
per bin, so a window's histogram alone gives the expected confusion matrix at the
threshold (confidence-based performance estimation, CBPE). It records how reliable that
calibration is on the reference, and, per slice, the realised metrics and how much they
varied between consecutive chunks of the reference (:class:`MetricSpread`): the
NannyML-style tolerance of the ``estimated_performance_drop`` alert.

This module imports nothing else of stream_guard's but its errors, so the profile can
hold it without a cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from stream_guard.errors import ProfileFormatError

#: Metrics estimated from the calibrated score (binary classification).
ESTIMATED_METRICS = ("accuracy", "precision", "recall", "f1")
CALIBRATION_METHODS = ("isotonic", "binning")


def threshold_edge(threshold: float, bins: int, score_range: tuple[float, float]) -> int | None:
    """The bin whose lower edge is ``threshold`` (``bins`` for the upper end); ``None`` off the edges."""
    lo, hi = score_range
    k = (threshold - lo) / (hi - lo) * bins
    if abs(k - round(k)) > 1e-9 or not 0 <= round(k) <= bins:
        return None
    return round(k)


def split_bin(threshold: float, bins: int, score_range: tuple[float, float]) -> int | None:
    """The bin ``threshold`` lies strictly inside (not on an edge, within the range); ``None`` otherwise."""
    lo, hi = score_range
    if threshold_edge(threshold, bins, score_range) is not None or not lo < threshold < hi:
        return None
    return min(int((threshold - lo) / (hi - lo) * bins), bins - 1)


@dataclass
class ThresholdSplit:
    """The score bin that holds the threshold, cut at it: its part below and its part at or above.

    Each pair is ``(below, above)``: the reference's events and positives in the part, and
    the calibrated probability of the positive label there (fitted with the other bins).
    """

    counts: tuple[int, int]
    positives: tuple[int, int]
    probability: tuple[float, float]

    @property
    def share_above(self) -> float:
        """Share of the bin's reference events at or above the threshold (0.5 for an empty bin)."""
        total = sum(self.counts)
        return self.counts[1] / total if total else 0.5

    def to_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "positives": list(self.positives), "probability": list(self.probability)}

    @classmethod
    def from_dict(cls, d: Any, path: str) -> ThresholdSplit:
        counts = [_count(c, f"{path}.counts") for c in _list(d, "counts", path, 2)]
        positives = [_count(c, f"{path}.positives") for c in _list(d, "positives", path, 2)]
        probability = [_number(p, f"{path}.probability") for p in _list(d, "probability", path, 2)]
        if any(not 0.0 <= p <= 1.0 for p in probability):
            raise ProfileFormatError(f"{path}.probability: expected values in [0, 1]")
        return cls((counts[0], counts[1]), (positives[0], positives[1]), (probability[0], probability[1]))


@dataclass
class ScoreCalibration:
    """P(label positive | score bin) on the live histogram's bins, learned from the labelled reference.

    Bin ``i`` covers ``[lo + i*w, lo + (i+1)*w)`` of ``score_range`` (``w`` = width / bins),
    scores outside the range in the edge bins, exactly as the live recorder counts them.
    Without ``split``, ``threshold_bin`` is the first bin predicted positive: the threshold
    lies on its lower edge. With ``split``, the threshold lies inside bin ``threshold_bin``,
    which is cut at it (:class:`ThresholdSplit`); the bins after it are predicted positive.
    """

    method: Literal["isotonic", "binning"]
    score_range: tuple[float, float]
    bins: int
    threshold_bin: int
    #: Calibrated probability of the positive label per bin.
    probability: list[float]
    #: Reference events and positives per bin; the raw score's mean per bin.
    counts: list[int]
    positives: list[int]
    mean_score: list[float]
    #: Expected calibration error of the raw score on the reference (support-weighted |mean score - rate|).
    raw_ece: float
    #: Mean |estimated - realised| accuracy over the reference chunks, calibration fitted on the other chunks.
    chunk_accuracy_error: float
    #: The threshold's bin cut at the threshold, when the threshold is not a bin edge.
    split: ThresholdSplit | None = None

    @property
    def first_positive_bin(self) -> int:
        """The first bin whose events are all predicted positive."""
        return self.threshold_bin + 1 if self.split is not None else self.threshold_bin

    def matches(self, bins: int, score_range: tuple[float, float]) -> bool:
        """Whether live histograms of ``bins`` over ``score_range`` use these bins."""
        return bins == self.bins and tuple(float(x) for x in score_range) == tuple(self.score_range)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "score_range": list(self.score_range),
            "bins": self.bins,
            "threshold_bin": self.threshold_bin,
            "probability": self.probability,
            "counts": self.counts,
            "positives": self.positives,
            "mean_score": self.mean_score,
            "raw_ece": self.raw_ece,
            "chunk_accuracy_error": self.chunk_accuracy_error,
            **({"split": self.split.to_dict()} if self.split is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Any, path: str) -> ScoreCalibration:
        method = _get(d, "method", path)
        if method not in CALIBRATION_METHODS:
            raise ProfileFormatError(f"{path}.method: expected one of {CALIBRATION_METHODS}, got {method!r}")
        bins = _count(_get(d, "bins", path), f"{path}.bins")
        lists = {k: _list(d, k, path, bins) for k in ("probability", "counts", "positives", "mean_score")}
        lo, hi = (_number(x, f"{path}.score_range") for x in _list(d, "score_range", path, 2))
        if not lo < hi:
            raise ProfileFormatError(f"{path}.score_range: expected low < high")
        probability = [_number(p, f"{path}.probability") for p in lists["probability"]]
        if any(not 0.0 <= p <= 1.0 for p in probability):
            raise ProfileFormatError(f"{path}.probability: expected values in [0, 1]")
        threshold_bin = _count(_get(d, "threshold_bin", path), f"{path}.threshold_bin")
        split = ThresholdSplit.from_dict(d["split"], f"{path}.split") if d.get("split") is not None else None
        if threshold_bin > bins or (split is not None and threshold_bin >= bins):
            raise ProfileFormatError(f"{path}.threshold_bin: expected at most bins ({bins}), below it with a split")
        return cls(
            method=method,
            score_range=(lo, hi),
            bins=bins,
            threshold_bin=threshold_bin,
            probability=probability,
            counts=[_count(c, f"{path}.counts") for c in lists["counts"]],
            positives=[_count(c, f"{path}.positives") for c in lists["positives"]],
            mean_score=[_number(x, f"{path}.mean_score") for x in lists["mean_score"]],
            raw_ece=_number(_get(d, "raw_ece", path), f"{path}.raw_ece"),
            chunk_accuracy_error=_number(_get(d, "chunk_accuracy_error", path), f"{path}.chunk_accuracy_error"),
            split=split,
        )


@dataclass
class MetricSpread:
    """A slice's realised metric on the reference and its chunk-to-chunk standard deviation.

    ``chunk_support`` is the slice's mean number of events per chunk: a window with ``n``
    events expects a standard deviation of ``std * sqrt(chunk_support / n)``.
    ``std`` is ``None`` when fewer than :data:`MIN_CHUNKS` chunks had the metric.
    ``estimated`` is what the calibration estimates for the slice on the reference itself
    (``None`` in profiles learned before it was recorded): ``value - estimated`` is the
    slice's own calibration gap, present from the start, that the calibration check expects.
    """

    value: float
    std: float | None
    chunk_support: float
    n_chunks: int
    estimated: float | None = None

    @property
    def reference_gap(self) -> float:
        """Realised minus estimated on the reference (0 when not recorded)."""
        return 0.0 if self.estimated is None else self.value - self.estimated

    def scaled_std(self, n: float) -> float | None:
        if self.std is None or n <= 0:
            return None
        return self.std * math.sqrt(self.chunk_support / n)


#: Least chunks with a metric before its chunk-to-chunk std is recorded.
MIN_CHUNKS = 3


@dataclass
class ReferenceEstimation:
    """The calibration, and each slice's realised metrics with their chunk spread, on the reference."""

    calibration: ScoreCalibration
    chunk_size: int
    n_chunks: int
    slices: dict[str, dict[str, MetricSpread]] = field(default_factory=dict)

    def spread(self, slice_: str, metric: str) -> MetricSpread | None:
        return self.slices.get(slice_, {}).get(metric)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.to_dict(),
            "chunk_size": self.chunk_size,
            "n_chunks": self.n_chunks,
            "slices": {
                name: {m: vars(sp) for m, sp in sorted(metrics.items())}
                for name, metrics in sorted(self.slices.items())
            },
        }

    @classmethod
    def from_dict(cls, d: Any, path: str = "performance.estimation") -> ReferenceEstimation:
        raw = _get(d, "slices", path)
        if not isinstance(raw, dict):
            raise ProfileFormatError(f"{path}.slices: expected an object")
        slices: dict[str, dict[str, MetricSpread]] = {}
        for name, metrics in raw.items():
            if not isinstance(metrics, dict):
                raise ProfileFormatError(f"{path}.slices.{name}: expected an object")
            for metric, sd in metrics.items():
                where = f"{path}.slices.{name}.{metric}"
                if metric not in ESTIMATED_METRICS:
                    raise ProfileFormatError(f"{where}: not an estimated metric ({', '.join(ESTIMATED_METRICS)})")
                std = _get(sd, "std", where)
                estimated = sd.get("estimated") if isinstance(sd, dict) else None
                slices.setdefault(str(name), {})[metric] = MetricSpread(
                    value=_number(_get(sd, "value", where), f"{where}.value"),
                    std=None if std is None else _number(std, f"{where}.std"),
                    chunk_support=_number(_get(sd, "chunk_support", where), f"{where}.chunk_support"),
                    n_chunks=_count(_get(sd, "n_chunks", where), f"{where}.n_chunks"),
                    estimated=None if estimated is None else _number(estimated, f"{where}.estimated"),
                )
        return cls(
            calibration=ScoreCalibration.from_dict(_get(d, "calibration", path), f"{path}.calibration"),
            chunk_size=_count(_get(d, "chunk_size", path), f"{path}.chunk_size"),
            n_chunks=_count(_get(d, "n_chunks", path), f"{path}.n_chunks"),
            slices=slices,
        )


def _get(d: Any, key: str, path: str) -> Any:
    if not isinstance(d, dict):
        raise ProfileFormatError(f"{path}: expected an object")
    if key not in d:
        raise ProfileFormatError(f"{path}.{key}: missing")
    return d[key]


def _list(d: Any, key: str, path: str, length: int) -> list[Any]:
    v = _get(d, key, path)
    if not isinstance(v, list) or len(v) != length:
        raise ProfileFormatError(f"{path}.{key}: expected a list of {length} values")
    return v


def _number(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ProfileFormatError(f"{path}: expected a finite number, got {v!r}")
    return float(v)


def _count(v: Any, path: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ProfileFormatError(f"{path}: expected a non-negative integer, got {v!r}")
    return v
