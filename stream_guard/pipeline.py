"""The stages between decoding and delivery, shared by the worker and ``evaluate``'s replay.

Per batch: event times far from their Kafka timestamp clamped (:mod:`stream_guard.eventtime`),
findings (event-time skew, schema, dead letters, row checks) → window counters, contributed
counters and slice metrics (:func:`~stream_guard.aggregation.build_updates`). Per closed
window: evaluators → alerts with their configured severities. Neither step does I/O:
the caller applies the updates (Redis, or the in-memory state of a replay) and
publishes the alerts. The roles are the protocols of :mod:`stream_guard.stages`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from stream_guard.aggregation import DEAD_LETTERS, Contributor, build_updates, example_record, window_starts
from stream_guard.alerts.evaluate import DEFAULT_SEVERITY, finding_alerts
from stream_guard.alerts.model import Alert, Severity
from stream_guard.batch import EventBatch
from stream_guard.errors import DecodeError, RecordValidationError, RegistryUnavailableError
from stream_guard.eventtime import clamp_event_times, kafka_timestamps
from stream_guard.findings import RowFindings, cap_findings, dead_letter_findings, schema_findings
from stream_guard.model import DeadLetter, ModelRuntime
from stream_guard.settings import Config
from stream_guard.stages import Stages, WindowEvaluator
from stream_guard.state.keys import ModelKeys
from stream_guard.state.window_store import StateUpdate, WindowSnapshot

log = structlog.get_logger("stream_guard.pipeline")


@dataclass
class StagedBatch:
    """One model's messages after decoding and the stages: the updates, and the records rejected."""

    updates: list[StateUpdate]
    findings: list[RowFindings]
    dead: list[DeadLetter]
    decoded: int
    #: The findings of ``[alerts] early_kinds`` as alerts, counted over the batch (:meth:`Pipeline.early_alerts`).
    early: list[Alert] = dataclasses.field(default_factory=list)


class _RowFindingAlerts:
    """The evaluator of the row findings' own counters, with their configured severities."""

    def __init__(self, severities: Mapping[str, Severity], max_keys: int) -> None:
        self._severities = {**DEFAULT_SEVERITY, **severities}
        self._max_keys = max_keys

    def __call__(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]:
        return finding_alerts(model.name, window, self._severities, max_keys=self._max_keys)


