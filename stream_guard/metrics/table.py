"""The fixed-width table of a rollup (``stream-guard metrics``), with optional marks per slice."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pandas as pd

#: Columns printed with three decimals.
DECIMAL_COLUMNS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "mae",
    "rmse",
    "pred_mean",
    "pred_std",
    "est_accuracy",
    "est_acc_band",
    "est_recall",
    "est_rec_band",
    "acc_minus_est",
)


def format_table(
    frame: pd.DataFrame, start_ms: int, end_ms: int, buckets: int, marks: Mapping[str, str] | None = None
) -> str:
    """A readable table of :meth:`~stream_guard.metrics.query.Rollup.to_frame` output, all traffic first.

    ``marks`` (slice -> text, e.g. ``known bias: recall``) fill a ``note`` column when given.
    """
    if frame.empty:
        return "(no metrics in range)"
    text = frame.astype(object).where(frame.notna(), "-")
    for column in DECIMAL_COLUMNS:
        if column in text.columns:
            text[column] = [v if v == "-" else f"{float(v):.3f}" for v in text[column]]
    if marks:
        text["note"] = [marks.get(name, "") for name in text["slice"]]
    start, end = (datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") for t in (start_ms, end_ms))
    header = f"metrics {start} .. {end} UTC (event time; {buckets} buckets, {len(frame)} slices)\n"
    return header + str(text.to_string(index=False))
