"""How close the label-free estimate (CBPE) comes to the realised accuracy, window by window, on the simulator.

Usage: ``python bench/cbpe.py [--windows 48] [--per-window 2000] [--threshold 0.5]``

A threshold inside a score bin (``--threshold 0.55``) is estimated with the bin split at it
and the count of scores at or above it, as the worker's ``pp`` counter gives it.

The simulator's score is calibrated (each label is Bernoulli(score)). A reference of
20,000 labelled events fits the calibration (``learn``'s code). Then, per window:

* **covariate shift**: from the middle window on, the traffic moves towards uncertain
  cases (events resampled by their score, which is a function of the features: the share
  with a score within 0.2 of the threshold grows in steps): a real drop in accuracy that
  the labels (still Bernoulli(score), P(label | features) unchanged) confirm;
* **concept drift**: the features and scores unchanged, android events the model
  predicted negative turn fraud with probability 0.3 from the middle window on: the
  calibration breaks and CBPE cannot see it.

Each window's histogram is binned as the live recorder bins it and estimated with
:func:`~stream_guard.metrics.estimate.estimate_counts`; the mean absolute error of the
estimated accuracy, the share of windows whose realised accuracy lies in the 95 % band,
and where the alert and calibration rules (accuracy, precision and recall against
their estimates) first fire are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_guard.learning.calibration import bin_index, learn_estimation
from stream_guard.metrics.estimate import PerformanceEstimate, estimate_counts
from stream_guard.tools.simulator import Simulator

BINS, RANGE = 10, (0.0, 1.0)
Z, MIN_EFFECT = 3.0, 0.05


def labelled(sim: Simulator, records: list[dict[str, object]], android_misses: float = 0.0) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    frame["label"] = [x["label"] for x in sim.labels(records, android_misses=android_misses)]
    return frame


def run(windows: int, per_window: int, args_verbose: bool = False, threshold: float = 0.5) -> None:
    sim = Simulator(encoding="json", seed=3)
    reference = labelled(sim, sim.records(20_000, 0))
    est = learn_estimation(
        reference["score"].to_numpy(float),
        (reference["label"] == 1).to_numpy(),
        {"device_type": ("device_type=" + reference["device_type"]).to_numpy(object)},
        threshold=threshold,
        bins=BINS,
        score_range=RANGE,
        chunk_size=per_window,
    )
    assert est is not None
    cal = est.calibration
    ref_acc = est.slices["*"]["accuracy"]
    print(f"reference: accuracy {ref_acc.value:.4f}, chunk std {ref_acc.std:.4f} ({per_window}-event chunks)")
    print(f"calibration: raw ECE {cal.raw_ece:.4f}, cross-fitted chunk accuracy error {cal.chunk_accuracy_error:.4f}")
    rng = np.random.default_rng(11)
    for scenario in ("covariate shift", "concept drift"):
        errors, inside, first_drop, first_cal = [], 0, None, None
        for w in range(windows):
            pool = sim.records(per_window * 2, 0)
            if scenario == "covariate shift":
                # From the middle window on, a growing share of the traffic is uncertain cases.
                boost = max(0.0, (w - windows // 2 + 1) / (windows - windows // 2)) * 6.0
                score = np.array([r["score"] for r in pool])
                weight = 1.0 + boost * (np.abs(score - threshold) < 0.2)
                pick = rng.choice(len(pool), per_window, replace=False, p=weight / weight.sum())
                frame = labelled(sim, [pool[i] for i in pick])
            else:
                misses = 0.3 if w >= windows // 2 else 0.0
                frame = labelled(sim, pool[:per_window], android_misses=misses)
            index = bin_index(frame["score"].to_numpy(float), BINS, RANGE)
            counts = np.bincount(index, minlength=BINS)
            scores = frame["score"].to_numpy(float)
            e = estimate_counts(
                counts,
                cal.probability,
                cal.threshold_bin,
                cal.counts,
                split=cal.split,
                predicted_positive=float((scores >= threshold).sum()),
            )
            acc, sd = e.value("accuracy"), e.std["accuracy"]
            assert acc is not None
            realised = float(((frame["score"] >= threshold) == (frame["label"] == 1)).mean())
            errors.append(abs(acc - realised))
            inside += abs(acc - realised) <= 1.96 * sd
            spread = max(ref_acc.scaled_std(len(frame)) or 0.0, sd)
            if args_verbose:
                print(f"  {scenario} window {w}: estimate {acc:.3f} +/- {1.96 * sd:.3f}, realised {realised:.3f}")
            if first_drop is None and ref_acc.value - acc > max(Z * spread, MIN_EFFECT):
                first_drop = (w, acc, realised)
            if first_cal is None and beyond_band(e, realised_metrics(frame, threshold)):
                first_cal = (w, acc, realised)
        print(
            f"{scenario}: {windows} windows of {per_window} events: mean |estimate - realised| accuracy "
            f"{np.mean(errors):.4f} (max {np.max(errors):.4f}); realised inside the 95 % band in "
            f"{inside}/{windows} windows; first estimated_performance_drop: {_fmt(first_drop)}; "
            f"first calibration_drift: {_fmt(first_cal)}"
        )


def realised_metrics(frame: pd.DataFrame, threshold: float) -> dict[str, float]:
    """Accuracy, precision and recall of a labelled window at the threshold."""
    pred, true = frame["score"].to_numpy(float) >= threshold, (frame["label"] == 1).to_numpy()
    tp = float((pred & true).sum())
    return {"accuracy": float((pred == true).mean()), "precision": tp / pred.sum(), "recall": tp / true.sum()}


def beyond_band(e: PerformanceEstimate, realised: dict[str, float]) -> bool:
    """The calibration rule on all traffic: any of accuracy, precision, recall beyond Z std and MIN_EFFECT."""
    for metric, value in realised.items():
        estimate, sd = e.value(metric), e.std.get(metric, 0.0)
        if estimate is not None and abs(value - estimate) > Z * sd and abs(value - estimate) >= MIN_EFFECT:
            return True
    return False


def _fmt(hit: tuple[int, float, float] | None) -> str:
    return "none" if hit is None else f"window {hit[0]} (estimate {hit[1]:.3f}, realised {hit[2]:.3f})"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=48)
    parser.add_argument("--per-window", type=int, default=2000)
    parser.add_argument("--threshold", type=float, default=0.5, help="the model's threshold (any, within [0, 1])")
    parser.add_argument("--verbose", action="store_true", help="print every window")
    args = parser.parse_args()
    run(args.windows, args.per_window, args.verbose, args.threshold)
