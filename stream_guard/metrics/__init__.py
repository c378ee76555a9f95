"""Rolling slice metrics, delayed-label performance tracking and performance-bias tests.

* :mod:`~stream_guard.metrics.slices`: per-slice, per-bucket counters of each batch,
  written with the batch's fenced state updates (:class:`SliceRecorder`);
* :mod:`~stream_guard.metrics.store`: the Redis key layout;
* :mod:`~stream_guard.metrics.labels`: joining delayed labels to stored predictions (:class:`LabelJoiner`);
* :mod:`~stream_guard.metrics.query`: rolling buckets up at query time (:class:`MetricsReader`);
* :mod:`~stream_guard.metrics.performance`: slice-vs-rest and degradation tests;
* :mod:`~stream_guard.metrics.baseline`: slices against their own baseline, fairness gaps, known biases;
* :mod:`~stream_guard.metrics.attribution`: one alert per cause among parent slices and their crossings;
* :mod:`~stream_guard.metrics.slice_alerts`: the evaluator raising those alerts (:class:`PerformanceEvaluator`).
"""

from stream_guard.metrics.label_messages import LabelStream
from stream_guard.metrics.labels import JoinResult, Label, LabelJoiner
from stream_guard.metrics.performance import (
    Degradation,
    DegradationMonitor,
    Underperformance,
    benjamini_hochberg,
    performance_degradation,
    slice_underperformance,
    two_proportion_test,
)
from stream_guard.metrics.query import MetricsReader, RankedSlice, Rollup, SliceMetrics
from stream_guard.metrics.slice_alerts import PerformanceEvaluator
from stream_guard.metrics.slices import SliceRecorder, ValueCapper, slice_name
from stream_guard.settings.metrics import LabelSettings, MetricsSettings

__all__ = [
    "Degradation",
    "DegradationMonitor",
    "JoinResult",
    "Label",
    "LabelJoiner",
    "LabelSettings",
    "LabelStream",
    "MetricsReader",
    "MetricsSettings",
    "PerformanceEvaluator",
    "RankedSlice",
    "Rollup",
    "SliceMetrics",
    "SliceRecorder",
    "Underperformance",
    "ValueCapper",
    "benjamini_hochberg",
    "performance_degradation",
    "slice_name",
    "slice_underperformance",
    "two_proportion_test",
]
