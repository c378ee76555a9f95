"""Row-level findings: which rows of a batch show which problem, before aggregation."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_guard.batch import EventBatch
from stream_guard.decoded import ColumnarRecords
from stream_guard.schemas import SchemaChange
from stream_guard.settings.kinds import OVERFLOW

__all__ = ["OVERFLOW", "RowFindings", "cap_findings", "dead_letter_findings", "schema_findings"]


@dataclass
class RowFindings:
    """Rows of one batch with the same problem on the same feature.

    ``values`` (aligned with ``rows``) keeps the offending values for alert examples.
    """

    kind: str
    feature: str
    rows: np.ndarray
    observed: str = ""
    expected: str = ""
    values: list[Any] | None = None
    slice: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.feature}|{self.slice}"


def schema_findings(batch: EventBatch) -> list[RowFindings]:
    """Findings of the decoding stage: field issues and writer-schema changes."""
    Key = tuple[str, str, str, str]
    if isinstance(batch.decoded, ColumnarRecords):
        return _writer_findings(batch.decoded)
    rows: dict[Key, list[int]] = defaultdict(list)
    values: dict[Key, list[Any]] = defaultdict(list)
    for i, decoded in enumerate(batch.decoded):
        for issue in decoded.issues:
            key: Key = (issue.kind, issue.field, issue.observed, issue.expected)
            rows[key].append(i)
            values[key].append(issue.value)
        for change in decoded.schema_changes:
            key = _change_key(change, decoded.writer_schema_id)
            rows[key].append(i)
            values[key].append(None)
    return [
        RowFindings(kind, feature, np.asarray(idx, dtype=np.int64), observed, expected, values[key])
        for key, idx in rows.items()
        for kind, feature, observed, expected in [key]
    ]


def dead_letter_findings(batch: EventBatch, errors: dict[int, Exception]) -> list[RowFindings]:
    """One ``undecodable`` finding per error class (its "feature"), from the rows that failed to decode."""
    rows: dict[str, list[int]] = defaultdict(list)
    for row, error in sorted(errors.items()):
        rows[type(error).__name__].append(row)
    return [
        RowFindings(
            "undecodable",
            name,
            np.asarray(idx, dtype=np.int64),
            observed=f"{name}: {errors[idx[0]]}",
            expected="a record of the model's schema",
            values=[str(errors[i]) for i in idx],
        )
        for name, idx in rows.items()
    ]


def cap_findings(findings: list[RowFindings], max_keys: int) -> list[RowFindings]:
    """At most ``max_keys`` distinct findings: the ones of the most rows, and one overflow per kind.

    Beyond ``max_keys``, the ``max_keys - 1`` findings of the most rows are kept (ties by
    key) and the others become, per kind (and slice), one finding on feature ``*overflow*``
    over the union of their rows, whose ``observed`` says how many distinct findings it
    stands for. Events with a finding of a kind stay the same, so the slice metrics'
    ``v:<kind>`` counts do not change.
    """
    if len(findings) <= max_keys:
        return findings
    ranked = sorted(findings, key=lambda f: (-len(f.rows), f.key))
    kept, dropped = ranked[: max_keys - 1], ranked[max_keys - 1 :]
    groups: dict[tuple[str, str], list[RowFindings]] = defaultdict(list)
    for finding in dropped:
        groups[(finding.kind, finding.slice)].append(finding)
    for (kind, slice_), group in groups.items():
        rows = np.unique(np.concatenate([f.rows for f in group]))
        kept.append(
            RowFindings(
                kind,
                OVERFLOW,
                rows,
                observed=f"{len(group)} more distinct {kind} findings",
                expected="distinct findings capped (worker.max_finding_keys)",
                values=[None] * len(rows),
                slice=slice_,
            )
        )
    return kept


def _change_key(change: SchemaChange, schema_id: int | str | None) -> tuple[str, str, str, str]:
    writer = "writer schema" if schema_id is None else f"writer schema id {schema_id}"
    return ("schema_change", change.field, f"{change.change}: {writer} has {change.observed}", change.expected)


def _writer_findings(records: ColumnarRecords) -> list[RowFindings]:
    """:func:`schema_findings` of records read by columns: no field issues, their writer's changes on every row."""
    repeats = Counter(_change_key(change, records.schema_id) for change in records.changes)
    out = []
    for (kind, feature, observed, expected), times in repeats.items():
        rows = np.repeat(np.arange(len(records), dtype=np.int64), times)
        out.append(RowFindings(kind, feature, rows, observed, expected, [None] * len(rows)))
    return out
