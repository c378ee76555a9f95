"""Drift detection: window statistics against a baseline, and online River detectors."""

from stream_guard.drift.detectors import DetectorSpec, OnlineDriftMonitor, reference_sample
from stream_guard.drift.stats import (
    DriftVerdict,
    bin_counts,
    categorical_counts_to_vector,
    chi_square_test,
    evaluate_categorical_drift,
    evaluate_numeric_drift,
    js_distance,
    ks_statistic_binned,
    psi,
)

__all__ = [
    "DetectorSpec",
    "DriftVerdict",
    "OnlineDriftMonitor",
    "bin_counts",
    "categorical_counts_to_vector",
    "chi_square_test",
    "evaluate_categorical_drift",
    "evaluate_numeric_drift",
    "js_distance",
    "ks_statistic_binned",
    "psi",
    "reference_sample",
]
