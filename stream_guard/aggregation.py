"""Turning a batch's row-level findings into per-window counters (vectorised).

Rows are grouped by (source partition, event-time window). Each group's counts become
increments on the window's Redis hash, so one broken feature in a window ends as one
counter and a few examples, however many events showed the problem.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from stream_guard.batch import EventBatch
from stream_guard.findings import OVERFLOW, RowFindings
from stream_guard.state.keys import ModelKeys
from stream_guard.state.window_store import StateUpdate

#: Counter of dead-lettered events in a window hash; "n" counts the decoded ones.
DEAD_LETTERS = "dl"


def window_starts(event_time_ms: np.ndarray, window_ms: int) -> np.ndarray:
    """Start of the tumbling window each event time falls in (floor division, UTC-aligned)."""
    return (event_time_ms // window_ms) * window_ms


@dataclass
class WindowGroups:
    """Rows of a batch grouped by (source partition, window start)."""

    group_of_row: np.ndarray  # group index of every row
    starts: np.ndarray  # window start of every group
    sources: list[str]  # "topic:partition" of every group
    updates: dict[str, StateUpdate]  # one per source

    @property
    def size(self) -> int:
        return len(self.sources)

    def counts(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Number of rows per group, of all rows or of the given row indices / mask."""
        groups = self.group_of_row if rows is None else self.group_of_row[rows]
        return np.bincount(groups, minlength=self.size)

    def update_of(self, group: int) -> StateUpdate:
        return self.updates[self.sources[group]]


def group_rows(batch: EventBatch, window_ms: int) -> WindowGroups:
    starts = window_starts(batch.event_time_ms, window_ms)
    source_names, source_idx = _sources(batch)
    start_values, start_idx = np.unique(starts, return_inverse=True)
    # Groups in order of (source, window start), as sorting the pairs would give.
    cells, group_of_row = np.unique(source_idx * len(start_values) + start_idx.reshape(-1), return_inverse=True)
    group_of_row = group_of_row.reshape(-1)
    unique_pairs = np.stack([cells // len(start_values), start_values[cells % len(start_values)]], axis=1)
    updates: dict[str, StateUpdate] = {}
    for i, name in enumerate(source_names.tolist()):
        mask = source_idx == i
        offsets = batch.offsets[mask]
        updates[name] = StateUpdate(name, int(offsets.min()), int(offsets.max()), int(batch.event_time_ms[mask].max()))
    return WindowGroups(
        group_of_row=group_of_row,
        starts=unique_pairs[:, 1],
        sources=[str(source_names[s]) for s in unique_pairs[:, 0]],
        updates=updates,
    )


def _sources(batch: EventBatch) -> tuple[np.ndarray, np.ndarray]:
    """The ``topic:partition`` names of the batch's rows, sorted, and each row's index into them."""
    topics = batch.topics
    if topics and topics.count(topics[0]) == len(topics):  # one topic: its partitions named once each
        partitions, of_row = np.unique(batch.partitions, return_inverse=True)
        names = np.array([f"{topics[0]}:{p}" for p in partitions.tolist()])
        order = np.argsort(names, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return names[order], rank[of_row.reshape(-1)]
    sources = np.array([f"{t}:{p}" for t, p in zip(topics, batch.partitions.tolist(), strict=True)])
    names, of_row = np.unique(sources, return_inverse=True)
    return names, of_row.reshape(-1)


Contributor = Callable[[EventBatch, WindowGroups, ModelKeys], None]


def build_updates(
    batch: EventBatch,
    findings: Sequence[RowFindings],
    keys: ModelKeys,
    *,
    window_ms: int,
    max_examples: int,
    contributors: Sequence[Contributor] = (),
    max_finding_keys: int | None = None,
) -> list[StateUpdate]:
    """The Redis updates of a batch: event counts, finding counts and examples per window.

    ``contributors`` add their own counters (null counts, histograms...) to the same
    updates, so everything a batch derives reaches Redis in one atomic step per partition.
    With ``max_finding_keys``, a window hash holds at most that many distinct finding
    fields; later ones are added to the ``f|<kind>|*overflow*|<slice>`` field of their kind.
    """
    if len(batch) == 0:
        return []
    groups = group_rows(batch, window_ms)
    events = groups.counts(~batch.failed)
    dead = groups.counts(batch.failed)
    for g in range(groups.size):
        update = groups.update_of(g)
        start = int(groups.starts[g])
        update.open_window(start)
        update.incr(keys.window(start), "n", int(events[g]))
        update.incr(keys.window(start), DEAD_LETTERS, int(dead[g]))
    for finding in findings:
        _add_finding(batch, groups, keys, finding, max_examples, max_finding_keys)
    for contribute in contributors:
        contribute(batch, groups, keys)
    return list(groups.updates.values())


def _add_finding(
    batch: EventBatch,
    groups: WindowGroups,
    keys: ModelKeys,
    finding: RowFindings,
    max_examples: int,
    max_finding_keys: int | None,
) -> None:
    counts = groups.counts(finding.rows)
    row_groups = groups.group_of_row[finding.rows]
    detail = json.dumps([finding.observed, finding.expected]) if finding.observed or finding.expected else ""
    overflow_key = f"{finding.kind}|{OVERFLOW}|{finding.slice}"
    overflow_detail = json.dumps(
        [f"{finding.kind} findings beyond the window's {max_finding_keys} distinct ones", "worker.max_finding_keys"]
    )
    for g in np.flatnonzero(counts).tolist():
        update = groups.update_of(g)
        start = int(groups.starts[g])
        window_key = keys.window(start)
        positions = np.flatnonzero(row_groups == g)[:max_examples].tolist()
        examples = [example_record(batch, finding, pos) for pos in positions]
        examples_key = keys.examples(start, finding.key)
        if max_finding_keys is not None:
            update.add_finding(
                window_key,
                f"f|{finding.key}",
                int(counts[g]),
                cap=max_finding_keys,
                overflow=(f"f|{overflow_key}", f"d|{overflow_key}", overflow_detail),
                detail=(f"d|{finding.key}", detail),
                examples=(examples_key, examples, max_examples),
            )
            continue
        update.incr(window_key, f"f|{finding.key}", int(counts[g]))
        if detail:
            update.set(window_key, f"d|{finding.key}", detail)
        for example in examples:
            update.add_example(examples_key, example, max_examples)


def example_record(batch: EventBatch, finding: RowFindings, pos: int) -> dict[str, object]:
    """The example record of a finding's ``pos``-th row (as the window's examples list keeps it)."""
    row = int(finding.rows[pos])
    return {
        "partition": int(batch.partitions[row]),
        "offset": int(batch.offsets[row]),
        "event_id": batch.event_ids[row],
        "value": None if finding.values is None else _short(finding.values[pos]),
    }


def _short(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text[:80]
