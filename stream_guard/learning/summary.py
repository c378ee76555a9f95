"""What ``stream-guard learn`` and ``stream-guard metrics`` print about the labelled reference."""

from __future__ import annotations

from collections.abc import Sequence

from stream_guard.profile_performance import KnownBias, ReferencePerformance


def performance_summary(performance: ReferencePerformance | None) -> str:
    """A few lines: the overall performance on the reference and each known bias."""
    if performance is None:
        return "no label column in the reference: slices will be compared with their previous lookback"
    overall = performance.slices.get("*")
    lines = [f"labelled reference ({performance.label_column}): {len(performance.slices)} slices"]
    if overall is not None:
        shown = ", ".join(
            f"{m} {i.value:.3f} [{i.low:.3f}, {i.high:.3f}]"
            for m, i in overall.intervals.items()
            if i.value is not None
        )
        lines[0] += f"; all traffic {overall.labelled} labelled: {shown}"
    lines.append(estimation_summary(performance))
    if not performance.known_biases:
        lines.append("known biases: none")
    else:
        lines.append(f"known biases (reported once as known_bias, not re-raised): {len(performance.known_biases)}")
        for b in performance.known_biases:
            lines.append(
                f"  {b.slice:<40} {b.metric} {b.value:.3f} vs rest {b.rest_value:.3f} "
                f"(gap {b.gap:.3f}, p={b.p:.2g}, {b.support} events)"
            )
    return "\n".join(lines)


def estimation_summary(performance: ReferencePerformance) -> str:
    """One line: the calibration learned for the label-free estimate, and how reliable it was on the reference."""
    est = performance.estimation
    if est is None:
        return "label-free estimate: none (needs a classification score and a threshold within score_range)"
    c = est.calibration
    return (
        f"label-free estimate: {c.method} calibration on {c.bins} score bins; raw score ECE {c.raw_ece:.3f}; "
        f"estimated vs realised accuracy per {est.chunk_size}-row chunk (cross-fitted): mean error "
        f"{c.chunk_accuracy_error:.4f} over {est.n_chunks} chunks"
        + (f"; threshold bin {c.threshold_bin} split at the threshold" if c.split is not None else "")
    )


def known_bias_marks(biases: Sequence[KnownBias]) -> dict[str, str]:
    """Slice -> ``known bias: recall, accuracy``, the note column of the metrics table."""
    metrics: dict[str, list[str]] = {}
    for b in biases:
        metrics.setdefault(b.slice, []).append(b.metric)
    return {name: "known bias: " + ", ".join(ms) for name, ms in metrics.items()}