class Pipeline:
    """The configured :class:`~stream_guard.stages.Stages` of a worker, run per batch and per window."""

    def __init__(self, config: Config, stages: Stages | None = None) -> None:
        self.config = config
        self.stages = stages or Stages()
        self.evaluators: list[WindowEvaluator] = [
            _RowFindingAlerts(self.stages.severities, config.worker.max_finding_keys),
            *self.stages.evaluators,
        ]

    def batch_updates(
        self,
        model: ModelRuntime,
        batch: EventBatch,
        keys: ModelKeys,
        errors: Mapping[int, Exception],
        findings: Sequence[RowFindings] = (),
    ) -> tuple[list[StateUpdate], list[RowFindings]]:
        """The Redis updates of one model's batch, and its findings.

        ``errors`` maps the rows that failed to decode to their errors; ``findings`` are the
        batch's findings from before the stages (event-time skew).
        """
        stages = self.stages
        findings = [*findings, *schema_findings(batch), *dead_letter_findings(batch, dict(errors))]
        for check in stages.row_checks:
            findings += check.findings(model, batch)
        findings = cap_findings(findings, self.config.worker.max_finding_keys)
        contributors: list[Contributor] = [c.contribute for c in stages.contributors]
        recorder = stages.slice_recorders.get(model.name)
        if recorder is not None:
            contributors.append(recorder.contributor(findings))
        updates = build_updates(
            batch,
            findings,
            keys,
            window_ms=self.config.worker.window_s * 1000,
            max_examples=self.config.worker.max_examples,
            contributors=contributors,
            max_finding_keys=self.config.worker.max_finding_keys,
        )
        return updates, findings

    def stage(self, model: ModelRuntime, messages: Sequence[Any], keys: ModelKeys) -> StagedBatch:
        """Decode one model's messages and run them through the stages.

        A record that makes a stage raise is found by running the valid rows one at a
        time, and becomes a dead letter (:class:`~stream_guard.errors.RecordValidationError`)
        while the rest of the batch is counted: one hostile record must not crash the
        batch on every redelivery. Stateful stages may then have seen some rows twice.
        A failure no single record reproduces, or that every record of the batch
        reproduces (a broken stage, not a hostile record), is raised.
        """
        batch, dead = model.decode(messages)
        errors: dict[int, Exception] = {d.row: d.error for d in dead}
        batch, skewed = clamp_event_times(
            batch,
            kafka_timestamps(messages),
            self.config.worker.max_event_time_skew_s,
            model.config.timestamp_field or "*",
        )
        try:
            updates, findings = self.batch_updates(model, batch, keys, errors, skewed)
        except RegistryUnavailableError:
            raise
        except Exception:  # a stage failed: look for the record that causes it (re-raised if none)
            poison = self._poison_rows(model, batch, keys)
            if not poison or (len(poison) > 1 and len(poison) == len(batch.valid_rows)):
                raise  # no record alone, or every record: a failure of the stage, not of a record
            log.error("records dead-lettered: a stage failed on them", model=model.name, rows=len(poison))
            batch = batch.with_failed(poison)
            dead = sorted([*dead, *(DeadLetter(r, messages[r], e) for r, e in poison.items())], key=lambda d: d.row)
            errors.update(poison)
            skewed = [dataclasses.replace(f, rows=f.rows[~batch.failed[f.rows]]) for f in skewed]
            updates, findings = self.batch_updates(model, batch, keys, errors, [f for f in skewed if len(f.rows)])
        return StagedBatch(updates, findings, dead, len(batch) - len(dead), self.early_alerts(model, batch, findings))

    def early_alerts(self, model: ModelRuntime, batch: EventBatch, findings: Sequence[RowFindings]) -> list[Alert]:
        """The batch's findings of ``[alerts] early_kinds`` as alerts of their windows, counted over the batch.

        Each is the alert the window's close raises for the same finding (same kind, feature,
        slice, window, severity: the same ``alert_id``), its counts the batch's rows in that
        window (``total``: all of them, dead letters included), its message saying so.
        """
        kinds = frozenset(self.config.alerts.early_kinds)
        early = [f for f in findings if f.kind in kinds and len(f.rows)]
        if not early:
            return []
        window_ms = self.config.worker.window_s * 1000
        max_examples = self.config.worker.max_examples
        starts = window_starts(batch.event_time_ms, window_ms)
        alerts: list[Alert] = []
        for start in np.unique(starts[np.concatenate([f.rows for f in early])]).tolist():
            in_window = starts == start
            fields = {
                "n": str(int((in_window & ~batch.failed).sum())),
                DEAD_LETTERS: str(int((in_window & batch.failed).sum())),
            }
            examples: dict[str, list[dict[str, Any]]] = {}
            for finding in early:
                positions = np.flatnonzero(in_window[finding.rows])
                if not len(positions):
                    continue
                name = f"f|{finding.key}"
                fields[name] = str(int(fields.get(name, "0")) + len(positions))
                if finding.observed or finding.expected:
                    fields[f"d|{finding.key}"] = json.dumps([finding.observed, finding.expected])
                kept = examples.setdefault(finding.key, [])
                kept += [example_record(batch, finding, pos) for pos in positions[: max_examples - len(kept)].tolist()]
            snapshot = WindowSnapshot(int(start), int(start) + window_ms, fields, examples)
            for alert in self._overridden(self.evaluators[0](model, snapshot)):
                message = (
                    f"early alert, the first {alert.count} in this batch (the window alert follows "
                    f"with the full counts): {alert.message}"
                )
                alerts.append(dataclasses.replace(alert, message=message))
        return alerts

    def _poison_rows(self, model: ModelRuntime, batch: EventBatch, keys: ModelKeys) -> dict[int, DecodeError]:
        poison: dict[int, DecodeError] = {}
        for row in batch.valid_rows.tolist():
            try:
                self.batch_updates(model, batch.take(np.array([row])), keys, {})
            except RegistryUnavailableError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the record's own failure, whatever it is
                poison[row] = RecordValidationError(f"validation failed: {type(exc).__name__}: {exc}"[:500])
        return poison

    def window_alerts(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]:
        """Every evaluator's alerts for a closed window, with ``[alerts] severity`` overrides."""
        return [alert for evaluate in self.evaluators for alert in self._overridden(evaluate(model, window))]

    def _overridden(self, alerts: Iterable[Alert]) -> list[Alert]:
        """``alerts`` with the ``[alerts] severity`` overrides."""
        overrides = self.config.alerts.severity
        out = []
        for alert in alerts:
            override = overrides.get(alert.kind)
            out.append(dataclasses.replace(alert, severity=Severity(override.upper())) if override else alert)
        return out

    def forget(self, sources: Iterable[str]) -> None:
        """Drop per-partition state of revoked or lost partitions."""
        names = list(sources)
        for stage in self.stages.partition_state:
            stage.forget(names)
