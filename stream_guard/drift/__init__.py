"""Drift detection: window statistics against a baseline, and online River detectors."""

from stream_guard.drift.detectors import DetectorSpec, OnlineDriftMonitor, reference_sample
from stream_guard.drift.online import ONLINE_DRIFT, OnlineDrift, baseline_seed
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
from stream_guard.drift.window import DATA_DRIFT, PREDICTION_DRIFT, UNSEEN, WindowDrift
from stream_guard.settings.drift import DriftSettings, FeatureDriftSettings

__all__ = [
    "DATA_DRIFT",
    "ONLINE_DRIFT",
    "PREDICTION_DRIFT",
    "UNSEEN",
    "DetectorSpec",
    "DriftSettings",
    "DriftVerdict",
    "FeatureDriftSettings",
    "OnlineDrift",
    "OnlineDriftMonitor",
    "WindowDrift",
    "baseline_seed",
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
