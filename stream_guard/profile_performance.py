"""The labelled part of a baseline profile: how the model performed on the reference, per slice.

``stream-guard learn`` with a label column records, for every slice the live metrics
keep (``*``, each value of the slice fields and categorical features, the configured
crossings), the confusion counts at the model's threshold (regression: the sums of
absolute and squared errors), the support, and a Wilson interval per metric (regression:
a normal interval on the MAE). The live performance checks compare each slice with
these counts. Gaps already present in the reference (a slice significantly worse than
the rest of the reference, by at least the minimum effect) are listed as
:class:`KnownBias` entries: reported once, not re-raised.

This module imports nothing else of stream_guard's but its errors, so the profile can
hold it without a cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

from stream_guard.errors import ProfileFormatError
from stream_guard.profile_estimate import ReferenceEstimation

#: Interval level of the recorded intervals (two-sided).
INTERVAL_LEVEL = 0.95
#: Metrics whose intervals are recorded, per task.
INTERVAL_METRICS = {"classification": ("recall", "precision", "accuracy"), "regression": ("mae",)}


def wilson_interval(successes: float, trials: float, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion; ``(0.0, 1.0)`` without trials.

    >>> [round(x, 3) for x in wilson_interval(45, 50)]
    [0.786, 0.957]
    """
    if trials <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(total: float, squares: float, n: float, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """Normal interval of a mean from its sum and sum of squares; ``(0.0, inf)`` without values."""
    if n <= 0:
        return 0.0, math.inf
    z = NormalDist().inv_cdf(0.5 + level / 2)
    mean = total / n
    half = z * math.sqrt(max(squares / n - mean * mean, 0.0) / n)
    return max(0.0, mean - half), mean + half


@dataclass
class MetricInterval:
    """A metric of a slice on the reference: its value, the events behind it and its interval."""

    value: float | None
    support: int
    low: float
    high: float


@dataclass
class SlicePerformance:
    """One slice's counts on the labelled reference (the live counters' names and meaning)."""

    labelled: int
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    abs_err: float = 0.0
    sq_err: float = 0.0
    intervals: dict[str, MetricInterval] = field(default_factory=dict)

    def counters(self, task: str) -> dict[str, float]:
        """The counters as the live rollup names them (``lm``, ``tp``... or ``ae``/``se``)."""
        if task == "regression":
            return {"lm": self.labelled, "ae": self.abs_err, "se": self.sq_err}
        return {"lm": self.labelled, "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}

    def fill_intervals(self, task: str) -> None:
        """Compute :attr:`intervals` from the counts."""
        if task == "regression":
            low, high = mean_interval(self.abs_err, self.sq_err, self.labelled)
            mae = self.abs_err / self.labelled if self.labelled else None
            self.intervals = {"mae": MetricInterval(mae, self.labelled, low, high)}
            return
        ratios = {
            "recall": (self.tp, self.tp + self.fn),
            "precision": (self.tp, self.tp + self.fp),
            "accuracy": (self.tp + self.tn, self.tp + self.fp + self.tn + self.fn),
        }
        self.intervals = {
            metric: MetricInterval(x / n if n else None, n, *wilson_interval(x, n)) for metric, (x, n) in ratios.items()
        }


@dataclass
class KnownBias:
    """A slice worse than the rest of the reference traffic, significantly and by at least the min effect."""

    metric: str
    slice: str
    value: float
    rest_value: float
    #: How much worse than the rest (positive; MAE: its excess over the rest's).
    gap: float
    #: Benjamini-Hochberg adjusted p-value of the slice-vs-rest test on the reference.
    p: float
    support: int


@dataclass
class ReferencePerformance:
    """The model's performance on the labelled reference, per slice, and the gaps it already had."""

    label_column: str
    task: Literal["classification", "regression"]
    threshold: float
    positive_label: str
    min_support: int
    min_effect: float
    alpha: float
    slices: dict[str, SlicePerformance]
    known_biases: list[KnownBias] = field(default_factory=list)
    #: Calibration and chunk spread for the label-free estimate (optional: older profiles lack it).
    estimation: ReferenceEstimation | None = None

    def known_bias(self, metric: str, slice_: str) -> KnownBias | None:
        return next((b for b in self.known_biases if b.metric == metric and b.slice == slice_), None)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-safe dict (an infinite interval bound is ``"inf"``)."""
        slices = {}
        for name, sp in sorted(self.slices.items()):
            d: dict[str, Any] = {"labelled": sp.labelled}
            if self.task == "regression":
                d.update(abs_err=sp.abs_err, sq_err=sp.sq_err)
            else:
                d.update(tp=sp.tp, fp=sp.fp, tn=sp.tn, fn=sp.fn)
            d["intervals"] = {
                m: {"value": i.value, "support": i.support, "low": i.low, "high": _finite(i.high)}
                for m, i in sp.intervals.items()
            }
            slices[name] = d
        out: dict[str, Any] = {
            "label_column": self.label_column,
            "task": self.task,
            "threshold": self.threshold,
            "positive_label": self.positive_label,
            "min_support": self.min_support,
            "min_effect": self.min_effect,
            "alpha": self.alpha,
            "slices": slices,
            "known_biases": [vars(b) for b in self.known_biases],
        }
        if self.estimation is not None:
            out["estimation"] = self.estimation.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Any, path: str = "performance") -> ReferencePerformance:
        """Build from :meth:`to_dict` output; :class:`ProfileFormatError` names a bad key."""
        task = _get(d, "task", path)
        if task not in ("classification", "regression"):
            raise ProfileFormatError(f"{path}.task: expected 'classification' or 'regression', got {task!r}")
        raw_slices = _get(d, "slices", path)
        if not isinstance(raw_slices, dict):
            raise ProfileFormatError(f"{path}.slices: expected an object")
        slices = {str(name): _slice_from_dict(sd, task, f"{path}.slices.{name}") for name, sd in raw_slices.items()}
        raw_biases = _get(d, "known_biases", path)
        if not isinstance(raw_biases, list):
            raise ProfileFormatError(f"{path}.known_biases: expected a list")
        biases = []
        for i, bd in enumerate(raw_biases):
            where = f"{path}.known_biases[{i}]"
            biases.append(
                KnownBias(
                    metric=_text(bd, "metric", where),
                    slice=_text(bd, "slice", where),
                    value=_number(bd, "value", where),
                    rest_value=_number(bd, "rest_value", where),
                    gap=_number(bd, "gap", where),
                    p=_number(bd, "p", where),
                    support=_count(bd, "support", where),
                )
            )
        return cls(
            label_column=_text(d, "label_column", path),
            task=task,
            threshold=_number(d, "threshold", path),
            positive_label=_text(d, "positive_label", path),
            min_support=_count(d, "min_support", path),
            min_effect=_number(d, "min_effect", path),
            alpha=_number(d, "alpha", path),
            slices=slices,
            known_biases=biases,
            estimation=ReferenceEstimation.from_dict(d["estimation"], f"{path}.estimation")
            if "estimation" in d
            else None,
        )


def _slice_from_dict(d: Any, task: str, path: str) -> SlicePerformance:
    if task == "regression":
        sp = SlicePerformance(
            _count(d, "labelled", path), abs_err=_number(d, "abs_err", path), sq_err=_number(d, "sq_err", path)
        )
    else:
        tp, fp, tn, fn = (_count(d, k, path) for k in ("tp", "fp", "tn", "fn"))
        sp = SlicePerformance(_count(d, "labelled", path), tp, fp, tn, fn)
        if tp + fp + tn + fn != sp.labelled:
            raise ProfileFormatError(f"{path}: tp + fp + tn + fn must equal labelled ({sp.labelled})")
    sp.fill_intervals(task)  # derived from the counts: a hand edit of the counts keeps them consistent
    return sp


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else "inf"


def _get(d: Any, key: str, path: str) -> Any:
    if not isinstance(d, dict):
        raise ProfileFormatError(f"{path}: expected an object")
    if key not in d:
        raise ProfileFormatError(f"{path}.{key}: missing")
    return d[key]


def _number(d: Any, key: str, path: str) -> float:
    v = _get(d, key, path)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ProfileFormatError(f"{path}.{key}: expected a finite number, got {v!r}")
    return float(v)


def _count(d: Any, key: str, path: str) -> int:
    v = _get(d, key, path)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ProfileFormatError(f"{path}.{key}: expected a non-negative integer, got {v!r}")
    return v


def _text(d: Any, key: str, path: str) -> str:
    v = _get(d, key, path)
    if not isinstance(v, str):
        raise ProfileFormatError(f"{path}.{key}: expected a string, got {v!r}")
    return v
