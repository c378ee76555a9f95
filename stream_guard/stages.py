"""The roles a batch passes through, as typed protocols; one name per role.

Per micro-batch of one model, in this order:

1. a :class:`Decoder` turns each payload into a record (:mod:`stream_guard.decoding`);
2. every :class:`RowCheck` reports findings of rows (out-of-range values, unseen
   categories, online drift...);
3. the window counters of the batch are built (:func:`~stream_guard.aggregation.build_updates`),
   and every :class:`CounterContributor` adds counters of its own to them (histograms
   for drift tests, null counts...), so that everything a batch derives reaches Redis
   in one fenced step per partition; a model's :class:`SliceRecorder` adds its slice
   metrics, seeing the batch's findings.

Per closed window: every :class:`WindowEvaluator` turns the merged counters into alerts.
When partitions are revoked or lost, every :class:`PartitionState` drops what it keeps
of them; a worker's online detectors are checkpointed with each batch and restored
when a partition is assigned (:mod:`stream_guard.drift.checkpoint`). :class:`Stages`
lists the stages a configuration enables, each under its roles (one object may play
several: the window drift test contributes histograms and evaluates them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stream_guard.aggregation import Contributor, WindowGroups
    from stream_guard.alerts.model import Alert, Severity
    from stream_guard.batch import EventBatch
    from stream_guard.drift.checkpoint import DetectorCheckpointer
    from stream_guard.findings import RowFindings
    from stream_guard.model import ModelRuntime
    from stream_guard.state.keys import ModelKeys
    from stream_guard.state.window_store import WindowSnapshot


class RowCheck(Protocol):
    """Findings of the rows of one model's batch."""

    def findings(self, model: ModelRuntime, batch: EventBatch) -> list[RowFindings]: ...


class CounterContributor(Protocol):
    """Adds counters of its own to a batch's window updates (``groups.update_of(g)``)."""

    def contribute(self, batch: EventBatch, groups: WindowGroups, keys: ModelKeys) -> None: ...


class SliceRecorder(Protocol):
    """Slice metrics of a model: a contributor of each batch that sees its findings (violation rates)."""

    def contributor(self, findings: Sequence[RowFindings]) -> Contributor: ...


class WindowEvaluator(Protocol):
    """Alerts of one closed window of a model."""

    def __call__(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]: ...


class PartitionState(Protocol):
    """A stage that keeps state per source partition (``topic:partition`` names)."""

    def forget(self, sources: Iterable[str]) -> None: ...


@dataclass
class Stages:
    """The stages a configuration enables, by role, in the order they run."""

    row_checks: list[RowCheck] = field(default_factory=list)
    contributors: list[CounterContributor] = field(default_factory=list)
    evaluators: list[WindowEvaluator] = field(default_factory=list)
    partition_state: list[PartitionState] = field(default_factory=list)
    #: The slice metrics recorder of each model that keeps metrics.
    slice_recorders: Mapping[str, SliceRecorder] = field(default_factory=dict)
    #: Severity of row findings by ``kind`` or ``kind|feature``, over the defaults.
    severities: Mapping[str, Severity] = field(default_factory=dict)
    #: Checkpoints the online detectors with each batch and restores them on assignment (workers only).
    checkpointer: DetectorCheckpointer | None = None
