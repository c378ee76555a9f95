"""Reading the slice metrics: roll event-time buckets up to any range at query time.

:meth:`MetricsReader.rollup` reads every bucket hash of the range in one pipelined
round trip and sums the counters per slice; the derived metrics (accuracy, recall, F1,
MAE, RMSE, prediction mean/std, null and violation rates, labels pending) are computed
from the sums, so a 5-minute, 1-hour or 24-hour view costs the same code path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd

from stream_guard.errors import MetricUnknownError
from stream_guard.metrics import store as s
from stream_guard.metrics.buckets import BucketReads, bucket_reads
from stream_guard.metrics.slices import slice_dimension
from stream_guard.metrics.table import format_table
from stream_guard.state.client import RedisClient
from stream_guard.state.keys import ModelKeys
from stream_guard.state.keyspace import MemoryKeySpace

#: Metrics where a larger value is better; all others (error rate, MAE, rates) are worse when larger.
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "specificity"})
#: Names :meth:`SliceMetrics.value` accepts (besides ``null_rate:<feature>`` and ``violation_rate:<kind>``).
VALUE_METRICS = frozenset(
    {
        "accuracy",
        "precision",
        "recall",
        "specificity",
        "f1",
        "error_rate",
        "mae",
        "rmse",
        "prediction_mean",
        "prediction_std",
        "score_mean",
        "events",
        "labelled",
        "labels_pending",
        "labels_unmatched",
    }
)
#: Ranges with more buckets than this are narrowed through the bucket index first.
MAX_DIRECT_BUCKETS = 20_000


def _ratio(x: float, n: float) -> float | None:
    return x / n if n > 0 else None


@dataclass
class SliceMetrics:
    """The summed counters of one slice over a range, and what derives from them."""

    slice: str
    counters: dict[str, float] = field(default_factory=dict)

    def get(self, metric: str) -> float:
        return self.counters.get(metric, 0.0)

    # -- counts --------------------------------------------------------------------------

    @property
    def events(self) -> int:
        return int(self.get(s.EVENTS))

    @property
    def labelled(self) -> int:
        return int(self.get(s.MATCHED))

    @property
    def stored(self) -> int:
        return int(self.get(s.STORED))

    @property
    def labels_pending(self) -> int:
        return max(0, self.stored - self.labelled)

    @property
    def labels_unmatched(self) -> int:
        return int(self.get(s.UNMATCHED))

    @property
    def confusion(self) -> tuple[int, int, int, int]:
        """(tp, fp, tn, fn)."""
        return tuple(int(self.get(m)) for m in (s.TP, s.FP, s.TN, s.FN))  # type: ignore[return-value]

    # -- classification ------------------------------------------------------------------

    @property
    def accuracy(self) -> float | None:
        tp, fp, tn, fn = self.confusion
        return _ratio(tp + tn, tp + fp + tn + fn)

    @property
    def error_rate(self) -> float | None:
        if self.get(s.ABS_ERR) or not any(self.confusion):
            return None
        acc = self.accuracy
        return None if acc is None else 1.0 - acc

    @property
    def precision(self) -> float | None:
        tp, fp, _, _ = self.confusion
        return _ratio(tp, tp + fp)

    @property
    def recall(self) -> float | None:
        tp, _, _, fn = self.confusion
        return _ratio(tp, tp + fn)

    @property
    def specificity(self) -> float | None:
        _, fp, tn, _ = self.confusion
        return _ratio(tn, tn + fp)

    @property
    def f1(self) -> float | None:
        tp, fp, _, fn = self.confusion
        return _ratio(2 * tp, 2 * tp + fp + fn)

    # -- regression ----------------------------------------------------------------------

    @property
    def mae(self) -> float | None:
        return _ratio(self.get(s.ABS_ERR), self.labelled) if s.ABS_ERR in self.counters else None

    @property
    def rmse(self) -> float | None:
        mse = _ratio(self.get(s.SQ_ERR), self.labelled) if s.SQ_ERR in self.counters else None
        return None if mse is None else math.sqrt(max(mse, 0.0))

    # -- distributions -------------------------------------------------------------------

    @property
    def prediction_mean(self) -> float | None:
        return _ratio(self.get(s.PRED_SUM), self.get(s.PRED_N))

    @property
    def prediction_std(self) -> float | None:
        n = self.get(s.PRED_N)
        if n <= 0:
            return None
        mean = self.get(s.PRED_SUM) / n
        return math.sqrt(max(self.get(s.PRED_SQ) / n - mean * mean, 0.0))

    @property
    def histogram(self) -> list[int]:
        """Score histogram counts, bin 0 first."""
        bins = sorted(int(m[len(s.HIST) :]) for m in self.counters if m.startswith(s.HIST))
        size = bins[-1] + 1 if bins else 0
        return [int(self.get(f"{s.HIST}{b}")) for b in range(size)]

    @property
    def score_mean(self) -> float | None:
        return _ratio(self.get(s.SCORE_SUM), sum(self.histogram))

    @property
    def null_rates(self) -> dict[str, float]:
        n = self.events
        return {m[len(s.NULLS) :]: v / n for m, v in sorted(self.counters.items()) if m.startswith(s.NULLS) and n}

    @property
    def violation_rates(self) -> dict[str, float]:
        n = self.events
        return {
            m[len(s.VIOLATION) :]: v / n for m, v in sorted(self.counters.items()) if m.startswith(s.VIOLATION) and n
        }

    # -- generic access ------------------------------------------------------------------

    def value(self, metric: str) -> float | None:
        """A derived metric by name: ``recall``, ``mae``, ``null_rate:age``, ``violation_rate:type_mismatch``..."""
        if metric.startswith("null_rate:"):
            return self.null_rates.get(metric.split(":", 1)[1], 0.0 if self.events else None)
        if metric.startswith("violation_rate:"):
            return self.violation_rates.get(metric.split(":", 1)[1], 0.0 if self.events else None)
        if metric not in VALUE_METRICS:
            known = ", ".join(sorted(VALUE_METRICS))
            raise MetricUnknownError(
                f"unknown metric {metric!r}; known: {known}, null_rate:<feature>, violation_rate:<kind>"
            )
        value = getattr(self, metric)
        return None if value is None else float(value)

    def support(self, metric: str) -> int:
        """Events a metric is computed from: actual positives for recall, labelled events for accuracy..."""
        tp, fp, tn, fn = self.confusion
        if metric == "recall":
            return tp + fn
        if metric == "precision":
            return tp + fp
        if metric == "specificity":
            return tn + fp
        if metric in ("accuracy", "f1", "error_rate", "mae", "rmse"):
            return self.labelled
        return self.events

    def to_dict(self) -> dict[str, Any]:
        return {
            "slice": self.slice,
            "events": self.events,
            "labelled": self.labelled,
            "labels_pending": self.labels_pending,
            "labels_unmatched": self.labels_unmatched,
            "tp_fp_tn_fn": list(self.confusion),
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "mae": self.mae,
            "rmse": self.rmse,
            "prediction_mean": self.prediction_mean,
            "prediction_std": self.prediction_std,
            "score_mean": self.score_mean,
            "score_histogram": self.histogram,
            "null_rates": self.null_rates,
            "violation_rates": self.violation_rates,
        }


class RankedSlice(NamedTuple):
    slice: str
    value: float
    support: int
    overall: float | None


class Rollup(dict[str, SliceMetrics]):
    """``slice -> SliceMetrics`` over ``[start_ms, end_ms)``; ``*`` is all traffic."""

    def __init__(self, items: dict[str, SliceMetrics], start_ms: int, end_ms: int, buckets: int) -> None:
        super().__init__(items)
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.buckets = buckets

    @property
    def overall(self) -> SliceMetrics:
        return self.get(s.ALL) or SliceMetrics(s.ALL)

    @property
    def task(self) -> str:
        return "regression" if s.ABS_ERR in self.overall.counters else "classification"

    def select(self, dimensions: Iterable[Iterable[str]] | None = None) -> list[SliceMetrics]:
        """Slices other than ``*``, of the given dimensions only (e.g. ``[["device_type"]]``) when given."""
        wanted = None if dimensions is None else {tuple(sorted(d)) for d in dimensions}
        return [
            m
            for name, m in sorted(self.items())
            if name != s.ALL and (wanted is None or slice_dimension(name) in wanted)
        ]

    def worst_slices(
        self,
        metric: str = "recall",
        min_support: int = 100,
        limit: int = 10,
        dimensions: Iterable[Iterable[str]] | None = None,
    ) -> list[RankedSlice]:
        """Slices ranked worst first on ``metric``, among those with at least ``min_support`` events behind it.

        Every recorded dimension is scanned (slice fields, crossings, categorical features)
        unless ``dimensions`` narrows it.
        """
        overall = self.overall.value(metric)
        ranked = []
        for m in self.select(dimensions):
            value, support = m.value(metric), m.support(metric)
            if value is not None and support >= min_support:
                ranked.append(RankedSlice(m.slice, value, support, overall))
        worse_first = 1.0 if metric in HIGHER_IS_BETTER else -1.0
        ranked.sort(key=lambda r: (worse_first * r.value, -r.support, r.slice))
        return ranked[:limit]

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for name, m in sorted(self.items(), key=lambda kv: (kv[0] != s.ALL, kv[0])):
            nulls, viol = m.null_rates, m.violation_rates
            top_null = max(nulls.items(), key=lambda kv: kv[1], default=None)
            top_viol = max(viol.items(), key=lambda kv: kv[1], default=None)
            rows.append(
                {
                    "slice": name,
                    "events": m.events,
                    "labelled": m.labelled,
                    "pending": m.labels_pending,
                    "accuracy": m.accuracy,
                    "precision": m.precision,
                    "recall": m.recall,
                    "f1": m.f1,
                    "mae": m.mae,
                    "rmse": m.rmse,
                    "pred_mean": m.prediction_mean,
                    "pred_std": m.prediction_std,
                    "top_null": None if not top_null or not top_null[1] else f"{top_null[0]} {top_null[1]:.1%}",
                    "top_violation": None if not top_viol or not top_viol[1] else f"{top_viol[0]} {top_viol[1]:.1%}",
                }
            )
        frame = pd.DataFrame(rows)
        drop = ["mae", "rmse"] if self.task == "classification" else ["accuracy", "precision", "recall", "f1"]
        return frame.drop(columns=[c for c in drop if c in frame.columns])

    def to_table(self, marks: Mapping[str, str] | None = None) -> str:
        """A readable fixed-width table, all traffic first; ``marks`` (slice -> text) fill a ``note`` column."""
        return format_table(self.to_frame(), self.start_ms, self.end_ms, self.buckets, marks)

    def to_json(self) -> str:
        return json.dumps(
            {
                "start_ms": self.start_ms,
                "end_ms": self.end_ms,
                "buckets": self.buckets,
                "task": self.task,
                "slices": {name: m.to_dict() for name, m in sorted(self.items())},
            }
        )


class MetricsReader:
    """Reads one model's metric buckets (see :mod:`stream_guard.metrics.store` for the layout).

    Parameters
    ----------
    source
        Where the buckets are: a Redis client with ``decode_responses=True``, the key space
        of a :class:`~stream_guard.state.memory.MemoryState`, or any
        :class:`~stream_guard.metrics.buckets.BucketReads`.
    keys
        The model's keys.
    bucket_ms
        The writers' bucket size (``metrics.bucket_s * 1000``).
    """

    def __init__(
        self, source: RedisClient | BucketReads | MemoryKeySpace, keys: ModelKeys, bucket_ms: int = 60_000
    ) -> None:
        self.source = bucket_reads(source)
        self.keys = s.MetricKeys(keys)
        self.bucket_ms = bucket_ms

    def bucket_starts(self, start_ms: int, end_ms: int) -> list[int]:
        """Starts of the buckets of ``[floor(start_ms), end_ms)``: every one, or the indexed ones of a long range."""
        first = (start_ms // self.bucket_ms) * self.bucket_ms
        starts: list[int] = list(range(first, end_ms, self.bucket_ms)) if end_ms > first else []
        if len(starts) > MAX_DIRECT_BUCKETS:
            starts = self.buckets(start_ms, end_ms)
        return starts

    def sum_starts(self, starts: Sequence[int]) -> tuple[dict[str, float], int]:
        """Field -> sum over the buckets starting at ``starts``, and how many of them exist."""
        return self.source.sum_buckets([self.keys.bucket(start) for start in starts])

    def sum_groups(self, groups: Sequence[Sequence[int]]) -> list[tuple[dict[str, float], int]]:
        """:meth:`sum_starts` of each group of bucket starts, all in one round trip."""
        return self.source.sum_bucket_groups([[self.keys.bucket(start) for start in group] for group in groups])

    def versions(self, starts: Sequence[int]) -> list[int]:
        """The :data:`~stream_guard.metrics.store.VERSION` of each bucket (0: absent, -1: unversioned)."""
        return self.source.bucket_versions([self.keys.bucket(start) for start in starts])

    def stored_sums(self, tile_ms: int, starts: Sequence[int], signatures: Sequence[str]) -> list[dict[str, str]]:
        """The sums a :class:`~stream_guard.metrics.rollups.RollupCache` stored of the hours at ``starts``.

        Per hour, its fields when they were summed at ``signatures`` (else ``{}``).
        """
        keys = [self.keys.model_keys.rollup_sum(tile_ms, start) for start in starts]
        return self.source.stored_sums(keys, signatures)

    def store_sums(self, tile_ms: int, sums: Sequence[tuple[int, dict[str, str]]], ttl_s: int) -> None:
        """Store (start of an hour, its fields) for :meth:`stored_sums`, for ``ttl_s``."""
        self.source.store_sums([(self.keys.model_keys.rollup_sum(tile_ms, start), f) for start, f in sums], ttl_s)

    def buckets(self, start_ms: int | None = None, end_ms: int | None = None) -> list[int]:
        """Starts of the indexed buckets in ``[start_ms, end_ms)``."""
        low = "-inf" if start_ms is None else str((start_ms // self.bucket_ms) * self.bucket_ms)
        high = "+inf" if end_ms is None else f"({end_ms}"
        return self.source.indexed(self.keys.index, low, high)

    def rollup(self, start_ms: int, end_ms: int, slices: Iterable[str] | None = None) -> Rollup:
        """Sum the buckets whose start lies in ``[floor(start_ms), end_ms)``, per slice.

        Parameters
        ----------
        start_ms, end_ms
            Event-time range; the bucket containing ``start_ms`` is included whole.
        slices
            Only these slices (``*`` is always kept): exact names, or a dimension such as
            ``device_type`` or ``country,device_type`` for all of its slices.
        """
        totals, present = self.sum_starts(self.bucket_starts(start_ms, end_ms))
        return rollup_of(totals, start_ms, end_ms, present, slices)

    def series(
        self, start_ms: int, end_ms: int, slice: str = s.ALL, metrics: Iterable[str] | None = None
    ) -> list[tuple[int, dict[str, float]]]:
        """Per-bucket counters of one slice over ``[floor(start_ms), end_ms)``, in bucket order.

        One pipelined round trip, like :meth:`rollup`, without summing the buckets.

        Parameters
        ----------
        start_ms, end_ms
            Event-time range; the bucket containing ``start_ms`` is included whole.
        slice
            The slice, ``*`` (all traffic) by default.
        metrics
            Only these metrics (e.g. ``["lm", "tp", "fp", "tn", "fn"]``), read with ``HMGET``
            so the other slices of a bucket are not transferred; default every metric of the slice.

        Returns
        -------
        list of (bucket start, {metric: value})
            Buckets where the slice has at least one counter; absent metrics (never incremented,
            or only by 0) are left out, as in :attr:`SliceMetrics.counters`.
        """
        starts = self.bucket_starts(start_ms, end_ms)
        wanted = None if metrics is None else list(dict.fromkeys(metrics))
        if not starts or wanted == []:
            return []
        fields = None if wanted is None else [s.field_name(slice, m) for m in wanted]
        replies = self.source.bucket_fields([self.keys.bucket(start) for start in starts], fields)
        out: list[tuple[int, dict[str, float]]] = []
        prefix = f"{slice}|"
        for start, reply in zip(starts, replies, strict=True):
            counters = {k[len(prefix) :]: float(v) for k, v in reply.items() if k.startswith(prefix)}
            if counters:
                out.append((start, counters))
        return out

    def last(self, duration_ms: int, now_ms: int, slices: Iterable[str] | None = None) -> Rollup:
        """The rollup of ``[now_ms - duration_ms, now_ms)``: 5 min, 1 h, 24 h..."""
        return self.rollup(now_ms - duration_ms, now_ms, slices)


def rollup_of(
    totals: Mapping[str, float], start_ms: int, end_ms: int, present: int, slices: Iterable[str] | None = None
) -> Rollup:
    """The :class:`Rollup` of summed bucket fields (``<slice>|<metric>`` -> sum; other fields are not counters)."""
    items: dict[str, SliceMetrics] = {}
    wanted = _slice_filter(slices)
    for name in sorted(totals):
        slice_, bar, metric = name.partition("|")
        if not bar or (wanted is not None and not wanted(slice_)):
            continue
        items.setdefault(slice_, SliceMetrics(slice_)).counters[metric] = totals[name]
    return Rollup(items, start_ms, end_ms, present)


def _slice_filter(slices: Iterable[str] | None) -> Any:
    if slices is None:
        return None
    exact = set(slices)
    dims = {tuple(sorted(x.split(","))) for x in exact if "=" not in x and x != s.ALL}
    return lambda name: name == s.ALL or name in exact or slice_dimension(name) in dims
